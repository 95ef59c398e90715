//! Deciding the kind of a message from layered evidence.
//!
//! 1. Structure, fixed by RFCs: `multipart/report` and its report types,
//!    delivery-status / disposition / feedback parts, DSN fields written as
//!    text, `X-Failed-Recipients`, `Auto-Submitted: auto-replied`.
//! 2. Rules from `rules/*.yaml`: strong signatures decide alone; weak
//!    phrases need corroboration from a *different* place in the message (a
//!    machine sender or a null return path, a subject and a body phrase, a
//!    returned original). A single phrase in a person's mail is not enough.
//!
//! When several kinds have evidence, the more specific report wins:
//! feedback, then bounce, then challenge, then auto-reply.

use super::dsn::{has_dsn_fields, DeliveryStatus};
use super::parse::Pieces;
use super::rules::{RuleKind, Strength, Target};
use super::text::starts_with_ascii_case_insensitive;
use super::{Analyzer, Kind};

/// How much of the explanation phrase rules read: the notice is at the top.
const MAX_PHRASE_TEXT: usize = 8 * 1024;

/// The decided kind and the ids of every rule that contributed.
#[derive(Debug)]
pub struct Detection<'a> {
    /// The kind.
    pub kind: Kind,
    /// Rule ids, structural ones first, borrowed from the rule set (copied
    /// once, into the [`super::Analysis`]).
    pub rules: Vec<&'a str>,
}

/// Where a piece of weak evidence was found; two from the same place do not
/// corroborate each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Subject,
    Sender,
    Body,
    Header,
    Original,
}

/// A set of a few small enum values (kinds, places) as the bits of a byte:
/// cheaper than hashing them into a `HashSet` for every message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bits(u8);

impl Bits {
    /// The bit of a fieldless enum's value `index` (below 8).
    fn bit(index: u8) -> u8 {
        1 << index
    }

    fn insert(&mut self, index: u8) {
        self.0 |= Self::bit(index);
    }

    fn contains(self, index: u8) -> bool {
        self.0 & Self::bit(index) != 0
    }

    fn len(self) -> usize {
        self.0.count_ones() as usize
    }
}

#[derive(Default)]
struct Evidence<'a> {
    rules: Vec<&'a str>,
    /// The kinds with strong evidence (bit `kind as u8`).
    strong: Bits,
    /// For each kind (index `kind as usize`), the places with weak
    /// evidence for it (bit `place as u8`).
    weak: [Bits; Kind::None as usize + 1],
    machine_sender: bool,
}

impl<'a> Evidence<'a> {
    fn fire(&mut self, id: &'a str) {
        if !self.rules.contains(&id) {
            // Room for the usual few ids at the first (ordinary mail has
            // none).
            if self.rules.capacity() == 0 {
                self.rules.reserve(8);
            }
            self.rules.push(id);
        }
    }

    fn strong(&mut self, kind: Kind, id: &'static str) {
        self.strong.insert(kind as u8);
        self.fire(id);
    }

    fn weak(&mut self, kind: Kind, place: Place) {
        self.weak[kind as usize].insert(place as u8);
    }

    fn has_strong(&self, kind: Kind) -> bool {
        self.strong.contains(kind as u8)
    }

    /// True when `kind` has weak evidence in two different places, at least
    /// one of them a phrase specific to that kind and at least one of them
    /// something a person does not produce by typing: a machine sender or
    /// null return path, a returned original (or, for replies, the
    /// In-Reply-To linkage), or a vendor header. Subject and body phrases
    /// together are not enough: a person can write "delivery failed" in both.
    fn corroborated(&self, kind: Kind) -> bool {
        let places = self.weak[kind as usize];
        let has = |place: Place| places.contains(place as u8);
        let phrase = has(Place::Subject) || has(Place::Body) || has(Place::Sender);
        let mechanical = self.machine_sender || has(Place::Original) || has(Place::Header);
        let count = places.len() + usize::from(self.machine_sender && !has(Place::Sender));
        phrase && mechanical && count >= 2
    }
}

