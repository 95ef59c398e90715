//! The built-in rule patterns as compiled by `build.rs`: DFAs and literals.
//!
//! A regex compiled at run time costs its compilation and then, on every
//! thread, the lazy DFA states its searches build; for a one-shot
//! `backsweep inspect` that was a fifth of the work. The DFAs here are
//! built into the binary instead and read in place (no copy): a pattern's
//! DFA is opened on its first use only (the build checked it, see
//! [`open`]), and searching needs no per-thread cache.
//!
//! The build also extracts each pattern's required literals (the
//! prefilter's input), so start-up parses no built-in pattern, builds the
//! DFA of each target's ASCII literals ([`PrecompiledPrefilter`]), so
//! start-up builds no automaton for them, and renders the built-in rule
//! files as JSON ([`rules_json`]), so it parses no YAML.
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

/// What the build made for the ASCII literals of one built-in target.
struct Prefilter {
    /// The literals, sorted: pattern `i` of the DFA is `literals[i]`.
    literals: &'static [&'static [u8]],
    /// Where its DFA is in [`BLOB`] (offset, length).
    dfa: (usize, usize),
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

/// The DFA at `offset..offset + len` of [`BLOB`], read in place.
///
/// Checking a DFA's transitions as it is opened costs about three
/// instructions per byte: for the ~6 MB of prefilter DFAs, more than
/// building the Aho-Corasick automata they replace. So when `build.rs` has
/// already made that very check on these very bytes ([`BLOB_VALIDATED`]),
/// it is not repeated; `from_bytes_unchecked` still checks everything but
/// the transitions and start states. (A cross build for the other byte
/// order cannot check them at build time, and checks them here.)
fn open(offset: usize, len: usize) -> Option<dense::DFA<&'static [u32]>> {
    let bytes = BLOB.bytes.get(offset..offset.checked_add(len)?)?;
    let (dfa, _) = if BLOB_VALIDATED {
        // SAFETY: `from_bytes_unchecked` needs bytes that `from_bytes`
        // accepts. These are the bytes build.rs serialized with
        // `write_to_*_endian` in the target's byte order, included
        // unchanged (`include_bytes!`) and aligned for `u32` by `Aligned`;
        // build.rs ran `dense::DFA::from_bytes` on the same serialization
        // and fails the build if it is rejected (`append_dfa`), and
        // `BLOB_VALIDATED` is true only when it did so for every DFA. The
        // test `every_precompiled_dfa_passes_the_full_check` repeats that
        // check on the blob itself.
        unsafe { dense::DFA::from_bytes_unchecked(bytes) }
    } else {
        dense::DFA::from_bytes(bytes)
    }
    .ok()?;
    Some(dfa)
}

/// A precompiled DFA, searching in place in the binary's data.
#[derive(Debug, Clone)]
pub(super) struct PrecompiledDfa(dense::DFA<&'static [u32]>);

impl PrecompiledDfa {
    /// The DFA of `pattern` (as analysis compiles it, after
    /// `fold_non_ascii_case`), if the build precompiled one.
    pub(super) fn find(pattern: &str) -> Option<PrecompiledDfa> {
        let (offset, len) = builtin(pattern)?.dfa?;
        // A failure just means the run-time regex is used.
        open(offset, len).map(PrecompiledDfa)
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

/// The ASCII half of the literal prefilter of a built-in target (see
/// `LiteralPrefilter` in [`super::rules`]), precompiled: one DFA that finds
/// every occurrence of every literal, ASCII case-insensitively, as the
/// run-time Aho-Corasick automaton does.
#[derive(Debug, Clone)]
pub(super) struct PrecompiledPrefilter {
    dfa: dense::DFA<&'static [u32]>,
    /// Pattern `i` of the DFA is `literals[i]`.
    literals: &'static [&'static [u8]],
}

impl PrecompiledPrefilter {
    /// The DFA the build made for exactly these `literals` (a target's
    /// ASCII literals, sorted, without duplicates), if any.
    pub(super) fn find(literals: &[&[u8]]) -> Option<PrecompiledPrefilter> {
        let known = PREFILTERS.iter().find(|p| p.literals == literals)?;
        Some(PrecompiledPrefilter {
            dfa: open(known.dfa.0, known.dfa.1)?,
            literals: known.literals,
        })
    }

    /// Its literals: pattern `i` of the DFA is `literals()[i]`.
    #[cfg(test)]
    pub(super) fn literals(&self) -> &'static [&'static [u8]] {
        self.literals
    }

    /// Calls `found(literal, start..end)` for every occurrence of every
    /// literal in `haystack`. False if the DFA gave up (it has no quit
    /// bytes and no Unicode word boundary, so it never does); the caller
    /// must then assume that any literal may occur.
    ///
    /// The loop is `try_search_overlapping_fwd`'s, minus what these DFAs
    /// never need (prefilters, acceleration, resuming a search), with its
    /// state in locals: the library's version, which keeps it in memory
    /// and returns for every match, took about 1.7 times as long.
    pub(super) fn occurrences(
        &self,
        haystack: &[u8],
        mut found: impl FnMut(usize, Range<usize>),
    ) -> bool {
        let dfa = &self.dfa;
        let mut report = |sid, end: usize| {
            for index in 0..dfa.match_len(sid) {
                let literal = dfa.match_pattern(sid, index).as_usize();
                let len = self.literals.get(literal).map_or(0, |l| l.len());
                found(literal, end.saturating_sub(len)..end);
            }
        };
        let Ok(mut sid) = dfa.start_state_forward(&Input::new(haystack)) else {
            return false;
        };
        for (at, &byte) in haystack.iter().enumerate() {
            sid = dfa.next_state(sid, byte);
            if dfa.is_special_state(sid) {
                // A DFA reports a match one byte late: this state means
                // that matches end at `at`.
                if dfa.is_match_state(sid) {
                    report(sid, at);
                } else if dfa.is_dead_state(sid) {
                    return true;
                } else if dfa.is_quit_state(sid) {
                    return false;
                }
                // Otherwise an accelerated state: an ordinary one here.
            }
        }
        sid = dfa.next_eoi_state(sid);
        if dfa.is_match_state(sid) {
            report(sid, haystack.len());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run time skips the check of the DFAs' transitions that build.rs
    /// made ([`open`]); this repeats the full check on the bytes as the
    /// binary holds them.
    #[test]
    fn every_precompiled_dfa_passes_the_full_check() {
        let places = RULE_PATTERNS
            .iter()
            .filter_map(|(_, known)| known.dfa)
            .chain(PREFILTERS.iter().map(|p| p.dfa));
        let mut checked = 0;
        for (offset, len) in places {
            let bytes = &BLOB.bytes[offset..offset + len];
            if let Err(e) = dense::DFA::from_bytes(bytes) {
                panic!("the DFA at {offset} is invalid: {e}");
            }
            checked += 1;
        }
        assert!(checked > RULE_PATTERNS.len() / 2, "only {checked} DFAs");
        assert!(!PREFILTERS.is_empty());
    }
}
