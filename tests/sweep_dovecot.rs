//! `backsweep::sweeper` end to end against a real, private Dovecot started by each test
//! (`backsweep::testserver`), through the library API: a realistic mailbox built from the
//! shared corpus plus generated messages, one or more sweeps, and a check of every message
//! in INBOX and Quarantine over IMAP afterwards (bytes, flags, place).
//!
//! These tests FAIL (never skip) when Dovecot cannot be started: install it with
//! `apt-get install dovecot-imapd`.

mod common;

use common::messages::text_message;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use backsweep::analysis::Analyzer;
use backsweep::config::{Account, Config};
use backsweep::imap::{ConnectSettings, ImapSession};
use backsweep::secrets::Secret;
use backsweep::store::Store;
use backsweep::sweeper::{sweep_account, SweepOptions, SweepReport};
use backsweep::testserver::{TestServer, TestServerOptions};

const USER: &str = "alice@example.com";
const PASS: &str = "open sesame 42";

/// What a seeded inbox message is, and so where it must be after a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not a bounce: never touched.
    Ordinary,
    /// A bounce of mail in the Sent folder: stays.
    Genuine,
    /// A bounce or auto-reply for mail never sent: quarantined.
    Backscatter,
    /// A bounce without usable evidence: kept, or quarantined with `unknown: quarantine`.
    Unknown,
}

/// One inbox message of the fixture.
#[derive(Debug, Clone)]
struct Msg {
    name: String,
    bytes: Vec<u8>,
    role: Role,
    /// Maildir flag letters it is delivered with (`S` = \Seen, `F` = \Flagged).
    flags: &'static str,
}

/// Corpus messages of the fixture: (file under tests/corpus, role, flags, the date its
/// original was sent — for genuine bounces, whose original goes into Sent).
const CORPUS_INBOX: &[(&str, Role, &str, Option<&str>)] = &[
    ("ham/rspamd/newsletter.eml", Role::Ordinary, "", None),
    (
        "ham/webklex-php-imap/messages__issue-382.eml",
        Role::Ordinary,
        "S",
        None,
    ),
    (
        "sisimai/maildir/bsd/lhost-exim-60.eml",
        Role::Backscatter,
        "",
        None,
    ),
    ("ham/rspamd/ham.eml", Role::Ordinary, "SF", None),
    (
        "sisimai/maildir/bsd/lhost-office365-11.eml",
        Role::Genuine,
        "S",
        Some("Wed, 17 Apr 2019 05:44:50 +0000"),
    ),
    (
        "sisimai/maildir/bsd/rfc3834-03.eml",
        Role::Backscatter,
        "S",
        None,
    ),
    (
        "ham/mimekit/mbox__content-length-024.eml",
        Role::Ordinary,
        "",
        None,
    ),
    (
        "sisimai/maildir/bsd/rfc3464-64.eml",
        Role::Genuine,
        "",
        Some("Tue, 21 Dec 2021 00:25:47 +0900"),
    ),
    (
        "ham/django-mailbox/message_with_rfc822_attachment.eml",
        Role::Ordinary,
        "S",
        None,
    ),
    (
        "sisimai/maildir/bsd/rhost-google-06.eml",
        Role::Backscatter,
        "",
        None,
    ),
    (
        "ham/postal-mime/bounce.eml",
        Role::Genuine,
        "F",
        Some("Mon, 10 Oct 2022 08:37:00 +0300"),
    ),
    (
        "ham/webklex-php-imap/messages__example_bounce.eml",
        Role::Backscatter,
        "S",
        None,
    ),
    (
        "ham/stalwart-mail-auth/dmarc-feedback__100.eml",
        Role::Ordinary,
        "",
        None,
    ),
    (
        "sisimai/maildir/bsd/lhost-opensmtpd-10.eml",
        Role::Backscatter,
        "",
        None,
    ),
    (
        "sisimai/maildir/bsd/lhost-postfix-63.eml",
        Role::Genuine,
        "S",
        Some("Wed, 9 Oct 2019 03:00:46 +0900"),
    ),
    (
        "ham/nodemailer-mailparser/nodemailer.eml",
        Role::Ordinary,
        "S",
        None,
    ),
    (
        "sisimai/maildir/bsd/rhost-zoho-01.eml",
        Role::Backscatter,
        "",
        None,
    ),
    (
        "sisimai/maildir/bsd/lhost-office365-12.eml",
        Role::Backscatter,
        "SF",
        None,
    ),
];

/// Reads a corpus file; a missing file fails the test.
fn corpus(file: &str) -> Vec<u8> {
    let path = file.split('/').fold(common::corpus_dir(), |p, c| p.join(c));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The labelled original Message-ID of a corpus file (the ground truth, not what the
/// analyzer finds), from the label files.
fn label_original_id(file: &str) -> String {
    static LABELS: OnceLock<HashMap<String, Option<String>>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        let mut map = HashMap::new();
        for (label_file, base) in common::LABEL_FILES {
            let path = common::corpus_dir().join(label_file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).expect("label line");
                let f = v["file"].as_str().expect("file").to_string();
                let name = if base.is_empty() {
                    f
                } else {
                    format!("{base}/{f}")
                };
                map.insert(name, v["original_message_id"].as_str().map(str::to_string));
            }
        }
        map
    });
    labels
        .get(file)
        .cloned()
        .flatten()
        .unwrap_or_else(|| panic!("{file} has no labelled original Message-ID"))
}

/// A generated DSN to the test user (see [`common::messages::dsn`]).
fn dsn(n: u32, original_id: &str, original_from: &str, original_date: &str) -> Vec<u8> {
    common::messages::dsn(USER, n, original_id, original_from, original_date)
}

/// A bounce that says nothing about the original: no Message-ID, no sender.
fn bare_bounce(n: u32) -> Vec<u8> {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx{n}.example.net>\r\n\
         To: {USER}\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: Tue, 03 Mar 2026 11:{n:02}:00 +0000\r\n\
         Message-ID: <bare-{n}@mx{n}.example.net>\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is the mail system at host mx{n}.example.net.\r\n\
         \r\n\
         I am sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients.\r\n\
         \r\n\
         <nobody{n}@example.net>: host mx{n}.example.net said: 550 5.1.1 User unknown\r\n"
    )
    .into_bytes()
}

