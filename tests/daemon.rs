//! `backsweep daemon` against a real, private Dovecot.
//!
//! 1. Everyday service: new backscatter arriving while the daemon IDLEs is
//!    quarantined within seconds, genuine bounces and ordinary mail stay; a
//!    deleted quarantine folder is made again; SIGHUP reloads; a new inbox
//!    UIDVALIDITY (server restarted) moves nothing twice; SIGTERM exits 0.
//!    The same on a server without IDLE (NOOP polling).
//! 2. Faults: a TCP proxy (in this file, loopback only) between the daemon and
//!    Dovecot cuts connections at seeded random points — by bytes during
//!    sweeps, by time during IDLE — and delays traffic; meanwhile the daemon is
//!    killed with SIGKILL right after bursts of new mail and restarted, and
//!    Dovecot is restarted. Afterwards every message is audited: nothing
//!    lost, duplicated, moved twice or marked read, and every backscatter
//!    message quarantined. The numbers of cuts and restarts are printed.
//!
//! FAIL (never skip) when Dovecot cannot be started: `apt-get install dovecot-imapd`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backsweep::imap::ImapSession;
use backsweep::store::Store;
use backsweep::testserver::{account_config_yaml, yaml_path, TestServer, TestServerOptions};
use common::daemon_process::DaemonProcess;
use common::mailbox::folder_messages;
use common::messages::{dsn, sent_in_2000, text_message};
use common::session::loopback_session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "dora@example.com";
const PASS: &str = "daemon test pw";
const BIN: &str = env!("CARGO_BIN_EXE_backsweep");
/// Date of every generated message and original.
const DATE: &str = "Mon, 02 Mar 2026 09:00:00 +0000";

/// Where a generated message belongs after sweeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ordinary,
    Genuine,
    Backscatter,
}

/// Generates and delivers test mail; remembers what went where.
struct Mail {
    next: u32,
    capacity: u32,
    /// Message-ID of every inbox message delivered, with its role.
    delivered: Vec<(String, Role)>,
}

impl Mail {
    /// Up to `capacity` messages; the originals of the genuine bounces among
    /// them go to Sent now, well before their bounces arrive (as in life).
    fn new(server: &TestServer, capacity: u32) -> Mail {
        for n in (0..capacity).filter(|n| n % 3 == 1) {
            let sent = text_message(
                &format!("Dora <{USER}>"),
                "someone@example.net",
                "hi",
                DATE,
                &format!("orig-{n}@mail.example.com"),
                "x",
            );
            server
                .deliver(USER, "Sent", &sent, "S")
                .expect("deliver Sent");
        }
        Mail {
            next: 0,
            capacity,
            delivered: Vec::new(),
        }
    }

    /// How many more messages this may deliver.
    fn left(&self) -> usize {
        self.capacity.saturating_sub(self.next) as usize
    }

    /// Delivers the next message (roles rotate: ordinary, genuine, backscatter).
    fn deliver(&mut self, server: &TestServer) -> Role {
        let n = self.next;
        assert!(n < self.capacity, "more mail than Mail::new was told");
        self.next += 1;
        let own = format!("Dora <{USER}>");
        let date = DATE;
        let (role, id, bytes) = match n % 3 {
            0 => (
                Role::Ordinary,
                format!("ord-{n}@example.net"),
                text_message(
                    &format!("Friend <friend{n}@example.net>"),
                    USER,
                    &format!("hello {n}"),
                    date,
                    &format!("ord-{n}@example.net"),
                    "Lunch on Friday?",
                ),
            ),
            1 => {
                let original = format!("orig-{n}@mail.example.com");
                let sent = text_message(&own, "someone@example.net", "hi", date, &original, "x");
                server
                    .deliver(USER, "Sent", &sent, "S")
                    .expect("deliver Sent");
                (
                    Role::Genuine,
                    format!("dsn-{n}@mx{n}.example.net"),
                    dsn(USER, n, &original, &own, date),
                )
            }
            _ => (
                Role::Backscatter,
                format!("dsn-{n}@mx{n}.example.net"),
                dsn(USER, n, &format!("forged-{n}@spam.example.org"), &own, date),
            ),
        };
        server
            .deliver(USER, "INBOX", &bytes, "")
            .expect("deliver INBOX");
        self.delivered.push((id, role));
        role
    }

