//! The analysis core: bytes in, [`Analysis`] out.
//!
//! This module is pure — no I/O, no IMAP, no configuration — so that every
//! decision can be reproduced offline with `backsweep inspect` and tested
//! against a corpus of real mail. It answers two questions about a message:
//! what kind it is ([`Kind`]), and which original message it is about
//! (Message-IDs, failed recipients, the original's headers). Whether the user
//! really sent that original is for the verdict, which needs the sent index.
//!
//! Steps: [`parse`] takes MIME apart with the [`mime`] walker (bounded,
//! panic-contained), [`dsn`]
//! reads delivery-status fields, [`detect`] weighs structural evidence and
//! the YAML [`rules`], [`original`] finds the original and the recipients.

pub mod detect;
pub mod dsn;
pub mod mime;
pub mod original;
pub mod parse;
mod pattern_syntax;
mod precompiled;
pub mod rules;
pub mod text;

use rules::{RuleError, RuleSet, Target};
use serde::Serialize;
use std::sync::OnceLock;

/// Analysis reads at most this many bytes of a message. A bounce's notice
/// and the returned original's header sit at the top; the rest (attachments
/// of the original) never changes the answer and must not cost memory.
pub const MAX_ANALYSED_BYTES: usize = 1024 * 1024;

/// What kind of message this is, as far as backscatter is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A delivery status notification / non-delivery report of any MTA,
    /// including delay notices and virus-scanner notices.
    Bounce,
    /// A vacation / out-of-office reply, RFC 3834 auto-reply or read receipt (MDN).
    Autoreply,
    /// A challenge-response verification request.
    Challenge,
    /// An abuse / feedback-loop report (ARF) or DMARC failure report.
    Feedback,
    /// Anything else: ordinary mail, which backsweep never touches.
    None,
}

impl Kind {
    /// The lower-case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bounce => "bounce",
            Kind::Autoreply => "autoreply",
            Kind::Challenge => "challenge",
            Kind::Feedback => "feedback",
            Kind::None => "none",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the notice tells about the original message, when it returns or
/// quotes its header. Values are raw header text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OriginalHeaders {
    /// The original's From.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The original's To.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The original's Subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The original's Date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The original's Received chain, top (last hop) first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub received: Vec<String>,
}

impl OriginalHeaders {
    /// True when nothing about the original is known.
    pub fn is_empty(&self) -> bool {
        self == &OriginalHeaders::default()
    }
}

/// The result of analysing one message.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// What kind of message it is.
    pub kind: Kind,
    /// Message-IDs of the original it refers to, best first, without angle
    /// brackets; never the message's own id.
    pub original_message_ids: Vec<String>,
    /// For bounces and reports: the recipients that failed or complained.
    /// For auto-replies and challenges: the address that answered.
    pub recipients: Vec<String>,
    /// Ids of every rule that fired (structural and YAML), so each decision
    /// can be explained.
    pub rules: Vec<String>,
    /// The original's headers, as far as the message carries them.
    #[serde(skip_serializing_if = "OriginalHeaders::is_empty")]
    pub original: OriginalHeaders,
    /// The message's own Message-ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// True when only the first [`MAX_ANALYSED_BYTES`] were read.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// True when MIME parsing failed and the message was read as text.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unparsed: bool,
    /// For notices: the addresses the notice itself was delivered to
    /// (Delivered-To, X-Original-To, To, in that order, without
    /// duplicates), where a BATV `prvs=` signature of the user's server shows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delivered_to: Vec<String>,
}

/// Analyses messages with one compiled rule set.
///
/// Building one compiles every rule; keep it for the life of the process.
#[derive(Debug, Clone)]
pub struct Analyzer {
    rules: RuleSet,
    /// The rule set's header targets, by name: kept as targets so that a
    /// look-up does not build one for every header field.
    header_targets: Vec<Target>,
}

impl Analyzer {
    /// An analyzer over `rules`.
    pub fn new(rules: RuleSet) -> Analyzer {
        let mut header_targets: Vec<Target> = rules
            .header_targets()
            .map(|name| Target::Header(name.to_string()))
            .collect();
        header_targets.sort_by(|a, b| header_name(a).cmp(header_name(b)));
        Analyzer {
            rules,
            header_targets,
        }
    }

