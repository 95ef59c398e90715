//! `backsweep demo`: the whole product in a few seconds, on a fresh machine.
//!
//! The demo starts a private Dovecot on 127.0.0.1 ([`crate::testserver`]), seeds one
//! mailbox with real mail from the test corpus, runs one ordinary [`sweep_account`] against
//! it — the same code path as `backsweep sweep` — and prints a before/after table with the
//! verdict and the reason for every inbox message. Nothing outside a temporary directory is
//! touched, and the server is stopped (and its directory deleted) at the end unless
//! `--keep` asks to leave it running for a closer look.
//!
//! The mailbox (all messages are copies of corpus files in `contrib/demo/messages/`, built
//! into the binary, so the demo works from any directory):
//!
//! - **INBOX**: ordinary mail (a newsletter with `Precedence: bulk`, a mailing-list post, a
//!   GitHub notification, a calendar invitation, a TLS report, a message *from*
//!   `MAILER-DAEMON` that is not a bounce, ...), genuine bounces of mail the user really
//!   sent, and backscatter: bounces and an out-of-office reply caused by mail the user never
//!   sent. Some messages are already read, the rest unread.
//! - **Sent**: the user's sent mail since January 2018, including the originals of the
//!   genuine bounces (same Message-ID, sender, recipient, subject and date as the bounce
//!   quotes). The originals of the backscatter are *not* there, and all of them were
//!   "sent" after the oldest Sent message, so the sent index covers their dates.
//!
//! The demo knows which message is which, so after the sweep it also checks the result:
//! every backscatter message moved, every other message still in the INBOX, and every
//! message's bytes and `\Seen` flag unchanged. A mismatch is reported and makes the demo
//! exit with an error.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use sha2::{Digest, Sha256};

use crate::analysis::Analyzer;
use crate::config::{Account, Config};
use crate::imap::{ConnectSettings, ImapSession};
use crate::secrets::Secret;
use crate::store::Store;
use crate::sweeper::{sweep_account, MessageReport, SweepOptions, SweepReport};
use crate::testserver::{TestServer, TestServerError, TestServerOptions};

/// Options of `backsweep demo`.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Leave the server running after the sweep, print how to connect to it, and wait for
    /// Ctrl-C before stopping it.
    pub keep: bool,
}

/// The demo user's login (also their address).
pub const DEMO_USER: &str = "demo@example.org";

/// The account name in the demo's config.
pub const DEMO_ACCOUNT: &str = "demo";

/// Largest message the demo fetches whole to check it is unchanged (all seeds are smaller).
const FULL_FETCH_BYTES: u32 = 16 * 1024 * 1024;

/// What a seeded inbox message is, so the demo can check the sweep's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not a bounce at all: must stay in the inbox.
    Ordinary,
    /// A bounce of mail the user sent (its original is in Sent): must stay.
    Genuine,
    /// A bounce or auto-reply for mail the user never sent: must be quarantined.
    Backscatter,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Ordinary => "ordinary",
            Role::Genuine => "genuine bounce",
            Role::Backscatter => "backscatter",
        }
    }
}

/// One inbox message of the demo mailbox.
#[derive(Debug, Clone, Copy)]
pub struct InboxSeed {
    /// Where it comes from, under `contrib/demo/messages/`.
    pub file: &'static str,
    /// The message, byte for byte.
    pub bytes: &'static [u8],
    /// What it is.
    pub role: Role,
    /// Whether it is seeded as already read (`\Seen`).
    pub seen: bool,
}

/// A message in the demo user's Sent folder.
#[derive(Debug, Clone, Copy)]
pub struct SentSeed {
    /// Its Message-ID, without angle brackets.
    pub message_id: &'static str,
    /// From header.
    pub from: &'static str,
    /// To header.
    pub to: &'static str,
    /// Subject header (ASCII or an RFC 2047 encoded word).
    pub subject: &'static str,
    /// Date header (RFC 5322).
    pub date: &'static str,
}

impl SentSeed {
    /// The message as it would sit in a Sent folder.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{}>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             (demo message sent by {})\r\n",
            self.from, self.to, self.subject, self.date, self.message_id, self.from
        )
        .into_bytes()
    }
}

