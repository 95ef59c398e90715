//! RFC 3464 delivery-status fields (and the same field syntax in RFC 8098
//! read receipts and RFC 5965 feedback reports).
//!
//! Real DSNs bend the format: groups without the separating blank line,
//! several blank lines, fields written into a text/plain part. So recipient
//! records are started by the recipient fields themselves rather than by
//! blank lines.

use super::text::{dsn_address, field_groups, starts_with_ascii_case_insensitive};
use std::borrow::Cow;

/// One per-recipient group of a delivery-status notification. The fields
/// are borrowed from the notice's text (copied only where folded lines were
/// joined): a notice is analysed and dropped, and most of its fields are
/// never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientStatus<'a> {
    /// `Final-Recipient`, or `Original-Recipient` when there is no final one.
    pub address: Option<String>,
    /// The `Action` field (failed, delayed, delivered, relayed, expanded).
    pub action: Option<Cow<'a, str>>,
    /// The `Status` field, e.g. `5.1.1`.
    pub status: Option<Cow<'a, str>>,
    /// The `Diagnostic-Code` field.
    pub diagnostic: Option<Cow<'a, str>>,
}

/// A parsed delivery-status body, borrowed from its text like
/// [`RecipientStatus`].
#[derive(Debug, Clone, Default)]
pub struct DeliveryStatus<'a> {
    /// The per-message fields (`Reporting-MTA`, `Arrival-Date`, ...), plus
    /// any field that appeared before the first recipient.
    pub per_message: Vec<(&'a str, Cow<'a, str>)>,
    /// The per-recipient groups.
    pub recipients: Vec<RecipientStatus<'a>>,
}

impl DeliveryStatus<'_> {
    /// A per-message field, case-insensitive.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.per_message
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// The recipients that did not receive the message: every recipient
    /// except those whose action says it was delivered, relayed or expanded.
    pub fn failed_addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in &self.recipients {
            let succeeded = r.action.as_deref().is_some_and(|a| {
                let a = a.trim();
                ["delivered", "relayed", "expanded"]
                    .iter()
                    .any(|word| starts_with_ascii_case_insensitive(a, word))
            });
            if let Some(addr) = &r.address {
                if !succeeded && seen.insert(addr.as_str()) {
                    out.push(addr.clone());
                }
            }
        }
        out
    }
}

/// How many recipient groups are read: enough for any real notice, and a
/// bound on the work a hostile one can cause.
const MAX_RECIPIENTS: usize = 1000;

/// The fields [`parse_delivery_status`] tells apart (names compared without
/// building a lower-case copy of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DsnField {
    Recipient(RecipientField),
    Action,
    Status,
    Diagnostic,
    Other,
}

/// The fields that name a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecipientField {
    Final,
    Original,
    XActual,
}

impl DsnField {
    fn of(name: &str) -> DsnField {
        const NAMES: [(&str, DsnField); 6] = [
            (
                "final-recipient",
                DsnField::Recipient(RecipientField::Final),
            ),
            (
                "original-recipient",
                DsnField::Recipient(RecipientField::Original),
            ),
            (
                "x-actual-recipient",
                DsnField::Recipient(RecipientField::XActual),
            ),
            ("action", DsnField::Action),
            ("status", DsnField::Status),
            ("diagnostic-code", DsnField::Diagnostic),
        ];
        NAMES
            .iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n))
            .map_or(DsnField::Other, |(_, field)| *field)
    }
}

/// Parses DSN-style fields from `text`.
pub fn parse_delivery_status(text: &str) -> DeliveryStatus<'_> {
    let mut status = DeliveryStatus::default();
    let mut current: Option<RecipientStatus> = None;
    // Which recipient fields the current record already has, so that a
    // repeated one starts the next record even without a blank line.
    let mut seen_final = false;
    let mut seen_original = false;
    for group in field_groups(text) {
        for field in group {
            match DsnField::of(field.name) {
                DsnField::Recipient(kind) => {
                    let is_final = kind == RecipientField::Final;
                    let is_original = kind == RecipientField::Original;
                    let starts_new = current.is_none()
                        || (is_final && seen_final)
                        || (is_original && seen_original);
                    if starts_new {
                        if let Some(done) = current.take() {
                            status.recipients.push(done);
                        }
                        if status.recipients.len() >= MAX_RECIPIENTS {
                            return status;
                        }
                        current = Some(RecipientStatus::default());
                        seen_final = false;
                        seen_original = false;
                    }
                    let record = current.get_or_insert_with(RecipientStatus::default);
                    let addr = dsn_address(&field.value);
                    if is_final {
                        seen_final = true;
                        if addr.is_some() {
                            record.address = addr;
                        }
                    } else {
                        seen_original = seen_original || is_original;
                        if record.address.is_none() {
                            record.address = addr;
                        }
                    }
                }
                kind @ (DsnField::Action | DsnField::Status | DsnField::Diagnostic)
                    if current.is_some() =>
                {
                    if let Some(record) = current.as_mut() {
                        let value = Some(field.value);
                        match kind {
                            DsnField::Action => record.action = value,
                            DsnField::Status => record.status = value,
                            _ => record.diagnostic = value,
                        }
                    }
                }
                _ if current.is_none() => status.per_message.push((field.name, field.value)),
                _ => {}
            }
        }
    }
    if let Some(done) = current {
        status.recipients.push(done);
    }
    status
}

/// True if `text` carries DSN recipient fields in the RFC 3464 form
/// (`Final-Recipient: type; address` with an `Action` or `Status`), which a
/// person does not type.
pub fn has_dsn_fields(status: &DeliveryStatus<'_>) -> bool {
    status.recipients.iter().any(|r| {
        r.address.is_some()
            && (r.action.is_some()
                || r.status
                    .as_deref()
                    .is_some_and(|s| s.trim().starts_with(['2', '4', '5'])))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_with_and_without_blank_lines() {
        let text = "Reporting-MTA: dns; mx.example\nArrival-Date: x\n\nFinal-Recipient: rfc822; A@b.example\nAction: failed\nStatus: 5.1.1\nFinal-Recipient: rfc822; c@d.example\nAction: delivered\nStatus: 2.0.0\n";
        let s = parse_delivery_status(text);
        assert_eq!(s.field("reporting-mta"), Some("dns; mx.example"));
        assert_eq!(s.recipients.len(), 2);
        assert_eq!(s.failed_addresses(), vec!["a@b.example"]);
        assert!(has_dsn_fields(&s));
    }

    #[test]
    fn original_recipient_is_a_fallback() {
        let s = parse_delivery_status("Original-Recipient: rfc822;x@y.example\nFinal-Recipient: rfc822;z@y.example\nAction: failed\n");
        assert_eq!(s.failed_addresses(), vec!["z@y.example"]);
        let s = parse_delivery_status("Original-Recipient: rfc822;x@y.example\nAction: failed\n");
        assert_eq!(s.failed_addresses(), vec!["x@y.example"]);
    }
}
