//! Evidence beyond the Sent copy, end to end against a real, private Dovecot.
//!
//! The mailbox is built from the real bounces of the labelled corpus
//! (`tests/corpus`), one per distinct original, each made independent of the
//! others: its failed recipients become unique addresses, the original's
//! sender becomes the user, its Date a day in October 2026. Then, in turn:
//!
//! | role | the bounce | Sent folder |
//! |---|---|---|
//! | genuine, with id | as is | the original (its Message-ID) |
//! | backscatter, with id | as is | nothing |
//! | tagged genuine | the original's Message-ID replaced by a minted tag | nothing (sent by a "program") |
//! | genuine, no id | every line naming the original's Message-ID removed | a message to the failed recipient the day before |
//! | backscatter, no id (×2) | the same removal | nothing |
//!
//! so half of the bounces carry no original Message-ID. One sweep must move
//! no genuine bounce, keep every tagged one, and move at least 90 % of the
//! backscatter without a Message-ID. The numbers are printed.
//!
//! FAIL (never skip) when Dovecot cannot be started: `apt-get install dovecot-imapd`.

mod common;

use std::collections::{HashMap, HashSet};

use backsweep::analysis::{Analyzer, Kind};
use backsweep::config::Config;
use backsweep::evidence::tags;
use backsweep::store::Store;
use backsweep::sweeper::{sweep_account, SweepOptions};
use backsweep::testserver::{yaml_path, TestServer, TestServerOptions};
use common::labelled_corpus;

const USER: &str = "dana@example.com";
const PASS: &str = "evidence sweep pw";
const TAG_SECRET: &str = "the shop's tag secret";
/// 2026-10-01 00:00 UTC.
const OCT_2026: i64 = 1_790_812_800;
const DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    GenuineWithId,
    BackscatterWithId,
    Tagged,
    GenuineNoId,
    BackscatterNoId,
}

impl Role {
    fn genuine(self) -> bool {
        matches!(self, Role::GenuineWithId | Role::Tagged | Role::GenuineNoId)
    }
}

const ROLES: [Role; 6] = [
    Role::GenuineWithId,
    Role::BackscatterNoId,
    Role::BackscatterWithId,
    Role::GenuineNoId,
    Role::Tagged,
    Role::BackscatterNoId,
];

