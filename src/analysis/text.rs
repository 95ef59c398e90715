//! Text-level helpers shared by the analysis steps: line-end normalisation,
//! header-field blocks (DSN groups, quoted original headers), addresses and
//! Message-IDs.
//!
//! Everything here works on already bounded input and is linear in its size:
//! the scanners look at each byte a bounded number of times and no loop
//! rescans.

use std::borrow::Cow;

/// Longest header field name we accept in a quoted block; real ones are short,
/// and a bound keeps a line of letters from being taken for a header.
const MAX_FIELD_NAME: usize = 76;

/// Longest Message-ID we return (RFC 5322 lines are at most 998 octets).
const MAX_MESSAGE_ID: usize = 250;

/// Returns `raw` with every line ending (CRLF, lone CR, LF) turned into LF,
/// blank lines and an mbox `From ` separator before the header dropped;
/// borrowed from `raw` when it has no CR (most mail read from files).
///
/// Bounces arrive with all three line-end conventions (old Mac MTAs wrote CR
/// only); normalising once lets every later step assume LF.
pub fn normalize_newlines(raw: &[u8]) -> Cow<'_, [u8]> {
    let Some(first_cr) = memchr::memchr(b'\r', raw) else {
        return Cow::Borrowed(&raw[leading_junk(raw)..]);
    };
    let mut out = Vec::with_capacity(raw.len());
    for_lf_runs(raw, first_cr, |run, lf| {
        out.extend_from_slice(&raw[run]);
        if lf {
            out.push(b'\n');
        }
    });
    out.drain(..leading_junk(&out));
    Cow::Owned(out)
}

/// [`normalize_newlines`] for text that is already valid UTF-8 (a decoded
/// part): line ends are ASCII, so the result is built from slices of the
/// text instead of being validated again as bytes.
pub fn normalize_text_newlines(text: &str) -> Cow<'_, str> {
    let Some(first_cr) = memchr::memchr(b'\r', text.as_bytes()) else {
        return Cow::Borrowed(&text[leading_junk(text.as_bytes())..]);
    };
    let mut out = String::with_capacity(text.len());
    // Every run ends before a CR or at the end, so it is a valid slice.
    for_lf_runs(text.as_bytes(), first_cr, |run, lf| {
        out.push_str(&text[run]);
        if lf {
            out.push('\n');
        }
    });
    out.drain(..leading_junk(out.as_bytes()));
    Cow::Owned(out)
}

/// Calls `run` with the pieces of `raw` with every line ending (CRLF, lone
/// CR) turned into LF, starting at the CR at `first_cr`: each run of bytes
/// between CRs, and whether an LF follows it.
fn for_lf_runs(raw: &[u8], first_cr: usize, mut run: impl FnMut(std::ops::Range<usize>, bool)) {
    let mut start = 0;
    let mut cr = Some(first_cr);
    while let Some(at) = cr {
        run(start..at, true);
        start = if raw.get(at + 1) == Some(&b'\n') {
            at + 2
        } else {
            at + 1
        };
        cr = memchr::memchr(b'\r', &raw[start..]).map(|next| start + next);
    }
    run(start..raw.len(), false);
}

/// How many bytes at the start of a message with LF line ends are not part
/// of the RFC 5322 message: leading blank lines (seen in files cut out of
/// mailboxes), an mbox "From " line and a UTF-8 byte order mark (written by
/// some Windows tools).
fn leading_junk(message: &[u8]) -> usize {
    let mut start = if message.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    loop {
        let rest = &message[start..];
        if rest.first() == Some(&b'\n') {
            start += 1;
        } else if rest.starts_with(b"From ") {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => start += end + 1,
                None => break,
            }
        } else if rest.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            && rest
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count()
                == rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())
        {
            // A line of only white space before the header.
            start += rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |p| p + 1);
        } else {
            break;
        }
    }
    start
}

/// `bytes` as text, invalid UTF-8 replaced by U+FFFD: the same result as
/// [`String::from_utf8_lossy`], but valid input (nearly all of it) is
/// checked with the much faster [`std::str::from_utf8`] first. The lossy
/// scanner goes byte by byte and was a tenth of all analysis time.
pub fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// One `Name: value` field, with folded lines joined by a single space,
/// borrowed from the text it was found in: the value is copied only when
/// folded lines had to be joined. Analysis looks at many fields and keeps
/// few (quoted header blocks, DSN groups, the header triage), so fields
/// that are dropped cost no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef<'a> {
    /// The field name as written.
    pub name: &'a str,
    /// The unfolded value, trimmed.
    pub value: Cow<'a, str>,
}

impl<'a> FieldRef<'a> {
    /// A field named `name` with the raw `value` after its colon, trimmed
    /// (copied only if it was already a copy).
    pub fn new(name: &'a str, value: Cow<'a, str>) -> FieldRef<'a> {
        let value = match value {
            Cow::Borrowed(value) => Cow::Borrowed(trim(value)),
            Cow::Owned(value) if trim(&value).len() == value.len() => Cow::Owned(value),
            Cow::Owned(value) => Cow::Owned(trim(&value).to_string()),
        };
        FieldRef { name, value }
    }

    /// Appends a folded continuation line to the value.
    pub fn append(&mut self, continuation: &str) {
        let continuation = trim(continuation);
        if continuation.is_empty() {
            return;
        }
        if let Cow::Borrowed(value) = self.value {
            // Room for this line and a few more: folded fields (Received,
            // DKIM-Signature) often run over several lines.
            let mut owned = String::with_capacity(value.len() + 4 * continuation.len() + 64);
            owned.push_str(value);
            self.value = Cow::Owned(owned);
        }
        let value = self.value.to_mut();
        if !value.is_empty() {
            value.push(' ');
        }
        value.push_str(continuation);
    }

    /// Case-insensitive name comparison, since header names are.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// `text` without leading and trailing white space, exactly as [`str::trim`]
/// gives it, but ASCII white space (all that header values have, nearly
/// always) is stripped without decoding characters: trimming field values
/// was a thirtieth of analysis.
pub fn trim(text: &str) -> &str {
    let trimmed = text.trim_ascii();
    match (trimmed.as_bytes().first(), trimmed.as_bytes().last()) {
        (Some(first), Some(last)) if stays_trimmed(*first) && stays_trimmed(*last) => trimmed,
        _ => trimmed.trim(),
    }
}

