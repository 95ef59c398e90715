//! Finding the original message a bounce, report or auto-reply is about, and
//! the recipients that failed.
//!
//! Sources, most reliable first: the enclosed `message/rfc822` part (and, if
//! that is itself a bounce, its own original: we want the innermost user
//! message), a `text/rfc822-headers` part, header blocks quoted in the text,
//! JSON notifications, `Original-Message-ID` fields, and finally the
//! `In-Reply-To`/`References` of the notice. The notice's own Message-ID is
//! never returned.

use super::dsn::DeliveryStatus;
use super::parse::{Enclosed, Pieces};
use super::text::{
    addresses_in, dsn_address, field_groups_where, find_ascii_case_insensitive, is_ascii_space,
    is_system_local_part, leading_header_block_where, message_id_list, normalize_message_id,
    quoted_header_blocks, split_field, strip_quote_marks, trim, trim_start, HeaderBlock,
};
use super::{Analyzer, OriginalHeaders};

/// Where the original's identity was found, as a rule id.
pub const FROM_ENCLOSED: &str = "original.enclosed-message";
/// The enclosed message was itself a bounce; its original was used.
pub const FROM_NESTED: &str = "original.nested-bounce";
/// From a text/rfc822-headers part.
pub const FROM_HEADERS_PART: &str = "original.rfc822-headers";
/// From header lines quoted in the text.
pub const FROM_QUOTED: &str = "original.quoted-headers";
/// The enclosed message is itself a notice whose own original is not in
/// sight (cut off, or missing): the id found may be the notice's, not the
/// user's message.
pub const FROM_ENCLOSED_NOTICE: &str = "original.enclosed-notice";
/// From a JSON notification (Amazon SES and similar).
pub const FROM_JSON: &str = "original.json-notification";
/// From an Original-Message-ID style field.
pub const FROM_FIELD: &str = "original.message-id-field";
/// From the notice's own In-Reply-To / References.
pub const FROM_REPLY_HEADERS: &str = "original.in-reply-to";

/// What was found about the original.
#[derive(Debug, Default)]
pub struct Found {
    /// Message-IDs, best first, without the notice's own.
    pub message_ids: Vec<String>,
    /// Headers of the original, when a header block was available.
    pub headers: OriginalHeaders,
    /// Rule ids saying where the information came from.
    pub sources: Vec<&'static str>,
    /// The failed recipients of an enclosed bounce, when the original came
    /// from one.
    pub nested_recipients: Vec<String>,
}

impl Found {
    /// Adds an id taken from a structural source (an enclosed original, an
    /// Original-Message-ID field). These name the original unambiguously, so
    /// the id is kept even when it equals the notice's own (seen when an MTA
    /// reuses the original's id, and in anonymised samples).
    fn add_structural_id(&mut self, id: String) -> bool {
        if self.message_ids.contains(&id) {
            return false;
        }
        self.message_ids.push(id);
        true
    }

    /// Adds an id from a heuristic source, never the notice's own.
    fn add_id(&mut self, id: String, own: Option<&str>) -> bool {
        if own.is_some_and(|o| o.eq_ignore_ascii_case(&id)) || self.message_ids.contains(&id) {
            return false;
        }
        self.message_ids.push(id);
        true
    }

    fn take_headers(&mut self, block: &HeaderBlock<'_>) {
        let h = &mut self.headers;
        if h.from.is_none() {
            h.from = block.get("from").map(str::to_string);
        }
        if h.to.is_none() {
            h.to = block.get("to").map(str::to_string);
        }
        if h.subject.is_none() {
            h.subject = block.get("subject").map(str::to_string);
        }
        if h.date.is_none() {
            h.date = block.get("date").map(str::to_string);
        }
        if h.received.is_empty() {
            h.received = block.get_all("received").map(str::to_string).collect();
        }
    }
}