/// Replaces every ASCII-case-insensitive occurrence of `from` in `data`.
fn replace_ci(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let needle = from.to_ascii_lowercase().into_bytes();
    if needle.is_empty() {
        return data.to_vec();
    }
    let lower = data.to_ascii_lowercase();
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if lower[i..].starts_with(&needle) {
            out.extend_from_slice(to.as_bytes());
            i += needle.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Removes every line that names one of `ids` (and the folded lines that
/// continue it).
fn drop_lines_naming(data: &[u8], ids: &[String]) -> Vec<u8> {
    let lower_ids: Vec<Vec<u8>> = ids
        .iter()
        .map(|i| i.to_ascii_lowercase().into_bytes())
        .collect();
    let mut out = Vec::with_capacity(data.len());
    let mut dropping = false;
    for line in data.split_inclusive(|b| *b == b'\n') {
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        if dropping && continues {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        dropping = lower_ids
            .iter()
            .any(|id| lower.windows(id.len()).any(|w| w == id.as_slice()));
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Sets the top-level Date header (replacing any).
fn with_date(data: &[u8], date: &str) -> Vec<u8> {
    let header_end = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| data.windows(4).position(|w| w == b"\r\n\r\n"))
        .unwrap_or(data.len());
    let mut out = format!("Date: {date}\r\n").into_bytes();
    let mut skipping = false;
    let mut at = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        let in_header = at < header_end;
        at += line.len();
        if in_header {
            let continues = matches!(line.first(), Some(b' ' | b'\t'));
            if skipping && continues {
                continue;
            }
            skipping = line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"date:");
            if skipping {
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    out
}

fn rfc2822(t: i64) -> String {
    let days = t.div_euclid(DAY);
    let (y, m, d) = backsweep::config::civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.rem_euclid(DAY);
    format!(
        "{d} {} {y} {:02}:{:02}:00 +0000",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60
    )
}

fn sent_message(id: &str, to: &str, date: i64) -> Vec<u8> {
    format!(
        "From: Dana <{USER}>\r\nTo: {to}\r\nSubject: a message to {to}\r\nDate: {}\r\nMessage-ID: <{id}>\r\n\r\nhello\r\n",
        rfc2822(date)
    )
    .into_bytes()
}

#[tokio::test(flavor = "current_thread")]
async fn bounces_without_an_original_id_and_tagged_mail_are_judged_right() {
    let server =
        TestServer::start(&[(USER, PASS)], TestServerOptions::default()).unwrap_or_else(|e| {
            panic!("cannot start the private Dovecot (this test never skips): {e}")
        });
    let analyzer = Analyzer::builtin().expect("rules");
    let tag_key = tags::TagKey {
        id: "shop1".into(),
        secret: TAG_SECRET.as_bytes().to_vec(),
    };
    // The oldest sent message (1999): the index covers every original after it.
    server
        .deliver(
            USER,
            "Sent",
            &sent_message("first@example.com", "old@example.net", 915_148_800),
            "S",
        )
        .expect("seed Sent");

    let mut roles: Vec<Role> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let mut seen_ids: HashSet<String> = HashSet::new();
    let mut skipped_still_named = 0;
    for m in labelled_corpus() {
        let Some(id) = m.original_message_id.clone() else {
            continue;
        };
        if m.expected_kind() != Kind::Bounce || !seen_ids.insert(id.to_ascii_lowercase()) {
            continue;
        }
        let a = analyzer.analyze(&m.bytes);
        if a.kind != Kind::Bounce
            || a.recipients.is_empty()
            || !a.original_message_ids.contains(&id)
        {
            continue; // analysis cannot work with this one even unchanged
        }
        let senders = a
            .original
            .from
            .as_deref()
            .map(backsweep::analysis::text::addresses_in)
            .unwrap_or_default();
        if a.recipients.iter().any(|r| senders.contains(r)) {
            continue; // a message to oneself: cannot be made independent
        }
        let k = roles.len();
        let role = ROLES[k % ROLES.len()];
        let arrived = OCT_2026 + k as i64 * 3600;
        let mut named: Vec<String> = m.acceptable_message_ids().map(str::to_string).collect();
        named.extend(a.original_message_ids.iter().cloned());
        // First what the role does to the original's Message-ID ...
        let mut bytes = m.bytes.clone();
        match role {
            Role::GenuineWithId | Role::BackscatterWithId => {}
            Role::Tagged => {
                let tag = tags::mint(
                    &tag_key,
                    "shop.example.com",
                    arrived - DAY,
                    &format!("nonce{k:04}"),
                );
                for old in &named {
                    bytes = replace_ci(&bytes, old, &tag);
                }
            }
            Role::GenuineNoId | Role::BackscatterNoId => {
                bytes = drop_lines_naming(&bytes, &named);
                if !analyzer.analyze(&bytes).original_message_ids.is_empty() {
                    // Still names an original elsewhere: not a bounce "without
                    // a Message-ID"; left out rather than mislabelled.
                    skipped_still_named += 1;
                    continue;
                }
            }
        }
        // ... then make it independent of every other bounce: unique
        // recipients, the user as the original's sender, its own date (as
        // analysis sees the changed bounce).
        let changed = analyzer.analyze(&bytes);
        let mut failed = a.recipients.clone();
        failed.extend(
            changed
                .recipients
                .iter()
                .filter(|r| !a.recipients.contains(r))
                .cloned(),
        );
        let mut senders = senders;
        if let Some(from) = changed.original.from.as_deref() {
            senders.extend(backsweep::analysis::text::addresses_in(from));
        }
        if failed.iter().any(|r| senders.contains(r)) {
            continue;
        }
        let mut recipients = Vec::new();
        for (i, r) in failed.iter().enumerate() {
            let unique = format!("rcpt{k}x{i}@example.net");
            bytes = replace_ci(&bytes, r, &unique);
            recipients.push(unique);
        }
        for sender in &senders {
            bytes = replace_ci(&bytes, sender, USER);
        }
        bytes = with_date(&bytes, &rfc2822(arrived));
        // The user's Sent folder: the original (its id as the bounce now
        // names it), or another message to the failed recipient.
        let sent_id = match role {
            Role::GenuineWithId => analyzer
                .analyze(&bytes)
                .original_message_ids
                .first()
                .cloned(),
            Role::GenuineNoId => Some(format!("sent{k}@example.com")),
            _ => None,
        };
        if let Some(sent_id) = sent_id {
            server
                .deliver(
                    USER,
                    "Sent",
                    &sent_message(&sent_id, &recipients[0], arrived - DAY),
                    "S",
                )
                .expect("seed Sent");
        }
        server
            .deliver(USER, "INBOX", &bytes, "")
            .expect("seed INBOX");
        roles.push(role);
        files.push(m.file.clone());
    }
    assert!(
        roles.len() >= 60,
        "too few corpus bounces usable: {}",
        roles.len()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).expect("secret file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        yaml_path(&path)
    };
    let pw = secret_file("password", PASS);
    let tag = secret_file("tag-key", TAG_SECRET);
    let yaml = server.config_yaml(
        "dana",
        USER,
        &dir.path().join("state"),
        &format!("{{ file: {pw} }}"),
        true,
        &format!(
            "    sent: [Sent]\n    timeout: 20\n    tag_key: {{ file: {tag} }}\n    tag_key_id: shop1\n    window_days: 7\n"
        ),
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, &yaml).expect("config file");
    let config = Config::load(&config_path).expect("config");
    let account = &config.accounts[0];
    let mut store = Store::open(&config.state_dir).expect("store");
    let report = sweep_account(account, &mut store, &analyzer, SweepOptions::default())
        .await
        .expect("sweep");

    let moved: HashSet<u32> = report
        .messages
        .iter()
        .filter(|m| m.action == "moved")
        .map(|m| m.uid)
        .collect();
    let mut total: HashMap<Role, usize> = HashMap::new();
    let mut caught: HashMap<Role, usize> = HashMap::new();
    let mut wrong = Vec::new();
    let mut by_rule: HashMap<&str, usize> = HashMap::new();
    for (n, role) in roles.iter().enumerate() {
        let uid = n as u32 + 1;
        let was_moved = moved.contains(&uid);
        *total.entry(*role).or_default() += 1;
        *caught.entry(*role).or_default() += usize::from(was_moved);
        let judged = report.messages.iter().find(|r| r.uid == uid);
        if let Some(rule) = judged.and_then(|r| r.reasons.first()).map(|r| r.rule) {
            *by_rule.entry(rule).or_default() += 1;
        }
        let why = judged.map_or_else(
            || "not a candidate".to_string(),
            |r| format!("{} {:?}", r.verdict, r.reasons.first().map(|x| &x.detail)),
        );
        if role.genuine() && was_moved {
            wrong.push(format!("{role:?} UID {uid} ({}) moved: {why}", files[n]));
        }
        if *role == Role::BackscatterNoId && !was_moved {
            println!(
                "  backscatter without an id kept: UID {uid} ({}): {why}",
                files[n]
            );
        }
    }
    let count = |r: Role| total.get(&r).copied().unwrap_or(0);
    let moved_of = |r: Role| caught.get(&r).copied().unwrap_or(0);
    let no_id = count(Role::BackscatterNoId);
    let rate = 100.0 * moved_of(Role::BackscatterNoId) as f64 / no_id.max(1) as f64;
    let without_id = count(Role::GenuineNoId) + no_id;
    println!(
        "evidence mailbox: {} bounces, {without_id} without an original Message-ID ({} left out: still naming one)",
        roles.len(),
        skipped_still_named
    );
    for role in [
        Role::GenuineWithId,
        Role::Tagged,
        Role::GenuineNoId,
        Role::BackscatterWithId,
        Role::BackscatterNoId,
    ] {
        println!("  {role:?}: {} of {} moved", moved_of(role), count(role));
    }
    let mut rules: Vec<_> = by_rule.into_iter().collect();
    rules.sort();
    println!("  deciding rules: {rules:?}");
    println!("  backscatter without a Message-ID moved: {rate:.1} %");

    assert!(
        wrong.is_empty(),
        "genuine bounces were moved:\n{}",
        wrong.join("\n")
    );
    assert!(count(Role::Tagged) >= 10 && moved_of(Role::Tagged) == 0);
    assert!(
        without_id * 2 >= roles.len() * 9 / 10,
        "not about half of the bounces lack an original id: {without_id} of {}",
        roles.len()
    );
    assert!(
        rate >= 90.0,
        "only {rate:.1} % of the backscatter without a Message-ID was moved"
    );
    assert_eq!(
        moved_of(Role::BackscatterWithId),
        count(Role::BackscatterWithId),
        "backscatter with a known original was kept"
    );

    // `status` counts the verdicts by their deciding rule.
    drop(store);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_backsweep"))
        .env_remove("BACKSWEEP_CONFIG")
        .arg("--config")
        .arg(&config_path)
        .args(["status", "--json"])
        .output()
        .expect("run backsweep status");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    let count_of = |verdict: &str, rule: &str| {
        status["verdicts_by_rule"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["verdict"] == verdict && r["rule"] == rule)
            .and_then(|r| r["count"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(
        count_of("genuine", "verdict.valid-tag"),
        count(Role::Tagged) as u64,
        "{status}"
    );
    assert_eq!(
        count_of("backscatter", "verdict.window-nothing-sent"),
        moved_of(Role::BackscatterNoId) as u64,
        "{status}"
    );
}