/// `text` without leading white space, exactly as [`str::trim_start`]
/// gives it, ASCII white space stripped as in [`trim`]. The header and
/// recipient scans trim every line of a notice, many of them indented.
pub fn trim_start(text: &str) -> &str {
    let trimmed = text.trim_ascii_start();
    match trimmed.as_bytes().first() {
        Some(first) if !stays_trimmed(*first) => trimmed.trim_start(),
        _ => trimmed,
    }
}

/// ASCII white space as both [`char::is_whitespace`] and the regex
/// crate's ASCII `\s` know it: [`u8::is_ascii_whitespace`] and the
/// vertical tab.
pub(crate) fn is_ascii_space(b: u8) -> bool {
    b.is_ascii_whitespace() || b == b'\x0b'
}

/// True if an end byte of an ASCII-trimmed text is sure to stay after
/// [`str::trim`]: `trim_ascii` keeps a vertical tab and non-ASCII white
/// space (U+00A0, U+3000, ...), which `str::trim` removes.
fn stays_trimmed(byte: u8) -> bool {
    byte.is_ascii() && byte != b'\x0b'
}

/// Splits `text` into groups of header fields separated by blank lines, the
/// shape of a `message/delivery-status` body (one per-message group, then one
/// group per recipient). Lines that are not fields are ignored.
pub fn field_groups(text: &str) -> Vec<Vec<FieldRef<'_>>> {
    field_groups_where(text, |_| true)
}

/// The groups of [`field_groups`] with the fields whose name `keep`
/// accepts, skipped as in [`first_field_group_where`]: a notice's fields
/// looked up for one or two names, without copies of the others' folded
/// values (a group of only skipped fields is still a group, empty).
pub fn field_groups_where(text: &str, keep: impl Fn(&str) -> bool) -> Vec<Vec<FieldRef<'_>>> {
    field_group_refs(text, usize::MAX, keep)
}

/// The first group of [`field_groups`], borrowed from `text`: a header
/// block read for a few of its fields.
pub fn first_field_group(text: &str) -> Vec<FieldRef<'_>> {
    first_field_group_where(text, |_| true)
}

/// The fields of [`first_field_group`] whose name `keep` accepts, in
/// order; the others are skipped without trimming their values or joining
/// their folded lines (a header's Received and DKIM-Signature fields are
/// most of its bytes, and the header triage reads none of them).
pub fn first_field_group_where(text: &str, keep: impl Fn(&str) -> bool) -> Vec<FieldRef<'_>> {
    field_group_refs(text, 1, keep).pop().unwrap_or_default()
}

/// The lines of `text`, exactly as [`str::lines`] gives them (split at
/// `\n`, a `\r` before it dropped, no empty line after a final `\n`), but
/// found with `memchr`: the standard library's search for `\n` was a
/// twentieth of analysis, most of it in the header scans below.
pub fn lines(text: &str) -> impl Iterator<Item = &str> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || next_line(&mut rest))
}

/// The next line of [`lines`] of `rest`, which moves past it.
fn next_line<'a>(rest: &mut &'a str) -> Option<&'a str> {
    if rest.is_empty() {
        return None;
    }
    match memchr::memchr(b'\n', rest.as_bytes()) {
        Some(end) => {
            let line = &rest[..end];
            *rest = &rest[end + 1..];
            Some(line.strip_suffix('\r').unwrap_or(line))
        }
        None => Some(std::mem::take(rest)),
    }
}

/// The first `max_groups` groups of [`field_groups`], borrowed, with the
/// fields whose name `keep` accepts (a group of only skipped fields is
/// still a group, empty).
fn field_group_refs(
    text: &str,
    max_groups: usize,
    keep: impl Fn(&str) -> bool,
) -> Vec<Vec<FieldRef<'_>>> {
    let mut groups: Vec<Vec<FieldRef<'_>>> = Vec::new();
    let mut current: Vec<FieldRef<'_>> = Vec::new();
    // Whether the open group has a field, kept or not, and whether its
    // last field was kept (its folded lines are then joined to it).
    let mut in_group = false;
    let mut kept_last = false;
    for line in lines(text) {
        if trim(line).is_empty() {
            if in_group {
                in_group = false;
                groups.push(std::mem::take(&mut current));
                if groups.len() >= max_groups {
                    return groups;
                }
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = current.last_mut().filter(|_| kept_last) {
                last.append(line);
            }
            continue;
        }
        if let Some((name, value)) = split_field(line) {
            in_group = true;
            kept_last = keep(name);
            if !kept_last {
                continue;
            }
            if current.is_empty() {
                // Room for a typical group (a DSN recipient has four to
                // six fields) instead of growing from one.
                current.reserve(8);
            }
            current.push(FieldRef::new(name, Cow::Borrowed(value)));
        }
    }
    if in_group {
        groups.push(current);
    }
    groups
}

/// The bytes [`split_field`] admits in a name (ASCII letters and digits,
/// `-`, `_`): one lookup per byte, where the tests were a visible part of
/// the header scans.
const FIELD_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// Splits a `Name: value` line, or returns `None` if the line is not a field.
pub fn split_field(line: &str) -> Option<(&str, &str)> {
    // The name is read first, and its colon must follow it: most lines
    // this sees are prose, which ends the name at its first space, without
    // a search for a colon. A name is at most MAX_FIELD_NAME bytes.
    let bytes = line.as_bytes();
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let len = bytes
        .iter()
        .take(MAX_FIELD_NAME + 1)
        .take_while(|b| FIELD_NAME_BYTES[usize::from(**b)])
        .count();
    let valid = len <= MAX_FIELD_NAME && bytes.get(len) == Some(&b':');
    valid.then(|| (&line[..len], &line[len + 1..]))
}

/// A block of header fields found inside a body, e.g. the original message's
/// headers quoted by a text-only bounce (`> Message-ID: ...`, indented, or
/// plain after a "copy of the message follows" line).
#[derive(Debug, Clone, Default)]
pub struct HeaderBlock<'a> {
    /// The fields in order, folded lines joined.
    pub fields: Vec<FieldRef<'a>>,
}

