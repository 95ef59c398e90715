//! A zero-copy MIME walker: the parts of a message as slices of its bytes,
//! decoded only when analysis asks for a part's content.
//!
//! Why not a full MIME parser: analysis reads a handful of parts — the
//! explanation, the delivery-status fields, the returned original — and a
//! bounce often carries a returned attachment or a big HTML newsletter that
//! nobody needs decoded. A general parser decodes every part (base64 images
//! included) and builds owned trees; this walker only finds boundaries and
//! parses the two fields that shape the tree (`Content-Type`,
//! `Content-Transfer-Encoding`). It is deliberately lenient: a missing
//! closing boundary ends the part at the end of the message, bad base64 or
//! quoted-printable bytes are skipped or kept, and every count and depth is
//! bounded, so hostile input costs time linear in its size and nothing else.
//!
//! Input must already have LF line ends ([`super::text::normalize_newlines`]).

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;

use super::text::{lossy, trim, FieldRef};

/// At most this many parts are walked; the rest of a message with more
/// (no real notice has a hundred) is ignored.
pub const MAX_PARTS: usize = 256;

/// At most this many levels of multipart inside multipart are walked.
pub const MAX_DEPTH: usize = 16;

/// A parsed `Content-Type`: lower-case type and subtype, and parameters,
/// borrowed from the field value (unless it was folded). Every part's type
/// is read, a parameter only for the few parts that need one (a multipart's
/// boundary, a text part's charset), so the parameters are parsed when asked
/// for: building owned strings for all of them cost a twentieth of analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType<'a> {
    /// The top-level type, lower case (`text`, `multipart`, `message`, ...).
    pub kind: Cow<'a, str>,
    /// The subtype, lower case (`plain`, `report`, `delivery-status`, ...).
    pub subtype: Cow<'a, str>,
    /// The parameter text after the type (`; charset="utf-8"`).
    params: Cow<'a, str>,
}

impl<'a> ContentType<'a> {
    /// The default of a part without a `Content-Type` (RFC 2045 §5.2).
    fn text_plain() -> ContentType<'a> {
        ContentType {
            kind: Cow::Borrowed("text"),
            subtype: Cow::Borrowed("plain"),
            params: Cow::Borrowed(""),
        }
    }

    /// The default of a part inside a `multipart/digest` (RFC 2046 §5.1.5).
    fn message_rfc822() -> ContentType<'a> {
        ContentType {
            kind: Cow::Borrowed("message"),
            subtype: Cow::Borrowed("rfc822"),
            params: Cow::Borrowed(""),
        }
    }

    /// Parses a field value such as `text/plain; charset="utf-8"`.
    pub fn parse(value: &'a str) -> ContentType<'a> {
        let (mime, params) = match memchr::memchr(b';', value.as_bytes()) {
            Some(semi) => (&value[..semi], &value[semi + 1..]),
            None => (value, ""),
        };
        let mime = trim(strip_comment(mime));
        let (kind, subtype) = match memchr::memchr(b'/', mime.as_bytes()) {
            Some(slash) => (
                ascii_lowercase(trim(&mime[..slash])),
                ascii_lowercase(trim(&mime[slash + 1..])),
            ),
            None if mime.is_empty() => (Cow::Borrowed("text"), Cow::Borrowed("plain")),
            None => (ascii_lowercase(mime), Cow::Borrowed("")),
        };
        ContentType {
            kind,
            subtype,
            params: Cow::Borrowed(params),
        }
    }

    /// The same type, owning its text (for a type parsed from a copy).
    fn into_owned(self) -> ContentType<'static> {
        ContentType {
            kind: common_or_owned(self.kind),
            subtype: common_or_owned(self.subtype),
            params: Cow::Owned(self.params.into_owned()),
        }
    }

    /// The value of parameter `name` (lower case), unquoted, RFC 2231
    /// continuations (`name*0=`, `name*1=`) joined and `name*=charset''%xx`
    /// percent-decoded; the first of repeated parameters wins. Borrowed
    /// unless it had to be unescaped, decoded or joined.
    pub fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut found: Option<Cow<'_, str>> = None;
        for (raw_name, value) in Params(&self.params) {
            let (base, section, extended) = match raw_name.split_once('*') {
                None => (raw_name, None, false),
                Some((base, rest)) => {
                    let extended = rest.ends_with('*') || rest.is_empty();
                    let section = rest.trim_end_matches('*');
                    (base, (!section.is_empty()).then_some(section), extended)
                }
            };
            if !base.eq_ignore_ascii_case(name) {
                continue;
            }
            let value = if extended {
                // The first section may carry `charset'language'`; later
                // ones not.
                let encoded = match section {
                    None | Some("0") => value.splitn(3, '\'').nth(2).unwrap_or(&value),
                    Some(_) => &value,
                };
                Cow::Owned(percent_decode(encoded))
            } else {
                value
            };
            match &mut found {
                None => found = Some(value),
                Some(existing) if section.is_some_and(|s| s != "0") => {
                    existing.to_mut().push_str(&value);
                }
                Some(_) => {}
            }
        }
        found
    }
}

/// A lower-case type or subtype as a static string when it is a common
/// one, else as a copy: a folded `Content-Type` (common in notices) is read
/// from a joined copy of its lines, and copying its type and subtype again
/// cost two allocations per part.
fn common_or_owned(name: Cow<'_, str>) -> Cow<'static, str> {
    const COMMON: [&str; 12] = [
        "multipart",
        "text",
        "message",
        "application",
        "mixed",
        "alternative",
        "related",
        "report",
        "plain",
        "html",
        "delivery-status",
        "rfc822",
    ];
    match COMMON.iter().find(|common| **common == name) {
        Some(common) => Cow::Borrowed(common),
        None => Cow::Owned(name.into_owned()),
    }
}

/// `text` in ASCII lower case, borrowed when it already is (as most types
/// are written).
fn ascii_lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// How a part's body is encoded for transport (RFC 2045 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    /// 7bit, 8bit, binary or anything unknown: the bytes as they are.
    Identity,
    /// `base64`.
    Base64,
    /// `quoted-printable`.
    QuotedPrintable,
}

