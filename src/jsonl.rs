//! The JSON Lines that `backsweep inspect --json` prints: one object per
//! file, written directly into a `String`.
//!
//! The line is exactly what `serde_json` makes of the file name, the
//! [`Analysis`] (its `Serialize` derive, flattened) and the verdict, byte for
//! byte; the tests compare the two on every corpus message and on strings
//! with every kind of character. It is written by hand because escaping was
//! the largest single cost of printing: `serde_json` looks at each byte in
//! turn, while [`push_str`] skips eight plain bytes at a time, and printing
//! is a visible part of a whole `inspect` over many small files.

use crate::analysis::Analysis;
use crate::verdict::Judgement;

/// Appends the `inspect --json` line (with its line feed) for `file`.
pub fn push_line(out: &mut String, file: &str, analysis: &Analysis, judgement: Option<&Judgement>) {
    out.push_str("{\"file\":");
    push_str(out, file);
    out.push_str(",\"kind\":\"");
    out.push_str(analysis.kind.as_str());
    out.push('"');
    push_key(out, "original_message_ids");
    push_strings(out, &analysis.original_message_ids);
    push_key(out, "recipients");
    push_strings(out, &analysis.recipients);
    push_key(out, "rules");
    push_strings(out, &analysis.rules);
    if !analysis.original.is_empty() {
        let original = &analysis.original;
        push_key(out, "original");
        out.push('{');
        let mut first = true;
        let fields = [
            ("from", &original.from),
            ("to", &original.to),
            ("subject", &original.subject),
            ("date", &original.date),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                push_member(out, &mut first, name);
                push_str(out, value);
            }
        }
        if !original.received.is_empty() {
            push_member(out, &mut first, "received");
            push_strings(out, &original.received);
        }
        out.push('}');
    }
    if let Some(id) = &analysis.message_id {
        push_key(out, "message_id");
        push_str(out, id);
    }
    if analysis.truncated {
        push_key(out, "truncated");
        out.push_str("true");
    }
    if analysis.unparsed {
        push_key(out, "unparsed");
        out.push_str("true");
    }
    if !analysis.delivered_to.is_empty() {
        push_key(out, "delivered_to");
        push_strings(out, &analysis.delivered_to);
    }
    if let Some(judgement) = judgement {
        push_key(out, "verdict");
        push_str(out, judgement.verdict.as_str());
        push_key(out, "reasons");
        out.push('[');
        for (i, reason) in judgement.reasons.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"rule\":");
            push_str(out, reason.rule);
            out.push_str(",\"detail\":");
            push_str(out, &reason.detail);
            out.push('}');
        }
        out.push(']');
    }
    out.push_str("}\n");
}

/// `,"key":` after an earlier member of the top-level object.
fn push_key(out: &mut String, key: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
}

/// `"key":`, preceded by a comma unless it is the object's first member.
fn push_member(out: &mut String, first: &mut bool, key: &str) {
    if !std::mem::take(first) {
        out.push(',');
    }
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// A JSON array of strings.
fn push_strings(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, item);
    }
    out.push(']');
}

/// A JSON string, escaped exactly as `serde_json` escapes it: `"` and `\`
/// with a backslash, the control characters below U+0020 as `\b`, `\t`,
/// `\n`, `\f`, `\r` or `\u00xx` (lower-case hex), everything else as it is.
pub fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    // Nearly every string needs no escape at all. This check looks at every
    // byte without stopping early, which lets the compiler do it 32 bytes
    // at a time; then the string is copied as a whole.
    if !bytes
        .iter()
        .fold(false, |found, &b| found | needs_escape_byte(b))
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        // Eight bytes at a time while none of them needs escaping.
        if let Some(chunk) = bytes.get(at..at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !needs_escape(u64::from_le_bytes(word)) {
                at += 8;
                continue;
            }
        }
        let byte = bytes[at];
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => {
                at += 1;
                continue;
            }
        };
        // `at` is an ASCII byte, so both slices end on character boundaries.
        out.push_str(&s[start..at]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(short);
        }
        at += 1;
        start = at;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether `byte` is a control character below 0x20, `"` or `\\`.
fn needs_escape_byte(byte: u8) -> bool {
    (byte < 0x20) | (byte == b'"') | (byte == b'\\')
}