macro_rules! seed {
    ($file:literal, $role:ident, $seen:literal) => {
        InboxSeed {
            file: $file,
            bytes: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/contrib/demo/messages/",
                $file
            )),
            role: Role::$role,
            seen: $seen,
        }
    };
}

/// The demo inbox, in delivery (UID) order.
pub const INBOX: &[InboxSeed] = &[
    seed!("nodemailer-mailparser/nodemailer.eml", Ordinary, true),
    seed!("mimekit/mbox__content-length-024.eml", Ordinary, true),
    seed!("sisimai/lhost-exim-60.eml", Backscatter, false),
    seed!("rspamd/ham.eml", Ordinary, true),
    seed!("sisimai/lhost-office365-11.eml", Genuine, true),
    seed!("webklex-php-imap/messages__issue-382.eml", Ordinary, false),
    seed!("sisimai/rfc3834-03.eml", Backscatter, false),
    seed!(
        "django-mailbox/message_with_rfc822_attachment.eml",
        Ordinary,
        true
    ),
    seed!("sisimai/rfc3464-64.eml", Genuine, false),
    seed!(
        "webklex-php-imap/messages__1366671050@github.com.eml",
        Ordinary,
        true
    ),
    seed!("postal-mime/bounce.eml", Genuine, false),
    seed!(
        "webklex-php-imap/messages__example_bounce.eml",
        Backscatter,
        true
    ),
    seed!("rspamd/newsletter.eml", Ordinary, false),
    seed!("webklex-php-imap/messages__issue-413.eml", Ordinary, true),
    seed!("rspamd/transactional.eml", Ordinary, false),
    seed!("postal-mime/calendar-event.eml", Ordinary, false),
    seed!("sisimai/lhost-opensmtpd-10.eml", Backscatter, false),
    seed!(
        "parsedmarc/smtp_tls__google.com_smtp_tls_report.eml",
        Ordinary,
        false
    ),
    seed!("sisimai/rhost-zoho-01.eml", Backscatter, false),
    seed!("sisimai/lhost-mfilter-05.eml", Genuine, false),
];

/// The demo Sent folder, oldest first: everyday mail from the demo user, and the originals
/// of the genuine bounces (taken from what those bounces quote).
pub const SENT: &[SentSeed] = &[
    SentSeed {
        message_id: "20180108091200.1@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "Bob <bob@example.net>",
        subject: "Happy new year!",
        date: "Mon, 08 Jan 2018 09:12:00 +0000",
    },
    SentSeed {
        message_id: "20180611143000.2@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "Carol <carol@example.com>",
        subject: "Re: summer plans",
        date: "Mon, 11 Jun 2018 14:30:00 +0000",
    },
    SentSeed {
        message_id: "20181203080500.3@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "team@example.com",
        subject: "Slides for Thursday",
        date: "Mon, 03 Dec 2018 08:05:00 +0000",
    },
    SentSeed {
        message_id: "SLXP216MB0381A4F513CF42F0FCDA0E2FA9250@SLXP216MB0381.KORP216.PROD.OUTLOOK.COM",
        from: "azuma kuniyuki <azumakuniyuki@microsoft.example.com>",
        to: "\"kijitora@cr3.neko.nyaan.jp\" <kijitora@cr3.neko.nyaan.jp>",
        subject: "Nyaan, Neko Nyaan",
        date: "Wed, 17 Apr 2019 05:44:50 +0000",
    },
    SentSeed {
        message_id: "20190902101500.5@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "Bob <bob@example.net>",
        subject: "Photos from the trip",
        date: "Mon, 02 Sep 2019 10:15:00 +0000",
    },
    SentSeed {
        message_id: "20200515170000.6@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "landlord@example.com",
        subject: "Heating repair",
        date: "Fri, 15 May 2020 17:00:00 +0000",
    },
    SentSeed {
        message_id: "20210310091000.7@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "Carol <carol@example.com>",
        subject: "Re: book club",
        date: "Wed, 10 Mar 2021 09:10:00 +0000",
    },
    SentSeed {
        message_id: "CAByYQsGge+O7Z6G5c06TEcL1SN7zSeON58xdcyueZqK1LWMjxw@mail.gmail.com",
        from: "azumakuniyuki <azumakuniyuki@google.example.com>",
        to: "maildebug@example.jpn",
        subject: "Nyaan",
        date: "Tue, 21 Dec 2021 00:25:47 +0900",
    },
    SentSeed {
        message_id: "e85f1c9b-9b51-4028-8ec0-0a657155028e@app.fastmail.com",
        from: "\"Andris Reinman\" <andrisreinman@fastmail.com>",
        to: "htfgvhyufthdgcvhgjyfthgc@ethereal.email",
        subject: "Proovikiri",
        date: "Mon, 10 Oct 2022 08:37:00 +0300",
    },
    SentSeed {
        message_id: "20230117120000.10@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "team@example.com",
        subject: "Quarterly numbers",
        date: "Tue, 17 Jan 2023 12:00:00 +0000",
    },
    SentSeed {
        message_id: "20231020183000.11@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "Bob <bob@example.net>",
        subject: "Re: Saturday?",
        date: "Fri, 20 Oct 2023 18:30:00 +0000",
    },
    SentSeed {
        message_id: "20240605071500.12@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "support@shop.example",
        subject: "Order 4711 arrived damaged",
        date: "Wed, 05 Jun 2024 07:15:00 +0000",
    },
    SentSeed {
        message_id: "20250114160000.13@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "Carol <carol@example.com>",
        subject: "Re: new year",
        date: "Tue, 14 Jan 2025 16:00:00 +0000",
    },
    SentSeed {
        message_id: "000000000211.222222222000@localhost",
        from: "nekochan@example.org",
        to: "kijitora@example.co.jp",
        // "ニャーン？", as the bounce quotes it.
        subject: "=?UTF-8?B?44OL44Oj44O844Oz77yf?=",
        date: "Sat, 29 Mar 2025 23:52:22 +0900",
    },
    SentSeed {
        message_id: "20250908113000.15@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "team@example.com",
        subject: "Holiday rota",
        date: "Mon, 08 Sep 2025 11:30:00 +0000",
    },
    SentSeed {
        message_id: "20260302094500.16@mail.example.org",
        from: "Demo User <demo@example.org>",
        to: "Bob <bob@example.net>",
        subject: "Re: the garden",
        date: "Mon, 02 Mar 2026 09:45:00 +0000",
    },
];

