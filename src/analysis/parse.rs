//! Turns raw bytes into the pieces the detectors need: the top-level header,
//! the explanatory text, the delivery-status / disposition / feedback field
//! blocks and the enclosed original, whatever MIME shape they arrive in.
//!
//! MIME decoding (transfer encodings, charsets, RFC 2047 words, nesting) is
//! done by `mail-parser`. Its output is taken apart here into owned, bounded
//! strings so that the later steps are simple text scans. When the parser
//! gives up, or MIME is broken, the whole message is treated as text and the
//! text-level detectors (DSN fields and headers quoted in the body) still work.

use super::text::{html_to_text, normalize_newlines};
use mail_parser::{MessageParser, MimeHeaders, PartType};

/// How much explanatory text is kept per message. A bounce's explanation is
/// short; the cap keeps a huge text attachment from costing time.
const MAX_BODY_TEXT: usize = 256 * 1024;

/// How many enclosed originals are kept (a digest of bounces is rare).
const MAX_ENCLOSED: usize = 8;

/// An original message returned inside a bounce or report.
#[derive(Debug, Clone)]
pub enum Enclosed {
    /// A whole `message/rfc822` (or `message/global`) part, as raw bytes.
    Message(Vec<u8>),
    /// A `text/rfc822-headers` part: the original's header only.
    Headers(String),
}

/// The parts of one message that analysis looks at.
#[derive(Debug, Default)]
pub struct Pieces {
    /// Top-level header fields, unfolded, raw (RFC 2047 words not decoded).
    pub headers: Vec<(String, String)>,
    /// The decoded Subject.
    pub subject: String,
    /// The `report-type` of every multipart/report, lower case.
    pub report_types: Vec<String>,
    /// Bodies of message/delivery-status (and global-) parts.
    pub dsn_texts: Vec<String>,
    /// Bodies of message/disposition-notification parts (read receipts).
    pub mdn_texts: Vec<String>,
    /// Bodies of message/feedback-report parts (ARF).
    pub feedback_texts: Vec<String>,
    /// Enclosed originals, in order.
    pub enclosed: Vec<Enclosed>,
    /// The explanation: text parts outside the enclosed original, HTML
    /// flattened, JSON kept, bounded by [`MAX_BODY_TEXT`].
    pub body: String,
    /// True when MIME parsing failed and the message was read as plain text.
    pub unparsed: bool,
}

impl Pieces {
    /// The first value of a top-level header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn push_body(&mut self, text: &str) {
        let room = MAX_BODY_TEXT.saturating_sub(self.body.len());
        if room == 0 {
            return;
        }
        if !self.body.is_empty() {
            self.body.push('\n');
        }
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.body.push_str(&text[..end]);
    }
}

/// Parses `raw` (already bounded by the caller) into [`Pieces`].
///
/// `mail-parser` promises not to panic, but has had panics reported; the call
/// is contained so one hostile message yields an "unparsed" analysis instead
/// of taking the daemon down.
pub fn parse(raw: &[u8]) -> Pieces {
    let normalized = normalize_newlines(raw);
    if too_deeply_nested(&normalized) {
        // mail-parser keeps nested messages as nested values; thousands of
        // levels exhaust a thread's stack when they are dropped, which is an
        // abort, not a catchable panic. No real bounce nests this deep.
        return parse_as_text(&normalized);
    }
    let parsed = std::panic::catch_unwind(|| parse_mime(&normalized));
    match parsed {
        Ok(Some(pieces)) => pieces,
        _ => parse_as_text(&normalized),
    }
}

