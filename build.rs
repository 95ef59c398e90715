//! Precompiles the patterns of the built-in rules (`rules/*.yaml`) into
//! dense DFAs, so that analysis neither compiles them nor builds lazy DFA
//! states at run time (in a one-shot `backsweep inspect` that was a fifth of
//! all the work, repeated on every thread).
//!
//! Writes two files to `OUT_DIR`, included by `src/analysis/precompiled.rs`:
//!
//! - `rule_dfas.bin`: the serialized DFAs (target byte order), each at an
//!   offset that is a multiple of 8;
//! - `rule_dfas.rs`: `RULE_PATTERNS`, sorted by pattern (as analysis sees
//!   it, after `fold_non_ascii_case`): where its DFA is in the blob, and
//!   its required literals, reach and phrase (`pattern_literals`), so that
//!   start-up parses no built-in pattern.
//!
//! `rule_dfas.rs` also holds `PREFILTERS`: for each rule target, the
//! Aho-Corasick automaton (as static tables, see [`LiteralAutomaton`]) that
//! finds its ASCII prefilter literals, so that start-up builds no automaton
//! for them; `TARGETS`: for each rule target, its patterns and what
//! `TargetSet::new` in rules.rs computes of them (literals grouped, reach,
//! phrases), so that start-up only looks the target up; and
//! `BLOB_VALIDATED`: whether every DFA was checked here as the run time
//! would check it.
//!
//! Also writes `builtin_rules.rs`: the rules of each built-in rule file as
//! Rust data (the YAML parsed here, once, with every key that a rule may
//! have and no other), their patterns folded (`fold_non_ascii_case`),
//! because reading the YAML was a quarter of the start-up of a one-file
//! `inspect`, and reading it as JSON still a sixth; and the list of the
//! built-in rule files themselves, with their text (`BUILTIN_RULE_FILES`,
//! in the order of `RULE_FILES` here, the one list of them).
//!
//! The rules themselves stay data: they are still validated at run time
//! as a user's are, and a pattern is looked up here by its text, so
//! a rule from a user's `rules_dir`, or one this script skipped (its DFA
//! would be too big), simply takes the run-time path. The syntax comes from
//! `src/analysis/pattern_syntax.rs`, the file analysis uses, so both read a
//! pattern the same way.

#[path = "src/analysis/pattern_syntax.rs"]
#[allow(dead_code)]
mod pattern_syntax;

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use regex_automata::dfa::{dense, StartKind};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::MatchKind;
use serde::Deserialize;

/// A DFA bigger than this is not worth its bytes in the binary; the pattern
/// is compiled at run time instead. (The built-in ones are far smaller.)
const MAX_DFA_BYTES: usize = 256 * 1024;

/// The most transitions (states times byte classes) the literal automaton
/// of a target may have (see [`target_index`]), so that a premultiplied
/// state id fits in a `u16`: beyond it, the target gets a run-time
/// automaton (and the test `precompiled_prefilters_find_what_aho_corasick_finds`
/// fails). The body target's has ~47,000 (1,200 states, 39 classes).
const MAX_PREFILTER_TRANSITIONS: usize = u16::MAX as usize;

/// The built-in rule files, in order: the one list of them. The build
/// writes it out as `BUILTIN_RULE_FILES` (with each file's text) for
/// `src/analysis/rules.rs`, whose order of a target's patterns it is, so
/// that `TARGETS`, looked up by their patterns in that order, are found.
/// Every `.yaml` file of `rules/` must be in it.
const RULE_FILES: &[&str] = &[
    "bounce.yaml",
    "autoreply.yaml",
    "challenge.yaml",
    "feedback.yaml",
    "senders.yaml",
];

/// A rule file as `RawRuleFile` in `src/analysis/rules.rs` reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<Rule>,
}