impl HeaderBlock<'_> {
    /// The first value of a field, case-insensitive.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.is(name)).map(|f| &*f.value)
    }

    /// Every value of a field, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.is(name))
            .map(|f| &*f.value)
    }

    /// How many fields carry names typical of a message header; a block of
    /// two or more of them (or one Message-ID) is a quoted header, not prose
    /// that happens to contain a colon.
    pub fn message_header_score(&self) -> usize {
        self.fields
            .iter()
            .filter(|f| is_typical_header_name(f.name))
            .count()
    }
}

/// True for the names of fields typical of a message header (see
/// [`HeaderBlock::message_header_score`]).
fn is_typical_header_name(name: &str) -> bool {
    const TYPICAL: &[&str] = &[
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "received",
        "return-path",
        "mime-version",
        "content-type",
        "reply-to",
        "in-reply-to",
        "references",
        "x-mailer",
        "user-agent",
        "sender",
        "delivered-to",
        "content-transfer-encoding",
        "dkim-signature",
        "authentication-results",
    ];
    TYPICAL.iter().any(|t| name.eq_ignore_ascii_case(t))
}

/// The header at the top of a message (or of a header-only part). A blank
/// line ends it unless the next line is again a well-known header field:
/// anonymised and hand-edited samples, and some MTAs, leave stray blank
/// lines inside the returned header.
pub fn leading_header_block(text: &str) -> HeaderBlock<'_> {
    leading_header_block_where(text, |_| true)
}

/// The fields of [`leading_header_block`] whose name `keep` accepts, in
/// order; the others are skipped without trimming their values or joining
/// their folded lines (a returned header's DKIM signatures and Received
/// chain are most of its lines, and analysis reads a few fields).
pub fn leading_header_block_where(text: &str, keep: impl Fn(&str) -> bool) -> HeaderBlock<'_> {
    // Room for a usual header's fields without growing step by step (and
    // small enough for the allocator's fast path).
    let mut block = HeaderBlock {
        fields: Vec::with_capacity(24),
    };
    // Whether a field was seen, kept or not, and whether the last field
    // seen was kept (its folded lines are then joined to it).
    let mut seen_field = false;
    let mut kept_last = false;
    let mut lines = lines(text).peekable();
    while let Some(line) = lines.next() {
        if trim(line).is_empty() {
            if !seen_field {
                continue;
            }
            let next_is_header =
                lines
                    .peek()
                    .and_then(|l| split_field(l))
                    .is_some_and(|(name, _)| {
                        is_typical_header_name(name) || name.to_ascii_lowercase().starts_with("x-")
                    });
            if next_is_header {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = block.fields.last_mut().filter(|_| kept_last) {
                last.append(line);
            }
            continue;
        }
        match split_field(line) {
            Some((name, value)) => {
                seen_field = true;
                kept_last = keep(name);
                if kept_last {
                    block.fields.push(FieldRef::new(name, Cow::Borrowed(value)));
                }
            }
            // An mbox separator before the header is not part of it.
            None if !seen_field && line.starts_with("From ") => continue,
            None if !seen_field => break,
            // Inside a header, a line that is not a field is a continuation
            // whose indentation was lost (seen in Received chains).
            None => {
                if let Some(last) = block.fields.last_mut().filter(|_| kept_last) {
                    last.append(line);
                }
            }
        }
    }
    block
}

/// Finds header blocks quoted anywhere in `text`: lines that look like
/// `Name: value`, optionally behind `>` quote marks and/or indentation, with
/// deeper-indented lines as folded continuations.
///
/// Most `Name: value` lines of a notice's text are prose or DSN fields, not
/// a quoted header: fields are borrowed, so the blocks dropped cost little.
pub fn quoted_header_blocks(text: &str) -> Vec<HeaderBlock<'_>> {
    let mut blocks = Vec::new();
    // The open block: its indentation and its fields (never empty).
    let mut base: Option<usize> = None;
    let mut fields: Vec<FieldRef<'_>> = Vec::new();
    let mut rest = text;
    loop {
        if base.is_none() {
            // Without an open block, only a field line (which has a colon)
            // changes anything: the lines before the next colon are
            // skipped unread (most lines of a long text have none).
            let Some(colon) = memchr::memchr(b':', rest.as_bytes()) else {
                break;
            };
            let line_start = memchr::memrchr(b'\n', &rest.as_bytes()[..colon]).map_or(0, |n| n + 1);
            rest = &rest[line_start..];
        }
        let Some(raw_line) = next_line(&mut rest) else {
            break;
        };
        let line = strip_quote_marks(raw_line);
        let content = trim_start(line);
        let indent = line.len() - content.len();
        if content.is_empty() {
            finish_block(&mut base, &mut fields, &mut blocks);
            continue;
        }
        if base.is_some_and(|base| indent > base) {
            if let Some(last) = fields.last_mut() {
                last.append(content);
            }
            continue;
        }
        match split_field(content) {
            Some((name, value)) if !value.starts_with("//") => {
                base = Some(base.map_or(indent, |base| base.min(indent)));
                fields.push(FieldRef::new(name, Cow::Borrowed(value)));
            }
            _ => finish_block(&mut base, &mut fields, &mut blocks),
        }
    }
    finish_block(&mut base, &mut fields, &mut blocks);
    blocks
}

/// Closes the open block of [`quoted_header_blocks`], keeping it if it looks
/// like a message header. Inline: most calls find no open block.
#[inline]
fn finish_block<'a>(
    base: &mut Option<usize>,
    fields: &mut Vec<FieldRef<'a>>,
    blocks: &mut Vec<HeaderBlock<'a>>,
) {
    if base.take().is_some() {
        keep_header_block(fields, blocks);
    }
}

/// Moves the fields of a closed block to `blocks` if they look like a
/// message header, else drops them.
fn keep_header_block<'a>(fields: &mut Vec<FieldRef<'a>>, blocks: &mut Vec<HeaderBlock<'a>>) {
    // Two typical names are enough: no need to look at the rest.
    let two_typical = fields
        .iter()
        .filter(|f| is_typical_header_name(f.name))
        .nth(1)
        .is_some();
    if two_typical || fields.iter().any(|f| f.is("message-id")) {
        blocks.push(HeaderBlock {
            fields: std::mem::take(fields),
        });
    } else {
        fields.clear();
    }
}

