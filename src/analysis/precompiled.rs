//! The built-in rule patterns as compiled by `build.rs`: DFAs and literals.
//!
//! A regex compiled at run time costs its compilation and then, on every
//! thread, the lazy DFA states its searches build; for a one-shot
//! `backsweep inspect` that was a fifth of the work. The DFAs here are
//! built into the binary instead and read in place (no copy): a pattern's
//! DFA is checked and opened on its first use only, and searching needs no
//! per-thread cache.
//!
//! The build also extracts each pattern's required literals (the
//! prefilter's input), so start-up parses no built-in pattern, and renders
//! the built-in rule files as JSON ([`rules_json`]), so it parses no YAML.
//!
//! Patterns are found by their text, so any rule whose pattern has no DFA
//! here (a user's rule, or one too big to precompile) falls back to the
//! run-time regex in [`super::rules`], which means the same thing.

use super::pattern_syntax::PatternLiterals;
use regex_automata::dfa::{dense, Automaton};
use regex_automata::Input;
use std::ops::Range;

include!(concat!(env!("OUT_DIR"), "/rule_dfas.rs"));
include!(concat!(env!("OUT_DIR"), "/rules_json.rs"));

/// `bytes` at an alignment the serialized DFAs need (their transition
/// tables are read as `u32`s in place).
#[repr(C)]
struct Aligned<B: ?Sized> {
    _align: [u64; 0],
    bytes: B,
}

static BLOB: &Aligned<[u8]> = &Aligned {
    _align: [],
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/rule_dfas.bin")),
};

/// What the build computed for one built-in pattern.
struct Builtin {
    /// Where its DFA is in [`BLOB`] (offset, length), if it has one.
    dfa: Option<(usize, usize)>,
    /// [`pattern_literals`](super::pattern_syntax::pattern_literals): its
    /// required literals, and the longest text it can match.
    literals: Option<&'static [&'static [u8]]>,
    max_len: Option<usize>,
}

/// The build's entry for `pattern` (as analysis compiles it, after
/// `fold_non_ascii_case`), if it is a built-in pattern.
fn builtin(pattern: &str) -> Option<&'static Builtin> {
    RULE_PATTERNS
        .binary_search_by(|(p, _)| (*p).cmp(pattern))
        .ok()
        .map(|at| &RULE_PATTERNS[at].1)
}

/// The required literals and longest match of a built-in `pattern`, as
/// [`pattern_literals`](super::pattern_syntax::pattern_literals) computes
/// them, without parsing it again (parsing all of them was half of the
/// start-up of a one-file `inspect`).
pub(super) fn literals(pattern: &str) -> Option<PatternLiterals> {
    let known = builtin(pattern)?;
    let literals = known
        .literals
        .map(|set| set.iter().map(|l| l.to_vec()).collect());
    Some((literals, known.max_len))
}

/// The built-in rule file `name` (e.g. `bounce.yaml`) as JSON, parsed from
/// its YAML by the build: the same data, but much faster to read.
pub(super) fn rules_json(name: &str) -> Option<&'static str> {
    RULES_JSON
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, json)| *json)
}

/// A precompiled DFA, searching in place in the binary's data.
#[derive(Debug, Clone)]
pub(super) struct PrecompiledDfa(dense::DFA<&'static [u32]>);

impl PrecompiledDfa {
    /// The DFA of `pattern` (as analysis compiles it, after
    /// `fold_non_ascii_case`), if the build precompiled one.
    pub(super) fn find(pattern: &str) -> Option<PrecompiledDfa> {
        let (offset, len) = builtin(pattern)?.dfa?;
        let bytes = BLOB.bytes.get(offset..offset + len)?;
        // Checked on load (cheap, once per pattern); a failure just means
        // the run-time regex is used.
        let (dfa, _) = dense::DFA::from_bytes(bytes).ok()?;
        Some(PrecompiledDfa(dfa))
    }

    /// Whether the pattern matches within `range` of `haystack` (the
    /// bytes around the range count for `\b` and `^`). `None` if the DFA
    /// gave up, which these patterns (ASCII word boundaries only) never
    /// make it do; the caller then asks the run-time regex.
    pub(super) fn is_match(&self, haystack: &[u8], range: Range<usize>) -> Option<bool> {
        let input = Input::new(haystack).range(range).earliest(true);
        self.0.try_search_fwd(&input).ok().map(|m| m.is_some())
    }
}