/// A rule as `RawRule` in `src/analysis/rules.rs` reads it: the same keys,
/// required or not alike, and no others (so a built-in file that a user's
/// `rules_dir` could not hold fails the build), but `kind` and `strength`
/// as written: the run time reads those with its own types, as it reads a
/// user's file, and checks the rest as it checks one (`compile_rule`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    id: String,
    kind: String,
    /// `subject`, `sender`, `body` or `header`: with `header`, the rules
    /// that share a target (and so a prefilter) at run time.
    field: String,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    strength: Option<String>,
    #[serde(default)]
    description: String,
    patterns: Vec<String>,
    examples: Vec<String>,
    #[serde(default)]
    not_examples: Vec<String>,
}

impl Rule {
    /// The rule as a Rust expression of `BuiltinRule` in
    /// `src/analysis/precompiled.rs`, its patterns as `folded`.
    fn source(&self, folded: &[String]) -> String {
        let strings = |list: &[String]| {
            let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
            format!("&[{}]", items.join(", "))
        };
        format!(
            "BuiltinRule {{ id: {:?}, kind: {:?}, field: {:?}, header: {:?}, strength: {:?}, \
             description: {:?}, folded_patterns: {}, examples: {}, not_examples: {} }}",
            self.id,
            self.kind,
            self.field,
            self.header,
            self.strength,
            self.description,
            strings(folded),
            strings(&self.examples),
            strings(&self.not_examples),
        )
    }
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let big_endian = env::var("CARGO_CFG_TARGET_ENDIAN").is_ok_and(|e| e == "big");
    let rules_dir = manifest.join("rules");
    println!("cargo:rerun-if-changed={}", rules_dir.display());
    println!("cargo:rerun-if-changed=src/analysis/pattern_syntax.rs");

    let mut patterns: BTreeSet<String> = BTreeSet::new();
    // The folded patterns of each target, by a key naming the target, in
    // the order of the targets' first rules.
    let mut targets: Vec<(String, Vec<String>)> = Vec::new();
    let mut rules = String::from(
        "/// The rules of the built-in rule files, by file name, as read from\n\
         /// their YAML. Generated by build.rs.\n\
         static RULES: &[(&str, &[BuiltinRule])] = &[\n",
    );
    for path in yaml_files(&rules_dir) {
        let listed = path
            .file_name()
            .is_some_and(|n| RULE_FILES.iter().any(|f| n == *f));
        assert!(listed, "{} is not in RULE_FILES", path.display());
    }
    let mut files = String::from(
        "/// The rule files built into the binary, by file name, with their text,\n\
         /// in build.rs's order (`RULE_FILES`). Generated by build.rs.\n\
         pub(super) const BUILTIN_RULE_FILES: &[(&str, &str)] = &[\n",
    );
    for path in RULE_FILES.iter().map(|f| rules_dir.join(f)) {
        println!("cargo:rerun-if-changed={}", path.display());
        let absolute = path.display().to_string();
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file: RuleFile = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("built-in rule file {} is invalid: {e}", path.display()));
        files.push_str(&format!("    ({name:?}, include_str!({absolute:?})),\n"));
        rules.push_str(&format!("    ({name:?}, &[\n"));
        for rule in file.rules {
            let folded: Vec<String> = rule
                .patterns
                .iter()
                .map(|p| pattern_syntax::fold_non_ascii_case(p))
                .collect();
            rules.push_str(&format!("        {},\n", rule.source(&folded)));
            let target = match &rule.header {
                Some(name) => format!("{}:{}", rule.field, name.trim().to_ascii_lowercase()),
                None => rule.field.clone(),
            };
            let at = match targets.iter().position(|(t, _)| *t == target) {
                Some(at) => at,
                None => {
                    targets.push((target, Vec::new()));
                    targets.len() - 1
                }
            };
            for folded in folded {
                targets[at].1.push(folded.clone());
                patterns.insert(folded);
            }
        }
        rules.push_str("    ]),\n");
    }

    let mut blob: Vec<u8> = Vec::new();
    let mut index = String::from(
        "/// What the build computed for each built-in pattern, sorted by pattern:\n\
         /// its DFA in `rule_dfas.bin` and its literals. Generated by build.rs.\n\
         static RULE_PATTERNS: &[(&str, Builtin)] = &[\n",
    );
    for pattern in &patterns {
        // A pattern that does not parse is left to the run-time checks,
        // which report it with its rule and file.
        let Ok(pattern_syntax::PatternLiterals {
            literals,
            max_len,
            in_line,
            phrase,
        }) = pattern_syntax::pattern_literals(pattern)
        else {
            continue;
        };
        let dfa = build_dfa(pattern).filter(|dfa| dfa.write_to_len() <= MAX_DFA_BYTES);
        let dfa = dfa.map(|dfa| append_dfa(&mut blob, &dfa, big_endian));
        let literals = literals.map(|set| byte_strings(&set));
        index.push_str(&format!(
            "    ({pattern:?}, Builtin {{ dfa: {dfa:?}, literals: {}, max_len: {max_len:?}, in_line: {in_line}, phrase: {} }}),\n",
            option(literals),
            option(phrase.as_ref().map(phrase_source))
        ));
    }
    index.push_str("];\n");
    index.push_str(&target_index(&targets));
    index.push_str(&format!(
        "/// Whether build.rs checked every DFA in `rule_dfas.bin` as\n\
         /// `dense::DFA::from_bytes` does. Generated by build.rs.\n\
         const BLOB_VALIDATED: bool = {};\n",
        native_byte_order(big_endian)
    ));
    rules.push_str("];\n");
    files.push_str("];\n");
    write(&out_dir.join("rule_dfas.bin"), &blob);
    write(
        &out_dir.join("builtin_rules.rs"),
        (files + &rules).as_bytes(),
    );
    write(&out_dir.join("rule_dfas.rs"), index.as_bytes());
}