/// An ordinary message (its body talks about a failed delivery, but it is no bounce).
fn ordinary(n: u32) -> Vec<u8> {
    text_message(
        &format!("Friend {n} <friend{n}@example.net>"),
        USER,
        &format!("Re: the parcel ({n})"),
        "Wed, 04 Mar 2026 08:00:00 +0000",
        &format!("ordinary-{n}@example.net"),
        "The courier's tracking page showed a delivery failure yesterday (nobody at\r\n\
         home), so they will try again on Friday.",
    )
}

/// The inbox of the fixture (corpus files plus generated messages), in UID order, and
/// the Sent folder: everyday mail since June 2017 and the originals of the genuine bounces.
fn fixture() -> (Vec<Msg>, Vec<Vec<u8>>) {
    let mut inbox: Vec<Msg> = CORPUS_INBOX
        .iter()
        .map(|(file, role, flags, _)| Msg {
            name: file.to_string(),
            bytes: corpus(file),
            role: *role,
            flags,
        })
        .collect();
    let own = "Alice <alice@example.com>";
    let generated = [
        (
            "generated genuine DSN",
            dsn(
                1,
                "sent-1@mail.example.com",
                own,
                "Mon, 02 Mar 2026 09:00:00 +0000",
            ),
            Role::Genuine,
            "",
        ),
        (
            "generated backscatter DSN",
            dsn(
                2,
                "forged-2@example.com",
                own,
                "Mon, 02 Mar 2026 09:30:00 +0000",
            ),
            Role::Backscatter,
            "S",
        ),
        (
            "generated DSN of a 2015 original (before the sent index)",
            dsn(
                3,
                "ancient-3@example.com",
                own,
                "Sat, 14 Feb 2015 09:00:00 +0000",
            ),
            Role::Unknown,
            "",
        ),
        (
            // No original named, but the index covers the days before it
            // and holds nothing to the failed recipient (the recipient window).
            "generated bounce without an original, to someone never written to",
            bare_bounce(4),
            Role::Backscatter,
            "S",
        ),
        ("generated ordinary 1", ordinary(1), Role::Ordinary, ""),
        ("generated ordinary 2", ordinary(2), Role::Ordinary, "S"),
    ];
    inbox.extend(generated.into_iter().map(|(name, bytes, role, flags)| Msg {
        name: name.to_string(),
        bytes,
        role,
        flags,
    }));

    let mut sent = Vec::new();
    for (i, date) in [
        "Thu, 01 Jun 2017 09:00:00 +0000",
        "Mon, 05 Mar 2018 10:00:00 +0000",
        "Tue, 06 Nov 2018 11:00:00 +0000",
        "Wed, 15 Jan 2020 12:00:00 +0000",
        "Thu, 10 Jun 2021 13:00:00 +0000",
        "Fri, 11 Nov 2022 14:00:00 +0000",
        "Mon, 17 Jul 2023 15:00:00 +0000",
        "Tue, 14 May 2024 16:00:00 +0000",
        "Wed, 12 Feb 2025 17:00:00 +0000",
        "Thu, 08 Jan 2026 18:00:00 +0000",
    ]
    .iter()
    .enumerate()
    {
        sent.push(text_message(
            own,
            "Bob <bob@example.net>",
            &format!("news {i}"),
            date,
            &format!("everyday-{i}@mail.example.com"),
            "How are you?",
        ));
    }
    for (file, _, _, date) in CORPUS_INBOX.iter().filter(|c| c.1 == Role::Genuine) {
        let id = label_original_id(file);
        let date = date.unwrap_or_else(|| panic!("{file}: genuine without a date"));
        sent.push(text_message(
            own,
            "someone@example.org",
            "original",
            date,
            &id,
            "Hello.",
        ));
    }
    sent.push(text_message(
        own,
        "rcpt1@example.net",
        "message 1",
        "Mon, 02 Mar 2026 09:00:00 +0000",
        "sent-1@mail.example.com",
        "Hello.",
    ));
    (inbox, sent)
}

/// A message as fetched over IMAP.
#[derive(Debug, Clone)]
struct Fetched {
    uid: u32,
    /// Flags without `\Recent` (which any SELECT changes), sorted.
    flags: Vec<String>,
    body: Vec<u8>,
}

impl Fetched {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    /// The flags the sweep must not change (it may add its `$Backscatter` keyword).
    fn user_flags(&self) -> Vec<String> {
        self.flags
            .iter()
            .filter(|f| !f.eq_ignore_ascii_case("$Backscatter"))
            .cloned()
            .collect()
    }
}

fn strip_cr(b: &[u8]) -> Vec<u8> {
    b.iter().copied().filter(|&c| c != b'\r').collect()
}

/// A private Dovecot with the fixture, a state directory and an account for it.
struct Harness {
    server: TestServer,
    dir: tempfile::TempDir,
    account: Account,
    store: Store,
    analyzer: Analyzer,
    inbox: Vec<Msg>,
    sent: Vec<Vec<u8>>,
}