/// Removes leading `>` quote marks (with the spaces between them), as mail
/// clients and some MTAs quote the returned message.
#[inline]
pub fn strip_quote_marks(line: &str) -> &str {
    let trimmed = trim_start(line);
    if !trimmed.starts_with('>') {
        return line;
    }
    let mut rest = trimmed;
    while let Some(r) = rest.strip_prefix('>') {
        rest = r.strip_prefix(' ').unwrap_or(r);
    }
    rest
}

/// True for the bytes of an address's local part: RFC 5322 `atext` and dots.
pub(crate) fn is_local_part_byte(b: u8) -> bool {
    LOCAL_PART_BYTES[usize::from(b)]
}

/// The bytes [`is_local_part_byte`] admits: one lookup per byte, where the
/// search of the symbol list was most of the address scans' byte tests.
const LOCAL_PART_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let symbols = b".!#$%&'*+/=?^_`{|}~-";
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < symbols.len() {
        table[symbols[i] as usize] = true;
        i += 1;
    }
    table
};

/// The end of the domain that starts at `bytes[start]` (a letter or digit):
/// dot-separated labels of letters, digits and inner hyphens, each as long
/// as it can be (a label's trailing hyphens are not part of it).
fn domain_end(bytes: &[u8], start: usize) -> usize {
    let mut label = start;
    loop {
        // The label runs over letters, digits and hyphens, and ends after
        // its last letter or digit.
        let mut end = label;
        for (i, &b) in bytes.iter().enumerate().skip(label) {
            if b.is_ascii_alphanumeric() {
                end = i + 1;
            } else if b != b'-' {
                break;
            }
        }
        let another = bytes.get(end) == Some(&b'.')
            && bytes.get(end + 1).is_some_and(u8::is_ascii_alphanumeric);
        if !another {
            return end;
        }
        label = end + 1;
    }
}

/// The addresses in `text` as written, left to right, without overlap:
/// a run of local-part bytes, `@`, and a domain ([`domain_end`]). These are
/// the spans the leftmost-first address regex this replaced found (the unit
/// tests keep it and compare), but found by jumping from `@` to `@` with
/// `memchr`: the regex engine cost as much as the rest of the recipient
/// search, and compiling it a tenth of a one-file run's start-up. Linear:
/// the bytes before an `@` are looked at again only once, for the address
/// that starts there.
fn address_spans(text: &str) -> impl Iterator<Item = &str> + '_ {
    let bytes = text.as_bytes();
    // Where the next address may start: the end of the previous one.
    let mut from = 0;
    std::iter::from_fn(move || {
        let mut search = from;
        while let Some(offset) = memchr::memchr(b'@', &bytes[search..]) {
            let at = search + offset;
            search = at + 1;
            let has_local = at > from && is_local_part_byte(bytes[at - 1]);
            if !has_local || !bytes.get(at + 1).is_some_and(u8::is_ascii_alphanumeric) {
                continue;
            }
            let mut start = at - 1;
            while start > from && is_local_part_byte(bytes[start - 1]) {
                start -= 1;
            }
            let end = domain_end(bytes, at + 1);
            from = end;
            // Both ends are next to ASCII bytes, so on char boundaries.
            return text.get(start..end);
        }
        from = bytes.len();
        None
    })
}

/// All e-mail addresses in `text`, lower-cased, in order of appearance,
/// without duplicates. Leading/trailing dots are trimmed (sentence ends).
pub fn addresses_in(text: &str) -> Vec<String> {
    // Bounded, with a set for de-duplication once the list is long: a
    // notice listing thousands of recipients must stay linear. The usual
    // few are compared directly, which costs no hashing or copies.
    const MAX_ADDRESSES: usize = 1000;
    const COMPARED_DIRECTLY: usize = 16;
    let mut out: Vec<String> = Vec::new();
    // Made only for a long list (a new set reads the thread's hash keys).
    let mut seen: Option<std::collections::HashSet<String>> = None;
    for addr in addresses_as_written(text) {
        let is_new = if out.len() < COMPARED_DIRECTLY {
            !out.iter().any(|o| o.eq_ignore_ascii_case(addr))
        } else {
            seen.get_or_insert_with(|| out.iter().cloned().collect())
                .insert(addr.to_ascii_lowercase())
        };
        if is_new {
            out.push(addr.to_ascii_lowercase());
            if out.len() == MAX_ADDRESSES {
                break;
            }
        }
    }
    out
}

/// The addresses of [`addresses_in`] as written (case kept), with
/// duplicates, borrowed: for a caller that keeps few of them or compares
/// them without case, and so needs no lower-case copy of each.
pub fn addresses_as_written(text: &str) -> impl Iterator<Item = &str> + '_ {
    address_spans(text)
        .map(|m| m.trim_matches('.'))
        .filter(|addr| {
            let local_len = addr.find('@').unwrap_or(addr.len());
            addr.len() <= 254
                && local_len <= 64
                && local_len != 0
                && local_len != addr.len()
                && !addr.ends_with('@')
        })
}

/// The address in a DSN recipient field such as `rfc822; <a@b.example>`.
pub fn dsn_address(value: &str) -> Option<String> {
    let after_type = match value.split_once(';') {
        Some((_, rest)) => rest,
        None => value,
    };
    let addr = after_type
        .trim()
        .trim_start_matches('<')
        .split(['>', ' ', '\t', ','])
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (local, domain) = addr.split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !addr.contains(['(', ')', '"']))
        .then_some(addr)
        .or_else(|| addresses_in(after_type).into_iter().next())
}