/// The `.yaml` files of `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// The unanchored DFA that answers "does `pattern` match here?" exactly as
/// the run-time regex (`compile_set` in rules.rs: same syntax, every match
/// reported, no capture groups) does. (Minimizing them made the blob 10 %
/// smaller but their searches no cheaper, in instructions or in cache
/// misses: not worth the build time.)
fn build_dfa(pattern: &str) -> Option<dense::DFA<Vec<u32>>> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Unanchored)
                .dfa_size_limit(Some(MAX_DFA_BYTES * 4))
                .determinize_size_limit(Some(MAX_DFA_BYTES * 16)),
        )
        .syntax(pattern_syntax::syntax_config())
        .thompson(thompson::Config::new().which_captures(WhichCaptures::None))
        .build(pattern)
        .ok()
}

/// Computes for each target what `TargetSet::new` in rules.rs would
/// (`group_literals` of its patterns' `pattern_literals`), and builds each
/// half of its literal prefilter (see `LiteralPrefilter` in
/// `src/analysis/rules.rs`), its ASCII literals and the others, as one
/// Aho-Corasick automaton each. Returns `PREFILTERS` (for each automaton,
/// its literals, sorted, which the run time looks an automaton up by when
/// a target is not a built-in one, and its tables; literal `i` is
/// `literals[i]`) and `TARGETS` (for each target, its patterns and
/// prefilter, the halves naming their automata by index). A target with a
/// pattern that does not parse is left out (the run time reports it).
///
/// The halves are apart because the non-ASCII literals would take the
/// alphabet from a few dozen byte classes to ~150 and add thousands of
/// states (each case pair of a non-ASCII letter doubles a literal's
/// variants), and they can occur only in a text that is not ASCII, which
/// the run time checks first (and are cut shorter, see
/// `prefilter_literal`). A half too big for the tables is left to the run
/// time, which builds it on first use.
///
/// These tables replaced one `regex-automata` DFA per target: for the same
/// literals that needs ~5 times the states (it reports a match one byte
/// late, so a state also carries the previous one's matches; it was
/// minimal already, `minimize(true)` changed no byte) and 3 times
/// the bytes per state (a case pair is two byte classes, the table is
/// `u32`s, the stride a power of two) — 3.4 MB for the body target, whose
/// scan then spent much of its time in cache misses; its tables here are
/// ~90 KB.
fn target_index(targets: &[(String, Vec<String>)]) -> String {
    let mut prefilters = String::from(
        "/// The literal prefilter of each built-in target: its literals, sorted, and\n\
         /// their automaton. Generated by build.rs.\n\
         static PREFILTERS: &[Prefilter] = &[\n",
    );
    let mut index = String::from(
        "/// What `TargetSet::new` computes for each built-in target. Generated by\n\
         /// build.rs.\n\
         static TARGETS: &[BuiltinTarget] = &[\n",
    );
    let mut automata = 0;
    for (_, patterns) in targets {
        let Ok(known) = patterns
            .iter()
            .map(|p| pattern_syntax::pattern_literals(p))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let max_len: Vec<String> = known.iter().map(|k| format!("{:?}", k.max_len)).collect();
        let in_line: Vec<String> = known.iter().map(|k| k.in_line.to_string()).collect();
        let phrases: Vec<String> = known
            .iter()
            .map(|k| option(k.phrase.as_ref().map(phrase_source)))
            .collect();
        let groups = pattern_syntax::group_literals(known.into_iter().map(|k| k.literals));
        let mut half = |ascii: bool| {
            let chosen: Vec<usize> = (0..groups.literals.len())
                .filter(|&i| groups.literals[i].is_ascii() == ascii)
                .collect();
            let literals: Vec<Vec<u8>> =
                chosen.iter().map(|&i| groups.literals[i].clone()).collect();
            let automaton = (!literals.is_empty())
                .then(|| LiteralAutomaton::build(&literals))
                .flatten()
                .map(|automaton| {
                    prefilters.push_str(&format!(
                        "    Prefilter {{ literals: {}, automaton: {} }},\n",
                        byte_strings(&literals),
                        automaton.source()
                    ));
                    automata += 1;
                    automata - 1
                });
            format!("({}, {automaton:?})", numbers(&chosen))
        };
        let ascii = half(true);
        let non_ascii = half(false);
        index.push_str(&format!(
            "    BuiltinTarget {{ patterns: &[{}], literals: {}, literal_starts: {}, \
             literal_patterns: {}, always: {}, max_len: &[{}], in_line: &[{}], \
             phrases: &[{}], ascii: {ascii}, non_ascii: {non_ascii} }},\n",
            patterns
                .iter()
                .map(|p| format!("Cow::Borrowed({p:?})"))
                .collect::<Vec<_>>()
                .join(", "),
            byte_strings(&groups.literals),
            numbers(&groups.starts),
            numbers(&groups.patterns),
            numbers(&groups.always),
            max_len.join(", "),
            in_line.join(", "),
            phrases.join(", "),
        ));
    }
    prefilters.push_str("];\n");
    index.push_str("];\n");
    prefilters + &index
}

