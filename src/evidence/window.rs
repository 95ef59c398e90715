//! The recipient window: for a notice that does not say which original it
//! is about, did the user write to the failed recipient shortly before?
//!
//! A genuine bounce follows the user's own message to that recipient within
//! days (MTAs retry for about five); backscatter goes to recipients the
//! user never wrote to. Pure: the sent mail to the recipient comes in as a
//! list (the sweeper reads it from the sent index).

/// The default window: a week covers an MTA's retries (about five days)
/// plus a weekend before the user reads the bounce.
pub const DEFAULT_WINDOW_DAYS: u32 = 7;

/// How much further back a sent message with a matching subject still
/// counts (a late delay notice, a slow auto-reply): four windows.
pub const SUBJECT_WINDOW_FACTOR: i64 = 4;

/// Seconds a notice's clock may be behind the sender's.
pub const CLOCK_SKEW_SECS: i64 = 3600;

/// One sent message to a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentTo {
    /// Its Message-ID.
    pub message_id: String,
    /// Its date (Unix seconds).
    pub date: i64,
    /// Its subject.
    pub subject: String,
}

/// What the window says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowCheck {
    /// The user wrote to the recipient in the window.
    Sent {
        /// The recipient.
        recipient: String,
        /// The sent message.
        message: SentTo,
        /// Whether its subject matches the original's.
        subject_match: bool,
    },
    /// Nothing was sent to any failed recipient in the window, and the sent
    /// index covers the window.
    NothingSent {
        /// The recipients looked up.
        recipients: Vec<String>,
    },
    /// Not enough to say (no recipients, no arrival time, or the index does
    /// not cover the window).
    Unknown,
}

/// The time span to look up for a notice that arrived at `arrived`:
/// `(from, to)` in Unix seconds, the widest any match may have.
pub fn lookup_span(arrived: i64, window_days: u32) -> (i64, i64) {
    let window = i64::from(window_days) * 86_400;
    (
        arrived - window * SUBJECT_WINDOW_FACTOR,
        arrived + CLOCK_SKEW_SECS,
    )
}

/// Judges the window. `sent` holds, per failed recipient, the user's sent
/// mail to it within [`lookup_span`]; `original_subject` is the original's
/// Subject when the notice quotes it; `covered_since` is where the sent
/// index starts.
pub fn check(
    sent: &[(String, Vec<SentTo>)],
    arrived: Option<i64>,
    window_days: u32,
    original_subject: Option<&str>,
    covered_since: Option<i64>,
) -> WindowCheck {
    let Some(arrived) = arrived else {
        return WindowCheck::Unknown;
    };
    if sent.is_empty() {
        return WindowCheck::Unknown;
    }
    let window = i64::from(window_days) * 86_400;
    let (_, latest) = lookup_span(arrived, window_days);
    let mut best: Option<(String, SentTo, bool)> = None;
    for (recipient, messages) in sent {
        for m in messages {
            if m.date > latest {
                continue;
            }
            let subject_match = original_subject.is_some_and(|s| subjects_match(s, &m.subject));
            let in_window = m.date >= arrived - window;
            if !(in_window || subject_match) {
                continue;
            }
            // Prefer a subject match, then the latest message.
            let better = match &best {
                None => true,
                Some((_, b, b_match)) => (subject_match, m.date) > (*b_match, b.date),
            };
            if better {
                best = Some((recipient.clone(), m.clone(), subject_match));
            }
        }
    }
    if let Some((recipient, message, subject_match)) = best {
        return WindowCheck::Sent {
            recipient,
            message,
            subject_match,
        };
    }
    match covered_since {
        Some(since) if since <= arrived - window => WindowCheck::NothingSent {
            recipients: sent.iter().map(|(r, _)| r.clone()).collect(),
        },
        _ => WindowCheck::Unknown,
    }
}

/// Whether two subjects are the same message's: equal after dropping
/// reply/forward/notice prefixes, case and spacing, or one containing the
/// other when that is long enough to mean something.
pub fn subjects_match(a: &str, b: &str) -> bool {
    let (a, b) = (normalize_subject(a), normalize_subject(b));
    if a.is_empty() || b.is_empty() {
        return false;
    }
    a == b || (a.len().min(b.len()) >= 8 && (a.contains(&b) || b.contains(&a)))
}

fn normalize_subject(s: &str) -> String {
    let mut s = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    loop {
        let before = s.len();
        for prefix in [
            "re:",
            "aw:",
            "fw:",
            "fwd:",
            "wg:",
            "undeliverable:",
            "undelivered:",
            "returned mail:",
            "delivery failure:",
            "automatic reply:",
            "auto:",
        ] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest.trim_start().to_string();
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_793_491_200;
    const DAY: i64 = 86_400;

    fn to(id: &str, date: i64, subject: &str) -> SentTo {
        SentTo {
            message_id: id.into(),
            date,
            subject: subject.into(),
        }
    }

    #[test]
    fn a_recent_message_to_the_recipient_is_genuine() {
        let sent = vec![("bob@x".to_string(), vec![to("a@me", T - 2 * DAY, "Hi")])];
        assert!(matches!(
            check(&sent, Some(T), 7, None, Some(0)),
            WindowCheck::Sent {
                subject_match: false,
                ..
            }
        ));
    }

    #[test]
    fn an_older_message_counts_only_with_a_matching_subject() {
        let sent = vec![(
            "bob@x".to_string(),
            vec![to("a@me", T - 10 * DAY, "Quarterly report")],
        )];
        assert!(matches!(
            check(&sent, Some(T), 7, None, Some(0)),
            WindowCheck::NothingSent { .. }
        ));
        assert!(matches!(
            check(&sent, Some(T), 7, Some("Re: Quarterly  REPORT"), Some(0)),
            WindowCheck::Sent {
                subject_match: true,
                ..
            }
        ));
    }

    #[test]
    fn nothing_sent_needs_coverage() {
        let sent = vec![("bob@x".to_string(), vec![])];
        assert!(matches!(
            check(&sent, Some(T), 7, None, Some(T - 30 * DAY)),
            WindowCheck::NothingSent { .. }
        ));
        assert_eq!(
            check(&sent, Some(T), 7, None, Some(T - DAY)),
            WindowCheck::Unknown
        );
        assert_eq!(check(&sent, Some(T), 7, None, None), WindowCheck::Unknown);
        assert_eq!(check(&sent, None, 7, None, Some(0)), WindowCheck::Unknown);
        assert_eq!(check(&[], Some(T), 7, None, Some(0)), WindowCheck::Unknown);
    }

    #[test]
    fn mail_sent_after_the_notice_does_not_count() {
        let sent = vec![("bob@x".to_string(), vec![to("a@me", T + DAY, "Hi")])];
        assert!(matches!(
            check(&sent, Some(T), 7, None, Some(0)),
            WindowCheck::NothingSent { .. }
        ));
    }

    #[test]
    fn subjects() {
        assert!(subjects_match("Undeliverable: Re: Lunch", "lunch"));
        assert!(subjects_match(
            "Your invoice 2026-113",
            "Fwd: your invoice 2026-113 (copy)"
        ));
        assert!(!subjects_match("Hi", "Hi there, long time"));
        assert!(!subjects_match("", ""));
    }
}