impl TransferEncoding {
    fn parse(value: &str) -> TransferEncoding {
        let value = trim(strip_comment(value));
        if value.eq_ignore_ascii_case("base64") {
            TransferEncoding::Base64
        } else if value.eq_ignore_ascii_case("quoted-printable") {
            TransferEncoding::QuotedPrintable
        } else {
            TransferEncoding::Identity
        }
    }
}

/// One leaf or container of the MIME tree, borrowed from the message.
#[derive(Debug, Clone)]
pub struct Part<'a> {
    /// The part's header fields, folded lines joined, borrowed from the
    /// message (most are read once, if at all).
    pub fields: Vec<FieldRef<'a>>,
    /// The raw header block (for a part whose header is really an
    /// original's message header).
    pub header: &'a [u8],
    /// The body as it stands in the message (still transfer-encoded).
    pub body: &'a [u8],
    /// The declared or default content type.
    pub content_type: ContentType<'a>,
    /// The declared transfer encoding.
    pub encoding: TransferEncoding,
    /// True for the message itself (the top of the tree).
    pub is_root: bool,
}

impl<'a> Part<'a> {
    /// True if the part's header has a field named `name`.
    pub fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.is(name))
    }

    /// The body with its transfer encoding undone.
    pub fn decoded(&self) -> Cow<'a, [u8]> {
        match self.encoding {
            TransferEncoding::Identity => Cow::Borrowed(self.body),
            TransferEncoding::Base64 => Cow::Owned(decode_base64(self.body)),
            TransferEncoding::QuotedPrintable => Cow::Owned(decode_quoted_printable(self.body)),
        }
    }

    /// The body decoded to text: transfer encoding undone, then the declared
    /// charset (UTF-8, with invalid bytes replaced, when none is declared or
    /// it is unknown). Borrowed from the message when it needs no decoding,
    /// as most text parts do.
    pub fn text(&self) -> Cow<'a, str> {
        decode_charset(
            self.decoded(),
            self.content_type.param("charset").as_deref(),
        )
    }
}

/// Splits a message (or part) into its header block and body at the first
/// empty line. Content that does not start with a header field (a part
/// whose header was lost) is all body.
fn split_header(bytes: &[u8]) -> (&[u8], &[u8]) {
    if bytes.first() == Some(&b'\n') {
        return (&bytes[..0], &bytes[1..]);
    }
    let first_line = &bytes[..memchr::memchr(b'\n', bytes).unwrap_or(bytes.len())];
    if field_name(first_line).is_none() {
        return (&bytes[..0], bytes);
    }
    // One searcher for every part: building one per call cost more than
    // the search.
    static BLANK_LINE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\n\n"));
    match BLANK_LINE.find(bytes) {
        Some(end) => (&bytes[..end + 1], &bytes[end + 2..]),
        None => (bytes, &bytes[bytes.len()..]),
    }
}

/// The header fields of a header block, in order, folded lines joined;
/// lines that are neither a field nor a continuation are skipped. Borrowed
/// from `header`: a value is copied only to join folded lines or to replace
/// invalid UTF-8 (copying every field was a tenth of all analysis work).
pub fn header_fields(header: &[u8]) -> Vec<FieldRef<'_>> {
    // Valid UTF-8 (nearly every header) is checked once, not field by field.
    match std::str::from_utf8(header) {
        // Every range below starts and ends next to an ASCII byte (line
        // break, colon), so it is a valid slice of the text.
        Ok(text) => fields_of(header, |range| Cow::Borrowed(&text[range])),
        Err(_) => fields_of(header, |range| lossy(&header[range])),
    }
}

/// The fields of [`header_fields`], with `text` giving the text of a byte
/// range of `header`.
fn fields_of<'a>(
    header: &'a [u8],
    text: impl Fn(std::ops::Range<usize>) -> Cow<'a, str>,
) -> Vec<FieldRef<'a>> {
    // Room for a typical header's fields (about one per 50 bytes).
    let mut fields: Vec<FieldRef<'_>> = Vec::with_capacity((header.len() / 50).clamp(4, 64));
    // The lines, found with memchr (a per-byte split was a tenth of this).
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', header).chain(std::iter::once(header.len()));
    for end in ends {
        let line = &header[start..end];
        let line_start = start;
        start = end + 1;
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(last) = fields.last_mut() {
                last.append(&text(line_start..end));
            }
        } else if let Some(colon) = field_name(line) {
            // field_name admits printable ASCII (and blanks) only, which
            // is always borrowed.
            let Cow::Borrowed(name) = text(line_start..line_start + colon) else {
                continue;
            };
            // Blanks before the colon are ASCII (field_name), so the
            // ASCII trim gives what `str::trim_end` gives, cheaper.
            fields.push(FieldRef::new(
                name.trim_ascii_end(),
                text(line_start + colon + 1..end),
            ));
        }
    }
    fields
}

/// If `line` starts a header field, the position of its colon. The name is
/// printable ASCII without spaces; white space before the colon is allowed
/// (RFC 5322's obsolete syntax, still seen).
fn field_name(line: &[u8]) -> Option<usize> {
    // The name is read first, then the colon must follow (after blanks):
    // a line that is not a field stops at its first space, unsearched.
    let name = name_length(&line[..line.len().min(MAX_FIELD_NAME + 1)]);
    let blanks = line[name..]
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    let colon = name + blanks;
    let valid = (1..=MAX_FIELD_NAME).contains(&name) && line.get(colon) == Some(&b':');
    valid.then_some(colon)
}