/// Whether any of the eight bytes in `word` is a control character below
/// 0x20, `"` or `\` (the classic "has a byte less than n" and "has a zero
/// byte" bit tricks: exact, no false positives or negatives).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    below_space | quote | backslash != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Kind, OriginalHeaders};
    use crate::verdict::{Reason, Verdict};

    /// The line as `serde_json` writes it: the oracle.
    fn serde_line(file: &str, analysis: &Analysis, judgement: Option<&Judgement>) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            file: &'a str,
            #[serde(flatten)]
            analysis: &'a Analysis,
            #[serde(skip_serializing_if = "Option::is_none")]
            verdict: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reasons: Option<&'a [Reason]>,
        }
        let line = Line {
            file,
            analysis,
            verdict: judgement.map(|j| j.verdict.as_str()),
            reasons: judgement.map(|j| j.reasons.as_slice()),
        };
        serde_json::to_string(&line).unwrap() + "\n"
    }

    fn ours(file: &str, analysis: &Analysis, judgement: Option<&Judgement>) -> String {
        let mut out = String::new();
        push_line(&mut out, file, analysis, judgement);
        out
    }

    /// Strings with every byte that matters for escaping, in every position
    /// of an eight-byte chunk, plus multi-byte characters.
    fn tricky_strings() -> Vec<String> {
        let mut specials: Vec<String> = (0u8..0x20).map(|b| char::from(b).to_string()).collect();
        specials.extend(
            ["\"", "\\", "\u{7f}", "é", "\u{2028}", "日本", "a", "/", " "].map(String::from),
        );
        let mut out = vec![String::new()];
        for special in &specials {
            for pad in 0..17 {
                let padding = "x".repeat(pad);
                out.push(format!("{padding}{special}"));
                out.push(format!("{special}{padding}{special}"));
                out.push(format!("{padding}{special}{padding}"));
            }
        }
        out
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in tricky_strings() {
            let mut out = String::new();
            push_str(&mut out, &s);
            assert_eq!(out, serde_json::to_string(&s).unwrap(), "{s:?}");
        }
        // Every single byte and every byte pair of ASCII, in a chunk.
        for a in 0u8..0x80 {
            for b in 0u8..0x80 {
                let s = format!("abc{}{}defgh", char::from(a), char::from(b));
                let mut out = String::new();
                push_str(&mut out, &s);
                assert_eq!(out, serde_json::to_string(&s).unwrap(), "{s:?}");
            }
        }
    }

    #[test]
    fn corpus_lines_are_those_serde_json_writes() {
        let texts = crate::analysis::text::tests::corpus_texts();
        for (i, text) in texts.iter().enumerate() {
            let analysis = crate::analysis::analyze(text.as_bytes());
            let file = format!("corpus/{i}");
            assert_eq!(
                ours(&file, &analysis, None),
                serde_line(&file, &analysis, None)
            );
        }
    }

    #[test]
    fn needs_escape_is_exact_for_every_byte_in_every_lane() {
        for lane in 0..8 {
            for byte in 0..=255u8 {
                let mut word = [b'a'; 8];
                word[lane] = byte;
                let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                assert_eq!(
                    needs_escape(u64::from_le_bytes(word)),
                    expected,
                    "{byte} at {lane}"
                );
            }
        }
    }

    #[test]
    fn lines_are_those_serde_json_writes() {
        let strings = tricky_strings();
        let pick = |i: usize| strings[i % strings.len()].clone();
        let mut cases = Vec::new();
        for i in 0..strings.len() {
            let full = Analysis {
                kind: [
                    Kind::Bounce,
                    Kind::Autoreply,
                    Kind::Challenge,
                    Kind::Feedback,
                    Kind::None,
                ][i % 5],
                original_message_ids: (0..i % 3).map(|k| pick(i + k)).collect(),
                recipients: (0..i % 2).map(|k| pick(i * 7 + k)).collect(),
                rules: (0..i % 4).map(|k| pick(i * 3 + k)).collect(),
                original: OriginalHeaders {
                    from: (i % 2 == 0).then(|| pick(i + 1)),
                    to: (i % 3 == 0).then(|| pick(i + 2)),
                    subject: (i % 5 != 0).then(|| pick(i + 3)),
                    date: (i % 7 == 0).then(|| pick(i + 4)),
                    received: (0..i % 3).map(|k| pick(i + 5 + k)).collect(),
                },
                message_id: (i % 2 == 1).then(|| pick(i + 6)),
                truncated: i % 4 == 0,
                unparsed: i % 6 == 0,
                delivered_to: (0..i % 3).map(|k| pick(i + 8 + k)).collect(),
            };
            let judgement = (i % 3 == 0).then(|| Judgement {
                verdict: [Verdict::Backscatter, Verdict::Genuine, Verdict::Unknown][i % 3],
                reasons: (0..i % 3)
                    .map(|k| Reason {
                        rule: "verdict.test",
                        detail: pick(i + 9 + k),
                    })
                    .collect(),
            });
            cases.push((pick(i), full, judgement));
        }
        // The empty analysis: only the members that are always written.
        cases.push((
            String::new(),
            Analysis {
                kind: Kind::None,
                original_message_ids: Vec::new(),
                recipients: Vec::new(),
                rules: Vec::new(),
                original: OriginalHeaders::default(),
                message_id: None,
                truncated: false,
                unparsed: false,
                delivered_to: Vec::new(),
            },
            None,
        ));
        for (file, analysis, judgement) in &cases {
            assert_eq!(
                ours(file, analysis, judgement.as_ref()),
                serde_line(file, analysis, judgement.as_ref())
            );
        }
    }
}