impl Harness {
    /// Starts Dovecot and seeds the fixture.
    fn start(options: TestServerOptions) -> Harness {
        let server = TestServer::start(&[(USER, PASS)], options)
            .unwrap_or_else(|e| panic!("cannot start the private Dovecot: {e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let pw = dir.path().join("password");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pw)
                .expect("password file");
            f.write_all(PASS.as_bytes()).expect("write password");
        }
        let (inbox, sent) = fixture();
        for m in &sent {
            server
                .deliver(USER, "Sent", m, "S")
                .expect("deliver to Sent");
        }
        for m in &inbox {
            server
                .deliver(USER, "INBOX", &m.bytes, m.flags)
                .unwrap_or_else(|e| panic!("deliver {}: {e}", m.name));
        }
        let (account, store) = account_and_store(&server, dir.path(), "state", "keep");
        Harness {
            server,
            dir,
            account,
            store,
            analyzer: Analyzer::builtin().expect("built-in rules"),
            inbox,
            sent,
        }
    }

    /// Switches to a fresh state directory with `unknown: <unknown>`.
    fn fresh_state(&mut self, name: &str, unknown: &str) {
        let (account, store) = account_and_store(&self.server, self.dir.path(), name, unknown);
        self.account = account;
        self.store = store;
    }

    async fn sweep_with(&mut self, dry_run: bool) -> SweepReport {
        self.sweep_options(SweepOptions {
            dry_run,
            ..SweepOptions::default()
        })
        .await
    }

    async fn sweep_options(&mut self, options: SweepOptions) -> SweepReport {
        sweep_account(&self.account, &mut self.store, &self.analyzer, options)
            .await
            .unwrap_or_else(|e| panic!("sweep failed: {e}\n{}", self.log()))
    }

    /// The lines of Dovecot's log from byte `offset` on that contain `needle`. Dovecot's
    /// log process writes a moment after the event, so this waits for `want` of them,
    /// then a little longer for any more.
    async fn log_lines_since(&self, offset: usize, needle: &str, want: usize) -> Vec<String> {
        let lines = || -> Vec<String> {
            self.log()
                .get(offset..)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_string)
                .collect()
        };
        // Generous: it returns as soon as the lines are there.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while lines().len() < want && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        lines()
    }

    async fn sweep(&mut self) -> SweepReport {
        self.sweep_with(false).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.server.log_file()).unwrap_or_default()
    }

    async fn session(&self) -> ImapSession {
        let mut s = ConnectSettings::new(
            self.server.host(),
            self.server.tls_port(),
            backsweep::config::TlsMode::Implicit,
            USER,
        );
        s.ca_file = Some(self.server.ca_file());
        s.timeout = Duration::from_secs(20);
        // A server allowing one connection per user may still count the last
        // session for a moment after its logout: a refusal is retried.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match ImapSession::connect(&s, &Secret::new(PASS)).await {
                Ok(session) => return session,
                Err(e)
                    if e.to_string().contains("Maximum number of connections")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("login: {e}"),
            }
        }
    }

    /// [`assert_swept`] on the inbox and quarantine as they are now.
    async fn assert_swept_now(&self, before: &[Fetched], unknown_moves: bool) {
        let inbox = self.folder("INBOX").await;
        let quarantine = self.folder("Quarantine").await;
        assert_swept(self, before, &inbox, &quarantine, unknown_moves);
    }

    /// Every message of `folder`, read-only; empty if the folder does not exist.
    async fn folder(&self, folder: &str) -> Vec<Fetched> {
        let mut s = self.session().await;
        let out = fetch_folder(&mut s, folder).await;
        let _ = s.logout().await;
        out
    }

    async fn folder_exists(&self, folder: &str) -> bool {
        let mut s = self.session().await;
        let names: Vec<String> = s
            .list_folders()
            .await
            .expect("LIST")
            .into_iter()
            .map(|f| f.name)
            .collect();
        let _ = s.logout().await;
        names.iter().any(|n| n == folder)
    }

    /// The fixture message with these bytes.
    fn msg(&self, body: &[u8]) -> &Msg {
        let want = strip_cr(body);
        self.inbox
            .iter()
            .find(|m| strip_cr(&m.bytes) == want)
            .unwrap_or_else(|| {
                panic!(
                    "an unknown message: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )
            })
    }

    fn count(&self, role: Role) -> usize {
        self.inbox.iter().filter(|m| m.role == role).count()
    }

    /// Delivers backscatter that arrives after the first sweep: a fixture message
    /// with `X-Arrived: <tag>` in front (new content each time). Returns its bytes.
    fn deliver_late_backscatter(&self, tag: &str) -> Vec<u8> {
        let template = &self
            .inbox
            .iter()
            .find(|m| m.role == Role::Backscatter)
            .expect("a backscatter message")
            .bytes;
        let mut late = format!("X-Arrived: {tag}\r\n").into_bytes();
        late.extend_from_slice(template);
        self.server
            .deliver(USER, "INBOX", &late, "")
            .expect("deliver");
        late
    }

    /// Records what a sweep records just before moving the message with
    /// `X-Arrived: <tag>` (in the folder selected in `s`): a pending move, with
    /// quarantine's position `mark` for a COPY. Returns the message's UID.
    async fn record_move_intent(
        &self,
        s: &mut ImapSession,
        tag: &str,
        mark: Option<(u32, u32)>,
    ) -> u32 {
        let uid = uid_of_late(s, tag).await;
        let data = s
            .uid_fetch_prefix(uid, 4096)
            .await
            .expect("FETCH")
            .expect("the new message");
        let header = format!("X-Arrived: {tag}\r\n");
        assert!(
            data.starts_with(header.as_bytes()),
            "the message just delivered"
        );
        self.store
            .quarantine_intent(
                "alice",
                None,
                &backsweep::sweeper::content_hash(&data),
                uid,
                mark,
            )
            .expect("intent");
        uid
    }
}

/// The UID of the message with `X-Arrived: <tag>` in the folder selected in `s`.
async fn uid_of_late(s: &mut ImapSession, tag: &str) -> u32 {
    *s.uid_search(&format!("HEADER X-Arrived {tag}"))
        .await
        .expect("SEARCH")
        .last()
        .expect("the message")
}

fn account_and_store(
    server: &TestServer,
    dir: &Path,
    state: &str,
    unknown: &str,
) -> (Account, Store) {
    let yaml = server.config_yaml(
        "alice",
        USER,
        &dir.join(state),
        &format!(
            "{{ file: {} }}",
            backsweep::testserver::yaml_path(&dir.join("password"))
        ),
        true,
        &format!("    unknown: {unknown}\n    timeout: 20\n"),
    );
    let config = Config::from_yaml(&yaml, &dir.join("config.yaml"))
        .unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"));
    let store = Store::open(&config.state_dir).expect("state store");
    (config.accounts[0].clone(), store)
}

