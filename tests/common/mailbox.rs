//! The whole labelled corpus as one mailbox on a private Dovecot, for the
//! sweep tests: every ordinary message, bounce, auto-reply and report goes
//! into INBOX (UID n+1 = corpus message n); for every second distinct
//! original Message-ID, that original goes into Sent (its notices are then
//! genuine), the others are backscatter. A Sent message from 2000 makes the
//! index cover every corpus original's date.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use backsweep::analysis::Kind;
use backsweep::config::{Account, Config};
use backsweep::testserver::{TestServer, TestServerOptions};

use super::{labelled_corpus, LabelledMessage};

/// The mailbox owner.
pub const USER: &str = "carol@example.com";
/// Their password.
pub const PASS: &str = "corpus sweep pw";

/// What a seeded inbox message is, and so where it belongs after a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not a notice: must stay.
    Ordinary,
    /// A feedback report: must stay (reported, never moved).
    Feedback,
    /// Its original is in Sent: must stay.
    Genuine,
    /// Its original is known and not in Sent: must be quarantined.
    Backscatter,
    /// A notice whose original is unknown: judged by other evidence.
    NoOriginal,
}

/// A seeded server with its config.
pub struct CorpusMailbox {
    /// The running server (stopped on drop).
    pub server: TestServer,
    /// The corpus, in INBOX order.
    pub corpus: Vec<LabelledMessage>,
    /// The role of each corpus message.
    pub roles: Vec<Role>,
    /// The config file (state dir beside it).
    pub config_path: PathBuf,
    /// The account from that config.
    pub account: Account,
    /// Keeps the temp dir alive.
    pub dir: tempfile::TempDir,
}

/// Starts a server with `options` and seeds it (see the module doc).
pub fn corpus_mailbox(options: TestServerOptions) -> CorpusMailbox {
    let server = TestServer::start(&[(USER, PASS)], options).unwrap_or_else(|e| {
        panic!("cannot start the private Dovecot (these tests never skip): {e}")
    });
    let corpus = labelled_corpus();
    let sent = |id: &str, n: usize| {
        format!(
            "From: Carol <{USER}>\r\nTo: someone{n}@example.net\r\nSubject: sent {n}\r\nDate: Sat, 1 Jan 2000 00:00:00 +0000\r\nMessage-ID: <{id}>\r\n\r\nhello\r\n"
        )
    };
    server
        .deliver(
            USER,
            "Sent",
            sent("oldest-sent@example.com", 0).as_bytes(),
            "S",
        )
        .expect("seed Sent");
    // Copies of one bounce (LF, CRLF and CR variants) share their original:
    // the role is decided once per original Message-ID.
    let mut role_of_id: HashMap<String, Role> = HashMap::new();
    let mut in_sent: HashSet<String> = HashSet::new();
    let mut roles = Vec::new();
    for (n, m) in corpus.iter().enumerate() {
        let role = match (m.expected_kind(), &m.original_message_id) {
            // An ARF report the label calls ordinary (see tests/corpus.rs).
            (Kind::None, _) if m.file == "ham/mimekit/messages__feedback-report.txt" => {
                Role::Feedback
            }
            (Kind::None, _) => Role::Ordinary,
            (Kind::Feedback, _) => Role::Feedback,
            (_, Some(id)) => {
                let next = if role_of_id.len() % 2 == 1 {
                    Role::Genuine
                } else {
                    Role::Backscatter
                };
                let role = *role_of_id.entry(id.clone()).or_insert(next);
                if role == Role::Genuine && in_sent.insert(id.clone()) {
                    server
                        .deliver(USER, "Sent", sent(id, n).as_bytes(), "S")
                        .expect("seed Sent");
                }
                role
            }
            (_, None) => Role::NoOriginal,
        };
        server
            .deliver(USER, "INBOX", &m.bytes, "")
            .expect("seed INBOX");
        roles.push(role);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("password");
    std::fs::write(&pw, PASS).expect("password file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let yaml = server.config_yaml(
        "carol",
        USER,
        &dir.path().join("state"),
        &format!("{{ file: {} }}", backsweep::testserver::yaml_path(&pw)),
        true,
        "    sent: [Sent]\n    timeout: 20\n",
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, &yaml).expect("config file");
    let config = Config::load(&config_path).expect("config");
    let account = config.accounts[0].clone();
    CorpusMailbox {
        server,
        corpus,
        roles,
        config_path,
        account,
        dir,
    }
}

/// The Message-ID (without angle brackets; empty if none) and flags of every
/// message in `folder`, in UID order. Reads with `BODY.PEEK` only.
pub async fn folder_messages(
    session: &mut backsweep::imap::ImapSession,
    folder: &str,
) -> Vec<(String, Vec<String>)> {
    let status = session
        .examine(folder)
        .await
        .unwrap_or_else(|e| panic!("examine {folder}: {e}"));
    if status.exists == 0 {
        return Vec::new();
    }
    let fetched = session
        .uid_fetch_headers("1:*", &["Message-ID"])
        .await
        .unwrap_or_else(|e| panic!("fetch {folder}: {e}"));
    fetched
        .into_iter()
        .map(|f| {
            let text = String::from_utf8_lossy(&f.header).into_owned();
            let id = text
                .split_once(':')
                .map(|(_, v)| v.trim().trim_start_matches('<').trim_end_matches('>'))
                .unwrap_or_default()
                .to_string();
            (id, f.flags)
        })
        .collect()
}