/// Whether [`Found::take_headers`] or the search for the original's
/// Message-ID reads the field `name` of a returned header.
fn is_original_field(name: &str) -> bool {
    ["from", "to", "subject", "date", "received", "message-id"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// The nesting depth up to which an enclosed bounce is unwrapped.
const MAX_NESTING: usize = 3;

/// Finds the original of a bounce or feedback report.
pub fn find_original(
    analyzer: &Analyzer,
    pieces: &Pieces,
    own_id: Option<&str>,
    depth: usize,
) -> Found {
    let mut found = Found::default();
    for enclosed in &pieces.enclosed {
        match enclosed {
            Enclosed::Message(bytes) => {
                let text = super::text::lossy(bytes);
                let triage = depth < MAX_NESTING;
                // Only the fields read below.
                let block = leading_header_block_where(&text, |name| {
                    is_original_field(name) || triage && analyzer.is_decision_field(name)
                });
                // Only an enclosed message whose header looks like a notice
                // is analysed as one (the decision of the header triage a
                // sweep uses, on the header as read here): the usual
                // enclosure is the user's own message, and a full analysis
                // of it would double the cost of every bounce.
                if triage && analyzer.is_candidate_by_fields(&block.fields) {
                    let inner = analyzer.analyze_nested(bytes, depth + 1);
                    if inner.original_message_ids.is_empty() {
                        found.sources.push(FROM_ENCLOSED_NOTICE);
                    }
                    if matches!(inner.kind, super::Kind::Bounce)
                        && !inner.original_message_ids.is_empty()
                    {
                        for id in inner.original_message_ids {
                            found.add_id(id, own_id);
                        }
                        // The enclosed notice's own id comes after: should
                        // the user have sent that one, it must still match.
                        if let Some(id) = block.get("message-id").and_then(normalize_message_id) {
                            found.add_id(id, own_id);
                        }
                        found.headers = inner.original;
                        found.nested_recipients = inner.recipients;
                        found.sources.push(FROM_NESTED);
                        continue;
                    }
                }
                found.take_headers(&block);
                if let Some(id) = block.get("message-id").and_then(normalize_message_id) {
                    if found.add_structural_id(id) {
                        found.sources.push(FROM_ENCLOSED);
                    }
                }
            }
            Enclosed::Headers(text) => {
                let block = leading_header_block_where(text, is_original_field);
                found.take_headers(&block);
                if let Some(id) = block.get("message-id").and_then(normalize_message_id) {
                    if found.add_structural_id(id) {
                        found.sources.push(FROM_HEADERS_PART);
                    }
                }
            }
        }
    }
    // Headers quoted in the text: the original when nothing is enclosed, a
    // second candidate when they name another id (anonymised or edited
    // samples, an MTA that quotes a different hop); any candidate in the
    // sent index makes the bounce genuine.
    quoted_original(analyzer, pieces, own_id, &mut found);
    if found.message_ids.is_empty() {
        for id in json_message_ids(&pieces.body) {
            if found.add_id(id, own_id) && !found.sources.contains(&FROM_JSON) {
                found.sources.push(FROM_JSON);
            }
        }
    }
    if found.message_ids.is_empty() {
        let fields = pieces
            .dsn_texts
            .iter()
            .chain(&pieces.feedback_texts)
            .chain(&pieces.mdn_texts);
        let is_id_field = |name: &str| {
            [
                "original-message-id",
                "x-original-message-id",
                "original-message-id-header",
            ]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        };
        for text in fields {
            for f in field_groups_where(text, is_id_field).into_iter().flatten() {
                if let Some(id) = normalize_message_id(&f.value) {
                    if found.add_structural_id(id) {
                        found.sources.push(FROM_FIELD);
                    }
                }
            }
        }
    }
    if found.message_ids.is_empty() {
        reply_headers(pieces, own_id, &mut found);
    }
    found
}

/// Finds the original of an auto-reply or read receipt.
pub fn find_replied_to(
    analyzer: &Analyzer,
    pieces: &Pieces,
    own_id: Option<&str>,
    depth: usize,
) -> Found {
    let mut found = Found::default();
    for text in &pieces.mdn_texts {
        let is_id_field = |name: &str| name.eq_ignore_ascii_case("original-message-id");
        for f in field_groups_where(text, is_id_field).into_iter().flatten() {
            if let Some(id) = normalize_message_id(&f.value) {
                if found.add_structural_id(id) {
                    found.sources.push(FROM_FIELD);
                }
            }
        }
    }
    if found.message_ids.is_empty() {
        reply_headers(pieces, own_id, &mut found);
    }
    if found.message_ids.is_empty() {
        let enclosed = find_original(analyzer, pieces, own_id, depth);
        if !enclosed.message_ids.is_empty() {
            return enclosed;
        }
    }
    found
}

fn reply_headers(pieces: &Pieces, own_id: Option<&str>, found: &mut Found) {
    let in_reply_to = pieces
        .header("in-reply-to")
        .map(message_id_list)
        .unwrap_or_default();
    let mut references = pieces
        .header("references")
        .map(message_id_list)
        .unwrap_or_default();
    references.reverse();
    for id in in_reply_to.into_iter().chain(references) {
        if found.add_id(id, own_id) && !found.sources.contains(&FROM_REPLY_HEADERS) {
            found.sources.push(FROM_REPLY_HEADERS);
        }
    }
}

/// Header blocks quoted in the explanation. A quoted block that is itself a
/// notice (from a mail system, with a bounce subject) is skipped when a later
/// block exists: in a forwarded bounce the innermost block is the user's.
fn quoted_original(analyzer: &Analyzer, pieces: &Pieces, own_id: Option<&str>, found: &mut Found) {
    // Header blocks in the explanation, then in DSN parts (a broken boundary
    // can leave the returned header inside the delivery-status part).
    // (The body's blocks are kept whole for the fallback below: the body
    // can be long, and is scanned once.)
    let body_blocks = quoted_header_blocks(&pieces.body);
    let dsn_blocks: Vec<HeaderBlock<'_>> = pieces
        .dsn_texts
        .iter()
        .flat_map(|t| quoted_header_blocks(t))
        .collect();
    let blocks: Vec<&HeaderBlock<'_>> = body_blocks
        .iter()
        .chain(&dsn_blocks)
        .filter(|b| {
            b.get("message-id")
                .and_then(normalize_message_id)
                .is_some_and(|id| !own_id.is_some_and(|o| o.eq_ignore_ascii_case(&id)))
        })
        .collect();
    let is_notice =
        |b: &HeaderBlock<'_>| is_notice_header(analyzer, b.get("from"), b.get("subject"));
    if blocks.is_empty() {
        // No quoted Message-ID: still learn the original's From/To/Subject
        // from the first quoted header that is not the notice's own.
        if let Some(block) = body_blocks.iter().find(|b| !is_notice(b)) {
            found.take_headers(block);
        }
        return;
    }
    let chosen = blocks.iter().position(|b| !is_notice(b)).or(Some(0));
    if let Some(index) = chosen {
        let block = blocks[index];
        found.take_headers(block);
        if let Some(id) = block.get("message-id").and_then(normalize_message_id) {
            if found.add_id(id, own_id) {
                found.sources.push(FROM_QUOTED);
            }
        }
    }
}

/// Whether a quoted header (its From and Subject) is itself a notice: from a
/// mail system, with a bounce subject. The user's message lies further in.
pub(crate) fn is_notice_header(
    analyzer: &Analyzer,
    from: Option<&str>,
    subject: Option<&str>,
) -> bool {
    let from_system = from.is_some_and(|f| {
        addresses_in(f).iter().any(|a| is_system_local_part(a))
            || find_ascii_case_insensitive(f, "mailer-daemon").is_some()
    });
    from_system && subject.is_some_and(|s| analyzer.is_bounce_subject(s))
}

/// What a key of [`json_field_values`] is followed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonValue {
    /// A string: its characters, none of them `"` or `\\`, at least one.
    String,
    /// An array: all that lies between its brackets.
    Array,
}

/// The values of the JSON fields `keys` in `text`, left to right, without
/// overlap: `"key": "value"` or `"key": [...]`, the quotes possibly
/// string-escaped (`\\"key\\": \\"value\\"`, JSON inside an SNS envelope),
/// any white space around the colon.
///
/// Written out by hand, it finds exactly the capture groups of the regexes
/// `\\?"(?:messageId|message_id)\\?"\s*:\s*\\?"([^"\\]+)\\?"` and
/// `\\?"(?:emailAddress\\?"\s*:\s*\\?"([^"\\]+)\\?"|recipients\\?"\s*:\s*\[([^\]]*)\])`
/// (the unit tests keep them and compare): compiling each cost a
/// millisecond, more than the notices they read take to analyse. Linear:
/// a value's scan stops at the next quote or backslash, and the `]` that
/// ends an array is searched once for all the arrays that start before it.
fn json_field_values<'a>(text: &'a str, keys: &[(&str, JsonValue)]) -> Vec<&'a str> {
    let bytes = text.as_bytes();
    // Skips `\s*` (Unicode white space, as the regexes' `\s`).
    let skip_space = |at: usize| text.len() - trim_start(&text[at..]).len();
    // Skips `\\?"`, if there.
    let skip_quote = |at: usize| {
        let at = at + usize::from(bytes.get(at) == Some(&b'\\'));
        (bytes.get(at) == Some(&b'"')).then_some(at + 1)
    };
    let mut out = Vec::new();
    // The last search for a `]`: where it started, and the `]` found.
    let mut close: Option<(usize, Option<usize>)> = None;
    let mut search = 0;
    while let Some(offset) = memchr::memchr(b'"', &bytes[search..]) {
        let quote = search + offset;
        search = quote + 1;
        let Some(&(key, kind)) = keys
            .iter()
            .find(|(key, _)| bytes[quote + 1..].starts_with(key.as_bytes()))
        else {
            continue;
        };
        let Some(after_key) = skip_quote(quote + 1 + key.len()) else {
            continue;
        };
        let colon = skip_space(after_key);
        if bytes.get(colon) != Some(&b':') {
            continue;
        }
        let value = skip_space(colon + 1);
        match kind {
            JsonValue::String => {
                let Some(start) = skip_quote(value) else {
                    continue;
                };
                let Some(len) = memchr::memchr2(b'"', b'\\', &bytes[start..]) else {
                    continue;
                };
                let end = start + len;
                let Some(after) = skip_quote(end).filter(|_| len > 0) else {
                    continue;
                };
                out.push(&text[start..end]);
                search = after;
            }
            JsonValue::Array => {
                if bytes.get(value) != Some(&b'[') {
                    continue;
                }
                let start = value + 1;
                let end = match close {
                    Some((from, end)) if from <= start && end.is_none_or(|end| end >= start) => end,
                    _ => memchr::memchr(b']', &bytes[start..]).map(|at| start + at),
                };
                close = Some((start, end));
                let Some(end) = end else {
                    continue;
                };
                out.push(&text[start..end]);
                search = end + 1;
            }
        }
    }
    out
}

