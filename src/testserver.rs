//! A private Dovecot IMAP server on 127.0.0.1, for the integration tests and `backsweep demo`.
//!
//! Why a real server: the behaviour that matters (UIDs, `\Seen` handling, MOVE versus the
//! COPY/EXPUNGE fallback, SPECIAL-USE, STARTTLS, certificate checks) is exactly where mocks
//! lie. Debian's `dovecot-imapd` starts in a fraction of a second, so each test gets its own
//! instance.
//!
//! [`TestServer::start`] makes a temporary directory holding everything: a tiny CA and a
//! server certificate made with the `openssl` CLI (the CA has `CA:TRUE`, the server cert
//! `CA:FALSE` with `subjectAltName=IP:127.0.0.1,DNS:localhost`, because webpki rejects a
//! self-signed CA cert used as an end-entity), a self-contained `dovecot.conf` (nothing from
//! `/etc/dovecot`; `base_dir`, `state_dir` and `log_path` inside the directory, so it never
//! collides with a system instance), a passwd-file, and one Maildir per user with `INBOX`,
//! `Sent` (`\Sent`) and `Quarantine`. Ports are picked free on loopback. Dovecot runs in the
//! foreground as our child process; readiness means an IMAP greeting on the plain port and,
//! through a verified TLS handshake, on the implicit-TLS port. Dropping the server stops
//! Dovecot and deletes the directory.
//!
//! As root, mail is owned by `nobody` (Dovecot refuses uid 0 as a mail user) and directories
//! are made traversable (0755). As another user, Dovecot runs entirely as that user without
//! chroot.
//!
//! Messages can be written directly into the Maildirs ([`TestServer::deliver`]), which is
//! ~10× faster than IMAP APPEND; file names are ordered so that UIDs are deterministic.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The exact advice given when Dovecot is missing.
pub const INSTALL_DOVECOT: &str = "install it with `apt-get install dovecot-imapd` (Debian/Ubuntu)";

/// Capabilities Dovecot 2.3 advertises after login; `imap_capability` is rendered from this
/// list minus the hidden ones.
const DOVECOT_CAPABILITIES: &[&str] = &[
    "IMAP4rev1",
    "SASL-IR",
    "LOGIN-REFERRALS",
    "ID",
    "ENABLE",
    "IDLE",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=REFERENCES",
    "THREAD=REFS",
    "THREAD=ORDEREDSUBJECT",
    "MULTIAPPEND",
    "URL-PARTIAL",
    "CATENATE",
    "UNSELECT",
    "CHILDREN",
    "NAMESPACE",
    "UIDPLUS",
    "LIST-EXTENDED",
    "I18NLEVEL=1",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
    "CONTEXT=SEARCH",
    "LIST-STATUS",
    "BINARY",
    "MOVE",
    "SNIPPET=FUZZY",
    "PREVIEW=FUZZY",
    "PREVIEW",
    "STATUS=SIZE",
    "SAVEDATE",
    "LITERAL+",
    "NOTIFY",
    "SPECIAL-USE",
];

