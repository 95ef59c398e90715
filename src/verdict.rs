//! The verdict: did the user really send the original of this bounce?
//!
//! [`judge`] combines an [`Analysis`] with what is known about the user's
//! sent mail ([`SentEvidence`], backed by the sent index in the state store)
//! and applies the decision table of DESIGN.md, strongest evidence first.
//! Every verdict carries the reasons (rule ids plus a sentence) that decided
//! it, for the audit log, `inspect --config` and the demo table.
//!
//! Beyond the sent index, [`SentEvidence::evidence`] may supply signed tags,
//! BATV keys and learned fingerprints, and [`SentEvidence::sent_to`] the
//! sent mail per recipient for the recipient window (see [`crate::evidence`]).
//!
//! The table is deliberately asymmetric: one sign that the user sent the
//! original makes a bounce genuine; calling it backscatter needs positive
//! evidence that they did not. Without either, the verdict is `unknown` and
//! the message stays (a hidden real bounce costs more than a visible fake).

use crate::analysis::text::addresses_in;
use crate::analysis::{Analysis, Kind};
use crate::evidence::batv::{self, BatvCheck};
use crate::evidence::fingerprint::Mismatch;
use crate::evidence::tags::{self, TagCheck};
use crate::evidence::window::{self, SentTo, WindowCheck};
use crate::evidence::Evidence;
use serde::Serialize;

/// How long after the original a bounce or auto-reply may arrive. MTAs give
/// up retrying after about five days; auto-replies come within hours. Used
/// only when the original's own Date is not in the notice.
pub const MAX_NOTICE_DELAY_SECS: i64 = 7 * 24 * 3600;

/// The decision about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The user sent the original: a real failure they must see.
    Genuine,
    /// The user did not send the original: caused by a forged sender.
    Backscatter,
    /// Not enough evidence either way.
    Unknown,
    /// Not a bounce, auto-reply, challenge or report at all.
    NotBounce,
}

impl Verdict {
    /// The snake_case name used in JSON, logs and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Genuine => "genuine",
            Verdict::Backscatter => "backscatter",
            Verdict::Unknown => "unknown",
            Verdict::NotBounce => "not_bounce",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of evidence that decided a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Stable rule id, e.g. `verdict.sent-index-hit`.
    pub rule: &'static str,
    /// A sentence for people.
    pub detail: String,
}

/// A verdict with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judgement {
    /// The decision.
    pub verdict: Verdict,
    /// Why, strongest first.
    pub reasons: Vec<Reason>,
}

/// What is known about the user's sent mail.
pub trait SentEvidence {
    /// Whether the sent index holds this Message-ID.
    fn contains(&self, message_id: &str) -> bool;
    /// The date (Unix seconds) from which the sent index is complete, if it
    /// has anything: mail sent after it would be in the index.
    fn covered_since(&self) -> Option<i64>;
    /// Whether `address` is one of the user's own (configured, or seen as a
    /// From of their sent mail).
    fn is_own_address(&self, address: &str) -> bool;
    /// Evidence beyond the sent index (tag and BATV keys, the learned
    /// fingerprint, the window), if the caller has it.
    fn evidence(&self) -> Option<&Evidence> {
        None
    }
    /// The user's sent mail to `recipient` dated within `from..=to` (Unix
    /// seconds); `None` when the caller cannot look it up.
    fn sent_to(&self, _recipient: &str, _from: i64, _to: i64) -> Option<Vec<SentTo>> {
        None
    }
}