/// A running demo: the server, the files around it and the account.
pub struct Demo {
    /// The private Dovecot (stopped and deleted on drop).
    pub server: TestServer,
    /// Holds `config.yaml`, the password file and the state directory.
    pub workdir: tempfile::TempDir,
    /// The demo's config file.
    pub config_path: PathBuf,
    /// The validated configuration (one account).
    pub config: Config,
    /// The demo user's password (a fresh random one per run).
    pub password: String,
}

impl Demo {
    /// Starts the server, seeds the mailbox and writes the config. Blocking (starting
    /// Dovecot takes a fraction of a second).
    pub fn start() -> anyhow::Result<Demo> {
        let password = random_password();
        let server = TestServer::start(&[(DEMO_USER, &password)], TestServerOptions::default())
            .map_err(explain_start_error)?;
        for s in SENT {
            server
                .deliver(DEMO_USER, "Sent", &s.to_bytes(), "S")
                .context("seeding the Sent folder")?;
        }
        for s in INBOX {
            server
                .deliver(DEMO_USER, "INBOX", s.bytes, if s.seen { "S" } else { "" })
                .with_context(|| format!("seeding the INBOX with {}", s.file))?;
        }
        let workdir = tempfile::Builder::new()
            .prefix("backsweep-demo-")
            .tempdir()
            .context("creating the demo's temporary directory")?;
        let password_file = workdir.path().join("password");
        write_private(&password_file, password.as_bytes())?;
        let config_path = workdir.path().join("config.yaml");
        let yaml = demo_config_yaml(
            &workdir.path().join("state"),
            server.tls_port(),
            &server.ca_file(),
            &password_file,
        );
        std::fs::write(&config_path, &yaml)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let config = Config::from_yaml(&yaml, &config_path)
            .map_err(|e| anyhow!("the demo's own config is invalid (a bug): {e}"))?;
        Ok(Demo {
            server,
            workdir,
            config_path,
            config,
            password,
        })
    }

