//! Shared helpers for the integration tests (and `benches/analysis.rs`, which
//! includes this file with `#[path]`): the labelled mail corpus in
//! `tests/corpus/`.
//!
//! The corpus has two label files in JSON Lines format (see
//! `tests/corpus/README.md` for the meaning of every field):
//!
//! - `sisimai-labels.jsonl`, whose `file` paths are relative to `tests/corpus/sisimai/`;
//! - `extra-labels.jsonl`, whose `file` paths are relative to `tests/corpus/`.
//!
//! [`labelled_corpus`] reads both and every message they list, and returns
//! them in label-file order with the path normalised to be relative to
//! `tests/corpus/` (e.g. `sisimai/maildir/bsd/arf-01.eml`), which is the name
//! to show in test failures.
//!
//! Loading is strict, so that a test can never pass by silently testing less:
//! it panics with a clear message when a label file is missing or malformed,
//! has an unknown field (a misspelt field would otherwise read as empty),
//! an unknown `kind`, or a duplicate entry, or when a listed message file
//! does not exist or cannot be read. Unlabelled files (LICENSE, README, ...)
//! are never returned.

// Every test crate compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

pub mod daemon_process;
pub mod mailbox;
pub mod messages;
pub mod session;

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use backsweep::analysis::Kind;
use serde::Deserialize;

/// The label files, each with the folder (relative to [`corpus_dir`]) that its
/// `file` paths are relative to.
pub const LABEL_FILES: [(&str, &str); 2] = [
    ("sisimai-labels.jsonl", "sisimai"),
    ("extra-labels.jsonl", ""),
];

/// Which part of the corpus a message belongs to (its top-level folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Set {
    /// `sisimai/`: real bounces, feedback reports and auto-replies.
    Sisimai,
    /// `ham/`: mostly ordinary mail (but see its labels: some are bounces).
    Ham,
    /// `autoreply/`: auto-replies and read receipts.
    Autoreply,
}

impl Set {
    /// The folder name, as in the path.
    pub fn name(self) -> &'static str {
        match self {
            Set::Sisimai => "sisimai",
            Set::Ham => "ham",
            Set::Autoreply => "autoreply",
        }
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One labelled message of the corpus: its bytes and its expected analysis.
#[derive(Debug, Clone)]
pub struct LabelledMessage {
    /// Path relative to `tests/corpus/`, with `/` separators, e.g.
    /// `sisimai/maildir/bsd/arf-01.eml` or `ham/postal-mime/bounce.eml`.
    /// This is the name to show the user.
    pub file: String,
    /// Absolute path of the file.
    pub path: PathBuf,
    /// The raw message, byte for byte as stored (CRLF, LF and CR endings occur).
    pub bytes: Vec<u8>,
    /// Which part of the corpus it comes from.
    pub set: Set,
    /// Expected kind, lower case as in the label file and as `Kind` serialises:
    /// `bounce`, `autoreply`, `challenge`, `feedback` or `none`
    /// (checked when loading; see also [`LabelledMessage::expected_kind`]).
    pub kind: String,
    /// Message-ID (without angle brackets) of the message this one refers to, if any.
    pub original_message_id: Option<String>,
    /// Other Message-IDs that are equally acceptable (e.g. a sample whose
    /// message/rfc822 part and quoted headers disagree). Usually empty.
    pub original_message_id_alternatives: Vec<String>,
    /// Recipients from the DSN/ARF fields, lower case; empty unless bounce/feedback.
    pub recipients: Vec<String>,
    /// Free-text remarks from the label, if any.
    pub notes: Option<String>,
    /// Whether the label was checked by hand (`sisimai-labels.jsonl` only).
    pub hand: bool,
}

impl LabelledMessage {
    /// The expected kind as the analysis enum.
    pub fn expected_kind(&self) -> Kind {
        parse_kind(&self.kind).unwrap_or_else(|| {
            panic!(
                "{}: unknown kind {:?} (checked at load time)",
                self.file, self.kind
            )
        })
    }