/// Longest header field name [`field_name`] accepts.
const MAX_FIELD_NAME: usize = 128;

/// How many bytes at the start of `bytes` can be in a field name: printable
/// ASCII except the colon. Every header line's name is read, and a byte
/// loop over the names was half of the header split: eight bytes are
/// tested at a time, as one `u64` (each test below flags, in the high bit
/// of a byte, every byte that fails it; a flag may be wrong only above a
/// true one, so the lowest flag is the first byte that fails).
fn name_length(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES * 0x80;
    let mut n = 0;
    while let Some(chunk) = bytes[n..].first_chunk::<8>() {
        let x = u64::from_le_bytes(*chunk);
        let below_33 = x.wrapping_sub(ONES * 33) & !x;
        let above_126 = x.wrapping_add(ONES) | x;
        let colon = x ^ (ONES * u64::from(b':'));
        let colons = colon.wrapping_sub(ONES) & !colon;
        let stops = (below_33 | above_126 | colons) & HIGH_BITS;
        if stops != 0 {
            return n + stops.trailing_zeros() as usize / 8;
        }
        n += 8;
    }
    n + bytes[n..]
        .iter()
        .take_while(|b| (33..=126).contains(*b) && **b != b':')
        .count()
}

/// Every part of `message` in depth-first order, the message itself first;
/// multipart containers are included (their `report-type` matters), the
/// parts of an enclosed `message/rfc822` are not (analysis reads that
/// message on its own). At most [`MAX_PARTS`].
pub fn parts(message: &[u8]) -> Vec<Part<'_>> {
    // Room for the parts of a typical notice.
    let mut out = Vec::with_capacity(8);
    walk(message, false, 0, true, &mut out);
    out
}

fn walk<'a>(
    bytes: &'a [u8],
    in_digest: bool,
    depth: usize,
    is_root: bool,
    out: &mut Vec<Part<'a>>,
) {
    if out.len() >= MAX_PARTS {
        return;
    }
    let (header, body) = split_header(bytes);
    let fields = header_fields(header);
    let encoding = fields
        .iter()
        .find(|f| f.is("content-transfer-encoding"))
        .map_or(TransferEncoding::Identity, |f| {
            TransferEncoding::parse(&f.value)
        });
    let content_type = match fields.iter().find(|f| f.is("content-type")) {
        Some(FieldRef {
            value: Cow::Borrowed(value),
            ..
        }) => ContentType::parse(value),
        // The value of a folded field is a copy, which the part owns.
        Some(field) => ContentType::parse(&field.value).into_owned(),
        None if in_digest => ContentType::message_rfc822(),
        None => ContentType::text_plain(),
    };
    // The children are split off while the boundary can still borrow from
    // the type (no copy of it), before the type moves into the part.
    let children = (content_type.kind == "multipart" && depth < MAX_DEPTH)
        .then(|| content_type.param("boundary"))
        .flatten()
        .filter(|b| !b.is_empty())
        .map(|boundary| split_multipart(body, boundary.as_bytes()));
    let children_in_digest = content_type.subtype == "digest";
    out.push(Part {
        fields,
        header,
        body,
        content_type,
        encoding,
        is_root,
    });
    for child in children.into_iter().flatten() {
        walk(child, children_in_digest, depth + 1, false, out);
    }
}

/// The bodies between the `--boundary` lines of a multipart body; the
/// preamble and epilogue are dropped, a missing closing line ends the last
/// part at the end.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);
    let finder = DelimiterFinder::new(&delimiter);
    let mut parts = Vec::new();
    // Start of the current part's content, once a delimiter was seen.
    let mut open: Option<usize> = None;
    let mut from = 0;
    while let Some(at) = finder.find(body, from) {
        from = at + delimiter.len();
        // The delimiter starts a line; some MTAs indent it.
        let indent = body[..at]
            .iter()
            .rev()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        let line_start = at - indent;
        if line_start > 0 && body[line_start - 1] != b'\n' {
            continue;
        }
        // Only white space may follow the boundary (RFC 2046 §5.1.1), so
        // boundary "b1" does not end at a line "--b10".
        let after = &body[from..];
        let line = &after[..memchr::memchr(b'\n', after).unwrap_or(after.len())];
        let closing = line.starts_with(b"--");
        if !closing && !line.iter().all(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        if let Some(start) = open.take() {
            // The line break before the delimiter belongs to it.
            let end = line_start.saturating_sub(1).max(start);
            parts.push(&body[start..end]);
            if parts.len() >= MAX_PARTS {
                return parts;
            }
        }
        if closing {
            return parts;
        }
        // Skip the rest of the delimiter line (transport padding).
        let line_end = (from + line.len() + 1).min(body.len());
        open = Some(line_end);
        from = line_end;
    }
    if let Some(start) = open {
        parts.push(&body[start..]);
    }
    parts
}

/// Finds a multipart delimiter (`--boundary`). memchr searches a needle of
/// up to 32 bytes with a packed searcher, a longer one with a Two-Way
/// searcher whose set-up cost more than searching a typical body; and even
/// the packed searcher's set-up costs about 20 instructions per needle byte,
/// once per multipart. So the delimiter's last [`DELIMITER_TAIL`] bytes are
/// searched (a boundary's random part is at its end, its head is often a
/// common `----=_Part`), and the whole delimiter compared where they are
/// found.
struct DelimiterFinder<'d> {
    delimiter: &'d [u8],
    /// Where the searched tail starts in the delimiter.
    tail_at: usize,
    tail: memmem::Finder<'d>,
}