    /// The demo account.
    pub fn account(&self) -> anyhow::Result<&Account> {
        self.config
            .account(DEMO_ACCOUNT)
            .ok_or_else(|| anyhow!("the demo config has no account `{DEMO_ACCOUNT}` (a bug)"))
    }

    /// Opens an IMAP session as the demo user.
    pub async fn session(&self) -> anyhow::Result<ImapSession> {
        let account = self.account()?;
        ImapSession::connect(
            &ConnectSettings::from(account),
            &Secret::new(self.password.clone()),
        )
        .await
        .context("logging in to the demo server")
    }
}

/// Runs the demo: start, seed, sweep once, print the table, check the result, stop.
pub async fn run(options: &DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let demo = tokio::task::spawn_blocking(Demo::start)
        .await
        .context("starting the demo server")??;
    let account = demo.account()?.clone();

    let mut session = demo.session().await?;
    let before = snapshot(&mut session, &account.inbox).await?;
    let quarantine_before = count(&mut session, &account.quarantine).await?;
    let sent_count = count(&mut session, "Sent").await?;
    let _ = session.logout().await;

    let analyzer = Analyzer::builtin().map_err(|e| anyhow!("built-in rules: {e}"))?;
    let mut store = Store::open(&demo.config.state_dir)
        .with_context(|| format!("opening the state in {}", demo.config.state_dir.display()))?;
    let sweep_started = Instant::now();
    let report = sweep_account(&account, &mut store, &analyzer, SweepOptions::default())
        .await
        .context("the sweep failed")?;
    let sweep_time = sweep_started.elapsed();

    let mut session = demo.session().await?;
    let inbox_after = snapshot(&mut session, &account.inbox).await?;
    let quarantine_after = snapshot(&mut session, &account.quarantine).await?;
    let _ = session.logout().await;

    let rows = rows(&before, &report);
    let check = check(&before, &inbox_after, &quarantine_after);

    let mut out = String::new();
    let inbox_bytes: usize = INBOX.iter().map(|s| s.bytes.len()).sum();
    let sent_bytes: usize = SENT.iter().map(|s| s.to_bytes().len()).sum();
    let _ = writeln!(
        out,
        "backsweep demo: a private Dovecot on {}:{} (implicit TLS), mailbox {DEMO_USER}\n",
        demo.server.host(),
        demo.server.tls_port()
    );
    let _ = writeln!(
        out,
        "Seeded INBOX with {} messages ({} ordinary, {} genuine bounces, {} backscatter), Sent with {}.",
        INBOX.len(),
        count_role(Role::Ordinary),
        count_role(Role::Genuine),
        count_role(Role::Backscatter),
        sent_count
    );
    let _ = writeln!(
        out,
        "Swept in {}: indexed {} sent messages, triaged {} inbox messages from a few header \
         fields,\nanalysed {} candidates; downloaded {} of the mailbox's {}.\n",
        millis(sweep_time),
        report.sent_indexed,
        report.examined,
        report.candidates,
        kib(report.bytes_downloaded),
        kib((inbox_bytes + sent_bytes) as u64),
    );
    out.push_str(&table(&rows, &account.quarantine));
    let _ = writeln!(
        out,
        "\nFolders:  {} {} -> {}    {} {} -> {}",
        account.inbox,
        before.len(),
        inbox_after.len(),
        account.quarantine,
        quarantine_before,
        quarantine_after.len()
    );
    out.push_str(&check.summary());
    let _ = writeln!(out, "(demo finished in {})", millis(started.elapsed()));
    print_flush(&out);

    if options.keep {
        print_flush(&keep_instructions(&demo));
        // Ctrl-C, or SIGTERM from `kill`/a timeout: either way the server
        // is stopped and the files deleted below.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("waiting for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
        println!("\nStopping the server and deleting the demo files...");
    }
    tokio::task::spawn_blocking(move || drop(demo))
        .await
        .context("stopping the demo server")?;
    if !check.problems.is_empty() {
        bail!(
            "the sweep did not do what the demo expected:\n  {}",
            check.problems.join("\n  ")
        );
    }
    Ok(())
}

/// Turns a start failure into advice; a missing Dovecot names the package to install.
fn explain_start_error(e: TestServerError) -> anyhow::Error {
    match e {
        TestServerError::MissingTool { tool, hint } => anyhow!(
            "the demo needs `{tool}`, which is not installed: {hint}, as root or with sudo \
             (e.g. `sudo apt-get install dovecot-imapd`), then run the demo again"
        ),
        other => anyhow!("could not start the demo's private Dovecot: {other}"),
    }
}

