//! The whole labelled corpus as one mailbox, swept once against a real,
//! private Dovecot: every ordinary message, bounce, auto-reply and report of
//! `tests/corpus/` goes into INBOX; for every second notice whose original
//! Message-ID is known, that original goes into Sent (so the notice is a
//! genuine bounce); the other notices are backscatter. After one sweep:
//! no ordinary, feedback or genuine message may have moved, at least 98 % of
//! the backscatter whose original is known must be in quarantine, and the
//! folder counts must add up (nothing lost or duplicated). The rates are
//! printed.
//!
//! FAILS (never skips) when Dovecot cannot be started: `apt-get install dovecot-imapd`.

mod common;

use backsweep::analysis::{Analyzer, Kind};
use backsweep::config::Config;
use backsweep::imap::{ConnectSettings, ImapSession};
use backsweep::secrets::Secret;
use backsweep::store::Store;
use backsweep::sweeper::{sweep_account, SweepOptions};
use backsweep::testserver::{TestServer, TestServerOptions};
use common::labelled_corpus;

const USER: &str = "carol@example.com";
const PASS: &str = "corpus sweep pw";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ordinary,
    Feedback,
    Genuine,
    Backscatter,
    /// A notice without a known original: judged by other evidence.
    NoOriginal,
}

/// Records that the original `id` is in Sent; true if it already was.
fn role_of_id_seeded(seeded: &mut std::collections::HashSet<String>, id: &str) -> bool {
    !seeded.insert(id.to_string())
}

#[tokio::test(flavor = "current_thread")]
async fn the_corpus_as_a_mailbox_is_swept_without_touching_real_mail() {
    let server =
        TestServer::start(&[(USER, PASS)], TestServerOptions::default()).unwrap_or_else(|e| {
            panic!("cannot start the private Dovecot (this test never skips): {e}")
        });
    let corpus = labelled_corpus();

    // Sent: one old message so the index covers every corpus original's date,
    // then the originals of every second notice with a known Message-ID.
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
    let mut roles = Vec::new();
    // Copies of one bounce (the corpus keeps LF, CRLF and CR variants) share
    // their original: the role is decided once per original Message-ID.
    let mut role_of_id: std::collections::HashMap<String, Role> = std::collections::HashMap::new();
    let mut seeded: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (n, m) in corpus.iter().enumerate() {
        let role = match (m.expected_kind(), &m.original_message_id) {
            (Kind::None, _) if m.file != "ham/mimekit/messages__feedback-report.txt" => {
                Role::Ordinary
            }
            (Kind::Feedback, _) | (Kind::None, _) => Role::Feedback,
            (_, Some(id)) => {
                let next = if role_of_id.len() % 2 == 1 {
                    Role::Genuine
                } else {
                    Role::Backscatter
                };
                let role = *role_of_id.entry(id.clone()).or_insert(next);
                if role == Role::Genuine && !role_of_id_seeded(&mut seeded, id) {
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
    let q = |p: &std::path::Path| serde_json::Value::String(p.display().to_string()).to_string();
    let yaml = format!(
        "state_dir: {}\naccounts:\n  - name: carol\n    host: 127.0.0.1\n    port: {}\n    tls: implicit\n    ca_file: {}\n    username: {USER}\n    password: {{ file: {} }}\n    sent: [Sent]\n",
        q(&dir.path().join("state")),
        server.tls_port(),
        q(&server.ca_file()),
        q(&pw),
    );
    let config = Config::from_yaml(&yaml, &dir.path().join("config.yaml")).expect("config");
    let account = config.accounts[0].clone();
    let mut store = Store::open(&config.state_dir).expect("store");
    let analyzer = Analyzer::builtin().expect("rules");

    let report = sweep_account(&account, &mut store, &analyzer, SweepOptions::default())
        .await
        .expect("sweep");

    // UIDs follow delivery order, so UID n+1 is corpus message n.
    let moved: std::collections::HashSet<u32> = report
        .messages
        .iter()
        .filter(|m| m.action == "moved")
        .map(|m| m.uid)
        .collect();
    let mut wrong = Vec::new();
    let (mut backscatter, mut caught, mut no_original, mut no_original_caught) = (0, 0, 0, 0);
    for (n, (m, role)) in corpus.iter().zip(&roles).enumerate() {
        let was_moved = moved.contains(&(n as u32 + 1));
        match role {
            Role::Ordinary | Role::Feedback | Role::Genuine if was_moved => {
                wrong.push(format!("{role:?} message moved: {}", m.file));
            }
            Role::Backscatter => {
                backscatter += 1;
                caught += usize::from(was_moved);
                if !was_moved {
                    let why = report
                        .messages
                        .iter()
                        .find(|r| r.uid == n as u32 + 1)
                        .map_or_else(
                            || "not a candidate".to_string(),
                            |r| {
                                format!(
                                    "{} {} {:?}",
                                    r.kind.as_str(),
                                    r.verdict,
                                    r.reasons.first().map(|x| x.rule)
                                )
                            },
                        );
                    println!("  backscatter kept: {} ({why})", m.file);
                }
            }
            Role::NoOriginal => {
                no_original += 1;
                no_original_caught += usize::from(was_moved);
            }
            _ => {}
        }
    }

    // Nothing lost or duplicated: the folders add up.
    let settings = ConnectSettings::from(&account);
    let mut session = ImapSession::connect(&settings, &Secret::new(PASS))
        .await
        .expect("login");
    let inbox = session.examine("INBOX").await.expect("INBOX").exists as usize;
    let quarantine = session
        .examine("Quarantine")
        .await
        .expect("Quarantine")
        .exists as usize;
    let _ = session.logout().await;

    let rate = 100.0 * caught as f64 / backscatter.max(1) as f64;
    println!(
        "corpus mailbox: {} messages; moved {} ({caught}/{backscatter} = {rate:.1} % of backscatter with a known original, \
         {no_original_caught}/{no_original} without one); {} wrongly moved; downloaded {} bytes for {} candidates of {} examined",
        corpus.len(),
        moved.len(),
        wrong.len(),
        report.bytes_downloaded,
        report.candidates,
        report.examined
    );
    assert!(
        wrong.is_empty(),
        "real mail was moved:\n{}",
        wrong.join("\n")
    );
    assert!(
        rate >= 98.0,
        "only {rate:.1} % of the backscatter was moved"
    );
    assert_eq!(
        inbox + quarantine,
        corpus.len(),
        "messages lost or duplicated"
    );
    assert_eq!(
        quarantine,
        moved.len(),
        "quarantine holds other than the moved messages"
    );
}