    fn ids(&self, role: Role) -> Vec<String> {
        self.delivered
            .iter()
            .filter(|(_, r)| *r == role)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A server with one user, Sent seeded so the index covers old originals,
/// and a password file.
fn server(options: TestServerOptions) -> (TestServer, tempfile::TempDir, PathBuf) {
    let server = TestServer::start(&[(USER, PASS)], options).unwrap_or_else(|e| {
        panic!("cannot start the private Dovecot (these tests never skip): {e}")
    });
    let oldest = sent_in_2000(&format!("Dora <{USER}>"));
    server
        .deliver(USER, "Sent", &oldest, "S")
        .expect("seed Sent");
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("password");
    std::fs::write(&pw, PASS).expect("password file");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    (server, dir, pw)
}

/// Writes a config for `USER` on plaintext loopback `port` (the server or the proxy).
fn write_config(dir: &std::path::Path, pw: &std::path::Path, port: u16) -> PathBuf {
    let yaml = account_config_yaml(
        "dora",
        USER,
        port,
        None,
        &dir.join("state"),
        &format!("{{ file: {} }}", yaml_path(pw)),
        "    sent: [Sent]\n    timeout: 5\n",
    )
    .replace("tls: implicit", "tls: none");
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).expect("config");
    path
}

/// A direct session (not through the proxy) for checks.
async fn session(server: &TestServer) -> ImapSession {
    loopback_session(server.plain_port(), USER, PASS).await
}

/// INBOX and Quarantine as Message-ID → flags lists (a missing Quarantine is empty).
async fn folders(server: &TestServer) -> (Vec<(String, Vec<String>)>, Vec<(String, Vec<String>)>) {
    let mut s = session(server).await;
    let inbox = folder_messages(&mut s, "INBOX").await;
    let exists = s
        .list_folders()
        .await
        .expect("list")
        .iter()
        .any(|f| f.name == "Quarantine");
    let quarantine = if exists {
        folder_messages(&mut s, "Quarantine").await
    } else {
        Vec::new()
    };
    let _ = s.logout().await;
    (inbox, quarantine)
}

/// Waits until every id in `ids` is in Quarantine; panics with the daemon log otherwise.
async fn wait_quarantined(server: &TestServer, ids: &[String], limit: Duration, d: &DaemonProcess) {
    let deadline = Instant::now() + limit;
    loop {
        let (_, q) = folders(server).await;
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !q.iter().any(|(m, _)| m == *id))
            .collect();
        if missing.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let (inbox, _) = folders(server).await;
            // What the daemon recorded about them (read while it runs: WAL allows it).
            let state = d.log.parent().map(|p| p.join("state")).unwrap_or_default();
            let audit = Store::open(&state)
                .and_then(|s| s.audit_recent("dora", 1_000_000))
                .unwrap_or_default();
            let watermark = Store::open(&state).and_then(|s| s.watermark("dora", "INBOX"));
            let mut s = session(server).await;
            s.examine("INBOX").await.expect("examine INBOX");
            let mut uids = Vec::new();
            for id in &missing {
                let found = s.uid_search(&format!("HEADER Message-ID \"{id}\"")).await;
                uids.push(format!("{id}: UID {found:?}"));
            }
            let _ = s.logout().await;
            let whereabouts: Vec<String> = missing
                .iter()
                .map(|id| {
                    let records: Vec<String> = audit
                        .iter()
                        .filter(|r| r.entry.message_id.as_deref() == Some(id.as_str()))
                        .map(|r| format!("{:?}", r.entry))
                        .collect();
                    match inbox.iter().find(|(m, _)| m == *id) {
                        Some((_, flags)) => {
                            format!("{id}: in INBOX with flags {flags:?}; audit {records:?}")
                        }
                        None => format!("{id}: in neither folder; audit {records:?}"),
                    }
                })
                .collect();
            if std::env::var_os("DAEMON_TEST_LOG").is_some() {
                let _ = std::fs::copy(&d.log, "/tmp/daemon-fault.log");
            }
            panic!(
                "not quarantined within {limit:?}:\n{}\n{}\ninbox watermark: {watermark:?}\ndaemon log:\n{}",
                whereabouts.join("\n"),
                uids.join("\n"),
                d.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The audit: every delivered message exactly once, where its role says,
/// never `\Seen` or `\Deleted`; no message moved twice (audit log).
async fn audit(server: &TestServer, mail: &Mail, state_dir: &std::path::Path) -> usize {
    let (inbox, quarantine) = folders(server).await;
    let mut problems = Vec::new();
    let mut count: HashMap<&str, (usize, usize)> = HashMap::new();
    for (id, _) in &inbox {
        count.entry(id).or_default().0 += 1;
    }
    for (id, _) in &quarantine {
        count.entry(id).or_default().1 += 1;
    }
    for (id, role) in &mail.delivered {
        let (i, q) = count.get(id.as_str()).copied().unwrap_or_default();
        let want = if *role == Role::Backscatter {
            (0, 1)
        } else {
            (1, 0)
        };
        if (i, q) != want {
            problems.push(format!("{role:?} {id}: {i} in INBOX, {q} in Quarantine"));
        }
    }
    if count.len() != mail.delivered.len() {
        problems.push(format!(
            "{} distinct messages in the folders, {} delivered",
            count.len(),
            mail.delivered.len()
        ));
    }
    for (id, flags) in inbox.iter().chain(&quarantine) {
        if flags.iter().any(|f| f == "\\Seen" || f == "\\Deleted") {
            problems.push(format!("{id} has flags {flags:?}"));
        }
    }
    let store = Store::open(state_dir).expect("state");
    let mut moved: HashMap<String, usize> = HashMap::new();
    for r in store.audit_recent("dora", 1_000_000).expect("audit log") {
        if r.entry.action == "moved" {
            *moved
                .entry(r.entry.message_id.unwrap_or_default())
                .or_default() += 1;
        }
    }
    for (id, n) in &moved {
        if *n > 1 {
            problems.push(format!("{id} moved {n} times"));
        }
    }
    assert!(
        problems.is_empty(),
        "audit failed:\n{}",
        problems.join("\n")
    );
    quarantine.len()
}

/// Delivers one message of each role and waits until the backscatter one is quarantined.
async fn deliver_round_and_wait(mail: &mut Mail, server: &TestServer, d: &DaemonProcess) {
    let mut last = Vec::new();
    for _ in 0..3 {
        if mail.deliver(server) == Role::Backscatter {
            last.extend(mail.delivered.last().map(|(id, _)| id.clone()));
        }
    }
    // Generous: it returns as soon as they are there.
    wait_quarantined(server, &last, Duration::from_secs(30), d).await;
}

/// Runs the tests of this file one at a time (timing-based).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn everyday_service(options: TestServerOptions, poll: bool) {
    let _serial = SERIAL.lock().await;
    let compressed = options.offer_compress;
    let (mut server, dir, pw) = server(options);
    let config = write_config(dir.path(), &pw, server.plain_port());
    let log = dir.path().join("daemon.log");
    let poll_args: &[&str] = if poll { &["--poll-secs", "1"] } else { &[] };
    let mut args = vec![
        "--idle-renew-secs",
        "2",
        "--retry-min-ms",
        "100",
        "--retry-max-secs",
        "0.2",
    ];
    args.extend_from_slice(poll_args);
    // (backsweep::imap says at debug level when a connection is compressed.)
    let env = [("BACKSWEEP_LOG", "info,backsweep::imap=debug")];
    let mut d = DaemonProcess::start_with_env(BIN, &config, &args, &log, &env);
    let mut mail = Mail::new(&server, 20);
    // Mail waiting before the start, then mail arriving while it watches.
    for _ in 0..3 {
        mail.deliver(&server);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        mail.deliver(&server);
    }
    wait_quarantined(
        &server,
        &mail.ids(Role::Backscatter),
        Duration::from_secs(10),
        &d,
    )
    .await;

    // The user deletes the quarantine folder: the next backscatter recreates it.
    let mut s = session(&server).await;
    s.run_command("DELETE Quarantine")
        .await
        .expect("delete Quarantine");
    let _ = s.logout().await;
    let before_delete = mail.ids(Role::Backscatter);
    deliver_round_and_wait(&mut mail, &server, &d).await;

    // SIGHUP reloads; the daemon goes on working.
    d.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    deliver_round_and_wait(&mut mail, &server, &d).await;

    // The inbox gets a new UIDVALIDITY (a server-side restore; the server
    // restarts): the daemon reconnects and judges the inbox again, moving
    // nothing twice.
    server
        .reset_uidvalidity(USER, "INBOX")
        .expect("reset UIDVALIDITY");
    deliver_round_and_wait(&mut mail, &server, &d).await;

    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: {status:?}\n{}",
        d.log_tail()
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("configuration reloaded"),
        "no reload in the log:\n{log_text}"
    );
    assert_eq!(
        log_text.contains("connection compressed"),
        compressed,
        "compression (offered: {compressed}) in the log:\n{log_text}"
    );
    // The messages quarantined before the folder was deleted went with it.
    let mut after = Mail::new(&server, 0);
    after.delivered = mail
        .delivered
        .iter()
        .filter(|(id, _)| !before_delete.contains(id))
        .cloned()
        .collect();
    let q = audit(&server, &after, &dir.path().join("state")).await;
    println!("daemon ({}): {q} backscatter quarantined, deleted quarantine recreated, reload, UIDVALIDITY change and SIGTERM clean",
        if poll { "NOOP polling" } else { "IDLE" });
}

/// Over a compressed connection (COMPRESS=DEFLATE), as with most providers:
/// IDLE and its DONE must get through the compression layer.
#[tokio::test(flavor = "current_thread")]
async fn the_daemon_quarantines_new_backscatter_recreates_quarantine_reloads_and_stops() {
    let options = TestServerOptions {
        with_quarantine: false,
        offer_compress: true,
        ..TestServerOptions::default()
    };
    everyday_service(options, false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_idle_the_daemon_polls_with_noop() {
    let options = TestServerOptions {
        with_quarantine: false,
        hide_idle: true,
        ..TestServerOptions::default()
    };
    everyday_service(options, true).await;
}

/// Receives what the daemon tells systemd (`$NOTIFY_SOCKET`), until `want` was seen.
fn notifications_until(
    socket: &std::os::unix::net::UnixDatagram,
    want: &str,
    limit: Duration,
    seen: &mut Vec<String>,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "current_thread")]
async fn the_daemon_speaks_the_systemd_notify_protocol() {
    let _serial = SERIAL.lock().await;
    let (server, dir, pw) = server(TestServerOptions::default());
    let config = write_config(dir.path(), &pw, server.plain_port());
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let notify = path.display().to_string();
    // WATCHDOG_PID is left out: then the watchdog applies to whoever reads it.
    let d = DaemonProcess::start_with_env(
        BIN,
        &config,
        &[],
        &dir.path().join("daemon.log"),
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    );
    let mut seen = Vec::new();
    let limit = Duration::from_secs(10);
    assert!(
        notifications_until(&socket, "READY=1", limit, &mut seen),
        "no READY=1: {seen:?}\n{}",
        d.log_tail()
    );
    assert!(
        notifications_until(&socket, "WATCHDOG=1", limit, &mut seen),
        "no WATCHDOG=1: {seen:?}"
    );
    d.signal("HUP");
    assert!(
        notifications_until(&socket, "RELOADING=1", limit, &mut seen),
        "no RELOADING=1: {seen:?}"
    );
    assert!(
        notifications_until(&socket, "READY=1", limit, &mut seen),
        "no READY=1 after reload: {seen:?}"
    );
    d.signal("TERM");
    assert!(
        notifications_until(&socket, "STOPPING=1", limit, &mut seen),
        "no STOPPING=1: {seen:?}"
    );
    let mut d = d;
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
    println!(
        "sd_notify: {} messages, e.g. {:?}",
        seen.len(),
        seen.first()
    );
}

// ---------------------------------------------------------------------------------------
// The fault proxy.

/// Counts of what the proxy did.
#[derive(Default)]
struct ProxyStats {
    connections: AtomicU64,
    cuts: AtomicU64,
    idle_cuts: AtomicU64,
    delayed: AtomicU64,
}

/// A loopback TCP proxy that, while `faults` is on, cuts connections at seeded
/// random points and delays traffic.
struct Proxy {
    port: u16,
    faults: Arc<AtomicBool>,
    stats: Arc<ProxyStats>,
}

/// What the proxy does to one connection.
#[derive(Debug, Clone, Copy, Default)]
struct Plan {
    /// Cut once the server has sent this many bytes.
    cut_bytes: Option<u64>,
    /// Cut after this long.
    cut_after: Option<Duration>,
    /// Delay every chunk by this long.
    delay: Option<Duration>,
}

impl Proxy {
    fn start(upstream: u16, seed: u64) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let faults = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(ProxyStats::default());
        let (f, s) = (faults.clone(), stats.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let mut rng = seed | 1;
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    s.connections.fetch_add(1, Ordering::Relaxed);
                    let plan = if f.load(Ordering::Relaxed) {
                        let r = xorshift(&mut rng) % 100;
                        let mut plan = Plan::default();
                        if r < 40 {
                            plan.cut_bytes = Some(xorshift(&mut rng) % 6_000 + 1);
                        } else if r < 80 {
                            plan.cut_after =
                                Some(Duration::from_millis(xorshift(&mut rng) % 400 + 10));
                        }
                        if xorshift(&mut rng).is_multiple_of(3) {
                            plan.delay = Some(Duration::from_millis(xorshift(&mut rng) % 8 + 1));
                            s.delayed.fetch_add(1, Ordering::Relaxed);
                        }
                        plan
                    } else {
                        Plan::default()
                    };
                    tokio::spawn(relay(client, upstream, plan, s.clone()));
                }
            });
        });
        Proxy {
            port,
            faults,
            stats,
        }
    }

    fn cuts(&self) -> u64 {
        self.stats.cuts.load(Ordering::Relaxed)
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    Cut,
}

