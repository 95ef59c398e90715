//! The analysis core: bytes in, [`Analysis`] out.
//!
//! This module is pure — no I/O, no IMAP, no configuration — so that every
//! decision can be reproduced offline with `backsweep inspect` and tested
//! against a corpus of real mail.

use serde::Serialize;

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

/// The result of analysing one message.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub kind: Kind,
    pub original_message_ids: Vec<String>,
    pub recipients: Vec<String>,
    pub rules: Vec<String>,
}

/// Analyse one raw message.
pub fn analyze(_raw: &[u8]) -> Analysis {
    Analysis {
        kind: Kind::None,
        original_message_ids: Vec::new(),
        recipients: Vec::new(),
        rules: Vec::new(),
    }
}