/// Decides the kind of the message.
pub fn detect<'a>(
    analyzer: &'a Analyzer,
    pieces: &Pieces,
    statuses: &[DeliveryStatus<'_>],
    has_original: bool,
) -> Detection<'a> {
    let mut ev = Evidence::default();
    structural(pieces, statuses, &mut ev);

    let from = pieces.header("from").unwrap_or_default();
    let return_path = pieces.header("return-path");
    if return_path.is_some_and(|rp| {
        let rp = rp.trim();
        rp == "<>" || rp.is_empty() || rp == "<<>>"
    }) {
        ev.machine_sender = true;
        ev.fire("envelope.null-return-path");
    }
    // RFC 3834: an auto-replied message was sent by a program. (Not so
    // auto-generated: every notification carries it, and they are not ours.)
    let auto_replied = pieces
        .header("auto-submitted")
        .is_some_and(|v| starts_with_ascii_case_insensitive(v.trim(), "auto-replied"));
    if auto_replied {
        ev.machine_sender = true;
    }
    let sender = sender_text(from, return_path.unwrap_or_default());
    let body = bounded(&pieces.body, MAX_PHRASE_TEXT);

    let apply = |target: &Target, text: &str, place: Place, ev: &mut Evidence<'a>| {
        analyzer.rules.for_each_matching(target, text, |rule| {
            ev.fire(&rule.id);
            let kind = match rule.kind {
                RuleKind::Bounce => Kind::Bounce,
                RuleKind::Autoreply => Kind::Autoreply,
                RuleKind::Challenge => Kind::Challenge,
                RuleKind::Feedback => Kind::Feedback,
                RuleKind::Automated => {
                    ev.machine_sender = true;
                    return;
                }
            };
            match rule.strength {
                Strength::Strong => ev.strong.insert(kind as u8),
                Strength::Weak => ev.weak(kind, place),
            }
        });
    };
    apply(&Target::Subject, &pieces.subject, Place::Subject, &mut ev);
    apply(&Target::Sender, &sender, Place::Sender, &mut ev);
    apply(&Target::Body, body, Place::Body, &mut ev);
    // Only the fields whose name is as long as some target's are compared
    // by name (a dozen targets times a few dozen fields was a tenth of
    // detect's own work); lengths from 63 on share one bit.
    let length_bit = |len: usize| 1u64 << len.min(63);
    let target_lengths = analyzer
        .header_targets()
        .fold(0u64, |bits, (name, _)| bits | length_bit(name.len()));
    let fields: Vec<&(_, _)> = pieces
        .headers
        .iter()
        .filter(|(n, _)| target_lengths & length_bit(n.len()) != 0)
        .collect();
    for (name, target) in analyzer.header_targets() {
        for (_, v) in fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            apply(target, v, Place::Header, &mut ev);
        }
    }
    if has_original {
        ev.weak(Kind::Bounce, Place::Original);
        ev.weak(Kind::Feedback, Place::Original);
    }
    // An auto-reply or challenge answers a message, and usually says which.
    if pieces.header("in-reply-to").is_some() || pieces.header("references").is_some() {
        ev.weak(Kind::Autoreply, Place::Original);
        ev.weak(Kind::Challenge, Place::Original);
    }

    // A person's reply ("Re: ..." answering a thread) is judged on strong
    // evidence only: a postmaster writing by hand about a failed delivery
    // uses the same words as a bounce.
    let human_reply =
        is_human_reply(pieces) && (!ev.machine_sender || has_mail_client_header(pieces));
    let weak_ok = |kind: Kind, ev: &Evidence| !human_reply && ev.corroborated(kind);

    let kind = if ev.has_strong(Kind::Feedback) {
        Kind::Feedback
    } else if ev.has_strong(Kind::Bounce) {
        Kind::Bounce
    } else if ev.has_strong(Kind::Challenge) {
        Kind::Challenge
    } else if ev.has_strong(Kind::Autoreply) {
        Kind::Autoreply
    } else if weak_ok(Kind::Feedback, &ev) {
        Kind::Feedback
    } else if weak_ok(Kind::Bounce, &ev) {
        Kind::Bounce
    } else if weak_ok(Kind::Challenge, &ev) {
        Kind::Challenge
    } else if auto_replied {
        ev.fire("header.auto-submitted.auto-replied");
        Kind::Autoreply
    } else if weak_ok(Kind::Autoreply, &ev) {
        Kind::Autoreply
    } else {
        Kind::None
    };
    Detection {
        kind,
        rules: ev.rules,
    }
}

/// The text that [`Target::Sender`] rules read: the From and Return-Path
/// fields' values, as `From: ...\nReturn-Path: ...`. Built to its exact
/// length (`format!` guesses, and grows the copy for most senders).
pub(crate) fn sender_text(from: &str, return_path: &str) -> String {
    let (from_label, return_path_label) = ("From: ", "\nReturn-Path: ");
    let mut sender = String::with_capacity(
        from_label.len() + from.len() + return_path_label.len() + return_path.len(),
    );
    for part in [from_label, from, return_path_label, return_path] {
        sender.push_str(part);
    }
    sender
}

