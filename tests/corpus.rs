//! Accuracy of the analysis core on every labelled message of the corpus
//! (`tests/corpus/`, copied from the shared corpus with its licences).
//!
//! Checks, per message: the kind; for messages whose label names an original
//! Message-ID, that our best candidate is it (or a listed alternative); for
//! bounces and feedback reports with labelled recipients, that the set of
//! failed recipients is the same. Every mismatch is printed with its file,
//! and the rates must reach the targets of issue 2:
//! detection >= 99.5 %, no ordinary message flagged, Message-ID >= 99 %,
//! recipients >= 97 %.
//!
//! A few labels disagree with the rules we were asked to follow; those are
//! listed in [`CORRECTIONS`] with the reason, and for them the test asserts
//! our documented answer instead (so they are still checked, not skipped).

mod common;

use backsweep::analysis::{analyze, Kind};
use common::{labelled_corpus, LabelledMessage};

/// Labels we answer differently on purpose: (file, what we return, why).
const CORRECTIONS: &[(&str, Correction, &str)] = &[
    (
        "ham/mimekit/messages__feedback-report.txt",
        Correction::Kind(Kind::Feedback),
        "an RFC 5965 ARF abuse report (multipart/report; report-type=feedback-report with a \
         message/feedback-report part); the same report is labelled feedback in ham/postal-mime/arf.eml",
    ),
    (
        "sisimai/maildir/bsd/lhost-sendmail-41.eml",
        Correction::MessageId("201609121950.u8CJoPN3016079@mx2.example.jp"),
        "postmaster notice of a bounce that bounced: the label is the middle bounce's id; the \
         issue asks for the innermost user message",
    ),
    (
        "sisimai/maildir/bsd/rhost-yahooinc-03.eml",
        Correction::MessageId("201609121950.u8CJoPN3016079@mx2.example.jp"),
        "same message as lhost-sendmail-41: innermost original, not the middle bounce",
    ),
    (
        "sisimai/maildir/bsd/rfc3464-26.eml",
        Correction::MessageId("00000000000000000000000000000000@email.example.or.jp"),
        "the returned message is itself a 'Delivery Failure' notice from Postmaster; the innermost \
         user message is the one inside it",
    ),
    (
        "sisimai/maildir/dos/lhost-x5-01.eml",
        Correction::MessageId("2222222222.0000000000002.JavaMail.nekogate@cat.example.jp"),
        "CRLF copy of maildir/bsd/lhost-x5-01.eml, whose hand-checked label is the innermost original",
    ),
    (
        "sisimai/maildir/mac/lhost-x5-01.eml",
        Correction::MessageId("2222222222.0000000000002.JavaMail.nekogate@cat.example.jp"),
        "CR copy of maildir/bsd/lhost-x5-01.eml, whose hand-checked label is the innermost original",
    ),
];