    /// All acceptable original Message-IDs: the main one (if any) followed by
    /// the alternatives.
    pub fn acceptable_message_ids(&self) -> impl Iterator<Item = &str> {
        self.original_message_id.as_deref().into_iter().chain(
            self.original_message_id_alternatives
                .iter()
                .map(String::as_str),
        )
    }
}

/// Map a label's `kind` string to [`Kind`]; `None` if it is not one of the five.
pub fn parse_kind(kind: &str) -> Option<Kind> {
    Some(match kind {
        "bounce" => Kind::Bounce,
        "autoreply" => Kind::Autoreply,
        "challenge" => Kind::Challenge,
        "feedback" => Kind::Feedback,
        "none" => Kind::None,
        _ => return None,
    })
}

/// Absolute path of `tests/corpus/`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
}

/// One line of a label file, exactly as stored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Label {
    file: String,
    kind: String,
    original_message_id: Option<String>,
    recipients: Vec<String>,
    #[serde(default)]
    original_message_id_alternatives: Vec<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    hand: bool,
}

/// Load every labelled message of the corpus (both label files, in file
/// order) with its bytes.
///
/// # Panics
/// On any problem with the corpus: a missing or malformed label file, an
/// unknown field or kind, a duplicate or unsafe path, or a listed message
/// that cannot be read. The message names the label file and line.
pub fn labelled_corpus() -> Vec<LabelledMessage> {
    let dir = corpus_dir();
    let mut messages = Vec::new();
    let mut seen = HashSet::new();
    for (label_file, base) in LABEL_FILES {
        let label_path = dir.join(label_file);
        let text = fs::read_to_string(&label_path)
            .unwrap_or_else(|e| panic!("cannot read label file {}: {e}", label_path.display()));
        for (index, line) in text.lines().enumerate() {
            let at = format!("{}:{}", label_path.display(), index + 1);
            if line.trim().is_empty() {
                continue;
            }
            let label: Label = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{at}: bad label line: {e}\n  {line}"));
            messages.push(load_message(&dir, base, label, &at, &mut seen));
        }
    }
    assert!(
        !messages.is_empty(),
        "no labelled messages found under {}",
        dir.display()
    );
    messages
}

fn load_message(
    dir: &Path,
    base: &str,
    label: Label,
    at: &str,
    seen: &mut HashSet<String>,
) -> LabelledMessage {
    assert!(
        !label.file.is_empty()
            && !label.file.starts_with('/')
            && !label.file.contains('\\')
            && label
                .file
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
        "{at}: file {:?} must be a plain relative path with / separators",
        label.file
    );
    let file = if base.is_empty() {
        label.file
    } else {
        format!("{base}/{}", label.file)
    };
    let set = match file.split('/').next() {
        Some("sisimai") => Set::Sisimai,
        Some("ham") => Set::Ham,
        Some("autoreply") => Set::Autoreply,
        _ => panic!("{at}: {file} is not under sisimai/, ham/ or autoreply/"),
    };
    assert!(
        parse_kind(&label.kind).is_some(),
        "{at}: {file}: unknown kind {:?} (expected bounce, autoreply, challenge, feedback or none)",
        label.kind
    );
    assert!(seen.insert(file.clone()), "{at}: {file} is labelled twice");
    let path = file.split('/').fold(dir.to_path_buf(), |p, c| p.join(c));
    let bytes = fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{at}: labelled message {file} cannot be read ({}): {e}",
            path.display()
        )
    });
    LabelledMessage {
        file,
        path,
        bytes,
        set,
        kind: label.kind,
        original_message_id: label.original_message_id,
        original_message_id_alternatives: label.original_message_id_alternatives,
        recipients: label.recipients,
        notes: label.notes,
        hand: label.hand,
    }
}