    /// An analyzer with the built-in rules.
    pub fn builtin() -> Result<Analyzer, RuleError> {
        RuleSet::builtin().map(Analyzer::new)
    }

    /// The rule set in use.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The header names that header rules look at (lower case, sorted),
    /// each with its target.
    pub(crate) fn header_targets(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.header_targets.iter().map(|t| (header_name(t), t))
    }

    /// Analyses one raw message. Never panics; reads at most
    /// [`MAX_ANALYSED_BYTES`].
    pub fn analyze(&self, raw: &[u8]) -> Analysis {
        self.analyze_nested(raw, 0)
    }

    /// Analyses a message found `depth` levels inside another.
    pub(crate) fn analyze_nested(&self, raw: &[u8], depth: usize) -> Analysis {
        let truncated = raw.len() > MAX_ANALYSED_BYTES;
        let raw = &raw[..raw.len().min(MAX_ANALYSED_BYTES)];
        let outcome = std::panic::catch_unwind(|| self.analyze_bounded(raw, depth));
        match outcome {
            Ok(mut analysis) => {
                analysis.truncated = truncated;
                analysis
            }
            Err(_) => Analysis {
                kind: Kind::None,
                original_message_ids: Vec::new(),
                recipients: Vec::new(),
                rules: vec!["error.unparsed".to_string()],
                original: OriginalHeaders::default(),
                message_id: None,
                truncated,
                unparsed: true,
                delivered_to: Vec::new(),
            },
        }
    }

    fn analyze_bounded(&self, raw: &[u8], depth: usize) -> Analysis {
        let normalized = text::normalize_newlines(raw);
        let pieces = parse::parse(&normalized);
        let own_id = pieces
            .header("message-id")
            .and_then(text::normalize_message_id);
        let mut statuses: Vec<dsn::DeliveryStatus<'_>> = pieces
            .dsn_texts
            .iter()
            .map(|t| dsn::parse_delivery_status(t))
            .collect();
        if statuses.iter().all(|s| s.recipients.is_empty()) && has_dsn_fields_in_text(&pieces.body)
        {
            statuses.push(dsn::parse_delivery_status(&pieces.body));
        }
        let has_original = !pieces.enclosed.is_empty();
        let detection = detect::detect(self, &pieces, &statuses, has_original);
        // Borrowed until the analysis is built, then copied at once.
        let mut rules = detection.rules;
        let (found, recipients) = match detection.kind {
            Kind::Bounce | Kind::Feedback => {
                let found = original::find_original(self, &pieces, own_id.as_deref(), depth);
                let (recipients, source) = original::failed_recipients(&pieces, &statuses, &found);
                if !recipients.is_empty() {
                    rules.push(source);
                }
                (found, recipients)
            }
            Kind::Autoreply | Kind::Challenge => {
                let found = original::find_replied_to(self, &pieces, own_id.as_deref(), depth);
                let mdn_recipients: Vec<String> = pieces
                    .mdn_texts
                    .iter()
                    .map(|t| dsn::parse_delivery_status(t))
                    .flat_map(|s| s.recipients.into_iter().filter_map(|r| r.address))
                    .collect();
                let recipients = if mdn_recipients.is_empty() {
                    pieces
                        .header("from")
                        .map(text::addresses_in)
                        .unwrap_or_default()
                        .into_iter()
                        .take(1)
                        .collect()
                } else {
                    mdn_recipients
                };
                (found, recipients)
            }
            Kind::None => (original::Found::default(), Vec::new()),
        };
        rules.extend(&found.sources);
        if pieces.unparsed {
            rules.push("error.unparsed");
        }
        let delivered_to = if detection.kind == Kind::None {
            Vec::new()
        } else {
            delivery_addresses(&pieces)
        };
        Analysis {
            kind: detection.kind,
            original_message_ids: found.message_ids,
            recipients,
            rules: rules.iter().map(|r| r.to_string()).collect(),
            original: found.headers,
            message_id: own_id,
            truncated: false,
            unparsed: pieces.unparsed,
            delivered_to,
        }
    }