/// Errors from starting or using the test server.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// A required program is not installed.
    #[error("`{tool}` not found (looked in PATH, /usr/sbin, /usr/local/sbin, /sbin): {hint}")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// How to install it.
        hint: &'static str,
    },
    /// A file-system operation failed.
    #[error("test server: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command (openssl, id, ...) failed.
    #[error("test server: `{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// Dovecot exited or did not become ready.
    #[error("test server: dovecot did not start: {reason}\n--- dovecot log ---\n{log}")]
    Start {
        /// What went wrong.
        reason: String,
        /// The tail of Dovecot's log and stderr.
        log: String,
    },
    /// Invalid argument (user name, folder name, ...).
    #[error("test server: {0}")]
    Invalid(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestServerError {
    let context = context.into();
    move |source| TestServerError::Io { context, source }
}

/// Options for [`TestServer::start`].
#[derive(Debug, Clone)]
pub struct TestServerOptions {
    /// Do not advertise `MOVE` (forces clients onto the COPY fallback).
    pub hide_move: bool,
    /// Do not advertise `UIDPLUS` (no `UID EXPUNGE`).
    pub hide_uidplus: bool,
    /// Do not advertise `IDLE` (clients must poll).
    pub hide_idle: bool,
    /// Create the `Quarantine` folder (default true); false to test creating it.
    pub with_quarantine: bool,
    /// How long to wait for Dovecot to greet on both ports.
    pub start_timeout: Duration,
    /// Also accept OAuth2 logins (AUTH=XOAUTH2 and AUTH=OAUTHBEARER), validating each access
    /// token by POSTing it to this introspection URL (RFC 7662 style; see
    /// [`crate::oauth::testprovider`]), which must answer `active` and the user's `username`.
    pub oauth2_introspection_url: Option<String>,
    /// Offer `COMPRESS=DEFLATE` (Dovecot's `imap_zlib` plugin), as Gmail, Cyrus and many
    /// Dovecot hosts do.
    pub offer_compress: bool,
    /// Limit each user to this many IMAP connections from one address
    /// (`mail_max_userip_connections`; Dovecot's default is 10), to test a
    /// server that refuses a client's extra connection.
    pub max_connections_per_user: Option<u32>,
}

impl Default for TestServerOptions {
    fn default() -> Self {
        TestServerOptions {
            hide_move: false,
            hide_uidplus: false,
            hide_idle: false,
            with_quarantine: true,
            start_timeout: Duration::from_secs(15),
            oauth2_introspection_url: None,
            offer_compress: false,
            max_connections_per_user: None,
        }
    }
}

/// Owner of mail files: `nobody` when we are root, ourselves otherwise.
#[derive(Debug, Clone)]
struct Identity {
    root: bool,
    /// Our own user name (non-root mode: Dovecot's internal and login user).
    user_name: String,
    /// Our own primary group name (non-root mode: Dovecot's internal group).
    group_name: String,
    mail_uid: u32,
    mail_gid: u32,
}

/// A running private Dovecot. Dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub struct TestServer {
    dir: tempfile::TempDir,
    conf: PathBuf,
    dovecot: PathBuf,
    child: Option<Child>,
    plain_port: u16,
    tls_port: u16,
    ident: Identity,
    options: TestServerOptions,
    users: Vec<String>,
    seq: AtomicU64,
}