async fn relay(client: tokio::net::TcpStream, upstream: u16, plan: Plan, stats: Arc<ProxyStats>) {
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return; // server down (restarting): the client sees the connection close
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let idle = Arc::new(AtomicBool::new(false));
    let timer = async {
        match plan.cut_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        e = pump(cr, sw, None, plan.delay, Some(idle.clone())) => e,
        e = pump(sr, cw, plan.cut_bytes, plan.delay, None) => e,
        () = timer => End::Cut,
    };
    if end == End::Cut {
        stats.cuts.fetch_add(1, Ordering::Relaxed);
        if idle.load(Ordering::Relaxed) {
            stats.idle_cuts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Copies one direction; `cut_bytes` ends it after that many bytes; `idle`
/// notes when the client has sent an IDLE command.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    cut_bytes: Option<u64>,
    delay: Option<Duration>,
    idle: Option<Arc<AtomicBool>>,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        if let Some(flag) = &idle {
            if buf[..n]
                .windows(6)
                .any(|w| w.eq_ignore_ascii_case(b" IDLE\r"))
            {
                flag.store(true, Ordering::Relaxed);
            }
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut chunk = &buf[..n];
        let mut cut = false;
        if let Some(limit) = cut_bytes {
            if total + n as u64 >= limit {
                chunk = &buf[..(limit - total) as usize];
                cut = true;
            }
        }
        if w.write_all(chunk).await.is_err() {
            return End::Closed;
        }
        total += chunk.len() as u64;
        if cut {
            return End::Cut;
        }
    }
}

/// Seed of the fault plan (printed; change it to explore other schedules).
const FAULT_SEED: u64 = 0x0bad_5eed_2026;
/// Cuts the proxy must make before the faults stop.
const MIN_CUTS: u64 = 210;
/// Longest the fault phase may take to reach [`MIN_CUTS`] (about 60 s on
/// an idle 2-core machine; slower CI machines get room, not a failure).
const FAULT_PHASE_LIMIT_SECS: u64 = 300;
/// SIGKILLs of the daemon, each right after a burst of new mail.
const KILLS: usize = 3;
/// Messages in each burst before a SIGKILL.
const KILL_BURST: usize = 30;

#[tokio::test(flavor = "current_thread")]
async fn the_daemon_survives_cuts_kills_and_server_restarts_without_losing_mail() {
    let _serial = SERIAL.lock().await;
    let (mut server, dir, pw) = server(TestServerOptions::default());
    let proxy = Proxy::start(server.plain_port(), FAULT_SEED);
    let config = write_config(dir.path(), &pw, proxy.port);
    let log = dir.path().join("daemon.log");
    let args = [
        "--idle-renew-secs",
        "1",
        "--sent-refresh-secs",
        "4",
        "--retry-min-ms",
        "10",
        "--retry-max-secs",
        "1",
    ];
    let mut mail = Mail::new(&server, 2400);
    for _ in 0..60 {
        mail.deliver(&server);
    }
    // Debug logs name every batch and verdict: a failure report can then say
    // what the daemon did with the message concerned.
    let env = [("BACKSWEEP_LOG", "info,backsweep::sweeper=debug")];
    let mut d = DaemonProcess::start_with_env(BIN, &config, &args, &log, &env);
    let started = Instant::now();
    let mut rng = FAULT_SEED;
    let (mut kills, mut server_restarts, mut daemon_starts) = (0usize, 0usize, 1usize);
    while proxy.cuts() < MIN_CUTS && started.elapsed() < Duration::from_secs(FAULT_PHASE_LIMIT_SECS)
    {
        // A slow machine runs long: the cuts go on without new mail once
        // the kill bursts and the last round are provided for.
        if mail.left() > KILL_BURST * (KILLS - kills) + 3 {
            mail.deliver(&server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = started.elapsed();
        if kills < KILLS && t > Duration::from_secs(4 * (kills as u64 + 1)) {
            // A burst of new mail wakes the daemon; kill it while it sweeps.
            for _ in 0..KILL_BURST {
                mail.deliver(&server);
            }
            tokio::time::sleep(Duration::from_millis(xorshift(&mut rng) % 400 + 600)).await;
            assert!(d.running(), "the daemon died on its own:\n{}", d.log_tail());
            d.kill();
            kills += 1;
            d = DaemonProcess::start_with_env(BIN, &config, &args, &log, &env);
            daemon_starts += 1;
        }
        if server_restarts == 0 && t > Duration::from_secs(10) {
            server.restart().expect("restart Dovecot");
            server_restarts += 1;
        }
        assert!(d.running(), "the daemon died on its own:\n{}", d.log_tail());
    }
    let fault_secs = started.elapsed().as_secs_f64();
    if std::env::var_os("DAEMON_TEST_LOG").is_some() {
        let _ = std::fs::copy(&log, "/tmp/daemon-fault.log");
    }
    assert!(
        proxy.cuts() >= MIN_CUTS,
        "only {} cuts in {fault_secs:.0} s (the test needs {MIN_CUTS})",
        proxy.cuts()
    );
    proxy.faults.store(false, Ordering::Relaxed);
    // Faults over: the last mail and everything before must settle.
    for _ in 0..3 {
        mail.deliver(&server);
    }
    wait_quarantined(
        &server,
        &mail.ids(Role::Backscatter),
        Duration::from_secs(60),
        &d,
    )
    .await;
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM after the faults: {status:?}\n{}",
        d.log_tail()
    );
    let quarantined = audit(&server, &mail, &dir.path().join("state")).await;
    let s = &proxy.stats;
    println!(
        "fault test (seed {FAULT_SEED:#x}): survived {} connection cuts ({} during IDLE) over {} connections \
         ({} delayed) in {fault_secs:.1} s, {kills} SIGKILLs ({daemon_starts} daemon starts), \
         {server_restarts} Dovecot restart(s); {} messages audited, {quarantined} backscatter quarantined, \
         none lost, duplicated, moved twice or marked read",
        s.cuts.load(Ordering::Relaxed),
        s.idle_cuts.load(Ordering::Relaxed),
        s.connections.load(Ordering::Relaxed),
        s.delayed.load(Ordering::Relaxed),
        mail.delivered.len(),
    );
}