async fn fetch_folder(s: &mut ImapSession, folder: &str) -> Vec<Fetched> {
    let status = match s.examine(folder).await {
        Ok(st) => st,
        Err(_) if !s.is_broken() => return Vec::new(),
        Err(e) => panic!("EXAMINE {folder}: {e}"),
    };
    if status.exists == 0 {
        return Vec::new();
    }
    let heads = s
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .expect("fetch flags");
    let uids: Vec<u32> = heads.iter().map(|h| h.uid).collect();
    let bodies = s
        .uid_fetch_prefixes(&uids, 64 * 1024 * 1024)
        .await
        .expect("fetch bodies");
    let mut out: Vec<Fetched> = heads
        .iter()
        .map(|h| {
            let mut flags: Vec<String> = h
                .flags
                .iter()
                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                .cloned()
                .collect();
            flags.sort();
            Fetched {
                uid: h.uid,
                flags,
                body: bodies
                    .iter()
                    .find(|b| b.uid == h.uid)
                    .map(|b| b.data.clone())
                    .unwrap_or_else(|| panic!("no body for UID {}", h.uid)),
            }
        })
        .collect();
    out.sort_by_key(|f| f.uid);
    out
}

/// Checks the mailbox after a sweep against the state before it: every message exactly
/// once, in the right folder for its role, same bytes, same flags (`$Backscatter` aside),
/// nothing flagged `\Deleted`.
fn assert_swept(
    h: &Harness,
    before: &[Fetched],
    inbox: &[Fetched],
    quarantine: &[Fetched],
    unknown_moves: bool,
) {
    let mut remaining: Vec<(&Fetched, &str)> = inbox
        .iter()
        .map(|f| (f, "INBOX"))
        .chain(quarantine.iter().map(|f| (f, "Quarantine")))
        .collect();
    for b in before {
        let m = h.msg(&b.body);
        let found: Vec<usize> = remaining
            .iter()
            .enumerate()
            .filter(|(_, (a, _))| a.body == b.body)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: found {} times after the sweep",
            m.name,
            found.len()
        );
        let (after, place) = remaining.remove(found[0]);
        let want = match m.role {
            Role::Backscatter => "Quarantine",
            Role::Unknown if unknown_moves => "Quarantine",
            _ => "INBOX",
        };
        assert_eq!(
            place, want,
            "{} ({:?}) is in the wrong folder",
            m.name, m.role
        );
        assert_eq!(
            after.user_flags(),
            b.user_flags(),
            "{}: flags changed",
            m.name
        );
        assert_eq!(
            after.has("\\Seen"),
            m.flags.contains('S'),
            "{}: \\Seen",
            m.name
        );
        assert!(!after.has("\\Deleted"), "{}: flagged \\Deleted", m.name);
    }
    let extra: Vec<String> = remaining
        .iter()
        .map(|(f, p)| format!("{p} UID {}: {}", f.uid, h.msg(&f.body).name))
        .collect();
    assert!(
        extra.is_empty(),
        "messages that were not there before: {extra:?}"
    );
}

/// The report entry for the message `name` (by its UID in `before`).
fn action_of<'a>(
    h: &Harness,
    before: &[Fetched],
    report: &'a SweepReport,
    role: Role,
) -> Vec<(&'a str, String)> {
    report
        .messages
        .iter()
        .filter_map(|m| {
            let b = before.iter().find(|b| b.uid == m.uid)?;
            let msg = h.msg(&b.body);
            (msg.role == role).then(|| (m.action.as_str(), msg.name.clone()))
        })
        .collect()
}

#[tokio::test]
async fn sweep_moves_backscatter_only_and_changes_nothing_else() {
    let mut h = Harness::start(TestServerOptions::default());
    let before = h.folder("INBOX").await;
    assert_eq!(before.len(), h.inbox.len());
    let sent_before = h.folder("Sent").await;

    let r = h.sweep().await;
    assert_eq!(r.sent_indexed as usize, h.sent.len(), "{r:#?}");
    assert_eq!(r.examined as usize, h.inbox.len());
    assert_eq!(r.quarantined as usize, h.count(Role::Backscatter), "{r:#?}");
    assert_eq!(r.move_method.as_deref(), Some("move"));
    for (action, name) in action_of(&h, &before, &r, Role::Backscatter) {
        assert_eq!(action, "moved", "{name}");
    }
    for role in [Role::Genuine, Role::Unknown, Role::Ordinary] {
        for (action, name) in action_of(&h, &before, &r, role) {
            assert_eq!(action, "kept", "{name} ({role:?})");
        }
    }
    // Every notice was looked at closely; most ordinary mail was not even downloaded.
    let notices = h.inbox.len() - h.count(Role::Ordinary);
    assert!(r.candidates as usize >= notices, "{r:#?}");
    assert!((r.candidates as usize) < h.inbox.len(), "{r:#?}");

    let inbox = h.folder("INBOX").await;
    let quarantine = h.folder("Quarantine").await;
    assert_swept(&h, &before, &inbox, &quarantine, false);
    for q in &quarantine {
        assert!(q.has("$Backscatter"), "{}", h.msg(&q.body).name);
    }
    let sent_after = h.folder("Sent").await;
    assert_eq!(
        sent_before
            .iter()
            .map(|f| (&f.flags, &f.body))
            .collect::<Vec<_>>(),
        sent_after
            .iter()
            .map(|f| (&f.flags, &f.body))
            .collect::<Vec<_>>(),
        "the Sent folder changed"
    );

    // A second sweep has nothing new: it moves nothing and downloads (almost) nothing.
    let r2 = h.sweep().await;
    assert_eq!(
        (r2.examined, r2.candidates, r2.quarantined, r2.sent_indexed),
        (0, 0, 0, 0),
        "{r2:#?}"
    );
    assert!(r2.bytes_downloaded < 1024, "{r2:#?}");
    assert_eq!(h.folder("INBOX").await.len(), inbox.len());
    assert_eq!(h.folder("Quarantine").await.len(), quarantine.len());

    // Mail that arrives later is judged by the next sweep, and only it.
    let late_backscatter = dsn(
        9,
        "forged-9@example.com",
        USER,
        "Tue, 03 Mar 2026 08:00:00 +0000",
    );
    let late_ordinary = ordinary(9);
    h.server
        .deliver(USER, "INBOX", &late_backscatter, "")
        .expect("deliver");
    h.server
        .deliver(USER, "INBOX", &late_ordinary, "S")
        .expect("deliver");
    let r3 = h.sweep().await;
    assert_eq!(r3.examined, 2, "{r3:#?}");
    assert_eq!(r3.quarantined, 1, "{r3:#?}");
    let q3 = h.folder("Quarantine").await;
    assert_eq!(q3.len(), quarantine.len() + 1);
    assert!(q3
        .iter()
        .any(|f| strip_cr(&f.body) == strip_cr(&late_backscatter)));
    let i3 = h.folder("INBOX").await;
    assert!(i3
        .iter()
        .any(|f| strip_cr(&f.body) == strip_cr(&late_ordinary) && f.has("\\Seen")));
    assert_eq!(i3.len(), inbox.len() + 1);
}