#[derive(Debug, Clone, Copy)]
enum Correction {
    Kind(Kind),
    MessageId(&'static str),
}

fn correction(file: &str) -> Option<Correction> {
    CORRECTIONS
        .iter()
        .find(|(f, _, _)| *f == file)
        .map(|(_, c, _)| *c)
}

fn expected_kind(m: &LabelledMessage) -> Kind {
    match correction(&m.file) {
        Some(Correction::Kind(k)) => k,
        _ => m.expected_kind(),
    }
}

fn message_id_ok(m: &LabelledMessage, got: Option<&String>) -> bool {
    let Some(got) = got else { return false };
    match correction(&m.file) {
        Some(Correction::MessageId(id)) => got == id,
        _ => m.acceptable_message_ids().any(|id| id == got),
    }
}

fn percent(ok: usize, all: usize) -> f64 {
    if all == 0 {
        100.0
    } else {
        100.0 * ok as f64 / all as f64
    }
}

#[test]
fn corrections_name_labelled_files() {
    let corpus = labelled_corpus();
    for (file, _, _) in CORRECTIONS {
        assert!(
            corpus.iter().any(|m| m.file == *file),
            "correction for unknown file {file}"
        );
    }
}

#[test]
fn corpus_accuracy_meets_the_targets() {
    let corpus = labelled_corpus();
    assert!(
        corpus.len() > 1300,
        "the corpus has {} labelled messages, expected ~1357",
        corpus.len()
    );

    let (mut notices, mut detected) = (0, 0);
    let (mut ordinary, mut flagged) = (0, 0);
    let (mut with_id, mut id_ok) = (0, 0);
    let (mut with_rcpt, mut rcpt_ok) = (0, 0);
    let mut kind_as_labelled = 0;
    let mut report = Vec::new();

    for m in &corpus {
        let a = analyze(&m.bytes);
        let want = expected_kind(m);
        if a.kind == m.expected_kind() {
            kind_as_labelled += 1;
        }
        if want == Kind::None {
            ordinary += 1;
            if a.kind != Kind::None {
                flagged += 1;
                report.push(format!(
                    "FLAGGED   {}: ordinary mail came out {} ({})",
                    m.file,
                    a.kind,
                    a.rules.join(", ")
                ));
            }
            continue;
        }
        notices += 1;
        if a.kind == want {
            detected += 1;
        } else {
            report.push(format!(
                "KIND      {}: want {want}, got {} ({})",
                m.file,
                a.kind,
                a.rules.join(", ")
            ));
        }
        if m.original_message_id.is_some() {
            with_id += 1;
            if message_id_ok(m, a.original_message_ids.first()) {
                id_ok += 1;
            } else {
                report.push(format!(
                    "MESSAGEID {}: want {:?}, got {:?}",
                    m.file, m.original_message_id, a.original_message_ids
                ));
            }
        }
        if !m.recipients.is_empty() && matches!(want, Kind::Bounce | Kind::Feedback) {
            with_rcpt += 1;
            let mut want_r = m.recipients.clone();
            let mut got_r = a.recipients.clone();
            want_r.sort();
            want_r.dedup();
            got_r.sort();
            got_r.dedup();
            if want_r == got_r {
                rcpt_ok += 1;
            } else {
                report.push(format!(
                    "RECIPIENT {}: want {:?}, got {:?}",
                    m.file, m.recipients, a.recipients
                ));
            }
        }
    }

    println!("mismatches:");
    for line in &report {
        println!("  {line}");
    }
    println!(
        "corpus: {} labelled messages; kind as labelled {}/{} ({} documented corrections)",
        corpus.len(),
        kind_as_labelled,
        corpus.len(),
        CORRECTIONS.len()
    );
    println!(
        "detected:   {detected}/{notices} = {:.2} %",
        percent(detected, notices)
    );
    println!("flagged:    {flagged}/{ordinary} ordinary messages");
    println!(
        "message-id: {id_ok}/{with_id} = {:.2} %",
        percent(id_ok, with_id)
    );
    println!(
        "recipients: {rcpt_ok}/{with_rcpt} = {:.2} %",
        percent(rcpt_ok, with_rcpt)
    );

    assert!(
        percent(detected, notices) >= 99.5,
        "detection below 99.5 %; see the mismatches above"
    );
    assert_eq!(
        flagged, 0,
        "ordinary messages were flagged; see the mismatches above"
    );
    assert!(
        percent(id_ok, with_id) >= 99.0,
        "original Message-ID below 99 %; see the mismatches above"
    );
    assert!(
        percent(rcpt_ok, with_rcpt) >= 97.0,
        "recipients below 97 %; see the mismatches above"
    );
}

#[test]
fn no_result_ever_contains_the_notices_own_id_from_a_heuristic_source() {
    // Structural sources (an enclosed original) may legitimately repeat the
    // notice's id; quoted text, JSON and reply headers must never.
    for m in labelled_corpus() {
        let a = analyze(&m.bytes);
        let heuristic_only = !a.rules.iter().any(|r| {
            r == "original.enclosed-message"
                || r == "original.rfc822-headers"
                || r == "original.message-id-field"
        });
        if let (Some(own), true) = (&a.message_id, heuristic_only) {
            assert!(
                !a.original_message_ids
                    .iter()
                    .any(|id| id.eq_ignore_ascii_case(own)),
                "{}: returned its own Message-ID {own} as the original",
                m.file
            );
        }
    }
}

/// The header of a raw message: everything before the first blank line.
fn header_of(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let text = text.trim_start_matches('\n');
    let end = text.find("\n\n").unwrap_or(text.len());
    text.as_bytes()[..end].to_vec()
}

#[test]
fn triage_from_the_header_keeps_every_notice() {
    // A sweep downloads only the messages that header triage calls
    // candidates: missing a notice here means never judging it.
    let analyzer = backsweep::analysis::Analyzer::builtin().expect("built-in rules");
    let (mut missed, mut ordinary, mut fetched) = (Vec::new(), 0, 0);
    for m in labelled_corpus() {
        let candidate = analyzer.is_candidate(&header_of(&m.bytes));
        if expected_kind(&m) == Kind::None {
            ordinary += 1;
            fetched += usize::from(candidate);
        } else if !candidate {
            missed.push(m.file.clone());
        }
    }
    println!(
        "triage: {} notices missed; {fetched}/{ordinary} ordinary messages fetched",
        missed.len()
    );
    assert!(
        missed.is_empty(),
        "header triage misses notices: {missed:#?}"
    );
}
