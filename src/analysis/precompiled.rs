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
//! Aho-Corasick automaton of each target's ASCII literals
//! ([`PrecompiledPrefilter`]), so start-up builds no automaton for them,
//! groups each target's literals ([`target`]), so start-up does not, and
//! reads the built-in rule files into Rust data ([`rules`]), so it parses
//! neither YAML nor JSON.
//!
//! Patterns are found by their text, so any rule whose pattern has no DFA
//! here (a user's rule, or one too big to precompile) falls back to the
//! run-time regex in [`super::rules`], which means the same thing.

use super::pattern_syntax::{PatternLiterals, Phrase};
use regex_automata::dfa::{dense, Automaton};
use regex_automata::Input;
use std::borrow::Cow;
use std::ops::Range;

include!(concat!(env!("OUT_DIR"), "/rule_dfas.rs"));
include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

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
    /// required literals, the longest text it can match, and whether its
    /// matches stay within a line.
    literals: Option<&'static [&'static [u8]]>,
    max_len: Option<usize>,
    in_line: bool,
    phrase: Option<Phrase>,
}

/// What the build computed for one built-in target, as `TargetSet` in
/// [`super::rules`] needs it: its patterns, in rule order, and their
/// [`LiteralGroups`](super::pattern_syntax::LiteralGroups) and
/// [`PatternLiterals`], so that start-up neither looks each pattern up nor
/// groups, sorts and copies their literals.
pub(super) struct BuiltinTarget {
    /// The patterns (after `fold_non_ascii_case`), in rule order: what a
    /// target is looked up by.
    pub(super) patterns: &'static [Cow<'static, str>],
    /// Its prefilter literals, sorted.
    pub(super) literals: &'static [&'static [u8]],
    /// The patterns that need literal `i`:
    /// `literal_patterns[literal_starts[i]..literal_starts[i + 1]]`.
    pub(super) literal_starts: &'static [usize],
    pub(super) literal_patterns: &'static [usize],
    /// The patterns without literals.
    pub(super) always: &'static [usize],
    /// For each pattern, as [`PatternLiterals`] says.
    pub(super) max_len: &'static [Option<usize>],
    pub(super) in_line: &'static [bool],
    pub(super) phrases: &'static [Option<Phrase>],
    /// The ASCII literals and the others (either may be empty): indices
    /// into `literals`, and the index of their automaton in
    /// [`PREFILTERS`], if the build made one.
    pub(super) ascii: (&'static [usize], Option<usize>),
    pub(super) non_ascii: (&'static [usize], Option<usize>),
}

/// The build's data for the built-in target with exactly these
/// `patterns` (after `fold_non_ascii_case`, in rule order), if any.
pub(super) fn target(patterns: &[&str]) -> Option<&'static BuiltinTarget> {
    TARGETS.iter().find(|t| {
        t.patterns.len() == patterns.len() && t.patterns.iter().zip(patterns).all(|(a, b)| a == b)
    })
}

/// What the build made for the ASCII literals of one built-in target.
struct Prefilter {
    /// The literals, sorted: literal `i` of the automaton is `literals[i]`.
    literals: &'static [&'static [u8]],
    /// Finds them.
    automaton: LiteralAutomaton,
}

/// An Aho-Corasick automaton that `build.rs` made (`LiteralAutomaton`
/// there says how), as a complete DFA over byte classes: per byte one
/// class lookup and one transition, and a state is one row of `stride`
/// (a few dozen) `u16`s, so the body target's automaton is ~90 KB and
/// stays in the second-level cache (the 3.4 MB DFA it replaced did not).
#[derive(Debug)]
struct LiteralAutomaton {
    /// Each byte's class (ASCII letters of either case alike).
    classes: &'static [u8; 256],
    /// The number of classes: the length of a state's row.
    stride: usize,
    /// The number of states: `transitions` beyond `states * stride` is
    /// padding.
    #[cfg_attr(not(test), allow(dead_code))]
    states: usize,
    /// State `s`'s next state on class `c` is `transitions[s + c]`: state
    /// ids are premultiplied by `stride`; 0 is the start state. Padded to
    /// [`TRANSITION_TABLE`] entries ([`padded_transitions`]), so that an
    /// index of `u16` type needs no bounds check in the scan loop; the
    /// padding is never read.
    transitions: &'static [u16; TRANSITION_TABLE],
    /// The states from this one on are those that end an occurrence.
    first_match: usize,
    /// State `first_match + k * stride` ends an occurrence of each literal
    /// of `match_literals[match_starts[k]..match_starts[k + 1]]`.
    match_starts: &'static [u32],
    match_literals: &'static [u32],
}