/// How many bytes at the end of a delimiter are searched.
const DELIMITER_TAIL: usize = 8;

/// The longest delimiter searched by its tail: the comparison at each place
/// the tail is found is bounded by it (RFC 2046 allows 72 bytes).
const MAX_DELIMITER_BY_TAIL: usize = 256;

impl<'d> DelimiterFinder<'d> {
    fn new(delimiter: &'d [u8]) -> DelimiterFinder<'d> {
        let tail_at = if delimiter.len() <= MAX_DELIMITER_BY_TAIL {
            delimiter.len().saturating_sub(DELIMITER_TAIL)
        } else {
            0
        };
        DelimiterFinder {
            delimiter,
            tail_at,
            tail: memmem::Finder::new(&delimiter[tail_at..]),
        }
    }

    /// Where the delimiter first occurs in `body` at or after `from`.
    fn find(&self, body: &[u8], from: usize) -> Option<usize> {
        // Where the tail of a delimiter at `from` would be; every tail found
        // from there on is at least `tail_at` into the body.
        let mut at = from + self.tail_at;
        loop {
            let found = at + self.tail.find(body.get(at..)?)?;
            let start = found - self.tail_at;
            if body[start..].starts_with(self.delimiter) {
                return Some(start);
            }
            at = found + 1;
        }
    }
}

/// Removes a trailing RFC 822 comment, e.g. `7bit (ignored)`.
fn strip_comment(value: &str) -> &str {
    memchr::memchr(b'(', value.as_bytes()).map_or(value, |open| &value[..open])
}

/// The `name=value` pairs of a parameter text (`; name=value;
/// name="quoted value"`) in order: names trimmed as written, values
/// unquoted (borrowed unless a backslash escape had to be undone). A stray
/// `;` or junk without `=` is skipped, and so are pairs without a name.
struct Params<'a>(&'a str);

impl<'a> Iterator for Params<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = self.0;
            let bytes = text.as_bytes();
            // The name runs to '='.
            let eq = memchr::memchr2(b'=', b';', bytes)?;
            if bytes[eq] == b';' {
                self.0 = &text[eq + 1..];
                continue;
            }
            let name = trim(&text[..eq]);
            let mut j = eq + 1;
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            let value = if bytes.get(j) == Some(&b'"') {
                let (value, after) = quoted_string(&text[j + 1..]);
                self.0 = memchr::memchr(b';', after.as_bytes()).map_or("", |s| &after[s + 1..]);
                value
            } else {
                let end = memchr::memchr(b';', &bytes[j..]).map_or(bytes.len(), |s| j + s);
                self.0 = text.get(end + 1..).unwrap_or("");
                Cow::Borrowed(trim(&text[j..end]))
            };
            if !name.is_empty() {
                return Some((name, value));
            }
        }
    }
}

/// The content of a quoted string whose opening quote was just read, with
/// backslash escapes undone, and the text after its closing quote (none if
/// it is not closed).
fn quoted_string(text: &str) -> (Cow<'_, str>, &str) {
    // Most quoted values have no escape: a slice of the text.
    match memchr::memchr2(b'"', b'\\', text.as_bytes()) {
        None => return (Cow::Borrowed(text), ""),
        Some(q) if text.as_bytes()[q] == b'"' => {
            return (Cow::Borrowed(&text[..q]), &text[q + 1..]);
        }
        Some(_) => {}
    }
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '"' => return (Cow::Owned(value), &text[off + 1..]),
            c => value.push(c),
        }
    }
    (Cow::Owned(value), "")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// [`BASE64_VALUES`] of `=`, which ends a group.
const BASE64_PAD: u8 = 0xFE;