#[tokio::test]
async fn uidvalidity_change_rejudges_without_duplicates() {
    let mut h = Harness::start(TestServerOptions::default());
    let before = h.folder("INBOX").await;
    let r = h.sweep().await;
    assert_eq!(r.quarantined as usize, h.count(Role::Backscatter));
    let inbox = h.folder("INBOX").await;
    let quarantine = h.folder("Quarantine").await;

    for folder in ["INBOX", "Sent"] {
        h.server
            .reset_uidvalidity(USER, folder)
            .unwrap_or_else(|e| panic!("reset {folder}: {e}"));
    }
    let inbox_reset = h.folder("INBOX").await;
    assert_eq!(inbox_reset.len(), inbox.len());

    let r2 = h.sweep().await;
    // The whole inbox is looked at again, the Sent folder indexed again — once.
    assert_eq!(r2.examined as usize, inbox.len(), "{r2:#?}");
    assert_eq!(r2.sent_indexed as usize, h.sent.len(), "{r2:#?}");
    assert_eq!(r2.sent_total as usize, h.sent.len(), "{r2:#?}");
    assert_eq!(r2.quarantined, 0, "{r2:#?}");

    let inbox2 = h.folder("INBOX").await;
    let quarantine2 = h.folder("Quarantine").await;
    assert_swept(&h, &before, &inbox2, &quarantine2, false);
    let bodies = |v: &[Fetched]| {
        let mut b: Vec<Vec<u8>> = v.iter().map(|f| f.body.clone()).collect();
        b.sort();
        b
    };
    assert_eq!(
        bodies(&quarantine2),
        bodies(&quarantine),
        "quarantine changed"
    );
    assert_eq!(bodies(&inbox2), bodies(&inbox), "inbox changed");

    let r3 = h.sweep().await;
    assert_eq!((r3.examined, r3.quarantined), (0, 0), "{r3:#?}");
}

#[tokio::test]
async fn a_message_dragged_back_from_quarantine_stays() {
    let mut h = Harness::start(TestServerOptions::default());
    h.sweep().await;
    let quarantine = h.folder("Quarantine").await;
    assert!(quarantine.len() >= 2);
    let (a, b) = (&quarantine[0], &quarantine[1]);

    // A mail client drags two messages back; for one it also drops our keyword.
    let mut s = h.session().await;
    s.select("Quarantine").await.expect("SELECT Quarantine");
    s.run_command(&format!("UID STORE {} -FLAGS.SILENT ($Backscatter)", b.uid))
        .await
        .expect("remove the keyword");
    s.move_uids(&[a.uid, b.uid], "INBOX")
        .await
        .expect("drag back");
    let _ = s.logout().await;

    let back = |inbox: &[Fetched]| {
        [a, b]
            .iter()
            .filter(|q| inbox.iter().any(|f| f.body == q.body))
            .count()
    };
    let r = h.sweep().await;
    assert_eq!(r.examined, 2, "{r:#?}");
    assert_eq!(r.quarantined, 0, "{r:#?}");
    let released: Vec<&str> = r.messages.iter().map(|m| m.action.as_str()).collect();
    assert_eq!(released, ["released", "released"], "{r:#?}");
    assert!(r
        .messages
        .iter()
        .all(|m| m.reasons[0].rule == "verdict.released-by-user"));
    let inbox = h.folder("INBOX").await;
    assert_eq!(back(&inbox), 2, "the dragged messages were moved again");
    assert_eq!(h.folder("Quarantine").await.len(), quarantine.len() - 2);

    // Not on the next sweep either, nor when the whole inbox is judged again.
    h.sweep().await;
    h.server
        .reset_uidvalidity(USER, "INBOX")
        .expect("reset INBOX");
    let r = h.sweep().await;
    assert_eq!(r.quarantined, 0, "{r:#?}");
    assert_eq!(back(&h.folder("INBOX").await), 2);
    assert_eq!(h.folder("Quarantine").await.len(), quarantine.len() - 2);
}

#[tokio::test]
async fn without_move_the_copy_and_uid_expunge_fallback_gives_the_same_result() {
    let mut h = Harness::start(TestServerOptions {
        hide_move: true,
        ..TestServerOptions::default()
    });
    let before = h.folder("INBOX").await;
    let r = h.sweep().await;
    assert_eq!(r.move_method.as_deref(), Some("copy+expunge"), "{r:#?}");
    assert_eq!(r.quarantined as usize, h.count(Role::Backscatter));
    let inbox = h.folder("INBOX").await;
    let quarantine = h.folder("Quarantine").await;
    assert_swept(&h, &before, &inbox, &quarantine, false);

    let r2 = h.sweep().await;
    assert_eq!((r2.examined, r2.quarantined), (0, 0), "{r2:#?}");
    assert_eq!(h.folder("Quarantine").await.len(), quarantine.len());
}