/// The length of a [`LiteralAutomaton`]'s transition table: every `u16`
/// index. `build.rs` makes no automaton with more transitions than
/// `u16::MAX`, so every state id plus class (the last transition's index)
/// is below it.
const TRANSITION_TABLE: usize = 1 << 16;

/// `transitions` (at most [`TRANSITION_TABLE`] of them, which `build.rs`
/// ensures) followed by zeros up to [`TRANSITION_TABLE`] entries; evaluated
/// at compile time for the generated `PREFILTERS`.
const fn padded_transitions<const N: usize>(transitions: [u16; N]) -> [u16; TRANSITION_TABLE] {
    let mut table = [0u16; TRANSITION_TABLE];
    let mut i = 0;
    while i < N {
        table[i] = transitions[i];
        i += 1;
    }
    table
}

/// The build's entry for `pattern` (as analysis compiles it, after
/// `fold_non_ascii_case`), if it is a built-in pattern.
fn builtin(pattern: &str) -> Option<&'static Builtin> {
    RULE_PATTERNS
        .binary_search_by(|(p, _)| (*p).cmp(pattern))
        .ok()
        .map(|at| &RULE_PATTERNS[at].1)
}

/// The required literals, reach and phrase of a built-in `pattern`, as
/// [`pattern_literals`](super::pattern_syntax::pattern_literals) computes
/// them, without parsing it again (parsing all of them was half of the
/// start-up of a one-file `inspect`).
pub(super) fn literals(pattern: &str) -> Option<PatternLiterals> {
    let known = builtin(pattern)?;
    let literals = known
        .literals
        .map(|set| set.iter().map(|l| l.to_vec()).collect());
    Some(PatternLiterals {
        literals,
        max_len: known.max_len,
        in_line: known.in_line,
        phrase: known.phrase.clone(),
    })
}

/// A rule of a built-in rule file as the build read it from the YAML:
/// every key of `RawRule` in [`super::rules`], `kind` and `strength` as
/// written (the run time reads them as it reads a user's file), the
/// patterns folded by `fold_non_ascii_case`.
pub(super) struct BuiltinRule {
    pub(super) id: &'static str,
    pub(super) kind: &'static str,
    pub(super) field: &'static str,
    pub(super) header: Option<&'static str>,
    pub(super) strength: Option<&'static str>,
    pub(super) description: &'static str,
    pub(super) folded_patterns: &'static [&'static str],
    pub(super) examples: &'static [&'static str],
    pub(super) not_examples: &'static [&'static str],
}

/// The rules of the built-in rule file `name` (e.g. `bounce.yaml`), read
/// from its YAML by the build: the same data, without parsing it.
pub(super) fn rules(name: &str) -> Option<&'static [BuiltinRule]> {
    RULES
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, rules)| *rules)
}

/// The DFA at `offset..offset + len` of [`BLOB`], read in place.
///
/// Checking a DFA's transitions as it is opened costs about three
/// instructions per byte of the DFA (they are ~3 MB in all), more than
/// compiling many of the patterns would cost. So when `build.rs` has
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
/// `LiteralPrefilter` in [`super::rules`]), precompiled: an automaton that
/// finds every occurrence of every literal, ASCII case-insensitively, as
/// the run-time Aho-Corasick automaton does.
#[derive(Debug, Clone)]
pub(super) struct PrecompiledPrefilter {
    automaton: &'static LiteralAutomaton,
    /// Literal `i` of the automaton is `literals[i]`.
    literals: &'static [&'static [u8]],
}

impl PrecompiledPrefilter {
    /// The automaton the build made for exactly these `literals` (a
    /// target's ASCII literals, sorted, without duplicates), if any.
    pub(super) fn find(literals: &[&[u8]]) -> Option<PrecompiledPrefilter> {
        PREFILTERS
            .iter()
            .position(|p| p.literals == literals)
            .and_then(Self::at)
    }

    /// The automaton at `index` of the build's list, as a target of
    /// [`target`] names it.
    pub(super) fn at(index: usize) -> Option<PrecompiledPrefilter> {
        let known = PREFILTERS.get(index)?;
        Some(PrecompiledPrefilter {
            automaton: &known.automaton,
            literals: known.literals,
        })
    }