/// The value of each byte in base64 (standard and URL-safe alphabets), or
/// [`BASE64_PAD`], or `0xFF` for a byte to skip: one lookup per byte, where
/// a chain of range tests was a visible part of analysis (base64 text
/// parts are common in bounces).
const BASE64_VALUES: [u8; 256] = {
    let mut table = [0xFF_u8; 256];
    let mut i = 0;
    while i < 26 {
        table[b'A' as usize + i] = i as u8;
        table[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        table[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    table[b'+' as usize] = 62;
    table[b'-' as usize] = 62;
    table[b'/' as usize] = 63;
    table[b'_' as usize] = 63;
    table[b'=' as usize] = BASE64_PAD;
    table
};

/// Decodes base64, skipping line breaks and any byte outside the alphabet;
/// `=` ends a group (some encoders concatenate padded chunks).
fn decode_base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut i = 0;
    while i < input.len() {
        // Fast paths: eight (or four) alphabet bytes at a group boundary
        // are six (three) bytes out, what the byte steps below would give
        // in a fraction of the work. A value is an alphabet byte when it is
        // below 64, so one test of all values OR-ed together checks them.
        if bits == 0 {
            if let Some(chunk) = input.get(i..i + 8) {
                let v = std::array::from_fn::<u64, 8, _>(|k| {
                    u64::from(BASE64_VALUES[usize::from(chunk[k])])
                });
                if v.iter().fold(0, |or, v| or | v) < 64 {
                    let bits48 = v.iter().fold(0, |acc, v| acc << 6 | v);
                    out.extend_from_slice(&bits48.to_be_bytes()[2..]);
                    i += 8;
                    continue;
                }
            }
            if let Some(&[a, b, c, d]) = input.get(i..i + 4) {
                let v = [a, b, c, d].map(|x| u32::from(BASE64_VALUES[usize::from(x)]));
                if v[0] | v[1] | v[2] | v[3] < 64 {
                    let group = v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3];
                    out.extend_from_slice(&group.to_be_bytes()[1..]);
                    i += 4;
                    continue;
                }
            }
        }
        let b = input[i];
        i += 1;
        let v = BASE64_VALUES[usize::from(b)];
        if v >= 64 {
            if v == BASE64_PAD {
                acc = 0;
                bits = 0;
            }
            continue;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Decodes quoted-printable: `=XX` escapes and `=` soft line breaks; a
/// malformed escape is kept as it stands.
fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        // Text between escapes is copied as a whole run; an escape right
        // after an escape (text in most charsets other than ASCII is all
        // escapes) needs no search.
        if input[i] != b'=' {
            let Some(run) = memchr::memchr(b'=', &input[i..]) else {
                out.extend_from_slice(&input[i..]);
                break;
            };
            out.extend_from_slice(&input[i..i + run]);
            i += run;
        }
        if let (Some(&h), Some(&l)) = (input.get(i + 1), input.get(i + 2)) {
            if let (Some(h), Some(l)) = (hex_value(h), hex_value(l)) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        // A soft line break: '=' then optional white space, then LF.
        let rest = &input[i + 1..];
        let blanks = rest
            .iter()
            .take_while(|c| **c == b' ' || **c == b'\t')
            .count();
        if rest.get(blanks) == Some(&b'\n') {
            i += 1 + blanks + 1;
            continue;
        }
        if i + 1 + blanks == input.len() {
            break;
        }
        out.push(b'=');
        i += 1;
    }
    out
}

/// Decodes `bytes` from `charset` to text; UTF-8 (lossy) when the charset is
/// absent, UTF-8 itself, or unknown (then valid UTF-8 is used as it is,
/// borrowed or owned, without a copy).
fn decode_charset<'b>(bytes: Cow<'b, [u8]>, charset: Option<&str>) -> Cow<'b, str> {
    let charset = charset.map(str::trim).filter(|c| {
        !c.is_empty()
            && !c.eq_ignore_ascii_case("utf-8")
            && !c.eq_ignore_ascii_case("utf8")
            && !c.eq_ignore_ascii_case("us-ascii")
    });
    // Pure ASCII reads the same in every charset analysis meets.
    if let Some(decoder) = charset
        .filter(|_| !bytes.is_ascii() || bytes.contains(&0x1b))
        .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()))
    {
        return Cow::Owned(match single_byte_table(decoder) {
            Some(chars) => decode_single_byte(chars, &bytes),
            None => decoder(&bytes),
        });
    }
    match bytes {
        Cow::Borrowed(bytes) => lossy(bytes),
        // A decoded body becomes the text without a copy when it is UTF-8.
        Cow::Owned(bytes) => Cow::Owned(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
    }
}

/// Charsets whose mail_parser decoder maps each byte to one character on
/// its own (its single-byte decoders; `iso-8859-1`, `us-ascii` and the like
/// share `windows-1252`'s).
const SINGLE_BYTE_CHARSETS: [&str; 28] = [
    "windows-1250",
    "windows-1251",
    "windows-1252",
    "windows-1253",
    "windows-1254",
    "windows-1255",
    "windows-1256",
    "windows-1257",
    "windows-1258",
    "iso-8859-2",
    "iso-8859-3",
    "iso-8859-4",
    "iso-8859-5",
    "iso-8859-6",
    "iso-8859-7",
    "iso-8859-8",
    "iso-8859-9",
    "iso-8859-10",
    "iso-8859-13",
    "iso-8859-14",
    "iso-8859-15",
    "iso-8859-16",
    "koi8-r",
    "koi8-u",
    "macintosh",
    "ibm850",
    "tis-620",
    "iso-8859-11",
];

/// The character of each byte value in the charset `decoder` decodes, if
/// it is one of [`SINGLE_BYTE_CHARSETS`] (the decoder is recognised by its
/// address). mail_parser's single-byte decoder pushes each character into
/// a String twice the input's size and then shrinks it (a copy), about 30
/// instructions a byte; [`decode_single_byte`] gives the same text in a
/// fraction of that. Each table is built on first use, from the decoder
/// itself.
fn single_byte_table(
    decoder: mail_parser::decoders::charsets::DecoderFnc,
) -> Option<&'static [char; 256]> {
    type Table = std::sync::OnceLock<Option<[char; 256]>>;
    static DECODERS: LazyLock<Vec<Option<usize>>> = LazyLock::new(|| {
        SINGLE_BYTE_CHARSETS
            .iter()
            .map(|name| {
                mail_parser::decoders::charsets::map::charset_decoder(name.as_bytes())
                    .map(|d| d as usize)
            })
            .collect()
    });
    static TABLES: [Table; SINGLE_BYTE_CHARSETS.len()] =
        [const { Table::new() }; SINGLE_BYTE_CHARSETS.len()];
    let index = DECODERS.iter().position(|d| *d == Some(decoder as usize))?;
    TABLES[index]
        .get_or_init(|| {
            let all_bytes: Vec<u8> = (0..=u8::MAX).collect();
            let mut chars = ['\0'; 256];
            let decoded = decoder(&all_bytes);
            let mut decoded = decoded.chars();
            for c in &mut chars {
                *c = decoded.next()?;
            }
            decoded.next().is_none().then_some(chars)
        })
        .as_ref()
}

/// Decodes `bytes` with the characters of a [`single_byte_table`].
fn decode_single_byte(chars: &[char; 256], bytes: &[u8]) -> String {
    // Two bytes a character is enough for most text (Latin, Cyrillic,
    // Greek, Hebrew, Arabic); the rest grows once.
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(chars[usize::from(b)]);
    }
    text
}