    /// The header fields a sweep fetches to triage a message before deciding
    /// whether to download it ([`TRIAGE_FIELDS`]). Kept short on purpose: the
    /// server repeats the list in every response, so each name costs bytes
    /// for every message of the inbox.
    pub fn triage_fields(&self) -> Vec<String> {
        TRIAGE_FIELDS.iter().map(|f| f.to_string()).collect()
    }

    /// Decides from the header alone (the [`Analyzer::triage_fields`])
    /// whether a message may be a bounce, auto-reply, challenge or report and
    /// so must be fetched and analysed. Errs on the side of fetching: any
    /// structural sign or any rule on the subject, sender or a vendor header
    /// makes a candidate. Cheap: no MIME parsing, a handful of short texts
    /// through the rule sets (a sweep runs it on every new message).
    pub fn is_candidate(&self, header: &[u8]) -> bool {
        let text = text::lossy(header);
        // Borrowed, and only the fields the decision reads: a header has
        // dozens of fields, long folded ones among them, and triage reads a
        // few.
        let fields = text::first_field_group_where(&text, |name| self.is_decision_field(name));
        self.is_candidate_by_fields(&fields)
    }

    /// Whether the decision of [`Analyzer::is_candidate`] may read the
    /// field `name`: one the sweep fetches for it ([`TRIAGE_FIELDS`], which
    /// must hold every field the decision reads besides the rule sets'
    /// header targets), or a header target.
    pub(crate) fn is_decision_field(&self, name: &str) -> bool {
        TRIAGE_FIELDS
            .iter()
            .copied()
            .chain(self.header_targets().map(|(name, _)| name))
            .any(|n| name.eq_ignore_ascii_case(n))
    }

    /// The decision of [`Analyzer::is_candidate`] on a header's fields, in
    /// order: all of them, or any selection that keeps those
    /// [`Analyzer::is_decision_field`] accepts.
    pub(crate) fn is_candidate_by_fields(&self, fields: &[text::FieldRef<'_>]) -> bool {
        let get = |name: &str| fields.iter().find(|f| f.is(name)).map(|f| f.value.as_ref());
        // Values compared in any case, without lower-case copies.
        let starts_with = |name: &str, prefix: &str| {
            get(name).is_some_and(|v| text::starts_with_ascii_case_insensitive(v, prefix))
        };
        let content_type = get("content-type").unwrap_or_default();
        let return_path = get("return-path");
        let structural = text::find_ascii_case_insensitive(content_type, "report").is_some()
            || starts_with("content-type", "message/")
            || get("x-failed-recipients").is_some()
            || starts_with("auto-submitted", "auto-replied")
            || return_path.is_some_and(|r| matches!(r.trim(), "<>" | "" | "<<>>"));
        if structural {
            return true;
        }
        let subject = get("subject")
            .map(mime::decode_encoded_words)
            .unwrap_or_default();
        let sender = detect::sender_text(
            get("from").unwrap_or_default(),
            get("return-path").unwrap_or_default(),
        );
        if !self.rules.matching(&Target::Subject, &subject).is_empty()
            || !self.rules.matching(&Target::Sender, &sender).is_empty()
        {
            return true;
        }
        fields.iter().any(|f| {
            self.header_targets()
                .find(|(name, _)| f.name.eq_ignore_ascii_case(name))
                .is_some_and(|(_, target)| !self.rules.matching(target, &f.value).is_empty())
        })
    }

    /// True if `subject` matches a bounce subject rule (used to recognise a
    /// quoted notice inside a forwarded bounce).
    pub(crate) fn is_bounce_subject(&self, subject: &str) -> bool {
        self.rules
            .matching(&Target::Subject, subject)
            .iter()
            .any(|r| r.kind == rules::RuleKind::Bounce)
    }
}

/// The name of a header target (empty for the other targets, which
/// [`Analyzer::header_targets`] does not hold).
fn header_name(target: &Target) -> &str {
    match target {
        Target::Header(name) => name,
        _ => "",
    }
}

/// Header fields every triage fetches (see [`Analyzer::triage_fields`]).
/// The structural fields plus the vendor headers that alone reveal a kind
/// (vacation programs, TMDA); other vendor headers come with a telling
/// subject or sender anyway.
pub const TRIAGE_FIELDS: &[&str] = &[
    "From",
    "Subject",
    "Return-Path",
    "Content-Type",
    "Auto-Submitted",
    "X-Failed-Recipients",
    "X-Autoreply",
    "X-Autorespond",
    "Precedence",
    "X-Delivery-Agent",
];

/// The addresses a message was delivered to: every Delivered-To, then
/// X-Original-To, then To (a notice goes to the original's envelope sender).
fn delivery_addresses(pieces: &parse::Pieces) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for field in ["delivered-to", "x-original-to", "to"] {
        for (_, value) in pieces
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(field))
        {
            // As written: a BATV signature covers the address's exact case.
            // (The first occurrence of the address in any case, as when
            // the addresses were lower-case copies; compared as written,
            // without making them.)
            for a in text::addresses_as_written(value) {
                if out.len() >= 16 || out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
                    continue;
                }
                let written = text::find_ascii_case_insensitive(value, a)
                    .and_then(|at| value.get(at..at + a.len()))
                    .unwrap_or(a);
                out.push(written.to_string());
            }
        }
    }
    out
}