/// Normalises a Message-ID: removes angle brackets, white space (folding
/// sometimes splits long ids) and returns `None` for an empty or oversized id.
pub fn normalize_message_id(value: &str) -> Option<String> {
    let value = trim(value);
    let inner = match (value.find('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        (Some(start), None) => &value[start + 1..],
        _ => value,
    };
    // Copied to drop white space only when there is some (rarely). Most ids
    // are printable ASCII: a byte scan rules white space out before the
    // slower scan by chars (non-ASCII white space exists, e.g. U+3000).
    // The scan has no early exit, so that it runs on many bytes at once:
    // ASCII white space is at most b' ', and non-ASCII at least 0x80.
    let may_have_space = inner
        .bytes()
        .fold(false, |any, b| any | !(0x21..0x80).contains(&b));
    let id: Cow<'_, str> = if may_have_space && inner.contains(char::is_whitespace) {
        Cow::Owned(inner.chars().filter(|c| !c.is_whitespace()).collect())
    } else {
        Cow::Borrowed(inner)
    };
    let id = id.trim_matches(['<', '>', '"']);
    let plausible = !id.is_empty()
        && id.len() <= MAX_MESSAGE_ID
        && id.bytes().any(|b| b.is_ascii_alphanumeric())
        && memchr::memchr2(b'<', b'>', id.as_bytes()).is_none();
    plausible.then(|| id.to_string())
}

/// All `<...>` Message-IDs in a References/In-Reply-To style value, in order.
pub fn message_id_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        if let Some(id) = normalize_message_id(&rest[start..start + len + 1]) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        rest = &rest[start + len + 1..];
    }
    if out.is_empty() {
        if let Some(id) = normalize_message_id(value) {
            if !id.contains(char::is_whitespace) && id.contains('@') {
                out.push(id);
            }
        }
    }
    out
}

/// Turns HTML into text good enough for phrase rules and quoted headers:
/// tags removed, block tags become line breaks, common entities decoded.
/// Stops once the text has `min_len` bytes or more (a prefix of the whole
/// text): a caller that keeps a bounded amount of text need not flatten a
/// huge page to the end.
pub fn html_to_text(html: &str, min_len: usize) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len().min(min_len) / 2);
    let mut i = 0;
    while i < html.len() && out.len() < min_len {
        // Text between markup is copied as a whole run; markup right after
        // markup (most tags) needs no search.
        if !matches!(bytes[i], b'<' | b'&') {
            let next = memchr::memchr2(b'<', b'&', &bytes[i..]).map_or(html.len(), |n| i + n);
            out.push_str(&html[i..next]);
            i = next;
            if i == html.len() {
                break;
            }
        }
        if bytes[i] == b'<' {
            let Some(end) = memchr::memchr(b'>', &bytes[i..]).map(|e| i + e) else {
                break;
            };
            // The name: the letters and digits after `<` and any `/`.
            let tag = &bytes[i + 1..end];
            let slashes = tag.iter().take_while(|b| **b == b'/').count();
            let tag = &tag[slashes..];
            let name = &tag[..tag.iter().take_while(|b| b.is_ascii_alphanumeric()).count()];
            match tag_kind(name) {
                TagKind::Block => out.push('\n'),
                TagKind::Hidden(close) => {
                    if let Some(skip) = find_ascii_case_insensitive(&html[end..], close) {
                        // Resume at the closing tag.
                        i = end + skip;
                        continue;
                    }
                }
                TagKind::Inline => {}
            }
            i = end + 1;
        } else {
            let semi = html[i..].char_indices().take(10).find(|(_, c)| *c == ';');
            if let Some((len, _)) = semi {
                let entity = &html[i + 1..i + len];
                let decoded = match entity {
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "amp" => Some('&'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    "nbsp" => Some(' '),
                    _ => entity
                        .strip_prefix('#')
                        .and_then(|n| match n.strip_prefix(['x', 'X']) {
                            Some(hex) => u32::from_str_radix(hex, 16).ok(),
                            None => n.parse().ok(),
                        })
                        .and_then(char::from_u32),
                };
                if let Some(d) = decoded {
                    out.push(d);
                    i += len + 1;
                    continue;
                }
            }
            out.push('&');
            i += 1;
        }
    }
    out
}

/// What [`html_to_text`] does with a tag.
enum TagKind {
    /// A tag that ends a line of text.
    Block,
    /// A tag whose content is no text (`style`, `script`): skipped up to
    /// the closing tag that starts as given.
    Hidden(&'static str),
    /// Any other tag: dropped.
    Inline,
}

/// The [`TagKind`] of tag `name`, in any case: compared lower-cased in one
/// `match` (each tag of a newsletter is looked up, and a comparison with
/// each name in turn cost more).
fn tag_kind(name: &[u8]) -> TagKind {
    // "blockquote", the longest name below, has 10 bytes.
    let mut lower = [0_u8; 10];
    let Some(lower) = lower.get_mut(..name.len()) else {
        return TagKind::Inline;
    };
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    match &*lower {
        b"br" | b"p" | b"div" | b"tr" | b"li" | b"table" | b"h1" | b"h2" | b"h3" | b"pre"
        | b"blockquote" => TagKind::Block,
        b"style" => TagKind::Hidden("</style"),
        b"script" => TagKind::Hidden("</script"),
        _ => TagKind::Inline,
    }
}

/// Whether `text` starts with `prefix`, ASCII letters in any case: what
/// `text.to_ascii_lowercase().starts_with(prefix)` gives for a prefix
/// without ASCII capitals, without the copy.
pub(crate) fn starts_with_ascii_case_insensitive(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The byte offset of the first ASCII case-insensitive occurrence of
/// `needle`: what `haystack.to_ascii_lowercase().find(needle)` gives for a
/// needle without ASCII capitals, without a copy or a searcher built for
/// one search.
pub(crate) fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    let (Some(first), bytes) = (needle.as_bytes().first(), haystack.as_bytes()) else {
        return Some(0);
    };
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lower, upper, bytes).find(|&i| {
        bytes
            .get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    })
}