/// Decodes RFC 2047 encoded words (`=?charset?B?...?=`) in a header value
/// such as a Subject; the value itself when it has none or they are broken.
pub fn decode_encoded_words(raw: &str) -> String {
    if !raw.contains("=?") {
        return raw.to_string();
    }
    let header = format!("Subject: {raw}\n\n");
    mail_parser::MessageParser::default()
        .parse_headers(header.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_parameters() {
        let ct = ContentType::parse(
            "Multipart/Report; report-type=\"delivery-status\";\tboundary=\"a;b\\\"c\"; x=1",
        );
        assert_eq!((&*ct.kind, &*ct.subtype), ("multipart", "report"));
        assert_eq!(ct.param("report-type").as_deref(), Some("delivery-status"));
        assert_eq!(ct.param("boundary").as_deref(), Some("a;b\"c"));
        assert_eq!(ct.param("x").as_deref(), Some("1"));
        let ct = ContentType::parse("text/plain; charset*=utf-8''%E2%82%AC; name*0=a; name*1=b");
        assert_eq!(ct.param("charset").as_deref(), Some("€"));
        assert_eq!(ct.param("name").as_deref(), Some("ab"));
        assert_eq!(ContentType::parse("").kind, "text");
        assert_eq!(ContentType::parse("text").subtype, "");
        let _ = ContentType::parse("a/b; =; ;; \"; x=\"unclosed");
    }

    /// The parameters as the first version of this module parsed them:
    /// every one into owned strings, RFC 2231 sections joined on the way.
    fn params_reference(text: &str) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let Some(eq) = text[i..].find(['=', ';']).map(|e| i + e) else {
                break;
            };
            if bytes[eq] == b';' {
                i = eq + 1;
                continue;
            }
            let name = text[i..eq].trim().to_ascii_lowercase();
            let mut j = eq + 1;
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            let value = if bytes.get(j) == Some(&b'"') {
                let mut value = String::new();
                let mut k = j + 1;
                let mut chars = text[k..].char_indices();
                let mut closed = false;
                while let Some((off, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            k += off + 1;
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    k = bytes.len();
                }
                i = text[k..].find(';').map_or(bytes.len(), |s| k + s + 1);
                value
            } else {
                let end = text[j..].find(';').map_or(bytes.len(), |s| j + s);
                i = end + 1;
                text[j..end].trim().to_string()
            };
            if name.is_empty() {
                continue;
            }
            let (base, section, extended) = match name.split_once('*') {
                None => (name.as_str(), None, false),
                Some((base, rest)) => {
                    let extended = rest.ends_with('*') || rest.is_empty();
                    let section = rest.trim_end_matches('*');
                    (base, (!section.is_empty()).then_some(section), extended)
                }
            };
            let value = if extended {
                let encoded = match section {
                    None | Some("0") => value.splitn(3, '\'').nth(2).unwrap_or(&value).to_string(),
                    Some(_) => value,
                };
                percent_decode(&encoded)
            } else {
                value
            };
            match params.iter_mut().find(|(n, _)| n == base) {
                Some((_, existing)) if section.is_some_and(|s| s != "0") => {
                    existing.push_str(&value)
                }
                Some(_) => {}
                None => params.push((base.to_string(), value)),
            }
        }
        params
    }

    #[test]
    fn parameters_are_those_of_the_full_parse() {
        let texts = [
            "",
            ";",
            " charset=utf-8",
            "; charset=\"utf-8\"; format=flowed",
            ";Charset = \"ISO-8859-1\" ; NAME=\"a b\"",
            "; boundary=\"a\\\"b;c\"; x=1",
            "; boundary=\"unclosed",
            "; boundary=\"esc\\",
            "; =; ;; junk; x",
            "; title*=us-ascii'en'This%20is%20%2A; title=plain",
            "; name*0=\"a\"; name*1=b; NAME*2*=%41; name*0=z",
            "; name*1=late; name*0=early; name=plain",
            "; a*=''%e9t%E9; b*0*=utf-8''%C3; b*1*=%A9",
            "; charset=\"é\\ü\"; ü=ö",
            "; x = \t spaced \t; y=\"q\" trailing junk; z=last",
            "; report-type=delivery-status; boundary=b1; boundary=b2",
        ];
        for text in texts {
            let reference = params_reference(text);
            let value = format!("text/plain{text}");
            let ct = ContentType::parse(&value);
            let names: Vec<String> = Params(&ct.params)
                .map(|(n, _)| n.split('*').next().unwrap_or("").to_ascii_lowercase())
                .chain(["none".to_string()])
                .collect();
            for name in &names {
                let want = reference
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str());
                assert_eq!(ct.param(name).as_deref(), want, "{name} in {text:?}");
            }
        }
    }

    #[test]
    fn owned_types_keep_their_names() {
        for value in [
            "Multipart/Report; a=b",
            "text/x-Odd; c=d",
            "message/RFC822",
            "x",
        ] {
            let ct = ContentType::parse(value);
            let owned = ct.clone().into_owned();
            assert_eq!(owned, ct, "{value}");
        }
        let owned = ContentType::parse("multipart/mixed").into_owned();
        assert!(matches!(owned.kind, Cow::Borrowed("multipart")));
        assert!(matches!(owned.subtype, Cow::Borrowed("mixed")));
    }

    #[test]
    fn parameter_values_are_borrowed_when_plain() {
        let ct = ContentType::parse("Text/HTML; charset=\"utf-8\"; b=x; c=\"a\\\"b\"");
        assert_eq!((&*ct.kind, &*ct.subtype), ("text", "html"));
        assert!(matches!(ct.param("charset"), Some(Cow::Borrowed("utf-8"))));
        assert!(matches!(ct.param("b"), Some(Cow::Borrowed("x"))));
        assert!(matches!(ct.param("c"), Some(Cow::Owned(v)) if v == "a\"b"));
        let ct = ContentType::parse("message/rfc822");
        assert!(matches!(ct.kind, Cow::Borrowed(_)) && matches!(ct.subtype, Cow::Borrowed(_)));
    }

    #[test]
    fn multipart_is_walked_with_defaults_and_missing_close() {
        let raw = b"Content-Type: multipart/mixed; boundary=\"b\"\n\npreamble\n--b\n\nfirst\n--b\nContent-Type: multipart/digest; boundary=d\n\n--d\n\nFrom: x\n\nhi\n--d--\n--b\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGI+aGk8L2I+\n";
        let parts = parts(raw);
        let types: Vec<String> = parts
            .iter()
            .map(|p| format!("{}/{}", p.content_type.kind, p.content_type.subtype))
            .collect();
        assert_eq!(
            types,
            [
                "multipart/mixed",
                "text/plain",
                "multipart/digest",
                "message/rfc822",
                "text/html"
            ]
        );
        assert_eq!(parts[1].text(), "first");
        assert_eq!(parts[4].text(), "<b>hi</b>");
        assert!(parts[0].is_root && !parts[1].is_root);
    }

    #[test]
    fn boundary_must_start_a_line() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nsee x--b here\n--b--\n";
        let parts = parts(raw);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].body, b"see x--b here");
    }

    #[test]
    fn long_boundaries_are_found_by_their_head() {
        for len in [1, 5, 6, 7, 29, 30, 31, 40, 70, 254, 255, 300] {
            // Every boundary shares its first 40 bytes with a decoy line.
            let boundary: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let decoy = format!("{}X", &boundary[..len.min(40) - 1]);
            let raw = format!(
                "Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n--{decoy}\n--{boundary}\n\none\n--{decoy}\n--{boundary}\n\ntwo\n--{boundary}--\n"
            );
            let parts = parts(raw.as_bytes());
            let bodies: Vec<&[u8]> = parts[1..].iter().map(|p| p.body).collect();
            let want_one = format!("one\n--{decoy}");
            assert_eq!(bodies, [want_one.as_bytes(), b"two"], "boundary of {len}");
        }
    }

    #[test]
    fn delimiters_are_found_where_a_plain_search_finds_them() {
        // Bodies made of pieces of each delimiter (its head, its tail, both
        // with a byte changed), so tails are found without a delimiter.
        for len in [1, 2, 7, 8, 9, 30, 70, 300] {
            let boundary: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let delimiter = format!("--{boundary}");
            let d = delimiter.as_bytes();
            let tail = &delimiter[d.len().saturating_sub(12)..];
            let head = &delimiter[..d.len().min(12)];
            let alphabet = [
                delimiter.as_str(),
                tail,
                head,
                &delimiter[1..],
                "-",
                "\n",
                "x",
            ];
            let finder = DelimiterFinder::new(d);
            for body in super::super::text::tests::generated_texts(&alphabet, 2000) {
                let body = body.as_bytes();
                for from in 0..=body.len() + 1 {
                    let plain = body
                        .get(from..)
                        .and_then(|rest| rest.windows(d.len()).position(|w| w == d))
                        .map(|p| from + p);
                    assert_eq!(finder.find(body, from), plain, "{len} {from} {body:?}");
                }
            }
        }
    }

    #[test]
    fn field_names_are_read_before_their_colon() {
        /// The first version: the colon first, then the name checked.
        fn reference(line: &[u8]) -> Option<usize> {
            let colon = memchr::memchr(b':', line)?;
            let name = line[..colon].trim_ascii_end();
            let valid = !name.is_empty()
                && name.len() <= 128
                && name.iter().all(|b| (33..=126).contains(b));
            valid.then_some(colon)
        }
        let long = "x".repeat(128);
        let lines = [
            String::new(),
            ":".into(),
            "a:".into(),
            "Subject: x: y".into(),
            "Subject \t\r: x".into(),
            "Sub ject: x".into(),
            "Sub\x0bject: x".into(),
            "Subject\x0b: x".into(),
            "Süb: x".into(),
            "[]!~: x".into(),
            " indented: x".into(),
            "no colon at all".into(),
            format!("{long}: fits"),
            format!("{long}x: too long"),
            format!("{long} : fits"),
        ];
        for line in &lines {
            assert_eq!(
                field_name(line.as_bytes()),
                reference(line.as_bytes()),
                "{line:?}"
            );
        }
        // Names of every length, each byte that can end or break one at
        // every place (the eight-byte tests), and real header lines.
        let alphabet = [
            "a", "Z", "-", "~", "!", ":", " ", "\t", "\x0b", "\x7f", "\u{e9}", "\x00", "\x20",
            "\x21", "\x7e", "\u{80}", "xxxxxxx",
        ];
        let mut texts = super::super::text::tests::generated_texts(&alphabet, 100_000);
        texts.extend(
            super::super::text::tests::corpus_texts()
                .iter()
                .flat_map(|t| t.lines().take(200).map(str::to_string)),
        );
        for line in &texts {
            assert_eq!(
                field_name(line.as_bytes()),
                reference(line.as_bytes()),
                "{line:?}"
            );
        }
    }

    #[test]
    fn part_without_header_is_all_body() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nno header here\n--b--\n";
        assert_eq!(parts(raw)[1].body, b"no header here");
    }

    /// Base64 decoded byte by byte, as before the four-byte fast path.
    fn base64_reference(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0_u32, 0);
        for &b in input {
            let v = BASE64_VALUES[usize::from(b)];
            if v >= 64 {
                if v == BASE64_PAD {
                    (acc, bits) = (0, 0);
                }
                continue;
            }
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    /// Quoted-printable decoded byte by byte, as before runs were copied.
    fn quoted_printable_reference(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if b != b'=' {
                out.push(b);
                i += 1;
                continue;
            }
            if let (Some(&h), Some(&l)) = (input.get(i + 1), input.get(i + 2)) {
                if let (Some(h), Some(l)) = (hex_value(h), hex_value(l)) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            let rest = &input[i + 1..];
            let blanks = rest
                .iter()
                .take_while(|c| **c == b' ' || **c == b'\t')
                .count();
            if rest.get(blanks) == Some(&b'\n') {
                i += 1 + blanks + 1;
                continue;
            }
            if i + 1 + blanks == input.len() {
                break;
            }
            out.push(b'=');
            i += 1;
        }
        out
    }

    #[test]
    fn fast_decoders_match_byte_by_byte_decoding() {
        // Inputs from a small alphabet that hits every branch: group
        // boundaries, padding mid-stream, skipped bytes, escapes, soft
        // breaks, a trailing '='.
        let alphabet = b"aZ09+/-_=\n \t!=3D=\n";
        let mut seed = 0x2545_f491_u32;
        // `len` bytes of `alphabet`, picked by a xorshift generator.
        let mut random = |alphabet: &[u8], len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet[seed as usize % alphabet.len()]
                })
                .collect()
        };
        for len in 0..400 {
            let input = random(alphabet, len);
            assert_eq!(decode_base64(&input), base64_reference(&input), "{input:?}");
            assert_eq!(
                decode_quoted_printable(&input),
                quoted_printable_reference(&input),
                "{input:?}"
            );
        }
        // Mostly alphabet bytes: the eight- and four-byte paths at every
        // offset.
        let dense = b"aZ09+/-_aZ09+/-_aZ09+/-_=\n";
        for len in 0..400 {
            let input = random(dense, len);
            assert_eq!(decode_base64(&input), base64_reference(&input), "{input:?}");
        }
        let text = b"SGVsbG8sIHdvcmxkIQ==\nSGk=SGk\naGVsbG8gd29ybGQgaGVsbG8gd29y\nbGQ";
        assert_eq!(decode_base64(text), base64_reference(text));
    }

    #[test]
    fn single_byte_charsets_decode_as_mail_parser_does() {
        let all_bytes: Vec<u8> = (0..=u8::MAX).collect();
        let mut inputs = vec![all_bytes.clone(), Vec::new(), b"plain ascii".to_vec()];
        inputs.extend(
            super::super::text::tests::generated_texts(&["a", "\u{e9}", "\u{416}", " ", "\n"], 200)
                .into_iter()
                .map(String::into_bytes),
        );
        inputs.extend((0..200).map(|n| all_bytes.iter().map(|b| b.wrapping_mul(n)).collect()));
        for name in SINGLE_BYTE_CHARSETS {
            let decoder = mail_parser::decoders::charsets::map::charset_decoder(name.as_bytes())
                .unwrap_or_else(|| panic!("no decoder for {name}"));
            let table = single_byte_table(decoder).unwrap_or_else(|| panic!("no table for {name}"));
            for input in &inputs {
                assert_eq!(decode_single_byte(table, input), decoder(input), "{name}");
            }
            let text = decode_charset(Cow::Borrowed(&all_bytes), Some(name));
            assert_eq!(text, decoder(&all_bytes), "{name}");
        }
        // Other charsets keep mail_parser's decoder.
        for name in ["shift_jis", "utf-7", "iso-2022-jp", "gbk", "utf-16"] {
            let decoder = mail_parser::decoders::charsets::map::charset_decoder(name.as_bytes())
                .unwrap_or_else(|| panic!("no decoder for {name}"));
            assert!(single_byte_table(decoder).is_none(), "{name}");
        }
    }

    #[test]
    fn transfer_decoding_is_lenient() {
        assert_eq!(decode_base64(b"aGVs\nbG8=\n!!"), b"hello");
        assert_eq!(decode_base64(b"aGk=aGk="), b"hihi");
        assert_eq!(
            decode_quoted_printable(b"a=3Db=\nc =\t\nd=ZZ="),
            b"a=bc d=ZZ"
        );
    }

    #[test]
    fn charsets_are_decoded() {
        let text = |bytes: &'static [u8], charset| decode_charset(Cow::Borrowed(bytes), charset);
        assert_eq!(text(b"\xe9t\xe9", Some("iso-8859-1")), "été");
        assert_eq!(text(b"\xe9", Some("no-such-charset")), "\u{fffd}");
        // Decoded bytes become the text as they are, or lossy.
        let owned = |bytes: &[u8]| decode_charset(Cow::Owned(bytes.to_vec()), None);
        assert_eq!(owned("é".as_bytes()), "é");
        assert_eq!(owned(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(decode_encoded_words("=?utf-8?q?caf=C3=A9?="), "café");
        assert_eq!(decode_encoded_words("a = b =c ?= d="), "a = b =c ?= d=");
        assert_eq!(decode_encoded_words("x =?utf-8?q?=C3=A9?="), "x é");
    }

    #[test]
    fn hostile_shapes_are_bounded() {
        let mut m = String::from("Content-Type: multipart/mixed; boundary=b\n\n");
        for _ in 0..10_000 {
            m.push_str("--b\n\nx\n");
        }
        assert!(parts(m.as_bytes()).len() <= MAX_PARTS);
        let mut nested = String::new();
        for i in 0..1000 {
            nested.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
            ));
        }
        assert!(parts(nested.as_bytes()).len() <= MAX_DEPTH + 2);
    }
}