/// A `Phrase` of `src/analysis/pattern_syntax.rs` as a Rust expression of
/// that type, its pieces borrowed.
fn phrase_source(phrase: &pattern_syntax::Phrase) -> String {
    let pieces: Vec<String> = phrase
        .pieces
        .iter()
        .map(|piece| {
            let texts: Vec<String> = piece
                .iter()
                .map(|text| format!("Cow::Borrowed({})", byte_string(text)))
                .collect();
            format!("Cow::Borrowed(&[{}])", texts.join(", "))
        })
        .collect();
    format!(
        "Phrase {{ pieces: Cow::Borrowed(&[{}]), word_start: {}, word_end: {} }}",
        pieces.join(", "),
        phrase.word_start,
        phrase.word_end
    )
}

/// Numbers as a Rust slice expression.
fn numbers(list: &[usize]) -> String {
    let items: Vec<String> = list.iter().map(usize::to_string).collect();
    format!("&[{}]", items.join(", "))
}

/// An Aho-Corasick automaton as a complete DFA over byte classes, which
/// reports every occurrence of every literal ASCII case-insensitively (as
/// the run-time Aho-Corasick prefilter does), in the form
/// `LiteralAutomaton` in `src/analysis/precompiled.rs` searches:
///
/// - `classes`: each byte's class; the bytes of no literal share class 0,
///   an upper-case ASCII letter has the class of its lower case;
/// - `transitions`: the next state of state `s` on class `c` at
///   `s + c`: state ids are premultiplied by `stride` (the class count),
///   the start state is 0; the run time pads the table to 65,536 entries
///   (`padded_transitions`), which holds every `s + c` because there are
///   at most [`MAX_PREFILTER_TRANSITIONS`];
/// - the states from `first_match` on (and only those) end an occurrence
///   of some literal: state `first_match + k * stride` ends those of
///   `match_literals[match_starts[k]..match_starts[k + 1]]`.
struct LiteralAutomaton {
    classes: Vec<u8>,
    stride: usize,
    transitions: Vec<u16>,
    first_match: usize,
    match_starts: Vec<u32>,
    match_literals: Vec<u32>,
}