/// The demo's config file.
fn demo_config_yaml(
    state_dir: &Path,
    tls_port: u16,
    ca_file: &Path,
    password_file: &Path,
) -> String {
    let header = "# Written by `backsweep demo`: one account on the demo's private Dovecot.\n";
    let body = crate::testserver::account_config_yaml(
        DEMO_ACCOUNT,
        DEMO_USER,
        tls_port,
        Some(ca_file),
        state_dir,
        &format!("{{ file: {} }}", crate::testserver::yaml_path(password_file)),
        &format!("    addresses: [{DEMO_USER}]\n    inbox: INBOX\n    quarantine: Quarantine\n    unknown: keep\n"),
    );
    format!("{header}{body}")
}

/// Writes a file readable by its owner only (as the `file:` password source requires).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))
}

/// A fresh password for the demo user (the server only listens on loopback, but other
/// local users should still not guess it).
fn random_password() -> String {
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.update(d.as_nanos().to_le_bytes());
    }
    let mut urandom = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut urandom);
    }
    h.update(urandom);
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("demo-{hex}")
}

fn count_role(role: Role) -> usize {
    INBOX.iter().filter(|s| s.role == role).count()
}

/// One message of a folder, as fetched over IMAP.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// UID in the folder.
    pub uid: u32,
    /// Whether `\Seen` is set.
    pub seen: bool,
    /// The whole message (`BODY.PEEK[]`).
    pub body: Vec<u8>,
}

/// Every message of `folder`, read-only (EXAMINE, `BODY.PEEK`): nothing is marked read.
pub async fn snapshot(session: &mut ImapSession, folder: &str) -> anyhow::Result<Vec<Fetched>> {
    let status = session
        .examine(folder)
        .await
        .with_context(|| format!("opening {folder}"))?;
    if status.exists == 0 {
        return Ok(Vec::new());
    }
    let flags = session
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .with_context(|| format!("fetching the flags of {folder}"))?;
    let uids: Vec<u32> = flags.iter().map(|f| f.uid).collect();
    let bodies = session
        .uid_fetch_prefixes(&uids, FULL_FETCH_BYTES)
        .await
        .with_context(|| format!("fetching the messages of {folder}"))?;
    let mut out: Vec<Fetched> = flags
        .iter()
        .filter_map(|f| {
            let body = bodies.iter().find(|b| b.uid == f.uid)?.data.clone();
            Some(Fetched {
                uid: f.uid,
                seen: f.flags.iter().any(|x| x.eq_ignore_ascii_case("\\Seen")),
                body,
            })
        })
        .collect();
    out.sort_by_key(|f| f.uid);
    Ok(out)
}

/// The number of messages in `folder` (0 if it does not exist).
async fn count(session: &mut ImapSession, folder: &str) -> anyhow::Result<u32> {
    match session.examine(folder).await {
        Ok(s) => Ok(s.exists),
        Err(e) if session.is_broken() => Err(e).with_context(|| format!("opening {folder}")),
        Err(_) => Ok(0),
    }
}

/// Which seed a fetched message is (line endings may differ: compare without CR).
fn seed_of(body: &[u8]) -> Option<&'static InboxSeed> {
    let want = strip_cr(body);
    INBOX.iter().find(|s| strip_cr(s.bytes) == want)
}

fn strip_cr(b: &[u8]) -> Vec<u8> {
    b.iter().copied().filter(|&c| c != b'\r').collect()
}

/// One line of the before/after table.
#[derive(Debug, Clone)]
struct Row {
    uid: u32,
    from: String,
    subject: String,
    kind: String,
    verdict: String,
    action: String,
    reason: String,
}