/// A crash between the COPY and the removal from the inbox leaves a pending move whose
/// copy is already in quarantine. The next sweep must remove the inbox message without
/// copying it again, and must never take a look-alike (same Message-ID, other bytes)
/// for the copy of a message whose own copy never happened: that message is copied.
#[tokio::test]
async fn an_interrupted_copy_is_finished_once_and_never_confused_with_a_look_alike() {
    let mut h = Harness::start(TestServerOptions {
        hide_move: true,
        ..TestServerOptions::default()
    });
    let before = h.folder("INBOX").await;
    let backscatter: Vec<&Fetched> = before
        .iter()
        .filter(|f| h.msg(&f.body).role == Role::Backscatter)
        .collect();
    assert!(
        backscatter.len() >= 2,
        "the fixture needs two backscatter messages"
    );
    let (copied, lookalike_of) = (backscatter[0].clone(), backscatter[1].clone());
    let mut s = h.session().await;
    s.create_folder_if_missing("Quarantine")
        .await
        .expect("CREATE");
    let mark = s.status_uidnext("Quarantine").await.expect("STATUS");
    let hash = |f: &Fetched| backsweep::sweeper::content_hash(&f.body);
    // Both moves were recorded as intents; only the first one's COPY happened.
    for f in [&copied, &lookalike_of] {
        h.store
            .quarantine_intent("alice", None, &hash(f), f.uid, Some(mark))
            .expect("intent");
    }
    s.select("INBOX").await.expect("SELECT");
    s.run_command(&format!("UID COPY {} Quarantine", copied.uid))
        .await
        .expect("COPY");
    // Meanwhile a message with the second one's Message-ID but other bytes arrived.
    let mut lookalike = lookalike_of.body.clone();
    lookalike.splice(0..0, b"X-Look-Alike: yes\r\n".iter().copied());
    h.server
        .deliver(USER, "Quarantine", &lookalike, "")
        .expect("deliver the look-alike");
    let _ = s.logout().await;

    let r = h.sweep().await;
    let inbox = h.folder("INBOX").await;
    let quarantine = h.folder("Quarantine").await;
    let count = |folder: &[Fetched], body: &[u8]| folder.iter().filter(|f| f.body == body).count();
    for f in [&copied, &lookalike_of] {
        assert_eq!(
            count(&inbox, &f.body),
            0,
            "still in the inbox: {}",
            h.msg(&f.body).name
        );
        assert_eq!(
            count(&quarantine, &f.body),
            1,
            "copies in quarantine of {}: {r:#?}",
            h.msg(&f.body).name
        );
    }
    assert_eq!(
        count(&quarantine, &lookalike),
        1,
        "the look-alike stays as it was"
    );
    // Every other message as after a normal sweep.
    let others: Vec<Fetched> = quarantine
        .iter()
        .filter(|f| f.body != lookalike)
        .cloned()
        .collect();
    assert_swept(&h, &before, &inbox, &others, false);
    // The finished move is recorded: the next sweep sees nothing new.
    let r2 = h.sweep().await;
    assert_eq!((r2.examined, r2.quarantined), (0, 0), "{r2:#?}");
}