/// Judges one analysed message. `received_at` is when the notice arrived
/// (its Date or the server's internal date), if known.
pub fn judge(analysis: &Analysis, sent: &dyn SentEvidence, received_at: Option<i64>) -> Judgement {
    let mut reasons = Vec::new();
    if analysis.kind == Kind::None {
        return Judgement {
            verdict: Verdict::NotBounce,
            reasons: vec![Reason {
                rule: "verdict.not-a-bounce",
                detail: "ordinary mail: no bounce, auto-reply, challenge or report".into(),
            }],
        };
    }

    // 1. The original is in the sent index: genuine, whatever else is said.
    if let Some(id) = analysis
        .original_message_ids
        .iter()
        .find(|id| sent.contains(id))
    {
        return Judgement {
            verdict: Verdict::Genuine,
            reasons: vec![Reason {
                rule: "verdict.sent-index-hit",
                detail: format!("the original <{id}> is in your sent mail"),
            }],
        };
    }

    // 2. A signature only the user's systems can make: a backsweep tag in the
    //    original's Message-ID, a BATV signature on the address the notice
    //    was delivered to. Valid → genuine; present but wrong → forged.
    if let Some(judgement) = sent
        .evidence()
        .and_then(|ev| judge_signatures(analysis, ev, sent, received_at))
    {
        return judgement;
    }

    // 3. The original is known, not in the index, and the index covers the
    //    time it was sent: the user did not send it.
    if let Some(id) = analysis.original_message_ids.first() {
        let original_date = analysis.original.date.as_deref().and_then(parse_date);
        let sent_after = original_date.or_else(|| received_at.map(|r| r - MAX_NOTICE_DELAY_SECS));
        match (sent.covered_since(), sent_after) {
            (Some(since), Some(when)) if since <= when => {
                reasons.push(Reason {
                    rule: "verdict.not-in-sent-index",
                    detail: format!(
                        "the original <{id}> is not in your sent mail, which is indexed from before it was sent"
                    ),
                });
                return Judgement {
                    verdict: Verdict::Backscatter,
                    reasons,
                };
            }
            (None, _) => reasons.push(Reason {
                rule: "verdict.no-sent-index",
                detail: "no sent mail is indexed yet, so the original cannot be looked up".into(),
            }),
            _ => reasons.push(Reason {
                rule: "verdict.original-predates-index",
                detail: format!("the original <{id}> may be older than the indexed sent mail"),
            }),
        }
    }

    // 4. The original's sender is not the user.
    if let Some(from) = analysis.original.from.as_deref() {
        let addresses = addresses_in(from);
        if let Some(first) = addresses.first() {
            if !addresses.iter().any(|a| sent.is_own_address(a)) {
                reasons.insert(
                    0,
                    Reason {
                        rule: "verdict.foreign-sender",
                        detail: format!("the original was sent from {first}, which is not one of your addresses"),
                    },
                );
                return Judgement {
                    verdict: Verdict::Backscatter,
                    reasons,
                };
            }
        }
    }

    // 5. The original does not look like the user's mail (learned fingerprints).
    if let Some(reason) = sent
        .evidence()
        .and_then(|ev| fingerprint_mismatch(analysis, ev))
    {
        reasons.insert(0, reason);
        return Judgement {
            verdict: Verdict::Backscatter,
            reasons,
        };
    }

    if analysis.original_message_ids.is_empty() {
        reasons.push(Reason {
            rule: "verdict.no-original-id",
            detail: "the message does not say which original it is about".into(),
        });
        // 6. No original named: did the user write to the failed recipient
        //    shortly before?
        if let Some((verdict, reason)) = judge_window(analysis, sent, received_at) {
            reasons.insert(0, reason);
            return Judgement { verdict, reasons };
        }
    }
    Judgement {
        verdict: Verdict::Unknown,
        reasons,
    }
}