fn rows(before: &[Fetched], report: &SweepReport) -> Vec<Row> {
    let by_uid: HashMap<u32, &MessageReport> = report.messages.iter().map(|m| (m.uid, m)).collect();
    before
        .iter()
        .map(|f| {
            let (from, subject) = from_and_subject(&f.body);
            match by_uid.get(&f.uid) {
                Some(m) => Row {
                    uid: f.uid,
                    from,
                    subject,
                    kind: m.kind.to_string(),
                    verdict: m.verdict.to_string(),
                    action: match &m.destination {
                        Some(d) if m.action == "moved" => format!("moved to {d}"),
                        _ => m.action.clone(),
                    },
                    reason: m
                        .reasons
                        .first()
                        .map(|r| r.detail.clone())
                        .unwrap_or_default(),
                },
                None => Row {
                    uid: f.uid,
                    from,
                    subject,
                    kind: "none".into(),
                    verdict: "-".into(),
                    action: "kept".into(),
                    reason: "ordinary mail: its headers show no sign of a bounce (not downloaded)"
                        .into(),
                },
            }
        })
        .collect()
}

/// The sender's display name (or address) and the decoded subject.
fn from_and_subject(message: &[u8]) -> (String, String) {
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(message) else {
        return ("?".into(), String::new());
    };
    let from = parsed
        .from()
        .and_then(|a| a.first())
        .and_then(|a| {
            a.name()
                .filter(|n| !n.trim().is_empty())
                .or_else(|| a.address())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let subject = parsed.subject().unwrap_or("").trim().to_string();
    (one_line(&from), one_line(&subject))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn table(rows: &[Row], quarantine: &str) -> String {
    const FROM: usize = 22;
    const SUBJECT: usize = 34;
    const KIND: usize = 9;
    const VERDICT: usize = 11;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>3}  {}  {}  {}  {}  Action",
        "UID",
        pad("From", FROM),
        pad("Subject", SUBJECT),
        pad("Kind", KIND),
        pad("Verdict", VERDICT)
    );
    let width = 3 + 2 + FROM + 2 + SUBJECT + 2 + KIND + 2 + VERDICT + 2 + 6 + quarantine.len() + 3;
    let _ = writeln!(out, "{}", "-".repeat(width));
    for r in rows {
        let _ = writeln!(
            out,
            "{:>3}  {}  {}  {}  {}  {}",
            r.uid,
            pad(&truncate(&r.from, FROM), FROM),
            pad(&truncate(&r.subject, SUBJECT), SUBJECT),
            pad(&r.kind, KIND),
            pad(&r.verdict, VERDICT),
            r.action
        );
        if r.kind != "none" || r.verdict != "-" {
            let _ = writeln!(out, "{:>3}  why: {}", "", r.reason);
        }
    }
    out
}

/// Columns a character takes in a terminal (wide East Asian characters and emoji take 2;
/// combining marks and zero-width characters 0). An approximation good enough for a table.
fn char_width(c: char) -> usize {
    let u = c as u32;
    if c.is_control()
        || (0x0300..=0x036F).contains(&u)
        || (0x200B..=0x200F).contains(&u)
        || (0xFE00..=0xFE0F).contains(&u)
    {
        return 0;
    }
    let wide = (0x1100..=0x115F).contains(&u)
        || (0x2E80..=0xA4CF).contains(&u)
        || (0xAC00..=0xD7A3).contains(&u)
        || (0xF900..=0xFAFF).contains(&u)
        || (0xFE30..=0xFE4F).contains(&u)
        || (0xFF00..=0xFF60).contains(&u)
        || (0xFFE0..=0xFFE6).contains(&u)
        || (0x1F300..=0x1F64F).contains(&u)
        || (0x1F900..=0x1F9FF).contains(&u)
        || (0x20000..=0x3FFFD).contains(&u);
    if wide {
        2
    } else {
        1
    }
}

fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Cuts `s` to at most `max` columns, marking a cut with `…`.
fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

fn pad(s: &str, cols: usize) -> String {
    let mut out = s.to_string();
    for _ in width(s)..cols {
        out.push(' ');
    }
    out
}

/// The demo's own check of the sweep's result against what it seeded.
#[derive(Debug, Default)]
struct Check {
    moved: [usize; 3],
    kept: [usize; 3],
    intact: usize,
    problems: Vec<String>,
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Ordinary => 0,
        Role::Genuine => 1,
        Role::Backscatter => 2,
    }
}