/// True if the local part of `addr` names an automated mail system
/// (MAILER-DAEMON, postmaster, ...), whose mail is never personal.
pub fn is_system_local_part(addr: &str) -> bool {
    let local = addr.split('@').next().unwrap_or("");
    [
        "mailer-daemon",
        "mailerdaemon",
        "mail-daemon",
        "maildaemon",
        "postmaster",
        "mailer",
        "mail.daemon",
        "mdaemon",
        "mmdf",
        "root",
        "nobody",
        "double-bounce",
        "bounce",
        "bounces",
        "abuse",
        "hostmaster",
        "noreply",
        "no-reply",
        "mail",
        "smtp",
        "daemon",
        "majordomo",
        "listserv",
        "fetchmail-daemon",
        "mailer_daemon",
        "mail_daemon",
        "system",
        "administrator",
    ]
    .iter()
    .any(|name| local.eq_ignore_ascii_case(name))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn text_newlines_are_those_of_the_bytes() {
        let alphabet = [
            "\r",
            "\n",
            "\r\n",
            "\u{feff}",
            "From x\n",
            " ",
            "\t",
            "a",
            "caf\u{e9}",
            "\u{3000}",
        ];
        for text in generated_texts(&alphabet, 4000) {
            let by_bytes = lossy(&normalize_newlines(text.as_bytes())).into_owned();
            assert_eq!(normalize_text_newlines(&text), by_bytes, "{text:?}");
        }
    }

    /// The regex that [`address_spans`] stands for.
    fn address_regex() -> regex::Regex {
        regex::Regex::new(
            r"(?i-u)[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*",
        )
        .unwrap()
    }

    /// Texts made of the bytes that matter to addresses, from a fixed
    /// pseudo-random sequence (xorshift), so every run tests the same ones.
    pub(crate) fn generated_texts(alphabet: &[&str], count: usize) -> Vec<String> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|_| {
                let len = (next() % 40) as usize;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    /// The corpus messages, as text.
    pub(crate) fn corpus_texts() -> Vec<String> {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"),
            &mut out,
        );
        assert!(out.len() > 1000, "corpus not found");
        out
    }

    #[test]
    fn header_scans_where_are_those_filtered() {
        let alphabet = [
            "From:",
            "Subject:",
            "Received:",
            "X-A:",
            "To:",
            "From ",
            " ",
            "\t",
            "\n",
            "\n",
            "\n ",
            "\n\t",
            "x",
            ": ",
            "\r",
            "é",
        ];
        let mut texts = generated_texts(&alphabet, 100_000);
        texts.extend(corpus_texts());
        fn keep(name: &str) -> bool {
            name.eq_ignore_ascii_case("subject") || name.len() == 3
        }
        fn kept(fields: Vec<FieldRef<'_>>) -> Vec<FieldRef<'_>> {
            fields.into_iter().filter(|f| keep(f.name)).collect()
        }
        for text in &texts {
            let group = kept(first_field_group(text));
            assert_eq!(first_field_group_where(text, keep), group, "{text:?}");
            let block = kept(leading_header_block(text).fields);
            assert_eq!(
                leading_header_block_where(text, keep).fields,
                block,
                "{text:?}"
            );
        }
    }

    #[test]
    fn case_insensitive_finds_are_those_of_lower_case_copies() {
        let alphabet = ["a", "A", "b", "B", "<", "@", "é", "É", "x"];
        let texts = generated_texts(&alphabet, 20_000);
        for (haystack, needle) in texts.iter().zip(texts.iter().skip(1)) {
            let needle: String = needle.chars().take(3).collect();
            let needle = needle.to_ascii_lowercase();
            assert_eq!(
                find_ascii_case_insensitive(haystack, &needle),
                haystack.to_ascii_lowercase().find(&needle),
                "{haystack:?} {needle:?}"
            );
        }
    }

    #[test]
    fn local_part_bytes_are_atext_and_dots() {
        for b in 0..=255u8 {
            let atext = b.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&b);
            assert_eq!(is_local_part_byte(b), atext, "{b}");
        }
    }

    #[test]
    fn system_local_parts_in_any_case() {
        for addr in [
            "MAILER-DAEMON@x.example",
            "PostMaster",
            "no-reply@x",
            "mail_daemon@",
        ] {
            assert!(is_system_local_part(addr), "{addr}");
        }
        for addr in [
            "postmaster2@x.example",
            "",
            "@mailer-daemon",
            "máil@x",
            "john@x",
        ] {
            assert!(!is_system_local_part(addr), "{addr}");
        }
    }

    #[test]
    fn address_spans_are_those_of_the_regex() {
        let re = address_regex();
        let alphabet = [
            "a", "Z", "0", "9", ".", "-", "_", "+", "@", "@", "@", " ", "<", ">", "é", "(", "..",
            "--", "x.y", "\n",
        ];
        let mut texts = generated_texts(&alphabet, 200_000);
        texts.extend(corpus_texts());
        for text in &texts {
            let ours: Vec<&str> = address_spans(text).collect();
            let theirs: Vec<&str> = re.find_iter(text).map(|m| m.as_str()).collect();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    #[test]
    fn long_address_lists_are_unique_and_bounded() {
        let text: String = (0..3000)
            .map(|i| format!("u{}@Example.com, U{}@example.COM\n", i % 1200, i % 1200))
            .collect();
        let found = addresses_in(&text);
        assert_eq!(found.len(), 1000);
        assert_eq!(found[0], "u0@example.com");
        assert_eq!(found[999], "u999@example.com");
        let few = addresses_in("a@x.example b@x.example A@X.example c@x.example b@x.example");
        assert_eq!(few, vec!["a@x.example", "b@x.example", "c@x.example"]);
    }

    #[test]
    fn addresses_are_lower_cased_trimmed_and_unique() {
        assert_eq!(
            addresses_in("To: <A.B@Example.COM>, a.b@example.com. ...@x.example x@-y"),
            vec!["a.b@example.com"]
        );
        assert_eq!(
            addresses_in("mail x@a-.b y@a--b.c-.d z@a.b..c"),
            vec!["x@a", "y@a--b.c", "z@a.b"]
        );
    }

    /// [`normalize_message_id`] as it was before its byte-level shortcuts.
    fn normalize_message_id_by_chars(value: &str) -> Option<String> {
        let value = value.trim();
        let inner = match (value.find('<'), value.rfind('>')) {
            (Some(start), Some(end)) if start < end => &value[start + 1..end],
            (Some(start), None) => &value[start + 1..],
            _ => value,
        };
        let id: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
        let id = id.trim_matches(['<', '>', '"']);
        let plausible = !id.is_empty()
            && id.len() <= MAX_MESSAGE_ID
            && id.chars().any(|c| c.is_ascii_alphanumeric())
            && !id.contains(['<', '>']);
        plausible.then(|| id.to_string())
    }

    #[test]
    fn message_ids_are_those_of_the_char_scan() {
        let alphabet = [
            "a", "1", "@", ".", "<", ">", "\"", " ", "\t", "\x0b", "\u{3000}", "\u{a0}", "é", "\n",
        ];
        for text in generated_texts(&alphabet, 100_000) {
            assert_eq!(
                normalize_message_id(&text),
                normalize_message_id_by_chars(&text),
                "{text:?}"
            );
        }
        let long = format!("<{}@x>", "a".repeat(300));
        assert_eq!(normalize_message_id(&long), None);
    }

    #[test]
    fn trims_are_those_of_str() {
        let alphabet = [
            "a", " ", "\t", "\r", "\x0b", "\u{3000}", "\u{a0}", "é", ">", "",
        ];
        for text in generated_texts(&alphabet, 20_000) {
            assert_eq!(trim(&text), text.trim(), "{text:?}");
            assert_eq!(trim_start(&text), text.trim_start(), "{text:?}");
        }
    }

    #[test]
    fn lines_are_those_of_str_lines() {
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "a\n\n",
            "\n\na",
            "a\r\nb\r\n",
            "a\r",
            "a\rb\n\r",
            "\r\n",
            "x\n\r\ny",
            "é\nü\r\n",
        ] {
            let ours: Vec<&str> = lines(text).collect();
            let std: Vec<&str> = text.lines().collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }

    #[test]
    fn newlines_are_normalised_and_leading_junk_dropped() {
        assert_eq!(
            &*normalize_newlines(b"\r\n\nFrom x y\rA: b\r\n\rc"),
            b"A: b\n\nc"
        );
        assert_eq!(&*normalize_newlines(b"  \nA: b\n"), b"A: b\n");
        // Without a CR the result is borrowed, with the same junk dropped.
        for (raw, want) in [
            (
                &b"\xef\xbb\xbf\n\nFrom x y\n \t\nA: b\n"[..],
                &b"A: b\n"[..],
            ),
            (b"From x", b"From x"),
            (b"A: b\n\nc", b"A: b\n\nc"),
            (b"", b""),
        ] {
            let normalized = normalize_newlines(raw);
            assert!(matches!(normalized, Cow::Borrowed(_)));
            assert_eq!(&*normalized, want);
            let with_cr: Vec<u8> = raw
                .iter()
                .flat_map(|&b| {
                    if b == b'\n' {
                        vec![b'\r', b'\n']
                    } else {
                        vec![b]
                    }
                })
                .collect();
            if with_cr != raw {
                assert_eq!(&*normalize_newlines(&with_cr), want);
            }
        }
    }

    #[test]
    fn split_field_finds_the_colon_after_the_name() {
        /// The first version: the colon first, then the name checked.
        fn reference(line: &str) -> Option<(&str, &str)> {
            let head = &line.as_bytes()[..line.len().min(MAX_FIELD_NAME + 1)];
            let colon = memchr::memchr(b':', head)?;
            let name = &line[..colon];
            let valid = !name.is_empty()
                && name.len() <= MAX_FIELD_NAME
                && name.as_bytes()[0].is_ascii_alphabetic()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            valid.then(|| (name, &line[colon + 1..]))
        }
        let long = "X".repeat(MAX_FIELD_NAME);
        let lines = [
            String::new(),
            ":".into(),
            "a:".into(),
            "Subject: hi: there".into(),
            "X-Foo_Bar-9:x".into(),
            "9abc: x".into(),
            "-abc: x".into(),
            "Note : spaced".into(),
            "prose with a colon: here".into(),
            "Émile: x".into(),
            "ab\u{e9}: x".into(),
            "no colon".into(),
            format!("{long}: fits"),
            format!("{long}X: too long"),
            long.clone(),
        ];
        for line in &lines {
            assert_eq!(split_field(line), reference(line), "{line:?}");
        }
    }

    #[test]
    fn trim_is_that_of_str_trim() {
        for text in [
            "",
            " ",
            "a",
            " a b ",
            "\t\r\n a\x0c",
            "\x0ba\x0b",
            " \x0b a \x0b ",
            "\u{a0}a\u{3000}",
            " \u{2003} é \u{85}",
            "é",
            " \u{feff}x",
        ] {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    #[test]
    fn quoted_blocks_with_marks_indent_and_folding() {
        let text = "Your message\n> From: a@b.example\n> Message-ID:\n>   <x@y.example>\n> Subject: hi\n\nbye";
        let blocks = quoted_header_blocks(text);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].get("message-id"), Some("<x@y.example>"));
        let text = "    From: a@b.example\n    Subject: hi\n      there\n    To: c@d.example\n";
        let blocks = quoted_header_blocks(text);
        assert_eq!(blocks[0].get("subject"), Some("hi there"));
        assert_eq!(blocks[0].get("to"), Some("c@d.example"));
    }

    /// [`quoted_header_blocks`] as it was before lines without a colon
    /// were skipped: every line read.
    fn quoted_header_blocks_reference(text: &str) -> Vec<HeaderBlock<'_>> {
        let mut blocks = Vec::new();
        let mut base: Option<usize> = None;
        let mut fields: Vec<FieldRef<'_>> = Vec::new();
        for raw_line in lines(text) {
            let line = strip_quote_marks(raw_line);
            let content = trim_start(line);
            let indent = line.len() - content.len();
            if content.is_empty() {
                finish_block(&mut base, &mut fields, &mut blocks);
                continue;
            }
            if base.is_some_and(|base| indent > base) {
                if let Some(last) = fields.last_mut() {
                    last.append(content);
                }
                continue;
            }
            match split_field(content) {
                Some((name, value)) if !value.starts_with("//") => {
                    base = Some(base.map_or(indent, |base| base.min(indent)));
                    fields.push(FieldRef::new(name, Cow::Borrowed(value)));
                }
                _ => finish_block(&mut base, &mut fields, &mut blocks),
            }
        }
        finish_block(&mut base, &mut fields, &mut blocks);
        blocks
    }

    #[test]
    fn quoted_header_blocks_are_those_of_the_reference() {
        let alphabet = [
            "From: a@b",
            "Message-ID: <x@y>",
            "Subject: s",
            "To:",
            "x:",
            ": ",
            "http://h",
            "> ",
            ">",
            " ",
            "\t",
            "\n",
            "\r\n",
            "\n\n",
            "prose",
            "Date: d",
            "\u{e9}",
        ];
        let mut texts = generated_texts(&alphabet, 100_000);
        texts.extend(corpus_texts());
        for text in &texts {
            let fast: Vec<_> = quoted_header_blocks(text)
                .into_iter()
                .map(|b| b.fields)
                .collect();
            let reference: Vec<_> = quoted_header_blocks_reference(text)
                .into_iter()
                .map(|b| b.fields)
                .collect();
            assert_eq!(fast, reference, "{text:?}");
        }
    }

    #[test]
    fn prose_with_one_colon_is_not_a_header_block() {
        assert!(quoted_header_blocks("Note: this is prose\nand more").is_empty());
        assert!(quoted_header_blocks("see http://example.com/x").is_empty());
    }

    #[test]
    fn message_ids_are_normalised() {
        assert_eq!(normalize_message_id(" <a@b> ").as_deref(), Some("a@b"));
        assert_eq!(
            normalize_message_id("<38.E7.30937. BD6E1BB5@x>").as_deref(),
            Some("38.E7.30937.BD6E1BB5@x")
        );
        assert_eq!(normalize_message_id("<>"), None);
        assert_eq!(message_id_list("<a@b> <c@d>\n <a@b>"), vec!["a@b", "c@d"]);
    }

    #[test]
    fn dsn_addresses() {
        assert_eq!(
            dsn_address("rfc822; <Kiji@Example.JP>").as_deref(),
            Some("kiji@example.jp")
        );
        assert_eq!(
            dsn_address("RFC822;a@b.example").as_deref(),
            Some("a@b.example")
        );
        assert_eq!(dsn_address("x400; junk"), None);
    }

    #[test]
    fn html_is_flattened() {
        assert_eq!(
            html_to_text("<p>a&lt;b&gt;</p><style>x</style>c&#64;d", usize::MAX),
            "\na<b>\nc@d"
        );
    }

    #[test]
    fn bounded_html_text_is_a_long_enough_prefix() {
        let alphabet = [
            "<p>", "</b>", "&amp;", "&#233;", "text ", "\u{e9}", "<", ">",
        ];
        let mut texts = generated_texts(&alphabet, 20_000);
        texts.extend(corpus_texts());
        for text in &texts {
            let whole = html_to_text(text, usize::MAX);
            for min_len in [0, 1, 2, 5, 17, 100, 4096] {
                let prefix = html_to_text(text, min_len);
                assert!(whole.starts_with(&prefix), "{min_len} {text:?}");
                assert!(
                    prefix.len() >= min_len.min(whole.len()),
                    "{min_len} {text:?}"
                );
            }
        }
    }

    /// [`html_to_text`] as it was before tags were classified in one
    /// `match` and markup after markup skipped the search.
    fn html_to_text_reference(html: &str) -> String {
        const BLOCK_TAGS: &[&str] = &[
            "br",
            "p",
            "div",
            "tr",
            "li",
            "table",
            "h1",
            "h2",
            "h3",
            "pre",
            "blockquote",
        ];
        let bytes = html.as_bytes();
        let mut out = String::with_capacity(html.len() / 2);
        let mut i = 0;
        while i < html.len() {
            let next = memchr::memchr2(b'<', b'&', &bytes[i..]).map_or(html.len(), |n| i + n);
            out.push_str(&html[i..next]);
            i = next;
            if i == html.len() {
                break;
            }
            if bytes[i] == b'<' {
                let Some(end) = memchr::memchr(b'>', &bytes[i..]).map(|e| i + e) else {
                    break;
                };
                let tag = html[i + 1..end].trim_start_matches('/');
                let name = &tag[..tag.bytes().take_while(u8::is_ascii_alphanumeric).count()];
                if BLOCK_TAGS.iter().any(|t| name.eq_ignore_ascii_case(t)) {
                    out.push('\n');
                }
                let close = if name.eq_ignore_ascii_case("style") {
                    Some("</style")
                } else if name.eq_ignore_ascii_case("script") {
                    Some("</script")
                } else {
                    None
                };
                if let Some(skip) = close.and_then(|c| find_ascii_case_insensitive(&html[end..], c))
                {
                    i = end + skip;
                    continue;
                }
                i = end + 1;
            } else {
                let semi = html[i..].char_indices().take(10).find(|(_, c)| *c == ';');
                if let Some((len, _)) = semi {
                    let entity = &html[i + 1..i + len];
                    let decoded = match entity {
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "amp" => Some('&'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        "nbsp" => Some(' '),
                        _ => entity
                            .strip_prefix('#')
                            .and_then(|n| match n.strip_prefix(['x', 'X']) {
                                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                                None => n.parse().ok(),
                            })
                            .and_then(char::from_u32),
                    };
                    if let Some(d) = decoded {
                        out.push(d);
                        i += len + 1;
                        continue;
                    }
                }
                out.push('&');
                i += 1;
            }
        }
        out
    }

    #[test]
    fn html_text_is_that_of_the_reference() {
        let alphabet = [
            "<",
            ">",
            "&",
            ";",
            "/",
            "br",
            "BR",
            "p",
            "P",
            "blockquote",
            "blockquotes",
            "Div",
            "h1",
            "h4",
            "tr",
            "td",
            "style",
            "SCRIPT",
            "</style>",
            "</Script>",
            "#64",
            "#x41",
            "lt",
            "amp",
            "nbsp",
            " ",
            "x",
            "\u{e9}",
            "\n",
            "<p>",
            "</li>",
            "&amp;",
            "<br/>",
        ];
        let mut texts = generated_texts(&alphabet, 100_000);
        texts.extend(corpus_texts());
        for text in &texts {
            assert_eq!(
                html_to_text(text, usize::MAX),
                html_to_text_reference(text),
                "{text:?}"
            );
        }
    }
}