/// Tags and BATV signatures: a valid one anywhere makes the notice genuine;
/// otherwise a present but invalid or expired one makes it backscatter.
fn judge_signatures(
    analysis: &Analysis,
    ev: &Evidence,
    sent: &dyn SentEvidence,
    received_at: Option<i64>,
) -> Option<Judgement> {
    let at = received_at.unwrap_or_else(crate::store::now_unix);
    let mut bad: Option<Reason> = None;
    if let Some(keys) = &ev.tags {
        for id in &analysis.original_message_ids {
            match tags::verify(id, keys, at) {
                TagCheck::Valid { key_id, age_days } => {
                    return Some(decided(
                        Verdict::Genuine,
                        "verdict.valid-tag",
                        format!("the original <{id}> carries your valid tag (key {key_id}, {age_days} days old)"),
                    ))
                }
                TagCheck::Expired { age_days } => {
                    bad.get_or_insert(Reason {
                        rule: "verdict.expired-tag",
                        detail: format!(
                            "the original <{id}> carries a tag {age_days} days old, older than the {} days allowed",
                            keys.max_age_days
                        ),
                    });
                }
                TagCheck::Invalid { why } => {
                    bad.get_or_insert(Reason {
                        rule: "verdict.invalid-tag",
                        detail: format!("the original <{id}> carries a tag you did not make: {why}"),
                    });
                }
                TagCheck::NotATag => {}
            }
        }
    }
    if let Some(key) = &ev.batv_key {
        // Only signatures of the user's own addresses are the user's server's
        // (a notice may name other people's signed addresses too).
        let own = analysis.delivered_to.iter().filter(|a| {
            batv::parse(a).is_some_and(|s| sent.is_own_address(&s.address.to_ascii_lowercase()))
        });
        for address in own {
            match batv::verify(address, &key.0, at) {
                BatvCheck::Valid { address: signed } => {
                    return Some(decided(
                        Verdict::Genuine,
                        "verdict.valid-batv",
                        format!("it was sent to {address}, a valid BATV signature of {signed} by your mail server"),
                    ))
                }
                BatvCheck::Expired { .. } => {
                    bad.get_or_insert(Reason {
                        rule: "verdict.expired-batv",
                        detail: format!("it was sent to {address}, whose BATV signature had expired when it arrived"),
                    });
                }
                BatvCheck::Invalid { .. } => {
                    bad.get_or_insert(Reason {
                        rule: "verdict.invalid-batv",
                        detail: format!("it was sent to {address}, whose BATV signature your mail server did not make"),
                    });
                }
                BatvCheck::NotSigned => {}
            }
        }
    }
    bad.map(|reason| Judgement {
        verdict: Verdict::Backscatter,
        reasons: vec![reason],
    })
}

fn decided(verdict: Verdict, rule: &'static str, detail: String) -> Judgement {
    Judgement {
        verdict,
        reasons: vec![Reason { rule, detail }],
    }
}

/// The learned fingerprints: an original whose Message-ID or relays the
/// user's mail never has.
fn fingerprint_mismatch(analysis: &Analysis, ev: &Evidence) -> Option<Reason> {
    let fp = &ev.fingerprint;
    let by_id = analysis
        .original_message_ids
        .first()
        .and_then(|id| fp.check_id(id).map(|m| (id, m)));
    let mismatch = match by_id {
        Some((_, m)) => m,
        None => fp.check_relays(&analysis.original.received)?,
    };
    let id = analysis
        .original_message_ids
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    Some(match mismatch {
        Mismatch::IdDomain(domain) => Reason {
            rule: "verdict.foreign-id-domain",
            detail: format!(
                "the original <{id}> has a Message-ID domain ({domain}) that none of your {} sent messages has",
                fp.sent_messages
            ),
        },
        Mismatch::IdShape(shape) => Reason {
            rule: "verdict.foreign-id-shape",
            detail: format!(
                "the original <{id}> has a Message-ID shaped `{shape}`, unlike every one your mail program makes for that domain"
            ),
        },
        Mismatch::Relays(domains) => Reason {
            rule: "verdict.foreign-relays",
            detail: format!(
                "the original passed through {}, none of the relays your mail leaves through",
                domains.join(", ")
            ),
        },
    })
}

/// The recipient window, for a notice that names no original.
fn judge_window(
    analysis: &Analysis,
    sent: &dyn SentEvidence,
    received_at: Option<i64>,
) -> Option<(Verdict, Reason)> {
    if analysis.kind == Kind::Feedback {
        return None;
    }
    let arrived = received_at?;
    let days = sent
        .evidence()
        .map_or(window::DEFAULT_WINDOW_DAYS, |ev| ev.window_days);
    let (from, to) = window::lookup_span(arrived, days);
    let mut looked_up = Vec::new();
    // Bounded: a notice listing hundreds of recipients is judged on the first few.
    for r in analysis
        .recipients
        .iter()
        .filter(|r| !sent.is_own_address(r))
        .take(16)
    {
        looked_up.push((r.clone(), sent.sent_to(r, from, to)?));
    }
    let subject = analysis.original.subject.as_deref();
    match window::check(&looked_up, Some(arrived), days, subject, sent.covered_since()) {
        WindowCheck::Sent {
            recipient,
            message,
            subject_match,
        } => Some((
            Verdict::Genuine,
            Reason {
                rule: "verdict.window-sent",
                detail: format!(
                    "you wrote to {recipient} shortly before (<{}>{})",
                    message.message_id,
                    if subject_match { ", same subject" } else { "" }
                ),
            },
        )),
        // An auto-reply may answer mail the user sent to a list, from a
        // member they never wrote to: silence proves nothing there. A bounce
        // or a challenge names the address the original went to.
        WindowCheck::NothingSent { .. } if analysis.kind == Kind::Autoreply => None,
        WindowCheck::NothingSent { recipients } => Some((
            Verdict::Backscatter,
            Reason {
                rule: "verdict.window-nothing-sent",
                detail: format!(
                    "you sent nothing to {} in the {days} days before, and your sent mail is indexed for that time",
                    recipients.join(", ")
                ),
            },
        )),
        WindowCheck::Unknown => None,
    }
}