fn check(before: &[Fetched], inbox: &[Fetched], quarantine: &[Fetched]) -> Check {
    let mut c = Check::default();
    let mut remaining: Vec<(&Fetched, bool)> = inbox
        .iter()
        .map(|f| (f, false))
        .chain(quarantine.iter().map(|f| (f, true)))
        .collect();
    for b in before {
        let Some(seed) = seed_of(&b.body) else {
            c.problems.push(format!(
                "INBOX UID {} is not one of the demo's messages",
                b.uid
            ));
            continue;
        };
        let found: Vec<usize> = remaining
            .iter()
            .enumerate()
            .filter(|(_, (a, _))| a.body == b.body)
            .map(|(i, _)| i)
            .collect();
        let Some(&i) = found.first() else {
            c.problems.push(format!(
                "{} ({}) is missing or was altered",
                seed.file,
                seed.role.label()
            ));
            continue;
        };
        if found.len() > 1 {
            c.problems
                .push(format!("{} is there {} times", seed.file, found.len()));
        }
        let (after, in_quarantine) = remaining.remove(i);
        if after.seen != b.seen {
            c.problems.push(format!(
                "{}: \\Seen changed from {} to {}",
                seed.file, b.seen, after.seen
            ));
        } else {
            c.intact += 1;
        }
        let should_move = seed.role == Role::Backscatter;
        if in_quarantine {
            c.moved[role_index(seed.role)] += 1;
        } else {
            c.kept[role_index(seed.role)] += 1;
        }
        if in_quarantine != should_move {
            c.problems.push(format!(
                "{} ({}) was {}",
                seed.file,
                seed.role.label(),
                if in_quarantine {
                    "quarantined"
                } else {
                    "left in the INBOX"
                }
            ));
        }
    }
    for (extra, _) in remaining {
        c.problems.push(format!(
            "an unexpected message (UID {}) appeared",
            extra.uid
        ));
    }
    c
}

impl Check {
    fn summary(&self) -> String {
        let total = |role: Role| count_role(role);
        let mut s = format!(
            "Result:   {} of {} backscatter quarantined; {} of {} genuine bounces and {} of {} \
             ordinary messages left in the INBOX.\n",
            self.moved[2],
            total(Role::Backscatter),
            self.kept[1],
            total(Role::Genuine),
            self.kept[0],
            total(Role::Ordinary)
        );
        if self.problems.is_empty() {
            let _ = writeln!(
                s,
                "Checked:  all {} messages have the same bytes and read/unread state as before; \
                 nothing was deleted or duplicated.",
                self.intact
            );
        } else {
            let _ = writeln!(s, "PROBLEMS:\n  {}", self.problems.join("\n  "));
        }
        s
    }
}

fn keep_instructions(demo: &Demo) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "backsweep".into());
    let cfg = demo.config_path.display();
    format!(
        "\nThe server keeps running. Connect with any IMAP client:\n\
         \x20 host 127.0.0.1, port {tls} (implicit TLS) or {plain} (STARTTLS)\n\
         \x20 user {DEMO_USER}, password {pw}\n\
         \x20 trust the demo's CA: {ca}\n\
         Or use backsweep on it:\n\
         \x20 {exe} --config {cfg} status\n\
         \x20 {exe} --config {cfg} release --all\n\
         \x20 {exe} --config {cfg} sweep\n\
         Press Ctrl-C to stop the server and delete everything.\n",
        tls = demo.server.tls_port(),
        plain = demo.server.plain_port(),
        pw = demo.password,
        ca = demo.server.ca_file().display(),
    )
}