/// Whether a line of `body` starts, after white space, with a DSN
/// `Final-Recipient:` or `Original-Recipient:` field (any case): a delivery
/// status pasted into the text. What the regex
/// `(?im-u)^\s*(final|original)-recipient:` finds (the unit tests compare
/// them), without compiling it in every run.
fn has_dsn_fields_in_text(body: &str) -> bool {
    const NAMES: [&str; 2] = ["final-recipient:", "original-recipient:"];
    text::lines(body).any(|line| {
        // White space as the regex's ASCII `\s` knows it.
        let field =
            line.trim_start_matches(|c: char| c.is_ascii() && text::is_ascii_space(c as u8));
        NAMES
            .iter()
            .any(|name| text::starts_with_ascii_case_insensitive(field, name))
    })
}

/// Analyses one raw message with the built-in rules.
///
/// # Panics
/// Only if the built-in rule files are invalid, which the test suite rules out.
pub fn analyze(raw: &[u8]) -> Analysis {
    static BUILTIN: OnceLock<Analyzer> = OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            Analyzer::builtin().unwrap_or_else(|e| panic!("built-in rules are invalid: {e}"))
        })
        .analyze(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::text::tests::{corpus_texts, generated_texts};

    #[test]
    fn candidates_are_decided_on_all_fields_alike() {
        let analyzer = Analyzer::builtin().unwrap();
        let mut candidates = 0;
        for text in corpus_texts() {
            let header = &text[..text.find("\n\n").unwrap_or(text.len())];
            let all = text::first_field_group(header);
            let decided = analyzer.is_candidate(header.as_bytes());
            assert_eq!(analyzer.is_candidate_by_fields(&all), decided, "{header}");
            candidates += usize::from(decided);
        }
        assert!(candidates > 500, "{candidates}");
    }

    #[test]
    fn dsn_fields_in_text_are_those_of_the_regex() {
        let re = regex::Regex::new(r"(?im-u)^\s*(final|original)-recipient:").unwrap();
        let alphabet = [
            "Final",
            "original",
            "-recipient:",
            "-Recipient",
            ":",
            " ",
            "\t",
            "\x0b",
            "\r",
            "\n",
            "x",
            "é",
            "\u{3000}",
        ];
        let mut texts = generated_texts(&alphabet, 100_000);
        texts.extend(corpus_texts());
        let mut found = 0;
        for text in &texts {
            let theirs = re.is_match(text);
            assert_eq!(has_dsn_fields_in_text(text), theirs, "{text:?}");
            found += usize::from(theirs);
        }
        assert!(found > 1000, "{found}");
    }
}