impl LiteralAutomaton {
    /// The automaton of `literals` (none empty); `None` if it would have
    /// more than [`MAX_PREFILTER_TRANSITIONS`] or a literal is empty.
    fn build(literals: &[Vec<u8>]) -> Option<LiteralAutomaton> {
        if literals.iter().any(|l| l.is_empty()) {
            return None;
        }
        let mut classes = vec![0u8; 256];
        let mut stride = 1;
        for byte in literals.iter().flatten().map(u8::to_ascii_lowercase) {
            let b = usize::from(byte);
            if classes[b] == 0 {
                classes[b] = u8::try_from(stride).ok()?;
                stride += 1;
            }
        }
        for upper in b'A'..=b'Z' {
            classes[usize::from(upper)] = classes[usize::from(upper.to_ascii_lowercase())];
        }
        let class = |b: u8| usize::from(classes[usize::from(b)]);
        // The trie: `goto[s * stride + c]` is the child (0 = none; the root
        // is never a child) and `outputs[s]` the literals ending at `s`.
        let mut goto: Vec<usize> = vec![0; stride];
        let mut outputs: Vec<Vec<u32>> = vec![Vec::new()];
        for (index, literal) in literals.iter().enumerate() {
            let mut s = 0;
            for &b in literal {
                let at = s * stride + class(b);
                if goto[at] == 0 {
                    goto[at] = outputs.len();
                    goto.resize(goto.len() + stride, 0);
                    outputs.push(Vec::new());
                }
                s = goto[at];
            }
            outputs[s].push(u32::try_from(index).ok()?);
        }
        let states = outputs.len();
        if states * stride > MAX_PREFILTER_TRANSITIONS {
            return None;
        }
        // Breadth first: a state's failure state is shallower, so its
        // transitions and outputs are complete when the state is reached.
        let mut delta = vec![0usize; states * stride];
        let mut fail = vec![0usize; states];
        let mut order = vec![0usize];
        let mut next = 0;
        while let Some(&s) = order.get(next) {
            next += 1;
            for c in 0..stride {
                let child = goto[s * stride + c];
                if child == 0 {
                    delta[s * stride + c] = if s == 0 {
                        0
                    } else {
                        delta[fail[s] * stride + c]
                    };
                    continue;
                }
                let back = if s == 0 {
                    0
                } else {
                    delta[fail[s] * stride + c]
                };
                fail[child] = back;
                let inherited = outputs[back].clone();
                outputs[child].extend(inherited);
                delta[s * stride + c] = child;
                order.push(child);
            }
        }
        // Renumber: the states without outputs first (the root stays 0).
        let mut renumbered: Vec<usize> = (0..states).filter(|&s| outputs[s].is_empty()).collect();
        let first_match = renumbered.len();
        renumbered.extend((0..states).filter(|&s| !outputs[s].is_empty()));
        let mut new_id = vec![0usize; states];
        for (id, &s) in renumbered.iter().enumerate() {
            new_id[s] = id;
        }
        let premultiplied = |s: usize| u16::try_from(new_id[s] * stride).ok();
        let mut transitions = Vec::with_capacity(states * stride);
        for &s in &renumbered {
            for c in 0..stride {
                transitions.push(premultiplied(delta[s * stride + c])?);
            }
        }
        let mut match_starts = vec![0u32];
        let mut match_literals = Vec::new();
        for &s in &renumbered[first_match..] {
            let mut found = outputs[s].clone();
            found.sort_unstable();
            found.dedup();
            match_literals.extend(found);
            match_starts.push(u32::try_from(match_literals.len()).ok()?);
        }
        Some(LiteralAutomaton {
            classes,
            stride,
            transitions,
            first_match: first_match * stride,
            match_starts,
            match_literals,
        })
    }