    /// Its literals: literal `i` of the automaton is `literals()[i]`.
    #[cfg(test)]
    pub(super) fn literals(&self) -> &'static [&'static [u8]] {
        self.literals
    }

    /// Calls `found(literal, start..end)` for every occurrence of every
    /// literal in `haystack`. Always true (it never gives up; the run-time
    /// automaton it stands for may).
    pub(super) fn occurrences(
        &self,
        haystack: &[u8],
        mut found: impl FnMut(usize, Range<usize>),
    ) -> bool {
        // In locals, so that the loop keeps them in registers.
        let LiteralAutomaton {
            classes,
            transitions,
            first_match,
            ..
        } = *self.automaton;
        // Every index is below `TRANSITION_TABLE`: `state + class` is at
        // most the automaton's last transition (see `build.rs`), so the
        // `u16` addition never wraps.
        let mut state = 0u16;
        let mut step = |byte: u8, end: usize| {
            let class = u16::from(classes[usize::from(byte)]);
            state = transitions[usize::from(state.wrapping_add(class))];
            if usize::from(state) >= first_match {
                self.report(usize::from(state), end, &mut found);
            }
        };
        // Eight bytes per round (unrolled by the compiler): the loop's own
        // bookkeeping was a third of the instructions per byte.
        let mut chunks = haystack.chunks_exact(8);
        let mut start = 0;
        for chunk in &mut chunks {
            for (i, &byte) in chunk.iter().enumerate() {
                step(byte, start + i + 1);
            }
            start += 8;
        }
        for (i, &byte) in chunks.remainder().iter().enumerate() {
            step(byte, start + i + 1);
        }
        true
    }

    /// Calls `found` for each literal that match state `state` ends at
    /// `end`. Out of line: the scan loop stays small (few occurrences per
    /// text).
    #[inline(never)]
    fn report(&self, state: usize, end: usize, found: &mut impl FnMut(usize, Range<usize>)) {
        let a = self.automaton;
        let k = (state - a.first_match) / a.stride;
        let (from, to) = (a.match_starts[k] as usize, a.match_starts[k + 1] as usize);
        for &literal in &a.match_literals[from..to] {
            let literal = literal as usize;
            let len = self.literals.get(literal).map_or(0, |l| l.len());
            found(literal, end.saturating_sub(len)..end);
        }
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
        let places = RULE_PATTERNS.iter().filter_map(|(_, known)| known.dfa);
        let mut checked = 0;
        for (offset, len) in places {
            let bytes = &BLOB.bytes[offset..offset + len];
            if let Err(e) = dense::DFA::from_bytes(bytes) {
                panic!("the DFA at {offset} is invalid: {e}");
            }
            checked += 1;
        }
        assert!(checked > RULE_PATTERNS.len() / 2, "only {checked} DFAs");
    }

    /// The tables of every precompiled literal automaton are consistent:
    /// every transition is a state, every match state has its literals,
    /// and only match states do (so a search never indexes out of them).
    #[test]
    fn every_literal_automaton_is_well_formed() {
        assert!(!PREFILTERS.is_empty());
        for p in PREFILTERS {
            let a = &p.automaton;
            let len = a.states * a.stride;
            // Every index the scan makes (a state plus a class) is in the
            // table, without wrapping as a `u16`; the padding is zeros.
            assert!(len <= usize::from(u16::MAX));
            let (used, padding) = a.transitions.split_at(len);
            assert!(padding.iter().all(|&t| t == 0));
            assert!(a.classes.iter().all(|&c| usize::from(c) < a.stride));
            assert!(used
                .iter()
                .all(|&t| usize::from(t) < len && usize::from(t) % a.stride == 0));
            assert_eq!(a.first_match % a.stride, 0);
            let matching = (len - a.first_match) / a.stride;
            assert_eq!(a.match_starts.len(), matching + 1);
            assert!(a.match_starts.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(
                a.match_starts.last().map(|&l| l as usize),
                Some(a.match_literals.len())
            );
            assert!(a
                .match_literals
                .iter()
                .all(|&l| (l as usize) < p.literals.len()));
            assert_eq!(a.match_starts[0], 0);
            assert!(a.first_match > 0, "the start state matches nothing");
        }
    }
}
