//! Recall of the search net (`src/search_net.rs`) on a real, private
//! Dovecot: on the whole labelled corpus as one mailbox, plus the null and
//! odd senders a substring cannot name directly, every message the header
//! triage accepts must be a hit of the server-side search — whether the net
//! goes in one SEARCH command or is split into many. Hit and triage counts
//! are printed.
//!
//! FAIL (never skip) when Dovecot cannot be started: `apt-get install dovecot-imapd`.

mod common;

use std::collections::BTreeSet;

use backsweep::analysis::{Analyzer, TRIAGE_FIELDS};
use backsweep::imap::{ConnectSettings, ImapSession};
use backsweep::search_net::{self, SearchNet};
use backsweep::secrets::Secret;
use backsweep::testserver::TestServerOptions;
use common::mailbox::{corpus_mailbox, PASS, USER};

/// Messages whose only sign is one the SEARCH cannot spell out directly.
const EDGE_CASES: &[&str] = &[
    // Empty Return-Path (no "<>").
    "Return-Path: \r\nFrom: a@example.net\r\nSubject: hello\r\n\r\nbody\r\n",
    "Return-Path:\r\nFrom: a@example.net\r\nSubject: hello\r\n\r\nbody\r\n",
    "Return-Path: <<>>\r\nFrom: a@example.net\r\nSubject: hello\r\n\r\nbody\r\n",
    // Null sender folded onto a continuation line.
    "Return-Path:\r\n <>\r\nFrom: a@example.net\r\nSubject: hello\r\n\r\nbody\r\n",
    // No header at all (the triage looks at the whole message).
    "no header here, just text without a colon\r\n",
    // Folded and encoded subjects.
    "From: a@example.net\r\nSubject: Undeliverable:\r\n Re: lunch\r\n\r\nbody\r\n",
    "From: a@example.net\r\nSubject: =?UTF-8?Q?Unzustellbar=3A_Mittag?=\r\n\r\nbody\r\n",
    "From: a@example.net\r\nSubject: =?ISO-2022-JP?B?GyRCTCQ9aEMjGyhC?=\r\n\r\nbody\r\n",
    "From: a@example.net\r\nSubject: =?UTF-8?B?0J3QtdC00L7RgdGC0LDQstC70LXQvdC90L7QtSDRgdC+0L7QsdGJ0LXQvdC40LU=?=\r\n\r\nbody\r\n",
    // A sender with a comment as its name.
    "From: MAILER-DAEMON@example.net (Mail Delivery Subsystem)\r\nSubject: x\r\n\r\nbody\r\n",
    "From: \"Mail Delivery System\" <bounce@example.net>\r\nSubject: x\r\n\r\nbody\r\n",
    "From: =?UTF-8?Q?Microsoft_Outlook?= <x@example.net>\r\nSubject: x\r\n\r\nbody\r\n",
    // An ordinary message: must not be a hit (the net must be narrow).
    "Return-Path: <alice@example.net>\r\nFrom: Alice <alice@example.net>\r\nSubject: lunch tomorrow\r\nContent-Type: text/plain\r\n\r\nbody\r\n",
];

#[tokio::test(flavor = "current_thread")]
async fn the_search_net_finds_every_message_the_header_triage_accepts() {
    let mb = corpus_mailbox(TestServerOptions::default());
    for m in EDGE_CASES {
        mb.server
            .deliver(USER, "INBOX", m.as_bytes(), "")
            .expect("seed edge case");
    }
    let settings = ConnectSettings::from(&mb.account);
    let mut session = ImapSession::connect(&settings, &Secret::new(PASS))
        .await
        .expect("login");
    let status = session.examine("INBOX").await.expect("examine");
    let total = mb.corpus.len() + EDGE_CASES.len();
    assert_eq!(status.exists as usize, total);

    let analyzer = Analyzer::builtin().expect("rules");
    assert!(
        !search_net::word_search_server(session.capabilities()),
        "Dovecot must not look like Gmail or Exchange"
    );
    let net = SearchNet::build(
        analyzer.rules(),
        TRIAGE_FIELDS,
        search_net::takes_literals(session.capabilities()),
    )
    .expect("the built-in rules have a sound net on Dovecot");

    // What the header triage accepts, message by message.
    let headers = session
        .uid_fetch_headers("1:*", TRIAGE_FIELDS)
        .await
        .expect("fetch headers");
    assert_eq!(headers.len(), total);
    let accepted: BTreeSet<u32> = headers
        .iter()
        .filter(|h| {
            h.header.iter().all(u8::is_ascii_whitespace) || analyzer.is_candidate(&h.header)
        })
        .map(|h| h.uid)
        .collect();

    // The null senders and the header-less message are what the structural
    // keys must catch by indirection: the triage does accept them.
    for (n, edge) in EDGE_CASES.iter().enumerate().take(5) {
        let uid = (mb.corpus.len() + n + 1) as u32;
        assert!(accepted.contains(&uid), "triage: {edge:?}");
    }

    let mut hits_by_split = Vec::new();
    for max_keys in [usize::MAX, search_net::MAX_KEYS_PER_COMMAND, 40] {
        let started = std::time::Instant::now();
        let mut hits = BTreeSet::new();
        let commands = net.commands("1:*", max_keys);
        for command in &commands {
            hits.extend(session.uid_search(command).await.expect("search net"));
        }
        println!(
            "search net: {} keys in {} command(s): {} hits of {total} messages, triage accepts {} ({:?})",
            net.keys().len(),
            commands.len(),
            hits.len(),
            accepted.len(),
            started.elapsed()
        );
        let missed: Vec<String> = accepted
            .difference(&hits)
            .map(|uid| {
                let n = *uid as usize - 1;
                match mb.corpus.get(n) {
                    Some(m) => m.file.clone(),
                    None => format!("edge case {:?}", EDGE_CASES[n - mb.corpus.len()]),
                }
            })
            .collect();
        assert!(
            missed.is_empty(),
            "the search net misses {} message(s) the triage accepts: {missed:#?}",
            missed.len()
        );
        hits_by_split.push(hits);
    }
    assert!(hits_by_split.windows(2).all(|w| w[0] == w[1]));
    // The net is a net, not everything: the ordinary edge case is no hit,
    // and most of the corpus's ordinary mail is not either.
    let hits = &hits_by_split[0];
    assert!(!hits.contains(&(total as u32)), "ordinary mail is a hit");
    assert!(hits.len() < total, "{} hits of {total}", hits.len());
    let _ = session.logout().await;
}