/// Finds a program in PATH or the sbin directories (non-root PATHs often lack /usr/sbin).
fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Result<String, TestServerError> {
    let desc = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {desc}")))?;
    if !out.status.success() {
        return Err(TestServerError::Command {
            command: desc,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn identity() -> Result<Identity, TestServerError> {
    let uid: u32 = parse_id(&run(Command::new("id").arg("-u"))?)?;
    let gid: u32 = parse_id(&run(Command::new("id").arg("-g"))?)?;
    let user_name = run(Command::new("id").arg("-un"))?;
    let group_name = run(Command::new("id").arg("-gn"))?;
    if uid != 0 {
        return Ok(Identity {
            root: false,
            user_name,
            group_name,
            mail_uid: uid,
            mail_gid: gid,
        });
    }
    // Root: mail belongs to nobody (Dovecot never accepts uid 0 for mail).
    let nobody_uid = parse_id(&run(Command::new("id").args(["-u", "nobody"]))?)?;
    let nobody_gid = parse_id(&run(Command::new("id").args(["-g", "nobody"]))?)?;
    Ok(Identity {
        root: true,
        user_name,
        group_name,
        mail_uid: nobody_uid,
        mail_gid: nobody_gid,
    })
}

fn parse_id(s: &str) -> Result<u32, TestServerError> {
    s.trim()
        .parse()
        .map_err(|_| TestServerError::Invalid(format!("unexpected output of `id`: {s:?}")))
}

fn free_port() -> Result<u16, TestServerError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a free loopback port"))?;
    Ok(l.local_addr()
        .map_err(io_err("reading a bound port"))?
        .port())
}

fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-+".contains(c))
}

/// On-disk directory of a folder in a Maildir++ tree (`INBOX` is the root).
fn folder_dir(maildir: &Path, folder: &str) -> Result<PathBuf, TestServerError> {
    if folder.eq_ignore_ascii_case("INBOX") {
        return Ok(maildir.to_path_buf());
    }
    if folder.is_empty()
        || folder.contains('.')
        || folder.starts_with('/')
        || folder.ends_with('/')
        || folder.contains("//")
        || folder.chars().any(|c| c.is_control())
    {
        return Err(TestServerError::Invalid(format!(
            "unsupported folder name {folder:?} (no dots; `/` separates levels)"
        )));
    }
    Ok(maildir.join(format!(".{}", folder.replace('/', "."))))
}

impl TestServer {
    /// Starts a private Dovecot with these `(user, password)` pairs.
    ///
    /// Fails (never skips) when `dovecot` or `openssl` is missing, naming the package to
    /// install.
    pub fn start(
        users: &[(&str, &str)],
        options: TestServerOptions,
    ) -> Result<TestServer, TestServerError> {
        let dovecot = find_program("dovecot").ok_or(TestServerError::MissingTool {
            tool: "dovecot",
            hint: INSTALL_DOVECOT,
        })?;
        let openssl = find_program("openssl").ok_or(TestServerError::MissingTool {
            tool: "openssl",
            hint: "install it with `apt-get install openssl` (Debian/Ubuntu)",
        })?;
        for (u, p) in users {
            if !valid_user(u) {
                return Err(TestServerError::Invalid(format!("invalid user name {u:?}")));
            }
            if p.is_empty() || p.contains([':', '\n', '\r']) {
                return Err(TestServerError::Invalid(format!(
                    "password of {u:?} must be non-empty without `:` or newlines"
                )));
            }
        }
        let ident = identity()?;
        let dir = tempfile::Builder::new()
            .prefix("backsweep-dovecot-")
            .tempdir()
            .map_err(io_err("creating the server directory"))?;
        let base = dir.path().to_path_buf();
        for sub in ["run", "state", "log", "tls", "mail"] {
            std::fs::create_dir_all(base.join(sub)).map_err(io_err(format!("creating {sub}/")))?;
        }
        make_certs(&openssl, &base.join("tls"))?;

        let mut users_file = String::new();
        for (u, p) in users {
            users_file.push_str(&format!("{u}:{{PLAIN}}{p}::::::\n"));
        }
        std::fs::write(base.join("users"), users_file).map_err(io_err("writing users"))?;

        let mut server = TestServer {
            conf: base.join("dovecot.conf"),
            dir,
            dovecot,
            child: None,
            plain_port: 0,
            tls_port: 0,
            ident,
            options,
            users: users.iter().map(|(u, _)| u.to_string()).collect(),
            seq: AtomicU64::new(1),
        };
        for u in server.users.clone() {
            server.create_maildir(&u)?;
        }
        server.fix_permissions()?;
        if let Some(url) = &server.options.oauth2_introspection_url {
            if url.contains(['\n', '\r']) {
                return Err(TestServerError::Invalid(format!(
                    "bad introspection URL {url:?}"
                )));
            }
            // Dovecot 2.3's oauth2 passdb (db-oauth2): POST token=... to the URL, the token is
            // valid when `active` is `true` and `username` is the user logging in.
            std::fs::write(
                server.dir.path().join("dovecot-oauth2.conf.ext"),
                format!(
                    "introspection_mode = post\nintrospection_url = {url}\n\
                     force_introspection = yes\nusername_attribute = username\n\
                     active_attribute = active\nactive_value = true\n"
                ),
            )
            .map_err(io_err("writing dovecot-oauth2.conf.ext"))?;
        }

        // Ports are free when probed but may be taken before Dovecot binds: retry.
        let mut last_err = None;
        for _ in 0..3 {
            server.plain_port = free_port()?;
            server.tls_port = free_port()?;
            if server.plain_port == server.tls_port {
                continue;
            }
            std::fs::write(&server.conf, server.render_conf())
                .map_err(io_err("writing dovecot.conf"))?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let in_use = matches!(&e, TestServerError::Start { log, .. } if log.contains("Address already in use"));
                    last_err = Some(e);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| TestServerError::Invalid("no free ports".into())))
    }

    /// The host to connect to (`127.0.0.1`, which the certificate names).
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// Port of the plain listener (offers STARTTLS; LOGIN allowed without TLS).
    pub fn plain_port(&self) -> u16 {
        self.plain_port
    }

    /// Port of the implicit-TLS listener.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// PEM file of the CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }

    /// A backsweep config (YAML) with one account on this server, through
    /// [`account_config_yaml`]: implicit TLS on the loopback TLS port, the
    /// test CA trusted unless `trust_ca` is false.
    pub fn config_yaml(
        &self,
        account: &str,
        user: &str,
        state_dir: &Path,
        password: &str,
        trust_ca: bool,
        extra: &str,
    ) -> String {
        let ca = self.ca_file();
        let ca = trust_ca.then_some(ca.as_path());
        account_config_yaml(
            account,
            user,
            self.tls_port(),
            ca,
            state_dir,
            password,
            extra,
        )
    }

    /// The server's working directory (config, logs, mail).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Dovecot's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("log").join("dovecot.log")
    }

    /// The root of a user's Maildir (`INBOX`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user).join("Maildir")
    }

    /// Creates a folder on disk (Maildir++ layout). `/` separates levels.
    pub fn create_folder(&self, user: &str, folder: &str) -> Result<PathBuf, TestServerError> {
        let d = folder_dir(&self.maildir(user), folder)?;
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(d.join(sub))
                .map_err(io_err(format!("creating folder {folder}")))?;
        }
        if !folder.eq_ignore_ascii_case("INBOX") {
            std::fs::write(d.join("maildirfolder"), b"")
                .map_err(io_err(format!("creating folder {folder}")))?;
        }
        self.chown_tree(&d)?;
        Ok(d)
    }

    /// Writes a message straight into a user's folder (`INBOX`, `Sent`, `Quarantine`, or
    /// any folder made with [`TestServer::create_folder`]). `flags` are Maildir flag
    /// letters, e.g. `"S"` for `\Seen`, `"SF"` for seen+flagged; empty = a new message.
    /// Messages get UIDs in the order they are delivered (names sort by a counter).
    /// Returns the file's path.
    pub fn deliver(
        &self,
        user: &str,
        folder: &str,
        message: &[u8],
        flags: &str,
    ) -> Result<PathBuf, TestServerError> {
        if !flags.chars().all(|c| "DFPRST".contains(c)) {
            return Err(TestServerError::Invalid(format!(
                "invalid Maildir flags {flags:?}"
            )));
        }
        let d = folder_dir(&self.maildir(user), folder)?;
        if !d.join("cur").is_dir() {
            return Err(TestServerError::Invalid(format!(
                "folder {folder:?} of {user:?} does not exist on disk"
            )));
        }
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let base = format!(
            "1700000000.M{n:09}P{}.backsweep,S={}",
            std::process::id(),
            message.len()
        );
        let tmp = d.join("tmp").join(&base);
        std::fs::write(&tmp, message).map_err(io_err("writing a message"))?;
        self.chown(&tmp)?;
        let mut flag_chars: Vec<char> = flags.chars().collect();
        flag_chars.sort_unstable();
        flag_chars.dedup();
        let dest = if flag_chars.is_empty() {
            d.join("new").join(&base)
        } else {
            d.join("cur").join(format!(
                "{base}:2,{}",
                flag_chars.iter().collect::<String>()
            ))
        };
        std::fs::rename(&tmp, &dest).map_err(io_err("moving a message into place"))?;
        Ok(dest)
    }

    /// Makes Dovecot forget a folder's UIDs, so the folder gets a new UIDVALIDITY and its
    /// messages new UIDs (as after a server-side restore or migration). Restarts the
    /// server; open sessions are cut.
    pub fn reset_uidvalidity(&mut self, user: &str, folder: &str) -> Result<(), TestServerError> {
        let maildir = self.maildir(user);
        let d = folder_dir(&maildir, folder)?;
        self.stop();
        let remove_matching = |dir: &Path, prefixes: &[&str]| -> Result<(), TestServerError> {
            for e in std::fs::read_dir(dir).map_err(io_err("listing a maildir"))? {
                let e = e.map_err(io_err("listing a maildir"))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if prefixes.iter().any(|p| name.starts_with(p)) && e.path().is_file() {
                    std::fs::remove_file(e.path()).map_err(io_err(format!("removing {name}")))?;
                }
            }
            Ok(())
        };
        remove_matching(&d, &["dovecot-uidlist", "dovecot.index"])?;
        remove_matching(&maildir, &["dovecot.list.index"])?;
        self.launch()
    }

    /// Stops and starts Dovecot again on the same ports and data.
    pub fn restart(&mut self) -> Result<(), TestServerError> {
        self.stop();
        self.launch()
    }

    /// Stops Dovecot (SIGTERM, then SIGKILL after 10 s). Idempotent; also done on drop.
    ///
    /// Dovecot's master does not take its children along when it is terminated (per-login
    /// `imap` processes even keep serving their clients), so the master's children are
    /// noted first and terminated by pid afterwards.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let master = child.id();
        let kids = children_of(master);
        signal(&[master], "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // Only our instance's processes (the name guards against pid reuse).
        let marker = format!("backsweep-test-{}/", self.plain_port);
        let ours = |pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                .unwrap_or(false)
        };
        let alive: Vec<u32> = kids.into_iter().filter(|p| ours(p)).collect();
        if alive.is_empty() {
            return;
        }
        signal(&alive, "TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left: Vec<u32> = alive.iter().copied().filter(|p| ours(p)).collect();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                signal(&left, "KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn create_maildir(&self, user: &str) -> Result<(), TestServerError> {
        self.create_folder(user, "INBOX")?;
        self.create_folder(user, "Sent")?;
        if self.options.with_quarantine {
            self.create_folder(user, "Quarantine")?;
        }
        Ok(())
    }

    fn chown(&self, p: &Path) -> Result<(), TestServerError> {
        if self.ident.root {
            std::os::unix::fs::chown(p, Some(self.ident.mail_uid), Some(self.ident.mail_gid))
                .map_err(io_err(format!("chown {}", p.display())))?;
        }
        Ok(())
    }

    /// Chowns `p` and everything below it, and each ancestor up to `mail/`.
    fn chown_tree(&self, p: &Path) -> Result<(), TestServerError> {
        if !self.ident.root {
            return Ok(());
        }
        let mail_root = self.dir.path().join("mail");
        let mut stack = vec![p.to_path_buf()];
        while let Some(x) = stack.pop() {
            self.chown(&x)?;
            if x.is_dir() {
                for e in std::fs::read_dir(&x).map_err(io_err("listing a maildir"))? {
                    stack.push(e.map_err(io_err("listing a maildir"))?.path());
                }
            }
        }
        let mut anc = p.parent();
        while let Some(a) = anc {
            if a == mail_root || !a.starts_with(&mail_root) {
                break;
            }
            self.chown(a)?;
            anc = a.parent();
        }
        Ok(())
    }

    /// Root mode: every directory must be traversable by `nobody` and `dovenull`, the
    /// passwd-file readable by the auth process.
    fn fix_permissions(&self) -> Result<(), TestServerError> {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("chmod {}", p.display())))
        };
        let base = self.dir.path();
        set(base, 0o755)?;
        for sub in ["run", "state", "log", "mail"] {
            set(&base.join(sub), 0o755)?;
        }
        set(&base.join("tls"), 0o700)?;
        set(
            &base.join("users"),
            if self.ident.root { 0o644 } else { 0o600 },
        )?;
        Ok(())
    }

    fn render_conf(&self) -> String {
        let base = self.dir.path().display().to_string();
        let hidden: Vec<&str> = [
            (self.options.hide_move, "MOVE"),
            (self.options.hide_uidplus, "UIDPLUS"),
            (self.options.hide_idle, "IDLE"),
        ]
        .iter()
        .filter(|(h, _)| *h)
        .map(|(_, c)| *c)
        .collect();
        let capability_line = if hidden.is_empty() {
            String::new()
        } else {
            let caps: Vec<&str> = DOVECOT_CAPABILITIES
                .iter()
                .copied()
                .filter(|c| !hidden.contains(c))
                .chain(self.options.offer_compress.then_some("COMPRESS=DEFLATE"))
                .collect();
            format!("imap_capability = {}\n", caps.join(" "))
        };
        let (users_section, chroot) = if self.ident.root {
            ("first_valid_uid = 1\n".to_string(), "")
        } else {
            (
                format!(
                    "default_internal_user = {u}\ndefault_internal_group = {g}\ndefault_login_user = {u}\n\
                     first_valid_uid = {uid}\n",
                    u = self.ident.user_name,
                    g = self.ident.group_name,
                    uid = self.ident.mail_uid
                ),
                "  chroot =\n",
            )
        };
        let quarantine = if self.options.with_quarantine {
            "  mailbox Quarantine {\n    auto = subscribe\n  }\n"
        } else {
            ""
        };
        let (mechanisms, oauth2_passdb, no_penalty) =
            if self.options.oauth2_introspection_url.is_some() {
                (
                    // No 2-second pause after a rejected token: the tests reject on purpose.
                    "plain login xoauth2 oauthbearer\nauth_failure_delay = 0",
                    format!(
                        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  \
                     args = {base}/dovecot-oauth2.conf.ext\n}}\n"
                    ),
                    // Nor the growing per-IP penalty (4 s, 8 s, ...) for the next attempt.
                    "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n",
                )
            } else {
                ("plain login", String::new(), "")
            };
        let zlib = if self.options.offer_compress {
            "mail_plugins = $mail_plugins zlib\nprotocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n"
        } else {
            ""
        };
        let max_connections = self
            .options
            .max_connections_per_user
            .map(|n| format!("mail_max_userip_connections = {n}\n"))
            .unwrap_or_default();
        let ssl_dh = if Path::new("/usr/share/dovecot/dh.pem").is_file() {
            "ssl_dh = </usr/share/dovecot/dh.pem\n"
        } else {
            ""
        };
        format!(
            "# Rendered by backsweep::testserver. Self-contained: includes nothing from /etc.
instance_name = backsweep-test-{plain}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/log/dovecot.log
info_log_path = {base}/log/dovecot.log
protocols = imap
listen = 127.0.0.1
{users_section}mail_uid = {muid}
mail_gid = {mgid}
mail_location = maildir:~/Maildir
{zlib}disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
ssl = yes
ssl_cert = <{base}/tls/server.crt
ssl_key = <{base}/tls/server.key
{ssl_dh}{max_connections}{capability_line}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
{oauth2_passdb}userdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
  default_fields = uid={muid} gid={mgid} home={base}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
{quarantine}}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {plain}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls}
    ssl = yes
  }}
{chroot}}}
service anvil {{
{chroot}{no_penalty}}}
",
            plain = self.plain_port,
            tls = self.tls_port,
            muid = self.ident.mail_uid,
            mgid = self.ident.mail_gid,
        )
    }

    fn log_tail(&self, extra: &str) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(30);
        let mut out = lines[start..].join("\n");
        if !extra.trim().is_empty() {
            out.push('\n');
            out.push_str(extra.trim());
        }
        out
    }

    fn launch(&mut self) -> Result<(), TestServerError> {
        let stderr_path = self.dir.path().join("log").join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).map_err(io_err("creating stderr.log"))?;
        let child = Command::new(&self.dovecot)
            .arg("-F")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(io_err(format!("starting {}", self.dovecot.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + self.options.start_timeout;
        let tls_cfg = self.tls_client_config()?;
        let mut plain_ok = false;
        let mut tls_ok = false;
        let mut last = String::from("no greeting yet");
        while !(plain_ok && tls_ok) {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    return Err(TestServerError::Start {
                        reason: format!("dovecot exited with {status}"),
                        log: self.log_tail(&stderr),
                    });
                }
            }
            if Instant::now() >= deadline {
                self.stop();
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(TestServerError::Start {
                    reason: format!(
                        "no IMAP greeting within {:?} (plain ok: {plain_ok}, tls ok: {tls_ok}; last: {last})",
                        self.options.start_timeout
                    ),
                    log: self.log_tail(&stderr),
                });
            }
            if !plain_ok {
                match greeting_plain(self.plain_port) {
                    Ok(()) => plain_ok = true,
                    Err(e) => last = format!("plain port: {e}"),
                }
            }
            if plain_ok && !tls_ok {
                match greeting_tls(self.tls_port, tls_cfg.clone()) {
                    Ok(()) => tls_ok = true,
                    Err(e) => last = format!("tls port: {e}"),
                }
            }
            if !(plain_ok && tls_ok) {
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        Ok(())
    }

    fn tls_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TestServerError> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(self.ca_file())
            .map_err(|e| TestServerError::Invalid(format!("reading ca.pem: {e}")))?;
        for c in certs {
            let c = c.map_err(|e| TestServerError::Invalid(format!("parsing ca.pem: {e}")))?;
            roots
                .add(c)
                .map_err(|e| TestServerError::Invalid(format!("adding ca.pem: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TestServerError::Invalid(format!("TLS config: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pids whose parent is `pid` (Linux `/proc`; empty elsewhere).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (comm) state ppid ..." — comm may contain spaces and parentheses.
                    let after = &stat[stat.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Sends a signal to these pids with `kill(1)`.
fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(|p| p.to_string()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn read_greeting<R: Read>(r: R) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line)?;
    if line.starts_with("* OK") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected greeting {line:?}"
        )))
    }
}

fn greeting_plain(port: u16) -> std::io::Result<()> {
    let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    read_greeting(&s)?;
    let _ = (&s).write_all(b"a LOGOUT\r\n");
    Ok(())
}

fn greeting_tls(port: u16, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<()> {
    let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let conn = rustls::ClientConnection::new(cfg, name.to_owned())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    read_greeting(&mut tls)?;
    let _ = tls.write_all(b"a LOGOUT\r\n");
    Ok(())
}

/// Makes `ca.pem`/`ca.key` (CA:TRUE) and `server.crt`/`server.key` (CA:FALSE, SAN
/// IP:127.0.0.1, DNS:localhost) with P-256 keys, using only our own openssl configs.
fn make_certs(openssl: &Path, tls: &Path) -> Result<(), TestServerError> {
    let write = |name: &str, text: &str| {
        std::fs::write(tls.join(name), text).map_err(io_err(format!("writing {name}")))
    };
    write(
        "ca.cnf",
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
         [dn]\nCN = backsweep test CA\n\
         [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )?;
    write(
        "server.cnf",
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = localhost\n\
         [v3_server]\nbasicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1,DNS:localhost\nauthorityKeyIdentifier = keyid\n\
         subjectKeyIdentifier = hash\n",
    )?;
    let ossl = |args: &[&str]| {
        let mut c = Command::new(openssl);
        c.current_dir(tls)
            .args(args)
            .env("OPENSSL_CONF", tls.join("ca.cnf"));
        run(&mut c).map(|_| ())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-config", "ca.cnf"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&[
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650", "-sha256",
    ]);
    ossl(&a)?;
    let mut a = vec!["req", "-new", "-config", "server.cnf"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&["-keyout", "server.key", "-out", "server.csr", "-sha256"]);
    ossl(&a)?;
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-out",
        "server.crt",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        "server.cnf",
        "-extensions",
        "v3_server",
    ])?;
    Ok(())
}

/// A backsweep config (YAML) with one account on 127.0.0.1 over implicit TLS
/// on `port`, trusting `ca_file` if given, with its state in `state_dir`,
/// the password from `password` (a YAML source such as `{ file: "/path" }`)
/// and `extra` account keys appended verbatim (lines indented four spaces).
/// The demo and the tests all write their configs with it.
pub fn account_config_yaml(
    account: &str,
    user: &str,
    port: u16,
    ca_file: Option<&Path>,
    state_dir: &Path,
    password: &str,
    extra: &str,
) -> String {
    let ca = ca_file.map_or(String::new(), |p| {
        format!("    ca_file: {}\n", yaml_path(p))
    });
    format!(
        "state_dir: {state}\naccounts:\n  - name: {account}\n    host: 127.0.0.1\n    port: {port}\n    \
         tls: implicit\n{ca}    username: {user}\n    password: {password}\n{extra}",
        state = yaml_path(state_dir),
    )
}

/// A path as a YAML (JSON-compatible) double-quoted string.
pub fn yaml_path(path: &Path) -> String {
    serde_json::Value::String(path.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_serves_and_stops() {
        let mut s = TestServer::start(&[("alice", "pw1")], TestServerOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.ca_file().is_file());
        let p = s
            .deliver("alice", "INBOX", b"Subject: x\r\n\r\nbody\r\n", "")
            .expect("deliver");
        assert!(p.starts_with(s.maildir("alice").join("new")));
        let p = s
            .deliver("alice", "Sent", b"Subject: y\r\n\r\nbody\r\n", "SS")
            .expect("deliver");
        assert!(p.to_string_lossy().ends_with(":2,S"));
        assert!(s.deliver("alice", "Nope", b"x", "").is_err());
        greeting_plain(s.plain_port()).expect("plain greeting");
        s.restart().expect("restart");
        greeting_plain(s.plain_port()).expect("plain greeting after restart");
        let dir = s.dir().to_path_buf();
        drop(s);
        assert!(!dir.exists());
    }

    #[test]
    fn missing_dovecot_message_says_how_to_install() {
        let e = TestServerError::MissingTool {
            tool: "dovecot",
            hint: INSTALL_DOVECOT,
        }
        .to_string();
        assert!(
            e.contains("install it with `apt-get install dovecot-imapd` (Debian/Ubuntu)"),
            "{e}"
        );
    }

    #[test]
    fn folder_names() {
        let m = Path::new("/m");
        assert_eq!(folder_dir(m, "inbox").ok(), Some(PathBuf::from("/m")));
        assert_eq!(folder_dir(m, "A/B").ok(), Some(PathBuf::from("/m/.A.B")));
        assert!(folder_dir(m, "a.b").is_err());
        assert!(folder_dir(m, "").is_err());
    }
}
