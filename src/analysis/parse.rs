//! Turns raw bytes into the pieces the detectors need: the top-level header,
//! the explanatory text, the delivery-status / disposition / feedback field
//! blocks and the enclosed original, whatever MIME shape they arrive in.
//!
//! The [`mime`](super::mime) walker finds the parts; only the parts analysis
//! reads are decoded (transfer encoding, charset), into owned, bounded
//! strings so that the later steps are simple text scans. When the parser
//! gives up, or MIME is broken, the whole message is treated as text and the
//! text-level detectors (DSN fields and headers quoted in the body) still work.

use super::mime;
use super::text::{html_to_text, lossy, normalize_text_newlines};
use memchr::memmem;
use std::borrow::Cow;
use std::sync::LazyLock;

/// How much explanatory text is kept per message. A bounce's explanation is
/// short; the cap keeps a huge text attachment from costing time.
const MAX_BODY_TEXT: usize = 256 * 1024;

/// How many enclosed originals are kept (a digest of bounces is rare).
const MAX_ENCLOSED: usize = 8;

/// An original message returned inside a bounce or report.
#[derive(Debug, Clone)]
pub enum Enclosed<'a> {
    /// A whole `message/rfc822` (or `message/global`) part, as raw bytes:
    /// borrowed from the message unless it had a transfer encoding (usually
    /// only its header is read, and it may carry big attachments).
    Message(Cow<'a, [u8]>),
    /// A `text/rfc822-headers` part: the original's header only.
    Headers(String),
}

/// The parts of one message that analysis looks at.
#[derive(Debug, Default)]
pub struct Pieces<'a> {
    /// Top-level header fields, unfolded, raw (RFC 2047 words not decoded),
    /// borrowed from the message unless they had to be unfolded or repaired.
    pub headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
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
    pub enclosed: Vec<Enclosed<'a>>,
    /// The explanation: text parts outside the enclosed original, HTML
    /// flattened, JSON kept, bounded by [`MAX_BODY_TEXT`].
    pub body: String,
    /// True when MIME parsing failed and the message was read as plain text.
    pub unparsed: bool,
}

impl Pieces<'_> {
    /// The first value of a top-level header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
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

/// Parses `normalized` (bounded by the caller, line ends made LF with
/// [`normalize_newlines`](super::text::normalize_newlines)) into [`Pieces`],
/// which borrow from it.
///
/// The walker is bounded and should not panic, but the call is contained so
/// that one hostile message yields an "unparsed" analysis instead of taking
/// the daemon down.
pub fn parse(normalized: &[u8]) -> Pieces<'_> {
    if too_deeply_nested(normalized) {
        // No real bounce nests this deep; read such a message as text.
        return parse_as_text(normalized);
    }
    let parsed = std::panic::catch_unwind(|| parse_mime(normalized));
    match parsed {
        Ok(Some(pieces)) => pieces,
        _ => parse_as_text(normalized),
    }
}

fn parse_mime(bytes: &[u8]) -> Option<Pieces<'_>> {
    let mut parts = mime::parts(bytes);
    // The top-level fields move into the pieces (the loop below looks at
    // the fields of inner parts only).
    let headers: Vec<(Cow<'_, str>, Cow<'_, str>)> = std::mem::take(&mut parts.first_mut()?.fields)
        .into_iter()
        .map(|f| (Cow::Borrowed(f.name), f.value))
        .collect();
    if headers.is_empty() {
        return None;
    }
    let root_body = parts[0].body;
    let subject = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("subject"))
        .map(|(_, v)| mime::decode_encoded_words(v))
        .unwrap_or_default();
    let mut pieces = Pieces {
        headers,
        subject,
        ..Pieces::default()
    };
    // HTML is decoded and flattened only when the plain text says too
    // little (below): most HTML parts are newsletters' alternatives.
    let mut html_parts: Vec<&mime::Part> = Vec::new();
    for part in &parts {
        let ct = &part.content_type;
        match (&*ct.kind, &*ct.subtype) {
            ("multipart", "report") => {
                if let Some(rt) = ct.param("report-type") {
                    pieces.report_types.push(rt.to_ascii_lowercase());
                }
            }
            ("multipart", _) => {}
            ("message", "delivery-status" | "global-delivery-status") => pieces
                .dsn_texts
                .push(normalize_text(part.text()).into_owned()),
            ("message", "disposition-notification" | "global-disposition-notification") => pieces
                .mdn_texts
                .push(normalize_text(part.text()).into_owned()),
            ("message", "feedback-report") => pieces
                .feedback_texts
                .push(normalize_text(part.text()).into_owned()),
            ("message", "rfc822" | "global" | "partial" | "rfc822-headers" | "global-headers")
            | ("text", "rfc822-headers" | "rfc822-header" | "global-headers")
                if pieces.enclosed.len() < MAX_ENCLOSED =>
            {
                let enclosed = if ct.subtype.contains("header") {
                    Enclosed::Headers(normalize_text(part.text()).into_owned())
                } else {
                    Enclosed::Message(part.decoded())
                };
                pieces.enclosed.push(enclosed);
            }
            ("text", "html") => html_parts.push(part),
            ("text", _) | ("application", "json") => {
                if !part.is_root
                    && pieces.enclosed.len() < MAX_ENCLOSED
                    && part.has_field("message-id")
                    && (part.has_field("from") || part.has_field("date"))
                {
                    // A returned original pasted as a part without MIME
                    // headers of its own: its header became the part header.
                    pieces
                        .enclosed
                        .push(Enclosed::Headers(lossy(part.header).into_owned()));
                }
                if pieces.body.len() < MAX_BODY_TEXT {
                    pieces.push_body(&normalize_text(part.text()));
                }
            }
            _ => {}
        }
    }
    if pieces.body.trim().is_empty() || !html_parts.is_empty() && pieces.body.len() < 64 {
        // Decoded in order until MAX_BODY_TEXT bytes of HTML were read.
        let mut html = String::new();
        let mut html_len = 0;
        for part in html_parts {
            if html_len >= MAX_BODY_TEXT {
                break;
            }
            let text = part.text();
            html_len += text.len();
            // The last part flattened (html_len) is flattened only as far
            // as the body reads it when the text holds no CR: then
            // normalize_text keeps it as it is and the body takes at most
            // MAX_BODY_TEXT bytes of it (4 more tell where its last
            // character ends).
            let min_len = if html_len < MAX_BODY_TEXT || html_may_add_cr(&html, &text) {
                usize::MAX
            } else {
                (MAX_BODY_TEXT + 4).saturating_sub(html.len())
            };
            html.push_str(&html_to_text(&text, min_len));
            html.push('\n');
        }
        pieces.push_body(&normalize_text(Cow::Owned(html)));
    }
    let nothing_found = pieces.body.trim().is_empty()
        && pieces.dsn_texts.is_empty()
        && pieces.mdn_texts.is_empty()
        && pieces.feedback_texts.is_empty()
        && pieces.enclosed.is_empty();
    if nothing_found {
        // Broken MIME (a boundary parameter that lost its folding, a missing
        // boundary) can hide every part: read the raw body as text instead.
        pieces.push_body(&lossy(root_body));
    }
    Some(pieces)
}