    /// The automaton as a Rust expression of `LiteralAutomaton` in
    /// `src/analysis/precompiled.rs`.
    fn source(&self) -> String {
        let list = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(",");
        format!(
            "LiteralAutomaton {{ classes: &[{}], stride: {}, states: {}, \
             transitions: &padded_transitions([{}]), \
             first_match: {}, match_starts: &[{}], match_literals: &[{}] }}",
            list(&mut self.classes.iter().map(u8::to_string)),
            self.stride,
            self.transitions.len() / self.stride,
            list(&mut self.transitions.iter().map(u16::to_string)),
            self.first_match,
            list(&mut self.match_starts.iter().map(u32::to_string)),
            list(&mut self.match_literals.iter().map(u32::to_string)),
        )
    }
}

/// Serializes `dfa` into `blob` at the next multiple of 8 and returns where
/// it is (offset, length).
///
/// When the target has the byte order of this machine (every native build),
/// the written bytes are also checked here exactly as
/// `dense::DFA::from_bytes` checks them at run time, and a failure stops
/// the build: then the run time may skip that check (see `BLOB_VALIDATED`),
/// which cost more than building the automata it replaces.
fn append_dfa(blob: &mut Vec<u8>, dfa: &dense::DFA<Vec<u32>>, big_endian: bool) -> (usize, usize) {
    let len = dfa.write_to_len();
    blob.resize(blob.len().next_multiple_of(8), 0);
    let offset = blob.len();
    blob.resize(offset + len, 0);
    let written = if big_endian {
        dfa.write_to_big_endian(&mut blob[offset..])
    } else {
        dfa.write_to_little_endian(&mut blob[offset..])
    };
    written.unwrap_or_else(|e| panic!("cannot serialize a DFA: {e}"));
    if native_byte_order(big_endian) {
        // The same serialization, at an address aligned as `from_bytes`
        // needs (`blob` is not).
        let (native, pad) = dfa.to_bytes_native_endian();
        assert!(
            native[pad..] == blob[offset..],
            "a DFA serialized twice differs"
        );
        if let Err(e) = dense::DFA::from_bytes(&native[pad..]) {
            panic!("a serialized DFA does not read back: {e}");
        }
    }
    (offset, len)
}

/// Whether the target's byte order is this machine's, so that `append_dfa`
/// can check the DFAs as the target will read them.
fn native_byte_order(big_endian: bool) -> bool {
    big_endian == cfg!(target_endian = "big")
}

/// `bytes` as a Rust byte string literal.
fn byte_string(bytes: &[u8]) -> String {
    let escaped: String = bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("b\"{escaped}\"")
}

/// Byte strings as a Rust slice expression of byte string literals.
fn byte_strings(strings: &[Vec<u8>]) -> String {
    let items: Vec<String> = strings.iter().map(|s| byte_string(s)).collect();
    format!("&[{}]", items.join(", "))
}

/// An `Option` of Rust source as Rust source.
fn option(source: Option<String>) -> String {
    source.map_or_else(|| "None".to_string(), |s| format!("Some({s})"))
}

fn write(path: &Path, bytes: &[u8]) {
    // Unchanged output keeps its timestamp, so nothing downstream rebuilds.
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