/// Message-IDs in a JSON notification (SES puts its own id in `mail.messageId`
/// and the original header in `commonHeaders.messageId`).
fn json_message_ids(body: &str) -> Vec<String> {
    if !body.contains("notificationType") && !body.contains("eventType") {
        return Vec::new();
    }
    let keys = [
        ("messageId", JsonValue::String),
        ("message_id", JsonValue::String),
    ];
    json_field_values(body, &keys)
        .into_iter()
        .filter_map(normalize_message_id)
        .collect()
}

/// The JSON fields that name recipients: `"emailAddress"` (bounced and
/// complained recipients) and the `"recipients"` array (delivery
/// notifications).
const JSON_RECIPIENT_KEYS: [(&str, JsonValue); 2] = [
    ("emailAddress", JsonValue::String),
    ("recipients", JsonValue::Array),
];

/// The failed recipients of a bounce or report, from the most structured
/// source available.
pub fn failed_recipients(
    pieces: &Pieces,
    statuses: &[DeliveryStatus<'_>],
    original: &Found,
) -> (Vec<String>, &'static str) {
    let mut out: Vec<String> = Vec::new();
    for s in statuses {
        for a in s.failed_addresses() {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    if !out.is_empty() {
        return (out, "recipients.dsn-fields");
    }
    if let Some(v) = pieces.header("x-failed-recipients") {
        let out = addresses_in(v);
        if !out.is_empty() {
            return (out, "recipients.x-failed-recipients");
        }
    }
    for text in &pieces.feedback_texts {
        let is_recipient_field = |name: &str| {
            name.eq_ignore_ascii_case("original-rcpt-to")
                || name.eq_ignore_ascii_case("removal-recipient")
        };
        for f in field_groups_where(text, is_recipient_field)
            .into_iter()
            .flatten()
        {
            if let Some(a) = dsn_address(&f.value) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    if !out.is_empty() {
        return (out, "recipients.feedback-fields");
    }
    for text in json_field_values(&pieces.body, &JSON_RECIPIENT_KEYS) {
        for a in addresses_in(text) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    if !out.is_empty() {
        return (out, "recipients.json-notification");
    }
    let from_text = text_recipients(pieces, original);
    if !from_text.is_empty() {
        return (from_text, "recipients.text");
    }
    if !original.nested_recipients.is_empty() {
        return (
            original.nested_recipients.clone(),
            "recipients.nested-bounce",
        );
    }
    // Last resort: whom the returned original was addressed to.
    let to = original
        .headers
        .to
        .as_deref()
        .map(addresses_in)
        .unwrap_or_default();
    (to, "recipients.original-to")
}

/// The failed recipients named in a free-text bounce.
///
/// Lines that name an address on their own (`<a@b>:` of qmail and Postfix,
/// an indented address of Exim and Sendmail, `RCPT TO:<a@b>` of a session
/// transcript) are trusted first. Otherwise every address in the
/// explanation counts, less the notice's own addressees, system mailboxes
/// and Message-IDs. Header lines (a quoted notice or original) are skipped,
/// and the scan stops where the returned original begins.
fn text_recipients(pieces: &Pieces, original: &Found) -> Vec<String> {
    // The notice's own addressees, needed only once a line offers a weak
    // candidate (most notices never do).
    let exclude = std::cell::OnceCell::new();
    let own_addresses = || {
        let mut exclude: Vec<String> = Vec::new();
        for name in [
            "to",
            "from",
            "delivered-to",
            "x-original-to",
            "cc",
            "return-path",
            "envelope-to",
        ] {
            if let Some(v) = pieces.header(name) {
                exclude.extend(addresses_in(v));
            }
        }
        if let Some(from) = &original.headers.from {
            exclude.extend(addresses_in(from));
        }
        exclude
    };
    // Compared without case (the addresses are lower case), without
    // lower-case copies of the ids.
    let own_id = pieces.header("message-id").and_then(normalize_message_id);
    let ids = original.message_ids.iter().chain(&own_id);
    let plausible = |a: &String| {
        !ids.clone().any(|i| i.eq_ignore_ascii_case(a))
            && a.rsplit('@').next().is_some_and(|d| d.contains('.'))
            && !a
                .split('@')
                .next()
                .is_some_and(|l| l.contains(['=', '/', '&']))
    };
    let mut strong: Vec<String> = Vec::new();
    let mut weak: Vec<String> = Vec::new();
    // Indentation of the header line being skipped, if any.
    let mut header_indent: Option<usize> = None;
    for raw_line in super::text::lines(&pieces.body).take(400) {
        let line = strip_quote_marks(raw_line);
        let trimmed = trim(line);
        if is_separator(trimmed) {
            break;
        }
        if trimmed.is_empty() {
            header_indent = None;
            continue;
        }
        // Header lines (a quoted notice's or the original's) name senders
        // and addressees, not failed recipients.
        let indent = line.len() - trim_start(line).len();
        let continues_header = header_indent.is_some_and(|h| indent > h);
        if split_field(trimmed).is_some_and(|(name, _)| is_header_name(name)) {
            header_indent = Some(indent);
            continue;
        }
        if continues_header {
            continue;
        }
        header_indent = None;
        let found = addresses_in(trimmed);
        if found.is_empty() {
            continue;
        }
        if let Some(a) = recipient_on_line(trimmed).map(str::to_ascii_lowercase) {
            if plausible(&a) && !strong.contains(&a) {
                strong.push(a);
            }
            continue;
        }
        for a in found {
            if plausible(&a)
                && !exclude.get_or_init(own_addresses).contains(&a)
                && !is_system_local_part(&a)
                && !is_list_control(&a)
                && !weak.contains(&a)
            {
                weak.push(a);
            }
        }
    }
    let mut chosen = if strong.is_empty() { weak } else { strong };
    chosen.truncate(16);
    chosen
}

/// Field names that start a header line inside a notice's text.
fn is_header_name(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "from",
        "to",
        "cc",
        "bcc",
        "sender",
        "reply-to",
        "return-path",
        "received",
        "message-id",
        "date",
        "subject",
        "in-reply-to",
        "references",
        "envelope-to",
        "delivered-to",
        "x-original-to",
        "mail from",
        "sent",
        "content-type",
        "mime-version",
        "x-mailer",
        "user-agent",
        "errors-to",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Mailing-list control addresses (list-request, owner-list, list-ctl...).
fn is_list_control(addr: &str) -> bool {
    let local = addr.split('@').next().unwrap_or("");
    local.starts_with("owner-")
        || ["-ctl", "-request", "-owner", "-admin", "-bounces", "-help"]
            .iter()
            .any(|s| local.ends_with(s))
        || matches!(
            local,
            "support" | "help" | "helpdesk" | "webmaster" | "info" | "security" | "admin"
        )
}

/// The failed recipient a line names on its own: `RCPT TO:<a@b>`,
/// `Address: a@b`, `Recipient: a@b`, `[Status: ... Address: a@b]`,
/// `550 5.1.1 <a@b>: ...`, or a line that starts with `<a@b>:`, `a@b ...`,
/// `a@b (...)`, `a@b on ...`.
///
/// Written out by hand, it gives exactly the first group of the regex
/// `(?i-u)^(?:rcpt to:\s*|address:\s*|recipient:\s*|\[status:[ -\\^-~]*address:\s*|[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s+)?)?<?([a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?:>\s*(?:[:,(\[]|\.\.\.|\.?$|on\s)|\s*(?::|\.\.\.|\(|\[|,|$)|\s+on\s)`
/// (the unit tests keep it and compare): compiling that regex was a tenth
/// of a one-file run, and its capture search the dearest step of the
/// recipient scan. The prefixes are tried in the regex's order; after a
/// prefix, the address either ends where the regex's greedy match ends or
/// not at all (see [`address_at`]), so the first prefix that leads to an
/// address gives the regex's group.
fn recipient_on_line(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    let has_at = |at: usize, literal: &str| {
        bytes
            .get(at..at + literal.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(literal.as_bytes()))
    };
    for field in ["rcpt to:", "address:", "recipient:"] {
        if has_at(0, field) {
            if let Some(address) = address_at(line, skip_space(bytes, field.len())) {
                return Some(address);
            }
        }
    }
    if has_at(0, "[status:") {
        // `[ -\\^-~]*address:`: any printable bytes but `]`, then the
        // field; the last `Address:` is tried first (the star is greedy).
        let printable = bytes[8..]
            .iter()
            .take_while(|b| matches!(b, b' '..=b'\\' | b'^'..=b'~'))
            .count();
        for at in (8..=8 + printable).rev() {
            if has_at(at, "address:") {
                if let Some(address) = address_at(line, skip_space(bytes, at + 8)) {
                    return Some(address);
                }
            }
        }
    }
    let is_reply_code = bytes.len() >= 4
        && matches!(bytes[0], b'2' | b'4' | b'5')
        && bytes[1..3].iter().all(u8::is_ascii_digit)
        && matches!(bytes[3], b' ' | b'-');
    if is_reply_code {
        if let Some(after) = enhanced_status_end(bytes, 4) {
            if let Some(address) = address_at(line, skip_space(bytes, after)) {
                return Some(address);
            }
        }
        if let Some(address) = address_at(line, 4) {
            return Some(address);
        }
    }
    address_at(line, 0)
}

/// The index of the first byte at or after `at` that is not white space.
fn skip_space(bytes: &[u8], at: usize) -> usize {
    at + bytes
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| is_ascii_space(**b))
        .count()
}

/// The end of an enhanced status code (`5.1.1`) at `at` that is followed
/// by white space (`[245]\.\d{1,3}\.\d{1,3}\s+`), before that white space.
fn enhanced_status_end(bytes: &[u8], at: usize) -> Option<usize> {
    if !matches!(bytes.get(at), Some(b'2' | b'4' | b'5')) || bytes.get(at + 1) != Some(&b'.') {
        return None;
    }
    let digits = |from: usize| {
        let n = bytes
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        (1..=3).contains(&n).then_some(from + n)
    };
    let end = digits(at + 2)?;
    if bytes.get(end) != Some(&b'.') {
        return None;
    }
    let end = digits(end + 1)?;
    bytes
        .get(end)
        .is_some_and(|b| is_ascii_space(*b))
        .then_some(end)
}

/// The address of [`recipient_on_line`] starting at `at`: `<?local@domain`
/// with at least two domain labels of letters, digits and hyphens, followed
/// by what ends a recipient (`>:`, `>,`, `> on`, `>` at the end, `:`,
/// `...`, `(`, `[`, `,`, the end, or ` on `). The local part runs to the
/// first non-local byte, which must be the `@`, and the domain as far as it
/// can: a shorter domain would leave a label byte or a `.` that is not
/// `...` next, which nothing that ends a recipient starts with.
fn address_at(line: &str, at: usize) -> Option<&str> {
    let bytes = line.as_bytes();
    let start = if bytes.get(at) == Some(&b'<') {
        at + 1
    } else {
        at
    };
    let local = bytes
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| super::text::is_local_part_byte(**b))
        .count();
    let at_sign = start + local;
    if local == 0 || bytes.get(at_sign) != Some(&b'@') {
        return None;
    }
    let is_label_byte = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-';
    let mut end = at_sign + 1;
    let mut labels = 0;
    loop {
        let label = bytes[end..].iter().take_while(|b| is_label_byte(b)).count();
        if label == 0 {
            break;
        }
        end += label;
        labels += 1;
        let another =
            bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(is_label_byte);
        if !another {
            break;
        }
        end += 1;
    }
    (labels >= 2 && ends_recipient(&bytes[end..])).then(|| &line[start..end])
}

/// Whether `rest`, the text after an address, ends it as a recipient (see
/// [`address_at`]).
fn ends_recipient(rest: &[u8]) -> bool {
    let is_on =
        |r: &[u8]| r.len() >= 3 && r[..2].eq_ignore_ascii_case(b"on") && is_ascii_space(r[2]);
    if let Some(after) = rest.strip_prefix(b">") {
        let r = &after[skip_space(after, 0)..];
        if matches!(r.first(), Some(b':' | b',' | b'(' | b'['))
            || r.starts_with(b"...")
            || r.is_empty()
            || r == b"."
            || is_on(r)
        {
            return true;
        }
    }
    let spaces = skip_space(rest, 0);
    let r = &rest[spaces..];
    matches!(r.first(), Some(b':' | b'(' | b'[' | b','))
        || r.starts_with(b"...")
        || r.is_empty()
        || (spaces > 0 && is_on(r))
}

/// Phrases that, after a rule of dashes, equals signs, stars, underscores
/// or spaces, introduce the returned message.
const AFTER_RULE: [&str; 8] = [
    "original message",
    "returned message",
    "copy of",
    "below this line",
    "message headers",
    "header of the original",
    "undelivered message",
    "this line",
];

/// Whether a trimmed line of a text bounce is one after which the returned
/// message is quoted: `--- Original message follows ---`, `Below this line
/// is a copy of the message`, `Content-Type: message/rfc822`...
///
/// Written out by hand, it finds exactly what the regex
/// `(?i)^(?:[-=*_ ]{2,}[^\n]*(?:PHRASES)|(?:the )?original message (?:follows|headers? follows?|is attached)|original message:?$|unsent message follows|below this line is a copy|-{2,}\s*original message\s*-{2,}|content-type:\s*message/)`
/// found, PHRASES being [`AFTER_RULE`] (the unit tests keep it and
/// compare): the regex cost as much to compile as a one-file run spends on
/// its text, and a search per line.
fn is_separator(line: &str) -> bool {
    let is_rule_byte = |b: &u8| matches!(b, b'-' | b'=' | b'*' | b'_' | b' ');
    let bytes = line.as_bytes();
    // Each branch starts with a rule byte or the first letter of its
    // phrase (`the`, `original`, `unsent`, `below`, `content-type`; no
    // other letter folds to these): most lines are ruled out by one byte.
    let may_start = |b: &u8| {
        is_rule_byte(b) || matches!(b.to_ascii_lowercase(), b't' | b'o' | b'u' | b'b' | b'c')
    };
    if !bytes.first().is_some_and(may_start) {
        return false;
    }
    if bytes.len() >= 2 && is_rule_byte(&bytes[0]) && is_rule_byte(&bytes[1]) {
        // A phrase anywhere after the first two rule bytes, on this line.
        let rest = &line[2..];
        let rest = &rest[..memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len())];
        // Every phrase starts with an ASCII letter that no other letter
        // folds to: only an ASCII byte (a char boundary) can start one.
        let phrase_at = |(at, b): (usize, u8)| {
            let b = b.to_ascii_lowercase();
            AFTER_RULE
                .iter()
                .any(|p| p.as_bytes()[0] == b && strip_folded(&rest[at..], p).is_some())
        };
        if rest.bytes().enumerate().any(phrase_at) {
            return true;
        }
    }
    let without_the = strip_folded(line, "the ").unwrap_or(line);
    if let Some(after) = strip_folded(without_the, "original message ") {
        let headers_follow = strip_folded(after, "header").is_some_and(|h| {
            let h = strip_folded(h, "s").unwrap_or(h);
            strip_folded(h, " follow").is_some()
        });
        if headers_follow
            || strip_folded(after, "follows").is_some()
            || strip_folded(after, "is attached").is_some()
        {
            return true;
        }
    }
    if strip_folded(line, "original message").is_some_and(|r| r.is_empty() || r == ":") {
        return true;
    }
    if strip_folded(line, "unsent message follows").is_some()
        || strip_folded(line, "below this line is a copy").is_some()
    {
        return true;
    }
    let dashes = line.trim_start_matches('-');
    if line.len() - dashes.len() >= 2 {
        let closing = strip_folded(dashes.trim_start(), "original message")
            .map(|r| r.trim_start().starts_with("--"));
        if closing == Some(true) {
            return true;
        }
    }
    strip_folded(line, "content-type:")
        .and_then(|r| strip_folded(r.trim_start(), "message/"))
        .is_some()
}

/// `text` after `literal` (ASCII, lower case), compared as the regex
/// crate's `(?i)` does: ASCII letters in either case, and the two non-ASCII
/// letters that fold to ASCII ones (`ſ` to `s`, the Kelvin sign to `k`).
fn strip_folded<'a>(text: &'a str, literal: &str) -> Option<&'a str> {
    let mut chars = text.chars();
    for l in literal.bytes() {
        let c = chars.next()?;
        let same = if c.is_ascii() {
            (c as u8).eq_ignore_ascii_case(&l)
        } else {
            (l == b's' && c == '\u{17f}') || (l == b'k' && c == '\u{212a}')
        };
        if !same {
            return None;
        }
    }
    Some(chars.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::text::tests::{corpus_texts, generated_texts};
    use regex::Regex;

    /// Lines to compare a line matcher with its regex on: generated from
    /// `alphabet`, and every line of the corpus, each also as
    /// `text_recipients` sees it (quote marks stripped, trimmed).
    fn test_lines(alphabet: &[&str], count: usize) -> Vec<String> {
        let mut lines = generated_texts(alphabet, count);
        for text in corpus_texts() {
            lines.extend(text.lines().map(str::to_string));
        }
        let trimmed: Vec<String> = lines
            .iter()
            .map(|l| trim(strip_quote_marks(l)).to_string())
            .collect();
        lines.extend(trimmed);
        lines
    }

    /// The regex that [`is_separator`] stands for.
    fn separator_regex() -> Regex {
        Regex::new(
            r"(?i)^(?:[-=*_ ]{2,}[^\n]*(?:original message|returned message|copy of|below this line|message headers|header of the original|undelivered message|this line)|(?:the )?original message (?:follows|headers? follows?|is attached)|original message:?$|unsent message follows|below this line is a copy|-{2,}\s*original message\s*-{2,}|content-type:\s*message/)",
        )
        .unwrap()
    }

    #[test]
    fn case_folding_is_that_of_the_regex() {
        for l in b'a'..=b'z' {
            let letter = Regex::new(&format!("(?i)^{}$", l as char)).unwrap();
            let literal = (l as char).to_string();
            for c in (0..=0x10ffff).filter_map(char::from_u32) {
                let text = c.to_string();
                assert_eq!(
                    strip_folded(&text, &literal) == Some(""),
                    letter.is_match(&text),
                    "{c:?} {}",
                    l as char
                );
            }
        }
    }

    #[test]
    fn separators_are_those_of_the_regex() {
        let re = separator_regex();
        // The phrases after a rule (one of them also with the long s that
        // Unicode case folding equates with s), then pieces of the others.
        let mut alphabet = vec!["-", "-", "=", "*", "_", " ", AFTER_RULE[0]];
        alphabet.push("Original Me\u{17f}\u{17f}age");
        alphabet.extend(&AFTER_RULE[1..]);
        alphabet.extend([
            "follows",
            "follow",
            "headers",
            "header",
            "is attached",
            "the ",
            ":",
            "\t",
            "\u{3000}",
            "\u{a0}",
            "\n",
            "unsent message follows",
            "content-type:",
            "message/",
            "below this line is a copy",
            "x",
            "S",
            "\u{212a}",
            "é",
        ]);
        let mut separators = 0;
        for text in &test_lines(&alphabet, 200_000) {
            let theirs = re.is_match(text);
            assert_eq!(is_separator(text), theirs, "{text:?}");
            separators += usize::from(theirs);
        }
        assert!(separators > 1000, "{separators}");
    }

    /// The regex that [`recipient_on_line`] stands for.
    fn recipient_line_regex() -> Regex {
        Regex::new(
            r#"(?i-u)^(?:rcpt to:\s*|address:\s*|recipient:\s*|\[status:[ -\\^-~]*address:\s*|[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s+)?)?<?([a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?:>\s*(?:[:,(\[]|\.\.\.|\.?$|on\s)|\s*(?::|\.\.\.|\(|\[|,|$)|\s+on\s)"#,
        )
        .unwrap()
    }

    #[test]
    fn recipient_lines_are_those_of_the_regex() {
        let re = recipient_line_regex();
        let alphabet = [
            "rcpt to:",
            "RCPT TO:",
            "Address:",
            "recipient:",
            "[Status:",
            "550",
            "5",
            "5.1.1",
            ".",
            "12",
            " ",
            " ",
            "\t",
            "-",
            "<",
            ">",
            ">",
            "a",
            "x.Y",
            "@",
            "@",
            "b.c",
            "b",
            ".",
            "...",
            ":",
            ",",
            "(",
            "[",
            "]",
            "on",
            "On ",
            "\n",
            "é",
            "address: ",
            "!",
        ];
        let mut found = 0;
        for text in &test_lines(&alphabet, 300_000) {
            let theirs = re.captures(text).and_then(|c| c.get(1)).map(|m| m.as_str());
            assert_eq!(recipient_on_line(text), theirs, "{text:?}");
            found += usize::from(theirs.is_some());
        }
        assert!(found > 1000, "{found}");
    }

    /// The regexes that [`json_field_values`] stands for, with its keys.
    fn json_regexes() -> [(Regex, &'static [(&'static str, JsonValue)]); 2] {
        let message_id =
            Regex::new(r#"\\?"(?:messageId|message_id)\\?"\s*:\s*\\?"([^"\\]+)\\?""#).unwrap();
        let recipient = Regex::new(
            r#"\\?"(?:emailAddress\\?"\s*:\s*\\?"([^"\\]+)\\?"|recipients\\?"\s*:\s*\[([^\]]*)\])"#,
        )
        .unwrap();
        const MESSAGE_ID_KEYS: &[(&str, JsonValue)] = &[
            ("messageId", JsonValue::String),
            ("message_id", JsonValue::String),
        ];
        [
            (message_id, MESSAGE_ID_KEYS),
            (recipient, &JSON_RECIPIENT_KEYS),
        ]
    }

    #[test]
    fn json_fields_are_those_of_the_regexes() {
        let alphabet = [
            "\"",
            "\"",
            "\\",
            "\\\"",
            "messageId",
            "message_id",
            "emailAddress",
            "recipients",
            ":",
            " ",
            "\n",
            "\u{3000}",
            "\u{85}",
            "[",
            "]",
            "a@b.example",
            "x",
            ",",
            "é",
            "\"messageId\":\"",
            "\"message_id\" : \"",
            "\\\"emailAddress\\\":\\\"",
            "\"recipients\":[",
            "\": \"",
        ];
        let mut texts = generated_texts(&alphabet, 200_000);
        texts.extend(corpus_texts());
        for (re, keys) in json_regexes() {
            let mut found = 0;
            for text in &texts {
                let theirs: Vec<&str> = re
                    .captures_iter(text)
                    .map(|c| c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str()))
                    .collect();
                assert_eq!(json_field_values(text, keys), theirs, "{text:?}");
                found += theirs.len();
            }
            assert!(found > 1000, "{found}");
        }
        let ses = r#"{"mail":{"messageId":"a1"},"bounce":{"bouncedRecipients":[{"emailAddress":"x@y.example"}]}}"#;
        assert_eq!(
            json_field_values(ses, &JSON_RECIPIENT_KEYS),
            ["x@y.example"]
        );
        let sns = r#"{\"delivery\":{\"recipients\" : [\"a@b.example\"]}}"#;
        assert_eq!(
            json_field_values(sns, &JSON_RECIPIENT_KEYS),
            [r#"\"a@b.example\""#]
        );
    }
}