/// True if the flat text of `html` after `flat` may hold a CR: then
/// [`normalize_text`] changes the whole text (line ends, leading junk), so
/// all of it must be flattened. A CR comes from one in the HTML or from a
/// numeric entity (`&#13;`).
fn html_may_add_cr(flat: &str, html: &str) -> bool {
    memchr::memchr(b'\r', flat.as_bytes()).is_some()
        || memchr::memchr(b'\r', html.as_bytes()).is_some()
        || memmem::find(html.as_bytes(), b"&#").is_some()
}

/// How many enclosed messages (`message/rfc822` and the like) MIME parsing
/// accepts; a bounce of a forwarded bounce has three.
const MAX_ENCLOSED_MESSAGES: usize = 32;

/// True if the message declares more enclosed messages than any real notice
/// (counted on `content-type: message/` occurrences, case-insensitively).
fn too_deeply_nested(bytes: &[u8]) -> bool {
    // "message/" in any case ends in "e/" or "E/". A SIMD search for each
    // of those pairs stops far less often than one for every '/' (base64
    // is full of them, and that scan was a fortieth of all analysis); each
    // stop checks the whole word.
    // The searchers are built once (per message, that cost a third of the
    // search).
    static PAIRS: LazyLock<[memmem::Finder<'static>; 2]> =
        LazyLock::new(|| [memmem::Finder::new(b"e/"), memmem::Finder::new(b"E/")]);
    let count = |finder: &memmem::Finder<'static>| {
        finder
            .find_iter(bytes)
            .filter(|&i| i >= 6 && bytes[i - 6..i + 2].eq_ignore_ascii_case(b"message/"))
            .take(MAX_ENCLOSED_MESSAGES + 1)
            .count()
    };
    PAIRS.iter().map(count).sum::<usize>() > MAX_ENCLOSED_MESSAGES
}

/// The fallback when MIME parsing fails: our own header split, the rest as
/// text.
fn parse_as_text(bytes: &[u8]) -> Pieces<'static> {
    let text = lossy(bytes);
    let (head, body) = match text.find("\n\n") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None => (&text[..], ""),
    };
    let headers: Vec<(Cow<'static, str>, Cow<'static, str>)> = super::text::first_field_group(head)
        .into_iter()
        .map(|f| {
            (
                Cow::Owned(f.name.to_string()),
                Cow::Owned(f.value.into_owned()),
            )
        })
        .collect();
    let subject = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("subject"))
        .map(|(_, v)| v.to_string())
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

/// Decoded text parts may still carry CR line ends (e.g. a base64 part
/// encoded on Windows).
fn normalize_text(text: Cow<'_, str>) -> Cow<'_, str> {
    if memchr::memchr(b'\r', text.as_bytes()).is_some() {
        Cow::Owned(normalize_text_newlines(&text).into_owned())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::super::text::normalize_newlines;
    use super::*;

    #[test]
    fn multipart_report_is_taken_apart() {
        let raw = b"From: MAILER-DAEMON@example.org\r\nSubject: Undelivered\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\nAction: failed\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <o@example.org>\r\n--b--\r\n";
        let normalized = normalize_newlines(raw);
        let p = parse(&normalized);
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
    fn nesting_is_counted_in_any_case() {
        let mut m = String::new();
        for i in 0..=MAX_ENCLOSED_MESSAGES {
            m.push_str(if i % 2 == 0 {
                "x: Message/rfc822\n"
            } else {
                "x: mESSAGE/rfc822\n"
            });
        }
        assert!(too_deeply_nested(m.as_bytes()));
        let one_less = &m[m.find('\n').map_or(0, |i| i + 1)..];
        assert!(!too_deeply_nested(one_less.as_bytes()));
        assert!(!too_deeply_nested(b"essage/ e/ E/ /message"));
    }

    #[test]
    fn garbage_does_not_panic() {
        let _ = parse(b"");
        let _ = parse(b"\xff\xfe\x00");
        let _ = parse(b"Content-Type: multipart/mixed; boundary=x\n\n--x\n--x\n");
    }
}