fn millis(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn kib(bytes: u64) -> String {
    if bytes < 10 * 1024 {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    } else {
        format!("{} KB", bytes / 1024)
    }
}

fn print_flush(s: &str) {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(s.as_bytes());
    let _ = lock.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_is_what_the_demo_says() {
        let analyzer = Analyzer::builtin().expect("rules");
        for s in INBOX {
            let a = analyzer.analyze(s.bytes);
            let is_notice = a.kind != crate::analysis::Kind::None;
            assert_eq!(
                is_notice,
                s.role != Role::Ordinary,
                "{}: {:?}",
                s.file,
                a.kind
            );
            if s.role == Role::Genuine {
                let id = a.original_message_ids.first().map(String::as_str);
                assert!(
                    SENT.iter().any(|x| Some(x.message_id) == id),
                    "{}: the original {id:?} is not in the demo's Sent folder",
                    s.file
                );
            }
            if s.role == Role::Backscatter {
                let id = a.original_message_ids.first().map(String::as_str);
                assert!(id.is_some(), "{}: no original Message-ID", s.file);
                assert!(!SENT.iter().any(|x| Some(x.message_id) == id), "{}", s.file);
            }
        }
    }

    #[test]
    fn sent_is_oldest_first_and_older_than_every_backscatter_original() {
        let dates: Vec<i64> = SENT
            .iter()
            .map(|s| crate::verdict::parse_date(s.date).expect("date"))
            .collect();
        assert!(dates.windows(2).all(|w| w[0] <= w[1]), "{dates:?}");
        let analyzer = Analyzer::builtin().expect("rules");
        for s in INBOX.iter().filter(|s| s.role == Role::Backscatter) {
            let a = analyzer.analyze(s.bytes);
            let when = a
                .original
                .date
                .as_deref()
                .and_then(crate::verdict::parse_date)
                .or_else(|| {
                    mail_parser::MessageParser::default()
                        .parse_headers(s.bytes)
                        .and_then(|m| m.date().map(|d| d.to_timestamp() - 7 * 86_400))
                })
                .expect("a date");
            assert!(dates[0] <= when, "{}", s.file);
        }
    }

    #[test]
    fn table_cells_fit() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(width(&pad("ニャ", 6)), 6);
        assert_eq!(width(&truncate("ニャーン？ニャーン", 7)), 7);
        assert_eq!(pad("🎉 x", 5), "🎉 x ");
    }

    #[test]
    fn a_missing_dovecot_says_how_to_install_it() {
        let e = explain_start_error(TestServerError::MissingTool {
            tool: "dovecot",
            hint: crate::testserver::INSTALL_DOVECOT,
        })
        .to_string();
        assert!(e.contains("`dovecot`"), "{e}");
        assert!(e.contains("apt-get install dovecot-imapd"), "{e}");
    }

    #[test]
    fn config_is_valid_and_quotes_paths() {
        let yaml = demo_config_yaml(
            Path::new("/tmp/a b/state"),
            10993,
            Path::new("/tmp/a\"b/ca.pem"),
            Path::new("/tmp/pw"),
        );
        let c = Config::from_yaml(&yaml, Path::new("/tmp/demo.yaml")).expect("valid");
        let a = c.account(DEMO_ACCOUNT).expect("account");
        assert_eq!(a.port, 10993);
        assert_eq!(a.ca_file.as_deref(), Some(Path::new("/tmp/a\"b/ca.pem")));
        assert_eq!(c.state_dir, Path::new("/tmp/a b/state"));
    }

    /// The whole demo against a real Dovecot: fails (never skips) without one.
    #[tokio::test]
    async fn the_demo_sweep_does_what_it_says() {
        let demo = tokio::task::spawn_blocking(Demo::start)
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{e:#}"));
        let account = demo.account().expect("account").clone();
        let mut session = demo.session().await.expect("login");
        let before = snapshot(&mut session, "INBOX").await.expect("snapshot");
        assert_eq!(before.len(), INBOX.len());
        for (f, s) in before.iter().zip(INBOX) {
            assert!(
                seed_of(&f.body).is_some_and(|x| x.file == s.file),
                "{}",
                s.file
            );
            assert_eq!(f.seen, s.seen, "{}", s.file);
        }
        let analyzer = Analyzer::builtin().expect("rules");
        let mut store = Store::open(&demo.config.state_dir).expect("store");
        let report = sweep_account(&account, &mut store, &analyzer, SweepOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let inbox = snapshot(&mut session, "INBOX").await.expect("inbox");
        let quarantine = snapshot(&mut session, "Quarantine")
            .await
            .expect("quarantine");
        let c = check(&before, &inbox, &quarantine);
        assert!(
            c.problems.is_empty(),
            "{report:#?}\n{}",
            c.problems.join("\n")
        );
        assert_eq!(c.moved[2], count_role(Role::Backscatter));
        let rows = rows(&before, &report);
        let text = table(&rows, "Quarantine");
        assert!(text.contains("moved to Quarantine"), "{text}");
        assert!(text.contains("is in your sent mail"), "{text}");
        drop(demo);
    }
}
