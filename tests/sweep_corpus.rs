//! The whole labelled corpus as one mailbox (see `tests/common/mailbox.rs`),
//! swept against a real, private Dovecot.
//!
//! 1. One sweep: no ordinary, feedback or genuine message may move, at least
//!    98 % of the backscatter whose original is known must be quarantined,
//!    and the folders must add up (nothing lost or duplicated). Rates printed.
//! 2. Crash safety: `backsweep sweep` is killed (SIGKILL) at seeded random
//!    moments, again and again, on a server with MOVE and on one with only
//!    COPY + UIDPLUS; then it runs to the end. The end state must be the same
//!    as after one clean sweep: no message lost, duplicated or moved twice.
//!
//! FAIL (never skip) when Dovecot cannot be started: `apt-get install dovecot-imapd`.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use backsweep::analysis::Analyzer;
use backsweep::imap::{ConnectSettings, ImapSession};
use backsweep::secrets::Secret;
use backsweep::store::Store;
use backsweep::sweeper::{sweep_account, SweepOptions};
use backsweep::testserver::TestServerOptions;
use common::mailbox::{corpus_mailbox, CorpusMailbox, Role, PASS};

/// Every message of INBOX and Quarantine, by its first 200 bytes (corpus
/// files are distinct there), with how often it occurs.
async fn folder_contents(mb: &CorpusMailbox) -> (HashMap<Vec<u8>, usize>, HashMap<Vec<u8>, usize>) {
    let settings = ConnectSettings::from(&mb.account);
    let mut session = ImapSession::connect(&settings, &Secret::new(PASS))
        .await
        .expect("login");
    let mut out = Vec::new();
    for folder in ["INBOX", "Quarantine"] {
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        let status = session.examine(folder).await.expect("examine");
        if status.exists > 0 {
            let uids = session.uid_search("ALL").await.expect("search");
            for p in session
                .uid_fetch_prefixes(&uids, 4096)
                .await
                .expect("fetch")
            {
                *seen.entry(key(&p.data)).or_default() += 1;
            }
        }
        out.push(seen);
    }
    let _ = session.logout().await;
    let quarantine = out.pop().unwrap_or_default();
    let inbox = out.pop().unwrap_or_default();
    (inbox, quarantine)
}

/// A message's identity for these checks: its first bytes with line ends
/// normalised (Dovecot stores what was delivered, byte for byte).
fn key(data: &[u8]) -> Vec<u8> {
    let text: Vec<u8> = data.iter().copied().filter(|b| *b != b'\r').collect();
    text[..text.len().min(1024)].to_vec()
}