/// Without MOVE, a crash after `\Deleted` was set but before UID EXPUNGE leaves a
/// flagged message the triage skips: the next sweep expunges exactly it, but only when
/// its own copy is in quarantine. A message the user flagged `\Deleted` whose copy was
/// never made is left alone.
#[tokio::test]
async fn a_copy_interrupted_before_its_expunge_is_finished_and_others_deleted_mail_is_left() {
    let mut h = Harness::start(TestServerOptions {
        hide_move: true,
        ..TestServerOptions::default()
    });
    h.sweep().await;
    let (copied, uncopied) = (
        h.deliver_late_backscatter("one"),
        h.deliver_late_backscatter("two"),
    );
    let mut s = h.session().await;
    let mark = s.status_uidnext("Quarantine").await.expect("STATUS");
    s.select("INBOX").await.expect("SELECT");
    for tag in ["one", "two"] {
        let uid = h.record_move_intent(&mut s, tag, Some(mark)).await;
        if tag == "one" {
            s.run_command(&format!("UID COPY {uid} Quarantine"))
                .await
                .expect("COPY");
        }
        s.run_command(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
            .await
            .expect("STORE");
    }
    let _ = s.logout().await;
    h.sweep().await;
    let inbox = h.folder("INBOX").await;
    let quarantine = h.folder("Quarantine").await;
    let same = |f: &Fetched, m: &[u8]| strip_cr(&f.body) == strip_cr(m);
    let count = |folder: &[Fetched], m: &[u8]| folder.iter().filter(|f| same(f, m)).count();
    assert_eq!(
        (count(&inbox, &copied), count(&quarantine, &copied)),
        (0, 1)
    );
    assert_eq!(
        (count(&inbox, &uncopied), count(&quarantine, &uncopied)),
        (1, 0)
    );
    assert!(inbox
        .iter()
        .find(|f| same(f, &uncopied))
        .is_some_and(|f| f.has("\\Deleted")));
}

/// A MOVE the server carried out but whose answer was lost leaves a pending record; the
/// next sweep settles it, so that the message, once dragged back by the user, stays.
#[tokio::test]
async fn a_move_whose_answer_was_lost_still_counts_when_the_user_takes_it_back() {
    let mut h = Harness::start(TestServerOptions::default());
    h.sweep().await;
    h.deliver_late_backscatter("later");
    let mut s = h.session().await;
    s.select("INBOX").await.expect("SELECT");
    let uid = h.record_move_intent(&mut s, "later", None).await;
    s.run_command(&format!("UID STORE {uid} +FLAGS.SILENT ($Backscatter)"))
        .await
        .expect("STORE");
    s.run_command(&format!("UID MOVE {uid} Quarantine"))
        .await
        .expect("MOVE");
    // The sweep after the crash finds the message gone and settles the record.
    h.sweep().await;
    s.select("Quarantine").await.expect("SELECT");
    let moved = uid_of_late(&mut s, "later").await;
    s.run_command(&format!("UID MOVE {moved} INBOX"))
        .await
        .expect("drag back");
    let _ = s.logout().await;
    let r = h.sweep().await;
    assert_eq!(r.quarantined, 0, "moved again: {r:#?}");
    let inbox = h.folder("INBOX").await;
    assert!(
        inbox
            .iter()
            .any(|f| f.body.starts_with(b"X-Arrived: later")),
        "the message taken back is not in the inbox"
    );
}

/// The state after a sweep without MOVE and UIDPLUS: nothing expunged (the INBOX still
/// holds every message, backscatter flagged `\Deleted`), exactly one copy of each
/// backscatter message in quarantine, `\Seen` unchanged everywhere.
fn check_copied_and_flagged(
    h: &Harness,
    before: &[Fetched],
    inbox: &[Fetched],
    quarantine: &[Fetched],
) {
    assert_eq!(inbox.len(), before.len());
    for (b, a) in before.iter().zip(inbox) {
        let m = h.msg(&b.body);
        assert_eq!(a.body, b.body, "{}", m.name);
        assert_eq!(
            a.has("\\Deleted"),
            m.role == Role::Backscatter,
            "{}",
            m.name
        );
        assert_eq!(a.has("\\Seen"), b.has("\\Seen"), "{}: \\Seen", m.name);
    }
    assert_eq!(quarantine.len(), h.count(Role::Backscatter));
    for q in quarantine {
        let m = h.msg(&q.body);
        assert_eq!(m.role, Role::Backscatter, "{}", m.name);
        assert_eq!(q.has("\\Seen"), m.flags.contains('S'), "{}: \\Seen", m.name);
        let n = quarantine.iter().filter(|x| x.body == q.body).count();
        assert_eq!(n, 1, "{}: {n} copies", m.name);
    }
}

#[tokio::test]
async fn without_move_and_uidplus_messages_are_copied_and_flagged_once() {
    let mut h = Harness::start(TestServerOptions {
        hide_move: true,
        hide_uidplus: true,
        ..TestServerOptions::default()
    });
    let before = h.folder("INBOX").await;
    let r = h.sweep().await;
    assert_eq!(r.move_method.as_deref(), Some("copy+flag"), "{r:#?}");
    assert_eq!(r.quarantined as usize, h.count(Role::Backscatter));

    check_copied_and_flagged(
        &h,
        &before,
        &h.folder("INBOX").await,
        &h.folder("Quarantine").await,
    );

    let r2 = h.sweep().await;
    assert_eq!((r2.examined, r2.quarantined), (0, 0), "{r2:#?}");
    check_copied_and_flagged(
        &h,
        &before,
        &h.folder("INBOX").await,
        &h.folder("Quarantine").await,
    );

    // Even when the inbox is judged again from scratch, the flagged originals are not
    // copied a second time.
    h.server
        .reset_uidvalidity(USER, "INBOX")
        .expect("reset INBOX");
    let r3 = h.sweep().await;
    assert_eq!(r3.quarantined, 0, "{r3:#?}");
    check_copied_and_flagged(
        &h,
        &before,
        &h.folder("INBOX").await,
        &h.folder("Quarantine").await,
    );
}

#[tokio::test]
async fn dry_run_changes_nothing_and_a_real_sweep_afterwards_still_moves() {
    let mut h = Harness::start(TestServerOptions {
        with_quarantine: false,
        ..TestServerOptions::default()
    });
    let before = h.folder("INBOX").await;
    let dry = h.sweep_with(true).await;
    assert!(dry.dry_run);
    assert_eq!(dry.examined as usize, h.inbox.len());
    assert!(dry
        .messages
        .iter()
        .all(|m| m.action != "moved" && m.destination.is_none()));

    // Nothing changed: same UIDs, flags and bytes; no quarantine folder; no watermark.
    let after = h.folder("INBOX").await;
    let view = |v: &[Fetched]| {
        v.iter()
            .map(|f| (f.uid, f.flags.clone(), f.body.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&after), view(&before), "a dry run changed the INBOX");
    assert!(
        !h.folder_exists("Quarantine").await,
        "a dry run created the quarantine folder"
    );
    for folder in ["INBOX", "Sent"] {
        assert!(
            h.store.watermark("alice", folder).expect("store").is_none(),
            "a dry run advanced the {folder} watermark"
        );
    }

    // So a real sweep afterwards still does the whole job.
    let real = h.sweep().await;
    assert_eq!(real.examined as usize, h.inbox.len(), "{real:#?}");
    assert_eq!(
        real.quarantined as usize,
        h.count(Role::Backscatter),
        "{real:#?}"
    );
    h.assert_swept_now(&before, false).await;

    // What the dry run said it would do must be what the real sweep did.
    let mut wrong = Vec::new();
    for role in [
        Role::Backscatter,
        Role::Genuine,
        Role::Unknown,
        Role::Ordinary,
    ] {
        let want = if role == Role::Backscatter {
            "would-move"
        } else {
            "kept"
        };
        for (action, name) in action_of(&h, &before, &dry, role) {
            if action != want {
                wrong.push(format!("{name} ({role:?}): {action}, expected {want}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the dry run (on a fresh state) predicted other actions than the real sweep took:\n  {}",
        wrong.join("\n  ")
    );
    assert_eq!(
        dry.quarantined as usize,
        h.count(Role::Backscatter),
        "{dry:#?}"
    );
}

/// A second connection reads batches' header fields from the newest end while the first
/// reads from the oldest, judges and moves, and then candidates' first bytes ahead of the
/// judging: the sweep does exactly what one connection predicts (a dry run with
/// `connections: 1` on a fresh state), and the second connection really read both.
#[tokio::test]
async fn a_second_connection_reads_ahead_and_changes_no_verdict() {
    let mut h = Harness::start(TestServerOptions::default());
    let before = h.folder("INBOX").await;
    assert_eq!(h.account.connections, 2, "two connections are the default");
    // Four batches, read from both ends: the second connection reads the newest (and more,
    // as timing decides). The last batch judged is always one during which it has no
    // header fields left to read, so it reads that batch's candidates ahead, one at a time;
    // every batch of six here holds at least two notices.
    let batch = h.inbox.len().div_ceil(4);
    assert_eq!(
        batch, 6,
        "the fixture changed: check that each batch holds two notices"
    );
    let small = SweepOptions {
        batch,
        judge_batch: 1,
        ..SweepOptions::default()
    };
    h.fresh_state("one-connection", "keep");
    h.account.connections = 1;
    let offset = h.log().len();
    let one = h
        .sweep_options(SweepOptions {
            dry_run: true,
            ..small
        })
        .await;
    let logins = h.log_lines_since(offset, "Login: user=<", 1).await;
    assert_eq!(logins.len(), 1, "connections: 1 logged in {logins:#?}");

    h.fresh_state("two-connections", "keep");
    h.account.connections = 2;
    // Dovecot's summary of each session: both read header fields and message bodies (the
    // second connection does nothing else, so it did both kinds of work). How much the
    // second one reads is timing: on a busy machine a sweep may end before it has logged
    // in, which is correct but shows nothing. So dry runs (which change nothing, not even
    // the watermark) are repeated until it did its part, at most five times.
    let count = |line: &str, key: &str| -> u64 {
        line.split(' ')
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut both_worked = false;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let offset = h.log().len();
        h.sweep_options(SweepOptions {
            dry_run: true,
            ..small
        })
        .await;
        // A second connection still logging in when the sweep ends is let go
        // (see `crate::prefetch`): then it has no session to show.
        let logins = h.log_lines_since(offset, "Login: user=<", 2).await;
        assert!(logins.len() <= 2, "more than two connections: {logins:#?}");
        sessions = h.log_lines_since(offset, "Logged out", 2).await;
        both_worked = sessions.len() == 2
            && sessions
                .iter()
                .all(|s| count(s, "hdr_count=") > 0 && count(s, "body_count=") > 0);
        if both_worked {
            break;
        }
    }
    assert!(
        both_worked,
        "in five sweeps, a connection never read both header fields and messages; the last: {sessions:#?}"
    );
    // The real sweep, whatever each connection happens to read: the same verdicts.
    let offset = h.log().len();
    let two = h.sweep_options(small).await;
    let logins = h.log_lines_since(offset, "Login: user=<", 2).await;
    assert!(
        (1..=2).contains(&logins.len()),
        "expected one or two connections: {logins:#?}"
    );
    assert_eq!(two.examined as usize, h.inbox.len(), "{two:#?}");
    assert_eq!(two.quarantined as usize, h.count(Role::Backscatter));
    let actions = |r: &SweepReport| {
        r.messages
            .iter()
            .map(|m| {
                let action = if m.action == "would-move" {
                    "moved"
                } else {
                    m.action.as_str()
                };
                (m.uid, action.to_string(), m.verdict)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(actions(&two), actions(&one));
    // Batches judged out of order, yet the watermark ends past the newest message.
    let newest = before.iter().map(|f| f.uid).max();
    let watermark = h.store.watermark("alice", "INBOX").expect("store");
    assert_eq!(watermark.map(|w| w.last_uid), newest);
    h.assert_swept_now(&before, false).await;
}

/// A server that allows one connection per user refuses the second: the sweep goes on with
/// one and does the whole job.
#[tokio::test]
async fn a_refused_second_connection_leaves_the_sweep_to_the_first() {
    let mut h = Harness::start(TestServerOptions {
        max_connections_per_user: Some(1),
        ..TestServerOptions::default()
    });
    let offset = h.log().len();
    let before = h.folder("INBOX").await;
    // The sweep's own first login must not meet that session still counted.
    h.log_lines_since(offset, "Logged out", 1).await;
    let offset = h.log().len();
    let r = h
        .sweep_options(SweepOptions {
            batch: 3,
            ..SweepOptions::default()
        })
        .await;
    let refused = h
        .log_lines_since(offset, "Maximum number of connections", 1)
        .await;
    assert!(
        !refused.is_empty(),
        "the server did not refuse a second connection:\n{}",
        h.log()
    );
    assert_eq!(r.examined as usize, h.inbox.len(), "{r:#?}");
    assert_eq!(r.quarantined as usize, h.count(Role::Backscatter), "{r:#?}");
    h.assert_swept_now(&before, false).await;
}

#[tokio::test]
async fn unknown_verdicts_are_kept_by_default_and_moved_on_request() {
    let mut h = Harness::start(TestServerOptions::default());
    let before = h.folder("INBOX").await;
    let r = h.sweep().await;
    let unknown = action_of(&h, &before, &r, Role::Unknown);
    assert_eq!(unknown.len(), h.count(Role::Unknown), "{r:#?}");
    for (action, name) in &unknown {
        assert_eq!(*action, "kept", "{name}");
    }
    for m in r.messages.iter().filter(|m| {
        before
            .iter()
            .any(|b| b.uid == m.uid && h.msg(&b.body).role == Role::Unknown)
    }) {
        assert_eq!(m.verdict.as_str(), "unknown", "{m:#?}");
    }
    h.assert_swept_now(&before, false).await;

    // The same mailbox, judged afresh by an account with `unknown: quarantine`.
    h.fresh_state("state-unknown-quarantine", "quarantine");
    let before2 = h.folder("INBOX").await;
    let r2 = h.sweep().await;
    assert_eq!(r2.quarantined as usize, h.count(Role::Unknown), "{r2:#?}");
    for (action, name) in action_of(&h, &before2, &r2, Role::Unknown) {
        assert_eq!(action, "moved", "{name}");
    }
    for role in [Role::Genuine, Role::Ordinary] {
        for (action, name) in action_of(&h, &before2, &r2, role) {
            assert_eq!(action, "kept", "{name}");
        }
    }
    h.assert_swept_now(&before, true).await;
}