/// Evidence from MIME structure and standard fields.
fn structural(pieces: &Pieces, statuses: &[DeliveryStatus<'_>], ev: &mut Evidence<'_>) {
    for rt in &pieces.report_types {
        match rt.as_str() {
            "delivery-status" | "global-delivery-status" => {
                ev.strong(Kind::Bounce, "structure.report.delivery-status")
            }
            "disposition-notification" | "global-disposition-notification" => {
                ev.strong(Kind::Autoreply, "structure.report.disposition-notification")
            }
            "feedback-report" => ev.strong(Kind::Feedback, "structure.report.feedback-report"),
            _ => {}
        }
    }
    if !pieces.dsn_texts.is_empty() {
        ev.strong(Kind::Bounce, "structure.delivery-status-part");
    }
    if !pieces.mdn_texts.is_empty() {
        ev.strong(Kind::Autoreply, "structure.disposition-notification-part");
    }
    if !pieces.feedback_texts.is_empty() {
        ev.strong(Kind::Feedback, "structure.feedback-report-part");
    }
    if pieces.dsn_texts.is_empty() && statuses.iter().any(has_dsn_fields) {
        ev.strong(Kind::Bounce, "text.dsn-fields");
    }
    if pieces
        .header("x-failed-recipients")
        .is_some_and(|v| v.contains('@'))
    {
        ev.strong(Kind::Bounce, "header.x-failed-recipients");
    }
}

/// A reply written by a person: a reply subject in an existing thread.
fn is_human_reply(pieces: &Pieces) -> bool {
    has_reply_prefix(&pieces.subject)
        && (pieces.header("in-reply-to").is_some() || pieces.header("references").is_some())
}

/// Whether `subject` starts (after white space) with a reply prefix such
/// as `Re:` in any case. Compared as ASCII without case, which is what
/// comparing a lower-case copy gives (the unit tests compare them): the
/// prefixes are ASCII letters and punctuation or have no case, and the
/// only non-ASCII characters whose lower case is ASCII (U+212A KELVIN SIGN
/// and U+0130, `k` and `i` with a dot) start no prefix.
fn has_reply_prefix(subject: &str) -> bool {
    let subject = subject.trim_start();
    REPLY_PREFIXES
        .iter()
        .any(|p| starts_with_ascii_case_insensitive(subject, p))
}

/// The subject prefixes of a reply, in lower case.
const REPLY_PREFIXES: [&str; 13] = [
    "re:", "re :", "aw:", "antw:", "sv:", "vs:", "r:", "ref:", "rif:", "odp:", "回复", "答复",
    "返信",
];

/// True if a mail client (not an MTA) wrote the message.
fn has_mail_client_header(pieces: &Pieces) -> bool {
    pieces.header("user-agent").is_some()
        || pieces.header("x-mailer").is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            [
                "outlook",
                "thunderbird",
                "apple mail",
                "iphone",
                "mutt",
                "evolution",
                "kmail",
                "roundcube",
                "squirrelmail",
                "mozilla",
                "the bat",
                "claws",
                "sylpheed",
                "becky",
                "eudora",
                "lotus notes",
                "k-9",
                "airmail",
                "mailmate",
                "postbox",
                "em client",
                "windows live mail",
                "webmail",
                "gmail",
            ]
            .iter()
            .any(|c| m.contains(c))
        })
}

fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::text::tests::{corpus_texts, generated_texts};

    /// The check [`has_reply_prefix`] replaced: a lower-case copy.
    fn has_reply_prefix_by_lowercase(subject: &str) -> bool {
        let subject = subject.trim_start().to_lowercase();
        REPLY_PREFIXES.iter().any(|p| subject.starts_with(p))
    }

    #[test]
    fn sender_text_is_that_of_format() {
        for (from, return_path) in [
            ("", ""),
            ("MAILER-DAEMON@example.org", "<>"),
            ("\"Jos\u{e9}\" <j@example.org>", ""),
        ] {
            assert_eq!(
                sender_text(from, return_path),
                format!("From: {from}\nReturn-Path: {return_path}")
            );
        }
    }

    #[test]
    fn reply_prefixes_are_those_of_a_lower_case_copy() {
        let alphabet = [
            "R", "e", "E", ":", " ", "\t", "\u{3000}", "A", "w", "nt", "S", "V", "f", "I", "i",
            "o", "D", "P", "回", "复", "答", "返信", "\u{130}", "\u{212a}", "K", "é", "x",
        ];
        let mut texts = generated_texts(&alphabet, 100_000);
        texts.extend(corpus_texts().iter().flat_map(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("Subject:"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        }));
        let mut found = 0;
        for text in &texts {
            let theirs = has_reply_prefix_by_lowercase(text);
            assert_eq!(has_reply_prefix(text), theirs, "{text:?}");
            found += usize::from(theirs);
        }
        assert!(found > 100, "{found}");
    }
}