fn parse_mime(bytes: &[u8]) -> Option<Pieces> {
    let message = MessageParser::default().parse(bytes)?;
    let mut pieces = Pieces {
        headers: message
            .headers_raw()
            .map(|(n, v)| (n.to_string(), unfold(v)))
            .collect(),
        subject: message.subject().unwrap_or_default().to_string(),
        ..Pieces::default()
    };
    if pieces.headers.is_empty() {
        return None;
    }
    let mut html = String::new();
    for (index, part) in message.parts.iter().enumerate() {
        let is_root = index == 0;
        let (ctype, subtype) = match part.content_type() {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or_default().to_ascii_lowercase(),
            ),
            None => ("text".to_string(), "plain".to_string()),
        };
        if ctype == "multipart" && subtype == "report" {
            if let Some(rt) = part
                .content_type()
                .and_then(|ct| ct.attribute("report-type"))
            {
                pieces.report_types.push(rt.to_ascii_lowercase());
            }
        }
        let text_of = || -> String {
            match &part.body {
                PartType::Text(t) | PartType::Html(t) => t.to_string(),
                PartType::Binary(b) | PartType::InlineBinary(b) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                PartType::Message(m) => String::from_utf8_lossy(m.raw_message()).into_owned(),
                PartType::Multipart(_) => String::new(),
            }
        };
        match (ctype.as_str(), subtype.as_str()) {
            ("multipart", _) => {}
            ("message", "delivery-status" | "global-delivery-status") => {
                pieces.dsn_texts.push(normalize_text(&text_of()))
            }
            ("message", "disposition-notification" | "global-disposition-notification") => {
                pieces.mdn_texts.push(normalize_text(&text_of()))
            }
            ("message", "feedback-report") => {
                pieces.feedback_texts.push(normalize_text(&text_of()))
            }
            ("message", "rfc822" | "global" | "partial" | "rfc822-headers" | "global-headers")
            | ("text", "rfc822-headers" | "rfc822-header" | "global-headers")
                if pieces.enclosed.len() < MAX_ENCLOSED =>
            {
                let enclosed = match &part.body {
                    PartType::Message(m) => Enclosed::Message(m.raw_message().to_vec()),
                    _ if subtype.contains("headers") || subtype == "rfc822-header" => {
                        Enclosed::Headers(normalize_text(&text_of()))
                    }
                    PartType::Binary(b) | PartType::InlineBinary(b) => {
                        Enclosed::Message(b.to_vec())
                    }
                    PartType::Text(t) | PartType::Html(t) => {
                        Enclosed::Message(t.as_bytes().to_vec())
                    }
                    PartType::Multipart(_) => continue,
                };
                pieces.enclosed.push(enclosed);
            }
            ("text", "html") if html.len() < MAX_BODY_TEXT => {
                html.push_str(&html_to_text(&text_of()));
                html.push('\n');
            }
            ("text", "html") => {}
            ("text", _) | ("application", "json") => {
                if !is_root
                    && pieces.enclosed.len() < MAX_ENCLOSED
                    && part_header_is_a_message_header(part)
                {
                    // A returned original pasted as a part without MIME
                    // headers of its own: its header became the part header.
                    let raw = bytes
                        .get(part.offset_header as usize..part.offset_body as usize)
                        .unwrap_or_default();
                    pieces
                        .enclosed
                        .push(Enclosed::Headers(String::from_utf8_lossy(raw).into_owned()));
                }
                let text = normalize_text(&text_of());
                pieces.push_body(&text);
            }
            _ => {}
        }
    }
    if pieces.body.trim().is_empty() || !html.is_empty() && pieces.body.len() < 64 {
        pieces.push_body(&html);
    }
    let nothing_found = pieces.body.trim().is_empty()
        && pieces.dsn_texts.is_empty()
        && pieces.mdn_texts.is_empty()
        && pieces.feedback_texts.is_empty()
        && pieces.enclosed.is_empty();
    if nothing_found {
        // Broken MIME (a boundary parameter that lost its folding, a missing
        // boundary) can hide every part: read the raw body as text instead.
        let raw_body = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(&bytes[..0], |i| &bytes[i + 2..]);
        pieces.push_body(&String::from_utf8_lossy(raw_body));
    }
    Some(pieces)
}

/// How many enclosed messages (`message/rfc822` and the like) MIME parsing
/// accepts; a bounce of a forwarded bounce has three.
const MAX_ENCLOSED_MESSAGES: usize = 32;

/// True if the message declares more enclosed messages than any real notice
/// (counted on `content-type: message/` occurrences, case-insensitively).
fn too_deeply_nested(bytes: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"message/";
    let mut count = 0;
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| b == b'/') {
        if i >= 7 && rest[i - 7..=i].eq_ignore_ascii_case(NEEDLE) {
            count += 1;
            if count > MAX_ENCLOSED_MESSAGES {
                return true;
            }
        }
        rest = &rest[i + 1..];
    }
    false
}

/// The fallback when MIME parsing fails: our own header split, the rest as
/// text.
fn parse_as_text(bytes: &[u8]) -> Pieces {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = match text.find("\n\n") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None => (&text[..], ""),
    };
    let headers: Vec<(String, String)> = super::text::field_groups(head)
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f.name, f.value))
        .collect();
    let subject = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("subject"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut pieces = Pieces {
        headers,
        subject,
        unparsed: true,
        ..Pieces::default()
    };
    pieces.push_body(body);
    pieces
}

/// True if a MIME part's own header carries the fields of a message header
/// (a Message-ID and a From or Date), not only Content-* fields.
fn part_header_is_a_message_header(part: &mail_parser::MessagePart<'_>) -> bool {
    let has = |name: &str| {
        part.headers
            .iter()
            .any(|h| h.name().eq_ignore_ascii_case(name))
    };
    has("message-id") && (has("from") || has("date"))
}

/// Joins folded header lines.
fn unfold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, line) in value.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if i == 0 {
            out.push_str(line.trim());
        } else if !line.trim().is_empty() {
            out.push(' ');
            out.push_str(line.trim());
        }
    }
    out
}

/// Decoded text parts may still carry CR line ends (e.g. a base64 part
/// encoded on Windows).
fn normalize_text(text: &str) -> String {
    if text.contains('\r') {
        String::from_utf8_lossy(&normalize_newlines(text.as_bytes())).into_owned()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_report_is_taken_apart() {
        let raw = b"From: MAILER-DAEMON@example.org\r\nSubject: Undelivered\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\nAction: failed\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <o@example.org>\r\n--b--\r\n";
        let p = parse(raw);
        assert_eq!(p.report_types, vec!["delivery-status"]);
        assert_eq!(p.dsn_texts.len(), 1);
        assert!(p.dsn_texts[0].contains("Final-Recipient"));
        assert!(matches!(&p.enclosed[0], Enclosed::Headers(h) if h.contains("o@example.org")));
        assert!(p.body.contains("Sorry."));
        assert_eq!(p.subject, "Undelivered");
    }

    #[test]
    fn deep_nesting_is_read_as_text() {
        let mut m = String::new();
        for _ in 0..5000 {
            m.push_str("Content-Type: message/rfc822\n\n");
        }
        m.push_str("From: x@example.org\n\nhi\n");
        let p = parse(m.as_bytes());
        assert!(p.unparsed);
    }

    #[test]
    fn garbage_does_not_panic() {
        let _ = parse(b"");
        let _ = parse(b"\xff\xfe\x00");
        let _ = parse(b"Content-Type: multipart/mixed; boundary=x\n\n--x\n--x\n");
    }
}