#[tokio::test(flavor = "current_thread")]
async fn the_corpus_as_a_mailbox_is_swept_without_touching_real_mail() {
    let _serial = SERIAL.lock().await;
    let mb = corpus_mailbox(TestServerOptions::default());
    let config = backsweep::config::Config::load(&mb.config_path).expect("config");
    let mut store = Store::open(&config.state_dir).expect("store");
    let analyzer = Analyzer::builtin().expect("rules");
    let report = sweep_account(&mb.account, &mut store, &analyzer, SweepOptions::default())
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
    for (n, (m, role)) in mb.corpus.iter().zip(&mb.roles).enumerate() {
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
    let (inbox, quarantine) = folder_contents(&mb).await;
    let in_inbox: usize = inbox.values().sum();
    let in_quarantine: usize = quarantine.values().sum();
    let rate = 100.0 * caught as f64 / backscatter.max(1) as f64;
    println!(
        "corpus mailbox: {} messages; moved {} ({caught}/{backscatter} = {rate:.1} % of backscatter with a known original, \
         {no_original_caught}/{no_original} without one); {} wrongly moved; downloaded {} bytes for {} candidates of {} examined",
        mb.corpus.len(),
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
        in_inbox + in_quarantine,
        mb.corpus.len(),
        "messages lost or duplicated"
    );
    assert_eq!(
        in_quarantine,
        moved.len(),
        "quarantine holds other than the moved messages"
    );
}

/// Runs the tests of this file one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many times a test kills the sweep before letting one run finish.
const KILLS: usize = 12;

/// Kills `backsweep sweep` at seeded random moments until a run completes,
/// then compares the end state with the expected one.
async fn killed_sweeps_end_where_a_clean_sweep_ends(options: TestServerOptions, seed: u64) {
    // Timing-based: the tests of this file must not compete for the CPU.
    let _serial = SERIAL.lock().await;
    let compressed = options.offer_compress;
    let mb = corpus_mailbox(options);
    let (before, _) = folder_contents(&mb).await;
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let bin = env!("CARGO_BIN_EXE_backsweep");
    // How long a whole sweep takes here (a dry run moves nothing), so that
    // the kills land anywhere in it: indexing, triage, judging, moving.
    let started = std::time::Instant::now();
    // Small batches, so that a kill also lands while moves wait across
    // batches with their store writes open (see the sweeper's MOVE_FLUSH).
    let batch = ["--batch", "150"];
    let dry = Command::new(bin)
        .arg("--config")
        .arg(&mb.config_path)
        .args(["sweep", "--dry-run", "--json"])
        .args(batch)
        .env("BACKSWEEP_LOG", "backsweep::imap=debug")
        .output()
        .expect("dry run");
    assert!(dry.status.success(), "the dry run failed: {}", dry.status);
    let log = String::from_utf8_lossy(&dry.stderr);
    assert_eq!(
        log.matches("connection compressed").count(),
        if compressed { 2 } else { 0 },
        "both connections compressed when offered, none otherwise:\n{log}"
    );
    // What an uninterrupted sweep moves. (Interrupted ones may move more,
    // never less: relays learned by a killed run can only add evidence.)
    let would_move = String::from_utf8_lossy(&dry.stdout)
        .matches("\"action\":\"would-move\"")
        .count();
    assert!(would_move > 100, "the dry run would move only {would_move}");
    let whole_ms = started.elapsed().as_millis() as u64 + 1;
    let mut kills = 0;
    let mut completed = false;
    for _ in 0..KILLS {
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&mb.config_path)
            .arg("sweep")
            .args(batch)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start backsweep");
        // The first kill surely lands inside a sweep; the others anywhere.
        let wait_ms = if kills == 0 {
            whole_ms / 3
        } else {
            whole_ms / 4 + next() % whole_ms
        };
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        match child.try_wait().expect("wait") {
            Some(status) => {
                assert!(
                    status.success(),
                    "backsweep sweep failed on its own: {status}"
                );
                completed = true;
                break;
            }
            None => {
                child.kill().expect("SIGKILL");
                let _ = child.wait();
                kills += 1;
            }
        }
    }
    let (_, interrupted) = folder_contents(&mb).await;
    println!(
        "crash test (seed {seed:#x}): {} messages were in quarantine when the kills ended",
        interrupted.values().sum::<usize>()
    );
    if !completed {
        let status = Command::new(bin)
            .arg("--config")
            .arg(&mb.config_path)
            .arg("sweep")
            .stdout(Stdio::null())
            .status()
            .expect("final sweep");
        assert!(status.success(), "the final sweep failed: {status}");
    }
    let (inbox, quarantine) = folder_contents(&mb).await;
    println!(
        "crash test (seed {seed:#x}): {kills} kills; INBOX {} -> {}, Quarantine {}",
        before.values().sum::<usize>(),
        inbox.values().sum::<usize>(),
        quarantine.values().sum::<usize>()
    );
    // Nothing lost, nothing duplicated: every original message is in exactly
    // one of the two folders, once.
    let mut problems = Vec::new();
    for (k, n) in &before {
        let now = inbox.get(k).copied().unwrap_or(0) + quarantine.get(k).copied().unwrap_or(0);
        if now != *n {
            problems.push(format!(
                "{n} copies before, {now} after: {:?}",
                String::from_utf8_lossy(&k[..k.len().min(120)])
            ));
        }
    }
    for k in quarantine.keys().filter(|k| !before.contains_key(*k)) {
        problems.push(format!(
            "unknown message in quarantine: {:?}",
            String::from_utf8_lossy(&k[..k.len().min(120)])
        ));
    }
    // Real mail stays in the inbox.
    for (m, role) in mb.corpus.iter().zip(&mb.roles) {
        if matches!(role, Role::Ordinary | Role::Genuine | Role::Feedback)
            && quarantine.contains_key(&key(&m.bytes))
        {
            problems.push(format!("{role:?} message quarantined: {}", m.file));
        }
    }
    // Nothing passed over: every move a clean sweep makes was made.
    let moved = quarantine.values().sum::<usize>();
    if moved < would_move {
        problems.push(format!(
            "{moved} messages in quarantine, but an uninterrupted sweep moves {would_move}"
        ));
    }
    assert!(
        problems.is_empty(),
        "after {kills} kills:\n{}",
        problems.join("\n")
    );
    assert!(
        kills > 0,
        "no sweep was interrupted; the test proves nothing"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_sweep_killed_at_random_points_loses_and_repeats_nothing() {
    // Compressed, as most servers offer (the COPY fallback below runs uncompressed).
    let options = TestServerOptions {
        offer_compress: true,
        ..TestServerOptions::default()
    };
    killed_sweeps_end_where_a_clean_sweep_ends(options, 0x5eed_0001).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_copy_fallback_sweep_killed_at_random_points_loses_and_repeats_nothing() {
    let options = TestServerOptions {
        hide_move: true,
        ..TestServerOptions::default()
    };
    killed_sweeps_end_where_a_clean_sweep_ends(options, 0x5eed_0002).await;
}