/// Parses an RFC 5322 date into Unix seconds.
pub fn parse_date(value: &str) -> Option<i64> {
    mail_parser::DateTime::parse_rfc822(value.trim()).map(|d| d.to_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::OriginalHeaders;

    struct Index {
        ids: Vec<&'static str>,
        since: Option<i64>,
        own: Vec<&'static str>,
        evidence: Option<Evidence>,
        /// (recipient, date, subject) of sent mail, for the window.
        sent_to: Vec<(&'static str, i64, &'static str)>,
    }

    impl SentEvidence for Index {
        fn contains(&self, id: &str) -> bool {
            self.ids.contains(&id)
        }
        fn covered_since(&self) -> Option<i64> {
            self.since
        }
        fn is_own_address(&self, a: &str) -> bool {
            self.own.contains(&a)
        }
        fn evidence(&self) -> Option<&Evidence> {
            self.evidence.as_ref()
        }
        fn sent_to(&self, recipient: &str, from: i64, to: i64) -> Option<Vec<SentTo>> {
            Some(
                self.sent_to
                    .iter()
                    .filter(|(r, d, _)| *r == recipient && (from..=to).contains(d))
                    .map(|(_, d, s)| SentTo {
                        message_id: format!("{d}@example.org"),
                        date: *d,
                        subject: s.to_string(),
                    })
                    .collect(),
            )
        }
    }

    fn bounce(ids: &[&str], from: Option<&str>, date: Option<&str>) -> Analysis {
        Analysis {
            kind: Kind::Bounce,
            original_message_ids: ids.iter().map(|s| s.to_string()).collect(),
            recipients: vec![],
            rules: vec![],
            original: OriginalHeaders {
                from: from.map(str::to_string),
                date: date.map(str::to_string),
                ..OriginalHeaders::default()
            },
            message_id: None,
            truncated: false,
            unparsed: false,
            delivered_to: vec![],
        }
    }

    const DAY: i64 = 86_400;
    const NOV_2026: i64 = 1_793_491_200; // 2026-11-01

    fn index() -> Index {
        Index {
            ids: vec!["mine@example.org"],
            since: Some(NOV_2026 - 30 * DAY),
            own: vec!["alice@example.org"],
            evidence: None,
            sent_to: vec![],
        }
    }

    const TAG_SECRET: &str = "tag secret";
    const BATV_SECRET: &[u8] = b"batv secret";

    /// An index with tag and BATV keys and a learned fingerprint: 60 sent
    /// messages with UUID-shaped ids at example.org, relays via provider.example.
    fn index_with_evidence() -> Index {
        let mut fingerprint = crate::evidence::fingerprint::Fingerprint::default();
        let ids: Vec<String> = (0..60)
            .map(|i| format!("{i:08x}-1111-2222-3333-444455556666@example.org"))
            .collect();
        fingerprint.learn_ids(ids.iter().map(String::as_str));
        for _ in 0..3 {
            fingerprint.learn_relays(&["from [10.0.0.2] by smtp.provider.example".into()]);
        }
        Index {
            evidence: Some(Evidence {
                tags: Some(tags::TagKeys {
                    keys: vec![tags::TagKey {
                        id: "k1".into(),
                        secret: TAG_SECRET.as_bytes().to_vec(),
                    }],
                    max_age_days: 30,
                }),
                batv_key: Some(crate::evidence::BatvKey(zeroize::Zeroizing::new(
                    BATV_SECRET.to_vec(),
                ))),
                fingerprint,
                window_days: 7,
            }),
            ..index()
        }
    }

    fn tag(secret: &str, minted: i64) -> String {
        let key = tags::TagKey {
            id: "k1".into(),
            secret: secret.as_bytes().to_vec(),
        };
        tags::mint(&key, "shop.example.org", minted, "abcdefgh12")
    }

    fn judged(a: &Analysis, idx: &Index, at: Option<i64>) -> (Verdict, &'static str) {
        let j = judge(a, idx, at);
        (j.verdict, j.reasons.first().map_or("", |r| r.rule))
    }

    #[test]
    fn ordinary_mail_is_not_a_bounce() {
        let mut a = bounce(&[], None, None);
        a.kind = Kind::None;
        assert_eq!(judge(&a, &index(), None).verdict, Verdict::NotBounce);
    }

    #[test]
    fn a_hit_in_the_sent_index_is_genuine_even_with_a_foreign_sender() {
        let a = bounce(&["mine@example.org"], Some("x@evil.example"), None);
        let j = judge(&a, &index(), None);
        assert_eq!(j.verdict, Verdict::Genuine);
        assert_eq!(j.reasons[0].rule, "verdict.sent-index-hit");
    }

    #[test]
    fn a_known_original_missing_from_a_covering_index_is_backscatter() {
        let a = bounce(
            &["forged@example.org"],
            Some("alice@example.org"),
            Some("Mon, 2 Nov 2026 10:00:00 +0000"),
        );
        let j = judge(&a, &index(), None);
        assert_eq!(j.verdict, Verdict::Backscatter);
        assert_eq!(j.reasons[0].rule, "verdict.not-in-sent-index");
    }

    #[test]
    fn an_original_older_than_the_index_is_unknown() {
        let a = bounce(
            &["old@example.org"],
            Some("alice@example.org"),
            Some("Mon, 2 Nov 2020 10:00:00 +0000"),
        );
        assert_eq!(judge(&a, &index(), None).verdict, Verdict::Unknown);
    }

    #[test]
    fn without_the_original_date_the_notice_date_bounds_it() {
        let a = bounce(&["forged@example.org"], None, None);
        assert_eq!(
            judge(&a, &index(), Some(NOV_2026)).verdict,
            Verdict::Backscatter
        );
        // Arrived right after indexing began: the original may predate it.
        assert_eq!(
            judge(&a, &index(), Some(NOV_2026 - 29 * DAY)).verdict,
            Verdict::Unknown
        );
    }

    #[test]
    fn an_empty_index_never_calls_backscatter_from_absence() {
        let mut idx = index();
        idx.since = None;
        let a = bounce(
            &["forged@example.org"],
            Some("alice@example.org"),
            Some("Mon, 2 Nov 2026 10:00:00 +0000"),
        );
        assert_eq!(judge(&a, &idx, None).verdict, Verdict::Unknown);
    }

    #[test]
    fn a_foreign_sender_is_backscatter() {
        let a = bounce(&[], Some("Spammer <someone@else.example>"), None);
        let j = judge(&a, &index(), None);
        assert_eq!(j.verdict, Verdict::Backscatter);
        assert_eq!(j.reasons[0].rule, "verdict.foreign-sender");
    }

    #[test]
    fn no_evidence_is_unknown() {
        let a = bounce(&[], Some("alice@example.org"), None);
        let j = judge(&a, &index(), None);
        assert_eq!(j.verdict, Verdict::Unknown);
        assert!(j.reasons.iter().any(|r| r.rule == "verdict.no-original-id"));
    }

    // -- signed tags and BATV (rows 2 and 3 of the table) ------------------------------

    #[test]
    fn a_valid_tag_is_genuine_even_when_missing_from_a_covering_index() {
        let id = tag(TAG_SECRET, NOV_2026 - DAY);
        let a = bounce(
            &[&id],
            Some("shop@elsewhere.example"),
            Some("Mon, 2 Nov 2026 10:00:00 +0000"),
        );
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026)),
            (Verdict::Genuine, "verdict.valid-tag")
        );
    }

    #[test]
    fn an_invalid_or_expired_tag_is_backscatter() {
        let forged = tag("guessed", NOV_2026);
        let a = bounce(&[&forged], None, None);
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026)),
            (Verdict::Backscatter, "verdict.invalid-tag")
        );
        let old = tag(TAG_SECRET, NOV_2026 - 40 * DAY);
        let a = bounce(&[&old], None, None);
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026)),
            (Verdict::Backscatter, "verdict.expired-tag")
        );
        // Judged as of the notice's arrival, not of the sweep.
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026 - 35 * DAY)).0,
            Verdict::Genuine
        );
    }

    #[test]
    fn a_sent_index_hit_beats_an_invalid_tag() {
        let mut idx = index_with_evidence();
        let forged: &'static str = Box::leak(tag("guessed", NOV_2026).into_boxed_str());
        idx.ids.push(forged);
        let a = bounce(&[forged], None, None);
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026)),
            (Verdict::Genuine, "verdict.sent-index-hit")
        );
    }

    #[test]
    fn batv_signatures_on_the_delivery_address() {
        let signed = batv::sign(BATV_SECRET, 0, "alice@example.org", NOV_2026 - DAY);
        let mut a = bounce(&[], None, None);
        a.delivered_to = vec!["alice@example.org".into(), signed.clone()];
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026)),
            (Verdict::Genuine, "verdict.valid-batv")
        );
        a.delivered_to = vec![batv::sign(b"forged", 0, "alice@example.org", NOV_2026)];
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026)),
            (Verdict::Backscatter, "verdict.invalid-batv")
        );
        a.delivered_to = vec![signed];
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026 + 20 * DAY)),
            (Verdict::Backscatter, "verdict.expired-batv")
        );
        // Someone else's signed address is not the user's server's signature.
        a.delivered_to = vec![batv::sign(b"forged", 0, "bob@example.net", NOV_2026)];
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026)).0,
            Verdict::Unknown
        );
        a.delivered_to = vec![batv::sign(
            BATV_SECRET,
            0,
            "alice@example.org",
            NOV_2026 - DAY,
        )];
        // Without a configured key a signature means nothing.
        assert_eq!(
            judged(&a, &index(), Some(NOV_2026 + 20 * DAY)).0,
            Verdict::Unknown
        );
    }

    // -- learned fingerprints (row 6) ---------------------------------------------------

    #[test]
    fn a_foreign_message_id_domain_or_shape_is_backscatter_when_the_index_cannot_say() {
        // Original older than the index: the index alone says unknown.
        let old = Some("Mon, 2 Nov 2020 10:00:00 +0000");
        let a = bounce(&["spam.123@bulk.example"], Some("alice@example.org"), old);
        assert_eq!(judged(&a, &index(), None).0, Verdict::Unknown);
        assert_eq!(
            judged(&a, &index_with_evidence(), None),
            (Verdict::Backscatter, "verdict.foreign-id-domain")
        );
        let a = bounce(&["spam.123@example.org"], Some("alice@example.org"), old);
        assert_eq!(
            judged(&a, &index_with_evidence(), None),
            (Verdict::Backscatter, "verdict.foreign-id-shape")
        );
        let a = bounce(
            &["0000beef-1111-2222-3333-444455556666@example.org"],
            Some("alice@example.org"),
            old,
        );
        assert_eq!(judged(&a, &index_with_evidence(), None).0, Verdict::Unknown);
    }

    #[test]
    fn foreign_relays_are_backscatter() {
        let mut a = bounce(&[], Some("alice@example.org"), None);
        a.original.received = vec!["from bot (192.0.2.7) by mx.victim.example".into()];
        assert_eq!(
            judged(&a, &index_with_evidence(), None),
            (Verdict::Backscatter, "verdict.foreign-relays")
        );
        a.original
            .received
            .push("from [10.0.0.2] by smtp2.provider.example".into());
        assert_eq!(judged(&a, &index_with_evidence(), None).0, Verdict::Unknown);
    }

    #[test]
    fn fingerprints_never_override_a_hit_or_a_valid_tag() {
        let idx = index_with_evidence();
        let a = bounce(&["mine@example.org"], None, None);
        assert_eq!(judged(&a, &idx, None).0, Verdict::Genuine, "hit");
        let id = tag(TAG_SECRET, NOV_2026);
        let mut a = bounce(&[&id], None, None);
        a.original.received = vec!["from bot by mx.victim.example".into()];
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026)),
            (Verdict::Genuine, "verdict.valid-tag")
        );
    }

    // -- the recipient window (row 7) ---------------------------------------------------

    fn no_id_bounce(recipient: &str) -> Analysis {
        let mut a = bounce(&[], None, None);
        a.recipients = vec![recipient.to_string()];
        a
    }

    #[test]
    fn mail_to_the_failed_recipient_in_the_window_is_genuine() {
        let mut idx = index_with_evidence();
        idx.sent_to = vec![("bob@example.net", NOV_2026 - 2 * DAY, "Lunch")];
        let a = no_id_bounce("bob@example.net");
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026)),
            (Verdict::Genuine, "verdict.window-sent")
        );
        // Outside the window, a matching subject still counts.
        idx.sent_to = vec![("bob@example.net", NOV_2026 - 12 * DAY, "Quarterly report")];
        let mut a = no_id_bounce("bob@example.net");
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026)),
            (Verdict::Backscatter, "verdict.window-nothing-sent")
        );
        a.original.subject = Some("Re: Quarterly report".into());
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026)),
            (Verdict::Genuine, "verdict.window-sent")
        );
    }

    #[test]
    fn nothing_sent_to_the_recipient_is_backscatter_only_where_the_index_covers() {
        let idx = index_with_evidence();
        let a = no_id_bounce("stranger@example.net");
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026)),
            (Verdict::Backscatter, "verdict.window-nothing-sent")
        );
        // The index starts within the window: it may have missed the mail.
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026 - 25 * DAY)).0,
            Verdict::Unknown
        );
        // No arrival time, or no recipients: unknown.
        assert_eq!(judged(&a, &idx, None).0, Verdict::Unknown);
        assert_eq!(
            judged(&bounce(&[], None, None), &idx, Some(NOV_2026)).0,
            Verdict::Unknown
        );
        // The user's own address as "recipient" is no evidence.
        assert_eq!(
            judged(&no_id_bounce("alice@example.org"), &idx, Some(NOV_2026)).0,
            Verdict::Unknown
        );
    }

    #[test]
    fn the_window_is_not_used_when_the_original_is_named() {
        let mut idx = index_with_evidence();
        idx.since = None;
        idx.sent_to = vec![("bob@example.net", NOV_2026 - DAY, "x")];
        let mut a = bounce(
            &["0000beef-1111-2222-3333-444455556666@example.org"],
            None,
            None,
        );
        a.recipients = vec!["bob@example.net".into()];
        assert_eq!(judged(&a, &idx, Some(NOV_2026)).0, Verdict::Unknown);
    }

    #[test]
    fn an_auto_reply_from_someone_never_written_to_is_no_evidence() {
        let mut idx = index_with_evidence();
        let mut a = no_id_bounce("member@list.example");
        a.kind = Kind::Autoreply;
        assert_eq!(judged(&a, &idx, Some(NOV_2026)).0, Verdict::Unknown);
        idx.sent_to = vec![("member@list.example", NOV_2026 - DAY, "x")];
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026)),
            (Verdict::Genuine, "verdict.window-sent")
        );
        a.kind = Kind::Challenge;
        idx.sent_to.clear();
        assert_eq!(
            judged(&a, &idx, Some(NOV_2026)),
            (Verdict::Backscatter, "verdict.window-nothing-sent")
        );
    }

    #[test]
    fn feedback_reports_never_use_the_window() {
        let mut a = no_id_bounce("stranger@example.net");
        a.kind = Kind::Feedback;
        assert_eq!(
            judged(&a, &index_with_evidence(), Some(NOV_2026)).0,
            Verdict::Unknown
        );
    }

    #[test]
    fn dates_parse() {
        assert_eq!(
            parse_date("Mon, 2 Nov 2026 10:00:00 +0000"),
            Some(NOV_2026 + DAY + 36_000)
        );
    }
}
