//! Phrase and signature rules, kept as data in `rules/*.yaml`.
//!
//! The structural signals of a bounce (a `multipart/report`, DSN fields,
//! `Auto-Submitted`) are fixed by RFCs and live in code. What varies by MTA,
//! provider and language — subjects, sender names, body phrases, vendor
//! headers — lives in YAML so that it can be reviewed, extended and tested
//! one rule at a time. The files are compiled into the binary; a config may
//! point `rules_dir` at a directory whose files replace the built-in ones of
//! the same name.
//!
//! Every rule carries `examples` that must match and may carry
//! `not_examples` that must not: they are checked when the rules are loaded,
//! so a broken rule file is a clear start-up error, never a silent miss.

use super::pattern_syntax::{
    better, facts, fold_non_ascii_case, group_literals, pattern_literals, shortest, syntax_config,
    Phrase, MAX_LITERALS, MIN_LITERAL_LEN,
};
use super::precompiled::{self, PrecompiledDfa, PrecompiledPrefilter};
use aho_corasick::AhoCorasick;
use regex_automata::meta::Regex as MetaRegex;
use regex_automata::nfa::thompson::WhichCaptures;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind};
use regex_syntax::hir::{Hir, HirKind};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

/// The rule files built into the binary, by file name, with their text:
/// every file of `rules/`, in the order `build.rs` lists them, which is the
/// order of a target's patterns (and the order the build's data for each
/// target was made in).
pub const BUILTIN_RULE_FILES: &[(&str, &str)] = precompiled::BUILTIN_RULE_FILES;

/// Upper bound on one compiled regex, so a hostile rules_dir cannot make
/// start-up allocate without bound.
const REGEX_SIZE_LIMIT: usize = 4 << 20;

/// Upper bound on the lazy DFA cache of one rule set (per thread using it).
const DFA_CACHE_LIMIT: usize = 32 << 20;

/// What a rule is evidence for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Evidence of a bounce (DSN/NDR).
    Bounce,
    /// Evidence of an auto-reply.
    Autoreply,
    /// Evidence of a challenge-response request.
    Challenge,
    /// Evidence of an abuse or DMARC failure report.
    Feedback,
    /// Evidence that a machine, not a person, sent the message: corroborates
    /// any of the kinds above but decides none alone.
    Automated,
}

/// Which part of the message a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The decoded Subject.
    Subject,
    /// The From header (display name and address) and the Return-Path.
    Sender,
    /// The explanatory text of the message (text parts outside the enclosed
    /// original, HTML flattened), bounded in length.
    Body,
    /// One header field's raw value, by lower-case name.
    Header(String),
}

/// How much a rule's match counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strength {
    /// Decides the kind on its own (a vendor signature no person writes).
    Strong,
    /// Needs corroboration from a different target (e.g. subject + sender).
    #[default]
    Weak,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleFile {
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    kind: RuleKind,
    /// `subject`, `sender`, `body` or `header`.
    field: String,
    /// The header name when `field: header`.
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    strength: Strength,
    #[serde(default)]
    description: String,
    patterns: Vec<String>,
    examples: Vec<String>,
    #[serde(default)]
    not_examples: Vec<String>,
    /// Whether `patterns` went through [`fold_non_ascii_case`] already (a
    /// built-in rule's, in the build); not a key of a rule file.
    #[serde(skip)]
    folded: bool,
}

impl RawRule {
    /// A built-in rule as the build read it from its YAML; its kind and
    /// strength are read by the same `Deserialize` as a rule file's.
    fn builtin(rule: &precompiled::BuiltinRule) -> Result<RawRule, String> {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let read =
            |text: &'static str| -> StrDeserializer<'static, Error> { text.into_deserializer() };
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Ok(RawRule {
            id: rule.id.to_string(),
            kind: RuleKind::deserialize(read(rule.kind)).map_err(|e| e.to_string())?,
            field: rule.field.to_string(),
            header: rule.header.map(str::to_string),
            strength: match rule.strength {
                Some(strength) => {
                    Strength::deserialize(read(strength)).map_err(|e| e.to_string())?
                }
                None => Strength::default(),
            },
            description: rule.description.to_string(),
            patterns: strings(rule.folded_patterns),
            examples: strings(rule.examples),
            not_examples: strings(rule.not_examples),
            folded: true,
        })
    }
}

/// The text of a rule file, in the form it is read from.
enum RuleText {
    /// YAML, as written (a `rules_dir` file, or a built-in file in tests).
    Yaml(String),
    /// A built-in file's rules as `build.rs` read them from its YAML.
    Builtin(&'static [precompiled::BuiltinRule]),
}

/// One loaded rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable identifier, reported in every analysis that the rule fired in.
    pub id: String,
    /// What the rule is evidence for.
    pub kind: RuleKind,
    /// Where it looks.
    pub target: Target,
    /// Whether it decides alone.
    pub strength: Strength,
    /// Why the rule exists, for humans.
    pub description: String,
    /// The file it came from.
    pub file: String,
    /// Its regular expressions (case-insensitive).
    pub patterns: Vec<String>,
    /// Texts it must match (checked at load).
    pub examples: Vec<String>,
    /// Texts it must not match (checked at load).
    pub not_examples: Vec<String>,
}

/// A rule file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub struct RuleError {
    /// The file, as named to the user.
    pub file: String,
    /// What is wrong, with the rule id where there is one.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule file {}: {}", self.file, self.message)
    }
}

/// All rules, grouped by target; each target has a literal prefilter in
/// front of its patterns (see [`TargetSet`]).
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Per target (each once, in the order of their first rule): its
    /// patterns, prefilter and compiled regexes. A list, not a map: there
    /// are a dozen targets, and comparing a few of them is cheaper than
    /// hashing the target (a header name) on every look-up.
    sets: Vec<(Target, TargetSet)>,
}

/// The patterns of one target, behind a literal prefilter.
///
/// One overlapping multi-pattern search over all ~300 patterns used to be
/// the bulk of analysis time: its lazy DFA has to track every pattern at
/// once and keeps building new states. But almost every pattern needs some
/// literal ("undeliver", "mail system", "auto-submitted", ...) to occur in
/// any text it matches. So one Aho-Corasick pass over the text finds the few
/// patterns whose literals occur, and only those (plus the few patterns
/// without a usable literal) are run, each as its own small regex. The
/// prefilter only ever skips patterns that cannot match, so the result is
/// the same as the full search.
///
/// A built-in target's lists come from `build.rs`'s data (see
/// [`precompiled::target`]), any other's are computed. The patterns stay
/// borrowed from the build; the lists that [`TargetSet::which`] reads are
/// copied, one allocation each (a `Cow` would cost a check on each access
/// in the scan, ~1 M instructions over the corpus).
#[derive(Debug, Clone)]
struct TargetSet {
    /// The patterns, in rule order.
    patterns: Cow<'static, [Cow<'static, str>]>,
    /// For each pattern, the index of its rule in `RuleSet::rules`.
    owners: Vec<usize>,
    /// For each pattern, its regex, compiled on first use: a run usually
    /// needs only a fraction of them, and compiling all up front would
    /// dominate the start-up of a one-file `inspect`.
    regexes: Vec<OnceLock<Result<MetaRegex, String>>>,
    /// For each pattern, its DFA precompiled by `build.rs` (built-in
    /// patterns), opened on first use; searched instead of the regex.
    dfas: Vec<OnceLock<Option<PrecompiledDfa>>>,
    /// Finds the required literals of the patterns (ASCII case-insensitive).
    prefilter: Option<LiteralPrefilter>,
    /// For each literal of `prefilter`, the patterns that require it.
    literal_patterns: PatternLists,
    /// The patterns without a usable literal: always run.
    always: Box<[usize]>,
    /// For each pattern with literals, the longest text (bytes) it can
    /// match, if bounded. A match must contain one of the pattern's
    /// literals, so such a pattern is searched for only in windows this wide
    /// around the literals' occurrences, not through the whole text. `None`
    /// (whole text) for unbounded patterns and those in `always`.
    max_len: Box<[Option<usize>]>,
    /// For each pattern with literals: no match of it holds a line feed,
    /// so an unbounded one (`a[^\n]*b`) is searched for only in the lines
    /// of the literals' occurrences.
    in_line: Box<[bool]>,
    /// For each pattern with literals: its phrase, if it is one whose every
    /// match starts with one of its literals. Such a pattern matches if and
    /// only if the phrase occurs at one of their occurrences: checking that
    /// there costs a few comparisons, running its DFA around them (reading
    /// its table, often not in the cache) several times more.
    phrases: Box<[Option<Phrase>]>,
}

/// For each literal of a [`TargetSet`], the patterns that require it
/// (`lists[i]`), in two flat lists (see
/// [`LiteralGroups`](super::pattern_syntax::LiteralGroups)) rather than one
/// vector per literal.
#[derive(Debug, Clone)]
struct PatternLists {
    starts: Box<[usize]>,
    patterns: Box<[usize]>,
}

impl std::ops::Index<usize> for PatternLists {
    type Output = [usize];

    fn index(&self, literal: usize) -> &[usize] {
        &self.patterns[self.starts[literal]..self.starts[literal + 1]]
    }
}

/// How a [`TargetSet`] finds every occurrence of its literals: one
/// automaton for the literals of ASCII bytes only, another for the rest,
/// which can occur only in a text that is not all ASCII (most are), so
/// that one is usually skipped. The ASCII automaton of a built-in target is
/// precompiled by `build.rs`: building the Aho-Corasick automata was
/// most of the start-up of a one-file `inspect`, and its complete DFA scans
/// a text in well under half the time of the compact automaton a start-up
/// can afford to build. (With the non-ASCII literals in it, its alphabet
/// would grow from a few dozen byte classes to ~150 and its states
/// severalfold.) The other automata are built on first use: a run whose
/// texts are all ASCII never needs the non-ASCII one, and building it was
/// a quarter of the start-up of a one-file `inspect`.
#[derive(Debug, Clone)]
struct LiteralPrefilter {
    ascii: Option<LiteralSearch>,
    non_ascii: Option<LiteralSearch>,
}

/// One automaton over some of a target's literals.
#[derive(Debug, Clone)]
struct LiteralSearch {
    matcher: LiteralMatcher,
    /// For each of its literals, the literal's index in the target.
    literals: Box<[usize]>,
    /// The length of its longest literal.
    longest: usize,
}

#[derive(Debug, Clone)]
enum LiteralMatcher {
    /// The automaton `build.rs` made for these literals (the built-in rules).
    Precompiled(Box<PrecompiledPrefilter>),
    /// An automaton built on first use from `literals`; `None` if it
    /// cannot be built (then every search gives up).
    Built {
        literals: Vec<Vec<u8>>,
        automaton: OnceLock<Option<AhoCorasick>>,
    },
}

impl LiteralPrefilter {
    /// The prefilter for `literals` (sorted, without duplicates).
    fn new(literals: &[Vec<u8>]) -> LiteralPrefilter {
        let (ascii, non_ascii): (Vec<usize>, Vec<usize>) =
            (0..literals.len()).partition(|&i| literals[i].is_ascii());
        let search = |chosen: Vec<usize>| {
            let found = PrecompiledPrefilter::find(
                &chosen
                    .iter()
                    .map(|&i| literals[i].as_slice())
                    .collect::<Vec<_>>(),
            );
            LiteralSearch::new(literals, chosen.into(), found)
        };
        LiteralPrefilter {
            ascii: search(ascii),
            non_ascii: search(non_ascii),
        }
    }

    /// The prefilter of a built-in target, as the build divided its
    /// literals and made their automata: what [`LiteralPrefilter::new`]
    /// makes of them (a test checks that).
    fn builtin(target: &'static precompiled::BuiltinTarget) -> LiteralPrefilter {
        let search = |(chosen, automaton): (&'static [usize], Option<usize>)| {
            let found = automaton.and_then(PrecompiledPrefilter::at);
            LiteralSearch::new(target.literals, chosen.into(), found)
        };
        LiteralPrefilter {
            ascii: search(target.ascii),
            non_ascii: search(target.non_ascii),
        }
    }

    /// Calls `found(literal, start, end)` for every occurrence of every
    /// literal in `haystack`. False if a search gave up (a precompiled
    /// automaton never does): then any literal may occur anywhere.
    ///
    /// Each non-ASCII literal has a non-ASCII byte, so its occurrences lie
    /// in the stretches around the text's non-ASCII bytes: only those are
    /// searched for them (most texts that are not ASCII have a few such
    /// bytes, a name or a dash, in a text of several KB).
    fn occurrences(&self, haystack: &[u8], mut found: impl FnMut(usize, usize, usize)) -> bool {
        let mut complete = true;
        if let Some(search) = &self.ascii {
            complete &= search.occurrences(haystack, 0..haystack.len(), &mut found);
        }
        if let Some(search) = self.non_ascii.as_ref().filter(|_| !haystack.is_ascii()) {
            for stretch in non_ascii_stretches(haystack, search.longest) {
                complete &= search.occurrences(haystack, stretch, &mut found);
            }
        }
        complete
    }
}

/// The stretches of `haystack` (merged, in order) that hold every
/// occurrence of a literal of at most `longest` bytes that contains a
/// non-ASCII byte: `longest - 1` bytes on either side of each such byte.
fn non_ascii_stretches(haystack: &[u8], longest: usize) -> Vec<Range<usize>> {
    let reach = longest.saturating_sub(1);
    let mut stretches: Vec<Range<usize>> = Vec::new();
    for (at, _) in haystack.iter().enumerate().filter(|(_, b)| !b.is_ascii()) {
        let start = at.saturating_sub(reach);
        let end = at.saturating_add(reach + 1).min(haystack.len());
        match stretches.last_mut() {
            Some(last) if start <= last.end => last.end = end,
            _ => stretches.push(start..end),
        }
    }
    stretches
}

impl LiteralSearch {
    /// The search for the literals `chosen` (indices into `all`): by
    /// `precompiled`, the automaton the build made for exactly these, if
    /// there is one, else by one built on first use; `None` if none is
    /// chosen.
    fn new(
        all: &[impl AsRef<[u8]>],
        chosen: Box<[usize]>,
        precompiled: Option<PrecompiledPrefilter>,
    ) -> Option<LiteralSearch> {
        if chosen.is_empty() {
            return None;
        }
        let matcher = match precompiled {
            Some(automaton) => LiteralMatcher::Precompiled(Box::new(automaton)),
            None => LiteralMatcher::Built {
                literals: chosen.iter().map(|&i| all[i].as_ref().to_vec()).collect(),
                automaton: OnceLock::new(),
            },
        };
        Some(LiteralSearch {
            matcher,
            longest: chosen
                .iter()
                .map(|&i| all[i].as_ref().len())
                .max()
                .unwrap_or(0),
            literals: chosen,
        })
    }

    /// As [`LiteralPrefilter::occurrences`], for these literals and the
    /// occurrences that lie within `range` of `haystack`.
    fn occurrences(
        &self,
        haystack: &[u8],
        range: Range<usize>,
        found: &mut impl FnMut(usize, usize, usize),
    ) -> bool {
        let offset = range.start;
        match &self.matcher {
            LiteralMatcher::Precompiled(automaton) => {
                let Some(part) = haystack.get(range) else {
                    return false;
                };
                automaton.occurrences(part, |literal, at| {
                    found(self.literals[literal], offset + at.start, offset + at.end)
                })
            }
            LiteralMatcher::Built {
                literals,
                automaton,
            } => {
                // The plain (noncontiguous) automaton without a prefilter:
                // it is built once per process for a search of a few short
                // stretches, and the contiguous one and a prefilter took
                // more to build than they saved.
                let built = automaton.get_or_init(|| {
                    AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .match_kind(aho_corasick::MatchKind::Standard)
                        .kind(Some(aho_corasick::AhoCorasickKind::NoncontiguousNFA))
                        .prefilter(false)
                        .build(literals)
                        .ok()
                });
                let Some(ac) = built else {
                    return false;
                };
                for m in ac.find_overlapping_iter(aho_corasick::Input::new(haystack).range(range)) {
                    found(self.literals[m.pattern().as_usize()], m.start(), m.end());
                }
                true
            }
        }
    }
}

impl TargetSet {
    /// Parses the patterns (reporting the first invalid one by its index
    /// and its owner) and builds the prefilter from their required
    /// literals; for a built-in target, takes all that from the build
    /// instead.
    fn new(patterns: &[&str], owners: Vec<usize>) -> Result<TargetSet, (usize, usize, String)> {
        match precompiled::target(patterns) {
            Some(known) => Ok(TargetSet::builtin(known, owners)),
            None => TargetSet::computed(patterns, owners),
        }
    }

    /// What [`TargetSet::new`] does for a target that is not a built-in one.
    fn computed(
        patterns: &[&str],
        owners: Vec<usize>,
    ) -> Result<TargetSet, (usize, usize, String)> {
        let mut per_pattern = Vec::with_capacity(patterns.len());
        let mut max_len = Vec::with_capacity(patterns.len());
        let mut in_line = Vec::with_capacity(patterns.len());
        let mut phrases = Vec::with_capacity(patterns.len());
        for (index, pattern) in patterns.iter().enumerate() {
            let known = match precompiled::literals(pattern) {
                Some(known) => known,
                None => pattern_literals(pattern).map_err(|e| (index, owners[index], e))?,
            };
            max_len.push(known.max_len);
            in_line.push(known.in_line);
            phrases.push(known.phrase);
            per_pattern.push(known.literals);
        }
        let groups = group_literals(per_pattern);
        let prefilter = if groups.literals.is_empty() {
            None
        } else {
            Some(LiteralPrefilter::new(&groups.literals))
        };
        Ok(TargetSet {
            regexes: patterns.iter().map(|_| OnceLock::new()).collect(),
            dfas: patterns.iter().map(|_| OnceLock::new()).collect(),
            patterns: patterns.iter().map(|p| Cow::Owned(p.to_string())).collect(),
            owners,
            prefilter,
            literal_patterns: PatternLists {
                starts: groups.starts.into(),
                patterns: groups.patterns.into(),
            },
            always: groups.always.into(),
            max_len: max_len.into(),
            in_line: in_line.into(),
            phrases: phrases.into(),
        })
    }

    /// The set of a built-in target, from the build's data (`new` would
    /// compute the same: a test checks that).
    fn builtin(known: &'static precompiled::BuiltinTarget, owners: Vec<usize>) -> TargetSet {
        TargetSet {
            regexes: known.patterns.iter().map(|_| OnceLock::new()).collect(),
            dfas: known.patterns.iter().map(|_| OnceLock::new()).collect(),
            patterns: Cow::Borrowed(known.patterns),
            owners,
            prefilter: (!known.literals.is_empty()).then(|| LiteralPrefilter::builtin(known)),
            literal_patterns: PatternLists {
                starts: known.literal_starts.into(),
                patterns: known.literal_patterns.into(),
            },
            always: known.always.into(),
            max_len: known.max_len.into(),
            in_line: known.in_line.into(),
            // Cloning a phrase of the build's copies no text.
            phrases: known.phrases.into(),
        }
    }

    /// The regex of pattern `index`, compiled on first use.
    fn regex(&self, index: usize) -> Result<&MetaRegex, &str> {
        self.regexes[index]
            .get_or_init(|| compile_set(std::slice::from_ref(&self.patterns[index])))
            .as_ref()
            .map_err(String::as_str)
    }

    /// Whether pattern `index` matches within `range` of `haystack`: by its
    /// precompiled DFA if it has one, else by its regex. A pattern that does
    /// not compile never matches; check_examples reports it for rule files
    /// from a config.
    fn is_match(&self, index: usize, haystack: &[u8], range: Range<usize>) -> bool {
        let dfa = self.dfas[index].get_or_init(|| PrecompiledDfa::find(&self.patterns[index]));
        if let Some(matched) = dfa
            .as_ref()
            .and_then(|dfa| dfa.is_match(haystack, range.clone()))
        {
            return matched;
        }
        self.regex(index)
            .is_ok_and(|re| re.is_match(Input::new(haystack).range(range)))
    }

    /// The indices (ascending) of the patterns that match somewhere in
    /// `text`, but only the first such pattern of each rule: callers want
    /// the rules, or (for not_examples) a rule's first matching pattern.
    fn which(&self, text: &str) -> Vec<usize> {
        let mut found = Vec::new();
        self.each_match(text, |i| found.push(i));
        found
    }

    /// Calls `found` with each index [`TargetSet::which`] returns, in
    /// order, without collecting them: most texts match no pattern, and the
    /// rule look-ups of an analysis were a tenth of its heap allocations.
    fn each_match(&self, text: &str, mut found: impl FnMut(usize)) {
        let haystack = text.as_bytes();
        // Every occurrence of a literal, as (pattern, start, end), in the
        // thread's list of the previous call (a call from `found` gets a
        // new one). Room for the usual few dozen at once when the first one
        // is found: growing the list from empty was a tenth of the
        // prefilter's cost.
        let mut hits = HITS.take();
        hits.clear();
        let found_all = self.prefilter.as_ref().is_none_or(|prefilter| {
            prefilter.occurrences(haystack, |literal, start, end| {
                if hits.capacity() == 0 {
                    hits.reserve(HITS_CAPACITY + self.always.len());
                }
                for &i in &self.literal_patterns[literal] {
                    hits.push((i, start, end));
                }
            })
        });
        // Without the occurrences, every pattern is run on the whole text.
        let everywhere = !found_all;
        if everywhere {
            hits.clear();
            hits.extend((0..self.patterns.len()).map(|i| (i, 0, haystack.len())));
        } else {
            hits.extend(self.always.iter().map(|&i| (i, 0, haystack.len())));
        }
        hits.sort_unstable();
        // The rule of the last pattern found.
        let mut last_owner = None;
        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            let i = group[0].0;
            let owner = self.owners[i];
            if last_owner == Some(owner) {
                continue;
            }
            let matched = match self.max_len[i] {
                // Any match starts at an occurrence of a literal.
                _ if !everywhere && self.phrases[i].is_some() => {
                    self.phrases[i].as_ref().is_some_and(|phrase| {
                        group
                            .iter()
                            .any(|&(_, start, _)| phrase.matches_at(haystack, start))
                    })
                }
                // Any match lies within `len` bytes of a literal it contains.
                Some(len) if !everywhere => windows(group, len, haystack.len())
                    .any(|(start, end)| self.is_match(i, haystack, start..end)),
                // Or within the line of one.
                None if !everywhere && self.in_line[i] => line_windows(group, haystack)
                    .any(|(start, end)| self.is_match(i, haystack, start..end)),
                _ => self.is_match(i, haystack, 0..haystack.len()),
            };
            if matched {
                last_owner = Some(owner);
                found(i);
            }
        }
        if hits.capacity() <= MAX_KEPT_HITS {
            HITS.set(hits);
        }
    }
}

thread_local! {
    /// The list of literal occurrences of [`TargetSet::each_match`], kept
    /// for the thread's next call: an analysis looks up a dozen texts, and
    /// a new list for each was a twentieth of its heap allocations.
    static HITS: std::cell::Cell<Vec<(usize, usize, usize)>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest list of occurrences (entries) a thread keeps between calls
/// of [`TargetSet::each_match`]: a huge text's list is freed, not held.
const MAX_KEPT_HITS: usize = 4096;

/// How many literal occurrences [`TargetSet::which`] makes room for at
/// first: a body usually has a dozen or two.
const HITS_CAPACITY: usize = 32;

/// The merged ranges of `text_len` bytes that can hold a match of at most
/// `len` bytes containing one of `hits` (sorted `(pattern, start, end)`
/// occurrences of the pattern's literals). Each range keeps its true
/// position in the text, so `\b` at its edges still sees the neighbours.
fn windows(
    hits: &[(usize, usize, usize)],
    len: usize,
    text_len: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut ranges = hits.iter().map(move |&(_, start, end)| {
        (
            end.saturating_sub(len),
            start.saturating_add(len).min(text_len),
        )
    });
    let mut current = ranges.next();
    std::iter::from_fn(move || {
        let (mut start, mut end) = current?;
        loop {
            match ranges.next() {
                Some((s, e)) if s <= end => {
                    start = start.min(s);
                    end = end.max(e);
                }
                next => {
                    current = next;
                    return Some((start, end));
                }
            }
        }
    })
}

/// The lines of `haystack` (without their line feeds) that hold one of
/// `hits` (sorted `(pattern, start, end)` occurrences of the pattern's
/// literals, none holding a line feed), each once, in order. Each keeps its
/// true position in the text, so `^` and `\b` at its edges still see the
/// neighbours. Linear: a line feed is looked for only between hits.
fn line_windows<'h>(
    hits: &'h [(usize, usize, usize)],
    haystack: &'h [u8],
) -> impl Iterator<Item = (usize, usize)> + 'h {
    // The end of the last window (a line feed, or the text's end).
    let mut last_end: Option<usize> = None;
    hits.iter().filter_map(move |&(_, start, end)| {
        let from = match last_end {
            Some(last) if start < last => return None,
            Some(last) => last,
            None => 0,
        };
        let line_start = haystack
            .get(from..start)
            .and_then(|before| memchr::memrchr(b'\n', before))
            .map_or(from, |at| from + at + 1);
        let line_end = haystack
            .get(end..)
            .and_then(|after| memchr::memchr(b'\n', after))
            .map_or(haystack.len(), |at| end + at);
        last_end = Some(line_end);
        Some((line_start, line_end))
    })
}

impl RuleSet {
    /// The built-in rules. They are validated by the test suite, so failure
    /// here means a broken build rather than bad user input.
    ///
    /// Their examples are checked by the test suite, not at every start-up:
    /// the compiled-in files cannot change after the tests ran, and the check
    /// would double the start-up time of a one-file `inspect`.
    ///
    /// They are the data that `build.rs` read from the YAML (the same
    /// data; reading YAML was a quarter of that start-up, JSON a sixth).
    pub fn builtin() -> Result<RuleSet, RuleError> {
        Self::compile(BUILTIN_RULE_FILES.iter().map(|(name, yaml)| {
            let text = match precompiled::rules(name) {
                Some(rules) => RuleText::Builtin(rules),
                None => RuleText::Yaml(yaml.to_string()),
            };
            (name.to_string(), text)
        }))
    }

    /// The built-in rules with files from `dir` replacing (same name) or
    /// adding to them.
    pub fn with_dir(dir: &Path) -> Result<RuleSet, RuleError> {
        let mut files: Vec<(String, String)> = BUILTIN_RULE_FILES
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        let entries = std::fs::read_dir(dir).map_err(|e| RuleError {
            file: dir.display().to_string(),
            message: format!("cannot read the rules directory: {e}"),
        })?;
        let mut names = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                names.push(path);
            }
        }
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path).map_err(|e| RuleError {
                file: path.display().to_string(),
                message: e.to_string(),
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            match files.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = text,
                None => files.push((path.display().to_string(), text)),
            }
        }
        Self::from_sources(files)
    }

    /// Loads and validates rules from `(file name, YAML text)` pairs,
    /// including every rule's examples and not_examples.
    pub fn from_sources(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RuleSet, RuleError> {
        let set = Self::compile(files.into_iter().map(|(n, t)| (n, RuleText::Yaml(t))))?;
        set.check_examples()?;
        Ok(set)
    }

    /// Parses and compiles rules (ids, fields and patterns validated), without
    /// running the examples.
    fn compile(files: impl IntoIterator<Item = (String, RuleText)>) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        let mut seen = HashSet::new();
        for (file, text) in files {
            let raw: Vec<RawRule> = match &text {
                RuleText::Yaml(yaml) => serde_saphyr::from_str(yaml)
                    .map(|raw: RawRuleFile| raw.rules)
                    .map_err(|e| e.to_string()),
                RuleText::Builtin(rules) => rules.iter().map(RawRule::builtin).collect(),
            }
            .map_err(|message| RuleError {
                file: file.clone(),
                message,
            })?;
            for raw_rule in raw {
                let rule = compile_rule(&file, raw_rule)?;
                if !seen.insert(rule.id.clone()) {
                    return Err(RuleError {
                        file,
                        message: format!("rule id {:?} is defined twice", rule.id),
                    });
                }
                rules.push(rule);
            }
        }
        let mut by_target: Vec<(Target, Vec<&str>, Vec<usize>)> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let at = match by_target.iter().position(|(t, _, _)| *t == rule.target) {
                Some(at) => at,
                None => {
                    by_target.push((rule.target.clone(), Vec::new(), Vec::new()));
                    by_target.len() - 1
                }
            };
            let (_, patterns, owners) = &mut by_target[at];
            for p in &rule.patterns {
                patterns.push(p);
                owners.push(index);
            }
        }
        let mut sets = Vec::with_capacity(by_target.len());
        for (target, patterns, owners) in by_target {
            // Patterns are parsed here, so a syntax error is a load error;
            // they are compiled on first use (and all of them by
            // check_examples).
            let set = TargetSet::new(&patterns, owners).map_err(|(i, owner, e)| {
                let rule = &rules[owner];
                RuleError {
                    file: rule.file.clone(),
                    message: format!(
                        "rule {:?}: pattern {:?} is invalid: {e}",
                        rule.id, patterns[i]
                    ),
                }
            })?;
            sets.push((target, set));
        }
        Ok(RuleSet { rules, sets })
    }

    /// Every rule's patterns must compile, and the rule must match each of
    /// its examples and none of its not_examples, through the same prefilter
    /// and regexes that analysis uses.
    pub fn check_examples(&self) -> Result<(), RuleError> {
        for (index, rule) in self.rules.iter().enumerate() {
            let err = |message: String| RuleError {
                file: rule.file.clone(),
                message: format!("rule {:?}: {message}", rule.id),
            };
            let Some(set) = self.set(&rule.target) else {
                continue;
            };
            let owners = &set.owners;
            for (i, pattern) in set.patterns.iter().enumerate() {
                if owners[i] == index {
                    set.regex(i)
                        .map_err(|e| err(format!("pattern {pattern:?} is invalid: {e}")))?;
                }
            }
            let hits = |text: &str| -> Vec<usize> {
                set.which(text)
                    .into_iter()
                    .filter(|i| owners[*i] == index)
                    .collect()
            };
            for example in &rule.examples {
                if hits(example).is_empty() {
                    return Err(err(format!(
                        "example {example:?} matches none of its patterns"
                    )));
                }
            }
            for example in &rule.not_examples {
                if let Some(i) = hits(example).first() {
                    let first = owners.iter().position(|o| *o == index).unwrap_or(0);
                    let pattern = rule.patterns.get(i - first).map_or("?", String::as_str);
                    return Err(err(format!(
                        "not_example {example:?} matches pattern {pattern:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every loaded rule, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The patterns of `target`, if a rule looks there.
    fn set(&self, target: &Target) -> Option<&TargetSet> {
        self.sets
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, set)| set)
    }

    /// The header names that header rules look at (lower case).
    pub fn header_targets(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().filter_map(|(t, _)| match t {
            Target::Header(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The rules whose patterns match `text` at `target`, each once.
    pub fn matching<'a>(&'a self, target: &Target, text: &str) -> Vec<&'a Rule> {
        let mut rules = Vec::new();
        self.for_each_matching(target, text, |rule| rules.push(rule));
        rules
    }

    /// Calls `each` with the rules of [`RuleSet::matching`], in the same
    /// order, without collecting them (an analysis looks up a dozen texts,
    /// most of which match nothing).
    pub fn for_each_matching<'a>(
        &'a self,
        target: &Target,
        text: &str,
        mut each: impl FnMut(&'a Rule),
    ) {
        if let Some(set) = self.set(target) {
            // A rule's patterns are consecutive, and each_match reports one
            // pattern per rule.
            set.each_match(text, |i| each(&self.rules[set.owners[i]]));
        }
    }
}

fn compile_rule(file: &str, raw: RawRule) -> Result<Rule, RuleError> {
    let err = |message: String| RuleError {
        file: file.to_string(),
        message: format!("rule {:?}: {message}", raw.id),
    };
    if raw.id.trim().is_empty() || raw.id.contains(char::is_whitespace) {
        return Err(err("the id must be a non-empty word".into()));
    }
    let target = match (raw.field.as_str(), &raw.header) {
        ("subject", None) => Target::Subject,
        ("sender", None) => Target::Sender,
        ("body", None) => Target::Body,
        ("header", Some(name)) if !name.trim().is_empty() => {
            Target::Header(name.trim().to_ascii_lowercase())
        }
        ("header", _) => return Err(err("`field: header` needs `header: NAME`".into())),
        (other, None) => {
            return Err(err(format!(
                "unknown field {other:?} (expected subject, sender, body or header)"
            )))
        }
        (_, Some(_)) => return Err(err("`header:` is only valid with `field: header`".into())),
    };
    if raw.patterns.is_empty() {
        return Err(err("it has no patterns".into()));
    }
    if raw.examples.is_empty() {
        return Err(err("it needs at least one example that matches".into()));
    }
    let patterns: Vec<String> = if raw.folded {
        raw.patterns
    } else {
        raw.patterns
            .iter()
            .map(|p| fold_non_ascii_case(p))
            .collect()
    };
    Ok(Rule {
        id: raw.id,
        kind: raw.kind,
        target,
        strength: raw.strength,
        description: raw.description,
        file: file.to_string(),
        patterns,
        examples: raw.examples,
        not_examples: raw.not_examples,
    })
}

/// Compiles patterns into one regex that reports every pattern that
/// matches. Analysis compiles each pattern alone and asks only whether it
/// matches (after the literal prefilter of [`TargetSet`]); the tests compile
/// all of a target's patterns together, as analysis once did, to check that
/// the prefilter changes no result. Case-insensitive, on bytes, Unicode
/// classes off: ASCII `\b`, `\s` and `.` keep the engine on its fast lazy
/// DFA (a Unicode word boundary sends it to the slow PikeVM, and Unicode
/// `.{0,80}` makes automata that take long to build); non-ASCII literals
/// still match as UTF-8, with their case handled by [`fold_non_ascii_case`].
/// Prefilters and the capture engines are left out: a "does it match"
/// search needs neither, the literal prefilter has already run, and building
/// them is most of the compile cost.
fn compile_set(patterns: &[impl AsRef<str>]) -> Result<MetaRegex, String> {
    MetaRegex::builder()
        .configure(
            MetaRegex::config()
                .match_kind(MatchKind::All)
                // Analysis only asks whether a pattern matches: no capture
                // states makes a smaller NFA that compiles faster.
                .which_captures(WhichCaptures::None)
                .auto_prefilter(false)
                .onepass(false)
                .backtrack(false)
                // No full DFA either: for a small pattern the meta engine
                // would build one eagerly, which costs more than the few
                // searches it serves (the lazy DFA builds only what a search
                // visits).
                .dfa(false)
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT * 8))
                // The lazy DFA's state cache: a set of many phrases needs more
                // than the default, or the cache is rebuilt on every message.
                .hybrid_cache_capacity(DFA_CACHE_LIMIT),
        )
        .syntax(syntax_config())
        .build_many(patterns)
        .map_err(|e| e.to_string())
}

/// Where a [`NetTerm`] looks, in IMAP SEARCH terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetField {
    /// The (decoded) Subject: `SUBJECT`.
    Subject,
    /// The From header or the Return-Path: `FROM` and `HEADER Return-Path`.
    Sender,
    /// One header field, by lower-case name: `HEADER name`.
    Header(String),
}

/// One term of a search net: the messages whose `field` contains `text`
/// (ASCII case-insensitively; an empty `text` means "has the field").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetTerm {
    /// Where to look.
    pub field: NetField,
    /// What must occur there: printable, valid UTF-8, never CR or LF.
    pub text: String,
}

/// What the header triage builds the sender text from ("From: F\nReturn-Path: R"):
/// a literal that overlaps these pieces may occur without occurring in F or R.
const SENDER_FRAMING: &[&[u8]] = &[b"from: ", b"\nreturn-path: "];

impl RuleSet {
    /// The terms of a server-side search that finds every message whose
    /// subject, sender or one of `header_fields` a rule could match: each
    /// subject, sender and header pattern needs one of its required literals
    /// (see [`TargetSet`]) to occur in any text it matches, and IMAP SEARCH
    /// matches substrings ASCII case-insensitively, so a message none of
    /// these terms finds matches none of those patterns. Each literal is cut
    /// to a substring a SEARCH string can carry (no control characters,
    /// valid UTF-8; for the sender, nothing of the "From: "/"Return-Path: "
    /// framing the triage adds) — a substring of a required literal is
    /// required too. Body rules and header rules on other fields are left
    /// out (the header triage does not look at them). A header pattern
    /// without a literal becomes "has the field".
    ///
    /// Errs, naming the pattern, when a subject or sender pattern has no
    /// usable literal: no sound net exists, so every message needs its
    /// header looked at.
    pub fn search_net(&self, header_fields: &[&str]) -> Result<Vec<NetTerm>, String> {
        let mut terms: Vec<NetTerm> = Vec::new();
        for rule in &self.rules {
            let field = match &rule.target {
                Target::Subject => NetField::Subject,
                Target::Sender => NetField::Sender,
                Target::Header(name)
                    if header_fields.iter().any(|f| f.eq_ignore_ascii_case(name)) =>
                {
                    NetField::Header(name.clone())
                }
                Target::Header(_) | Target::Body => continue,
            };
            let sender = field == NetField::Sender;
            let usable = |l: &[u8]| net_usable(l, sender);
            for pattern in &rule.patterns {
                let hir = syntax::parse_with(pattern, &syntax_config())
                    .map_err(|e| format!("rule {:?}: pattern {pattern:?}: {e}", rule.id))?;
                match net_literals(&hir, &usable) {
                    Some(literals) => terms.extend(literals.into_iter().map(|l| NetTerm {
                        field: field.clone(),
                        text: String::from_utf8_lossy(&l).into_owned(),
                    })),
                    None if matches!(field, NetField::Header(_)) => terms.push(NetTerm {
                        field: field.clone(),
                        text: String::new(),
                    }),
                    None => {
                        return Err(format!(
                            "rule {:?}: pattern {pattern:?} has no literal a server search can look for",
                            rule.id
                        ))
                    }
                }
            }
        }
        terms.sort();
        terms.dedup();
        // A term whose text contains another term's text (same field) finds
        // nothing more.
        let kept: Vec<NetTerm> = terms
            .iter()
            .filter(|t| {
                !terms.iter().any(|o| {
                    o.field == t.field
                        && o.text.len() < t.text.len()
                        && t.text
                            .to_ascii_lowercase()
                            .contains(&o.text.to_ascii_lowercase())
                })
            })
            .cloned()
            .collect();
        Ok(kept)
    }
}

/// The best set of literals, each usable in a search, one of which occurs
/// in every text `hir` matches; `None` when there is none with literals of
/// at least [`MIN_LITERAL_LEN`] bytes. Unlike [`pattern_literals`] it
/// weighs every piece of a concatenation (and every run of exact pieces)
/// on its own, so that one unusable piece (say, a `^From:` the triage's
/// sender text always contains) does not hide a usable one.
fn net_literals(hir: &Hir, usable: &dyn Fn(&[u8]) -> bool) -> Option<Vec<Vec<u8>>> {
    let clean = |set: Option<Vec<Vec<u8>>>| -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for literal in set? {
            out.push(usable_substring(&literal, usable)?);
        }
        Some(net_canonical(out))
    };
    let mut best = clean(facts(hir).required());
    match hir.kind() {
        HirKind::Capture(capture) => best = better(best, net_literals(&capture.sub, usable)),
        HirKind::Repetition(rep) if rep.min > 0 => {
            best = better(best, net_literals(&rep.sub, usable));
        }
        HirKind::Alternation(subs) => {
            let mut all = Some(Vec::new());
            for sub in subs {
                all = all.zip(net_literals(sub, usable)).map(|(mut a, b)| {
                    a.extend(b);
                    a
                });
            }
            best = better(best, all.map(net_canonical));
        }
        HirKind::Concat(subs) => {
            let mut run = vec![Vec::new()];
            for sub in subs {
                best = better(best, net_literals(sub, usable));
                match facts(sub).exact {
                    Some(exact) if run.len() * exact.len() <= MAX_LITERALS => {
                        run = net_canonical(
                            run.iter()
                                .flat_map(|x| exact.iter().map(move |y| [x.as_slice(), y].concat()))
                                .collect(),
                        );
                    }
                    Some(exact) => {
                        best = better(best, clean(Some(std::mem::replace(&mut run, exact))));
                    }
                    None => {
                        best = better(
                            best,
                            clean(Some(std::mem::replace(&mut run, vec![Vec::new()]))),
                        );
                    }
                }
            }
            best = better(best, clean(Some(run)));
        }
        _ => {}
    }
    best.filter(|set| shortest(set) >= MIN_LITERAL_LEN)
}

/// Literals as a server's case-insensitive search sees them: the valid
/// UTF-8 start of each lower-cased (the case pairs of non-ASCII letters,
/// which the rule patterns spell out, are one search string), sorted,
/// without duplicates.
fn net_canonical(set: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = set
        .into_iter()
        .map(|l| {
            let valid = match std::str::from_utf8(&l) {
                Ok(text) => text.len(),
                Err(e) => e.valid_up_to(),
            };
            let mut lower = String::from_utf8_lossy(&l[..valid])
                .to_lowercase()
                .into_bytes();
            lower.extend_from_slice(&l[valid..]);
            lower
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The longest substring of `literal` (at least [`MIN_LITERAL_LEN`] bytes)
/// that `usable` accepts.
fn usable_substring(literal: &[u8], usable: &dyn Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    (MIN_LITERAL_LEN..=literal.len())
        .rev()
        .find_map(|len| literal.windows(len).find(|w| usable(w)).map(<[u8]>::to_vec))
}

/// Whether a search string can carry `literal` and finding it means what
/// the triage means: printable, valid UTF-8, and for the sender nothing
/// of the framing the triage puts around From and Return-Path.
fn net_usable(literal: &[u8], sender: bool) -> bool {
    let printable = literal.iter().all(|b| *b >= 0x20 && *b != 0x7f);
    if !printable || std::str::from_utf8(literal).is_err() {
        return false;
    }
    !sender
        || !SENDER_FRAMING.iter().any(|piece| {
            piece.windows(literal.len()).any(|w| w == literal)
                || (1..=literal.len().min(piece.len())).any(|k| piece.ends_with(&literal[..k]))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(yaml: &str) -> Result<RuleSet, RuleError> {
        RuleSet::from_sources([("t.yaml".to_string(), yaml.to_string())])
    }

    #[test]
    fn builtin_rules_load_and_every_example_matches() {
        let set = RuleSet::builtin().expect("built-in rules are valid");
        set.check_examples().unwrap_or_else(|e| panic!("{e}"));
        assert!(set.rules().len() > 20);
    }

    /// The built-in rules are read from the build's Rust rendering of the
    /// YAML files: it must say exactly what the YAML says.
    #[test]
    fn builtin_data_reads_as_the_yaml() {
        let from_data = RuleSet::builtin().expect("built-in rules are valid");
        let from_yaml = RuleSet::compile(
            BUILTIN_RULE_FILES
                .iter()
                .map(|(n, s)| (n.to_string(), RuleText::Yaml(s.to_string()))),
        )
        .expect("built-in YAML is valid");
        for (name, _) in BUILTIN_RULE_FILES {
            assert!(
                precompiled::rules(name).is_some(),
                "no build data for {name}"
            );
        }
        assert_eq!(
            format!("{:?}", from_data.rules()),
            format!("{:?}", from_yaml.rules())
        );
    }

    #[test]
    fn each_builtin_file_loads_alone() {
        for (name, text) in BUILTIN_RULE_FILES {
            let set = RuleSet::from_sources([(name.to_string(), text.to_string())])
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!set.rules().is_empty(), "{name} has no rules");
        }
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = load("rules:\n  - id: x\n    kind: bounce\n    field: subject\n    patterns: ['(']\n    examples: [a]\n")
            .unwrap_err();
        assert!(e.to_string().contains("pattern \"(\" is invalid"), "{e}");
        let e = load("rules:\n  - id: x\n    kind: bounce\n    field: subject\n    patterns: [abc]\n    examples: [xyz]\n")
            .unwrap_err();
        assert!(e.to_string().contains("matches none"), "{e}");
        let e = load("rules:\n  - id: x\n    kind: bouncy\n    field: subject\n    patterns: [a]\n    examples: [a]\n")
            .unwrap_err();
        assert!(e.to_string().contains("t.yaml"), "{e}");
        let e = load("rules:\n  - id: x\n    kind: bounce\n    field: subject\n    patterns: [a]\n    examples: [a]\n    colour: red\n")
            .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = load(
            "rules:\n  - id: x\n    kind: bounce\n    field: subject\n    patterns: [a]\n    examples: [a]\n  - id: x\n    kind: bounce\n    field: body\n    patterns: [a]\n    examples: [a]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("defined twice"), "{e}");
        let e = load("rules:\n  - id: x\n    kind: bounce\n    field: header\n    patterns: [a]\n    examples: [a]\n")
            .unwrap_err();
        assert!(e.to_string().contains("header: NAME"), "{e}");
    }

    /// The rule ids that the old single overlapping search over one set of
    /// all of a target's patterns reports: what the prefilter must match.
    fn full_set_matching(
        set: &RuleSet,
        full: &HashMap<Target, MetaRegex>,
        target: &Target,
        text: &str,
    ) -> Vec<String> {
        use regex_automata::PatternSet;
        let (Some(t), Some(all)) = (set.set(target), full.get(target)) else {
            return Vec::new();
        };
        let mut found = PatternSet::new(all.pattern_len());
        all.which_overlapping_matches(&Input::new(text.as_bytes()), &mut found);
        let mut hits: Vec<usize> = found.iter().map(|p| t.owners[p.as_usize()]).collect();
        hits.dedup();
        hits.into_iter().map(|i| set.rules[i].id.clone()).collect()
    }

    fn ids(rules: Vec<&Rule>) -> Vec<String> {
        rules.into_iter().map(|r| r.id.clone()).collect()
    }

    /// Every example and not_example of `set`, and lines (and whole texts)
    /// of some real messages.
    fn sample_texts(set: &RuleSet) -> Vec<String> {
        let mut texts: Vec<String> = set
            .rules()
            .iter()
            .flat_map(|r| r.examples.iter().chain(&r.not_examples).cloned())
            .collect();
        // And lines (and whole texts) of some real messages.
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let mut files = Vec::new();
        for dir in ["sisimai/maildir/bsd", "ham/rspamd", "autoreply/mimekit"] {
            if let Ok(entries) = std::fs::read_dir(corpus.join(dir)) {
                let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
                names.sort();
                files.extend(names.into_iter().step_by(7).take(6));
            }
        }
        let mut lines = 0;
        for file in &files {
            let Ok(bytes) = std::fs::read(file) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes).to_string();
            for line in text.lines().filter(|l| !l.trim().is_empty()).take(60) {
                texts.push(line.to_string());
                lines += 1;
            }
            texts.push(text);
        }
        assert!(lines >= 200, "only {lines} corpus lines");
        texts
    }

    #[test]
    fn prefilter_gives_the_same_rules_as_the_full_set() {
        let set = RuleSet::builtin().expect("built-in rules are valid");
        let targets: Vec<Target> = set.sets.iter().map(|(t, _)| t.clone()).collect();
        let full: HashMap<Target, MetaRegex> = set
            .sets
            .iter()
            .map(|(target, t)| {
                let all = compile_set(&t.patterns[..]).expect("the patterns compile together");
                (target.clone(), all)
            })
            .collect();
        let texts = sample_texts(&set);
        // The prefilter must actually filter: few patterns lack a literal.
        let (always, total) = set.sets.iter().fold((0, 0), |(a, t), (_, s)| {
            (a + s.always.len(), t + s.patterns.len())
        });
        eprintln!("{always} of {total} patterns run without a prefilter");
        assert!(
            always * 5 < total,
            "{always} of {total} patterns lack a literal"
        );
        for text in &texts {
            for target in &targets {
                assert_eq!(
                    ids(set.matching(target, text)),
                    full_set_matching(&set, &full, target, text),
                    "{target:?}: {text:?}"
                );
            }
        }
    }

    /// Every built-in target's ASCII literals, and the other literals of
    /// some, have an automaton from build.rs, and it finds exactly the
    /// occurrences that the run-time automaton for the same literals finds.
    #[test]
    fn precompiled_prefilters_find_what_aho_corasick_finds() {
        let set = RuleSet::builtin().expect("built-in rules are valid");
        let texts = sample_texts(&set);
        let mut checked = 0;
        let mut non_ascii = 0;
        let halves = set.sets.iter().flat_map(|(target, t)| {
            let prefilter = t.prefilter.as_ref();
            [
                (target, true, prefilter.and_then(|p| p.ascii.as_ref())),
                (target, false, prefilter.and_then(|p| p.non_ascii.as_ref())),
            ]
        });
        for (target, ascii, search) in halves {
            let Some(search) = search else {
                continue;
            };
            let dfa = match &search.matcher {
                LiteralMatcher::Precompiled(dfa) => dfa,
                LiteralMatcher::Built { .. } if !ascii => continue,
                LiteralMatcher::Built { .. } => panic!("{target:?}: no precompiled prefilter"),
            };
            non_ascii += usize::from(!ascii);
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(aho_corasick::MatchKind::Standard)
                .build(dfa.literals())
                .expect("the literals make an automaton");
            // Each text also shifted by up to 8 bytes: the scan takes 8
            // bytes per round, so occurrences end at every place in a round
            // and in the remainder.
            let shifted = texts.iter().flat_map(|text| {
                (0..=8).map(move |shift| text.as_bytes().get(shift..).unwrap_or_default())
            });
            for text in shifted {
                let mut by_dfa = Vec::new();
                assert!(dfa.occurrences(text, |l, at| by_dfa.push((l, at))));
                let mut by_ac: Vec<_> = ac
                    .find_overlapping_iter(text)
                    .map(|m| (m.pattern().as_usize(), m.range()))
                    .collect();
                by_dfa.sort_by_key(|(l, at)| (*l, at.start));
                by_ac.sort_by_key(|(l, at)| (*l, at.start));
                assert_eq!(by_dfa, by_ac, "{target:?}: {text:?}");
            }
            checked += 1;
        }
        assert!(checked >= 3, "only {checked} precompiled prefilters");
        assert!(
            non_ascii >= 2,
            "{non_ascii} precompiled non-ASCII prefilters"
        );
    }

    /// The prefilter searches for its non-ASCII literals only around the
    /// text's non-ASCII bytes; it must find exactly the occurrences that a
    /// search of the whole text finds.
    #[test]
    fn non_ascii_stretches_hold_every_occurrence() {
        let set = RuleSet::builtin().expect("built-in rules are valid");
        let mut texts = sample_texts(&set);
        // Non-ASCII literals near the ends, near each other and far apart.
        let rules_text: Vec<String> = set
            .rules()
            .iter()
            .flat_map(|r| r.examples.iter())
            .filter(|e| !e.is_ascii())
            .cloned()
            .collect();
        assert!(rules_text.len() >= 5, "few non-ASCII examples");
        for example in &rules_text {
            for pad in [0, 1, 5, 11, 12, 30] {
                let gap = "x".repeat(pad);
                texts.push(format!("{example}{gap}é{gap}{example}"));
                texts.push(format!("—{gap}{}", example.to_uppercase()));
                texts.push(format!("{gap}{example}{gap}"));
            }
        }
        let mut compared = 0;
        for (_, t) in &set.sets {
            let Some(prefilter) = &t.prefilter else {
                continue;
            };
            let Some(search) = &prefilter.non_ascii else {
                continue;
            };
            for text in &texts {
                let haystack = text.as_bytes();
                let mut stretched = Vec::new();
                assert!(prefilter.occurrences(haystack, |l, s, e| stretched.push((l, s, e))));
                let mut whole = Vec::new();
                if let Some(ascii) = &prefilter.ascii {
                    ascii.occurrences(haystack, 0..haystack.len(), &mut |l, s, e| {
                        whole.push((l, s, e))
                    });
                }
                assert!(
                    search.occurrences(haystack, 0..haystack.len(), &mut |l, s, e| {
                        whole.push((l, s, e))
                    })
                );
                stretched.sort_unstable();
                whole.sort_unstable();
                assert_eq!(stretched, whole, "{text:?}");
                compared += usize::from(!whole.is_empty());
            }
        }
        assert!(compared > 50, "only {compared} texts with occurrences");
    }

    /// A phrase pattern is decided at the occurrences of its literals,
    /// without its DFA: on every sample text, the corpus and texts made of
    /// the phrases' pieces (in either case, with word and other bytes
    /// around them), that must find exactly what running every pattern
    /// finds.
    #[test]
    fn phrases_match_exactly_where_their_patterns_do() {
        use crate::analysis::text::tests::{corpus_texts, generated_texts};
        let set = RuleSet::builtin().expect("built-in rules are valid");
        let mut texts = sample_texts(&set);
        texts.extend(corpus_texts().into_iter().map(|text| {
            let end = (0..=text.len().min(16 * 1024))
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text[..end].to_string()
        }));
        let mut phrases = 0;
        for (target, with) in &set.sets {
            let mut without = with.clone();
            without.phrases.iter_mut().for_each(|p| *p = None);
            let mut alphabet: Vec<String> = ["", " ", "x", "_", "-", "\n", "\u{e9}", "7"]
                .map(String::from)
                .to_vec();
            for phrase in with.phrases.iter().flatten() {
                phrases += 1;
                for text in phrase.pieces.iter().flat_map(|piece| piece.iter()) {
                    let text = String::from_utf8_lossy(text).into_owned();
                    alphabet.push(text.to_uppercase());
                    alphabet.push(text.chars().skip(1).collect());
                    alphabet.push(text);
                }
            }
            let alphabet: Vec<&str> = alphabet.iter().map(String::as_str).collect();
            let generated = generated_texts(&alphabet, 3_000);
            for text in texts.iter().chain(&generated) {
                assert_eq!(
                    with.which(text),
                    without.which(text),
                    "{target:?}: {text:?}"
                );
            }
        }
        assert!(phrases > 50, "only {phrases} phrases");
    }

    #[test]
    fn phrase_pieces_and_boundaries() {
        use super::super::pattern_syntax::Phrase;
        let phrase = |p: &str| pattern_literals(p).ok().and_then(|k| k.phrase);
        let found = phrase(r"\bdelivery (has )?failed\b").expect("a phrase");
        assert_eq!(
            found,
            Phrase {
                pieces: Cow::Borrowed(&[
                    Cow::Borrowed(&[Cow::Borrowed(b"delivery ")]),
                    Cow::Borrowed(&[Cow::Borrowed(b""), Cow::Borrowed(b"has ")]),
                    Cow::Borrowed(&[Cow::Borrowed(b"failed")])
                ]),
                word_start: true,
                word_end: true,
            }
        );
        assert!(found.matches_at(b"the Delivery has FAILED.", 4));
        assert!(!found.matches_at(b"the Delivery has FAILED.", 5));
        assert!(!found.matches_at(b"xdelivery failed", 1));
        assert!(!found.matches_at(b"delivery failedx", 0));
        assert!(found.matches_at(b"delivery failed", 0));
        // A match must start with a literal; here it is "failed".
        assert_eq!(
            phrase(r"(was|were) (permanently )?(undeliverable|rejected)"),
            None
        );
        // Look-arounds other than \b at the ends, classes and repetitions
        // that have many texts.
        assert_eq!(phrase(r"^undeliverable"), None);
        assert_eq!(phrase(r"undeliver\Bable"), None);
        assert_eq!(phrase(r"undeliverable.*"), None);
        assert_eq!(phrase(r"undeliverable+"), None);
        assert!(phrase(r"undeliverable!?").is_some());
        // Case-sensitive parts cannot be told apart in the analysis.
        assert!(phrase(r"(?i)undeliverable").is_some());
        assert_eq!(phrase(r"(?-i)Undeliverable"), None);
        assert_eq!(phrase(r"(?m-i:Undeliverable) mail"), None);
    }

    #[test]
    fn case_sensitive_patterns_stay_case_sensitive() {
        let set = load(
            "rules:\n  - id: t.sensitive\n    kind: bounce\n    field: subject\n    \
             patterns: ['(?-i)\\bUndeliverable\\b', 'x(?-i:Mail) returned']\n    \
             examples: ['Undeliverable']\n",
        )
        .expect("valid rules");
        let fires = |subject: &str| !set.matching(&Target::Subject, subject).is_empty();
        assert!(fires("Undeliverable: hello"));
        assert!(!fires("undeliverable: hello"));
        assert!(!fires("UNDELIVERABLE: hello"));
        assert!(fires("XMail returned"));
        assert!(!fires("xmail returned"));
    }

    #[test]
    fn non_ascii_stretches_are_merged_and_bounded() {
        assert!(non_ascii_stretches(b"plain ascii", 12).is_empty());
        let text = "abcdefghij\u{e9}klmnopqrstuvwxyz".as_bytes();
        assert_eq!(non_ascii_stretches(text, 4), vec![7..15]);
        assert_eq!(non_ascii_stretches(text, 100), vec![0..text.len()]);
        let two = "\u{e9}abcdefghijklmnop\u{e9}".as_bytes();
        assert_eq!(non_ascii_stretches(two, 3), vec![0..4, 16..20]);
        assert_eq!(non_ascii_stretches(two, 10), vec![0..20]);
    }

    #[test]
    fn line_windows_are_the_lines_of_the_hits() {
        let text = b"first line\nsecond hit hit\n\nthird hit";
        let at = |needle: &str, from: usize| {
            let start = from
                + text[from..]
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes())
                    .expect("in the text");
            (0, start, start + needle.len())
        };
        let hits = [at("hit", 0), at("hit", 20), at("hit", 28)];
        let lines: Vec<_> = line_windows(&hits, text).collect();
        assert_eq!(lines, vec![(11, 25), (27, text.len())]);
        let first = [at("first", 0)];
        assert_eq!(
            line_windows(&first, text).collect::<Vec<_>>(),
            vec![(0, 10)]
        );
    }

    #[test]
    fn in_line_patterns_are_those_without_a_line_feed() {
        let in_line = |p: &str| pattern_literals(p).map(|k| k.in_line).unwrap_or(false);
        assert!(in_line(
            r"this is a delivery status notification[^\n]*failure"
        ));
        assert!(in_line("courier mail server at .* has received"));
        assert!(!in_line(
            r"could not be delivered to one or more of its\s+recipients"
        ));
        assert!(!in_line(r"(?s)courier mail server at .* has received"));
        assert!(!in_line(r"first\nsecond"));
        assert!(!in_line(r"\w"), "no literals: searched everywhere");
    }

    /// A search's literals by index, its longest literal's length, the
    /// literals themselves and whether the build made its automaton.
    type SearchFacts = (Vec<usize>, usize, Vec<Vec<u8>>, bool);

    /// What a search is, for comparing two (see [`SearchFacts`]).
    fn search_facts(search: Option<&LiteralSearch>) -> Option<SearchFacts> {
        let search = search?;
        let (literals, precompiled) = match &search.matcher {
            LiteralMatcher::Precompiled(p) => {
                (p.literals().iter().map(|l| l.to_vec()).collect(), true)
            }
            LiteralMatcher::Built { literals, .. } => (literals.clone(), false),
        };
        Some((
            search.literals.to_vec(),
            search.longest,
            literals,
            precompiled,
        ))
    }

    /// Every built-in target takes the build's data, and that is exactly
    /// what the general path computes from the patterns: the same
    /// literals, the same patterns for each, the same automata, the same
    /// decisions on the corpus, the samples and every rule's examples.
    #[test]
    fn builtin_targets_are_what_the_general_path_computes() {
        use crate::analysis::text::tests::corpus_texts;
        let set = RuleSet::builtin().expect("built-in rules are valid");
        let mut texts = sample_texts(&set);
        texts.extend(corpus_texts());
        for (target, fast) in &set.sets {
            let patterns: Vec<&str> = fast.patterns.iter().map(|p| p.as_ref()).collect();
            let known = precompiled::target(&patterns)
                .unwrap_or_else(|| panic!("{target:?}: the build made no data"));
            assert!(matches!(fast.patterns, Cow::Borrowed(_)), "{target:?}");
            let general = TargetSet::computed(&patterns, fast.owners.clone())
                .unwrap_or_else(|(_, _, e)| panic!("{target:?}: {e}"));
            // Each pattern's facts, parsed here, and their grouping.
            let parsed: Vec<_> = patterns
                .iter()
                .map(|p| pattern_literals(p).expect("the pattern parses"))
                .collect();
            for (i, facts) in parsed.iter().enumerate() {
                assert_eq!(facts.max_len, known.max_len[i], "{}", patterns[i]);
                assert_eq!(facts.in_line, known.in_line[i], "{}", patterns[i]);
                assert_eq!(facts.phrase, known.phrases[i], "{}", patterns[i]);
            }
            let groups = group_literals(parsed.into_iter().map(|k| k.literals));
            let literals: Vec<Vec<u8>> = known.literals.iter().map(|l| l.to_vec()).collect();
            assert_eq!(literals, groups.literals, "{target:?}");
            assert_eq!(known.literal_starts, groups.starts.as_slice());
            assert_eq!(known.literal_patterns, groups.patterns.as_slice());
            assert_eq!(fast.patterns, general.patterns);
            assert_eq!(fast.owners, general.owners);
            assert_eq!(fast.always, general.always);
            assert_eq!(fast.max_len, general.max_len);
            assert_eq!(fast.in_line, general.in_line);
            assert_eq!(fast.phrases, general.phrases);
            for literal in 0..groups.literals.len() {
                assert_eq!(
                    fast.literal_patterns[literal],
                    general.literal_patterns[literal]
                );
            }
            let halves = |t: &TargetSet| {
                let p = t.prefilter.as_ref();
                [
                    search_facts(p.and_then(|p| p.ascii.as_ref())),
                    search_facts(p.and_then(|p| p.non_ascii.as_ref())),
                ]
            };
            assert_eq!(halves(fast), halves(&general), "{target:?}");
            for text in &texts {
                assert_eq!(
                    fast.which(text),
                    general.which(text),
                    "{target:?}: {text:?}"
                );
            }
        }
    }

    /// `fold_non_ascii_case` as it was before it stopped collecting each
    /// character's cases into vectors: the oracle of the test below.
    fn fold_non_ascii_case_before(pattern: &str) -> String {
        if pattern.is_ascii() {
            return pattern.to_string();
        }
        let mut out = String::with_capacity(pattern.len() + 16);
        let mut in_class = false;
        let mut escaped = false;
        for c in pattern.chars() {
            if escaped {
                out.push(c);
                escaped = false;
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '[' if !in_class => {
                    in_class = true;
                    out.push(c);
                }
                ']' if in_class => {
                    in_class = false;
                    out.push(c);
                }
                c if !c.is_ascii() => {
                    let lower: Vec<char> = c.to_lowercase().collect();
                    let upper: Vec<char> = c.to_uppercase().collect();
                    match (lower.as_slice(), upper.as_slice()) {
                        ([l], [u]) if l != u => {
                            if in_class {
                                out.push(*l);
                                out.push(*u);
                            } else {
                                out.push_str(&format!("(?:{l}|{u})"));
                            }
                        }
                        _ => out.push(c),
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    /// `fold_non_ascii_case` folds every built-in pattern, and generated
    /// ones (classes, escapes, letters without a case pair or with a
    /// multi-character one), as it did before.
    #[test]
    fn fold_non_ascii_case_is_what_it_was() {
        use crate::analysis::text::tests::generated_texts;
        let alphabet = [
            "a", "\\", "[", "]", "(", "é", "É", "ß", "ǅ", "ﬁ", "İ", "и", "Д", "ё", "ω", "中", "-",
            "\\b",
        ];
        let raw = BUILTIN_RULE_FILES.iter().flat_map(|(_, yaml)| {
            let file: RawRuleFile = serde_saphyr::from_str(yaml).expect("the built-in YAML parses");
            file.rules.into_iter().flat_map(|r| r.patterns)
        });
        let mut patterns: Vec<String> = raw.collect();
        let non_ascii = patterns.iter().filter(|p| !p.is_ascii()).count();
        assert!(non_ascii > 10, "only {non_ascii} non-ASCII patterns");
        patterns.extend(generated_texts(&alphabet, 5_000));
        for pattern in &patterns {
            assert_eq!(
                fold_non_ascii_case(pattern),
                fold_non_ascii_case_before(pattern),
                "{pattern:?}"
            );
        }
    }

    /// build.rs precompiles every built-in pattern (DFA and literals); one
    /// it skipped would still work, compiled at run time, but slower.
    #[test]
    fn every_builtin_pattern_is_precompiled() {
        let set = RuleSet::builtin().expect("built-in rules are valid");
        for pattern in set.sets.iter().flat_map(|(_, t)| t.patterns.iter()) {
            assert!(
                precompiled::literals(pattern).is_some(),
                "no literals: {pattern}"
            );
            assert!(PrecompiledDfa::find(pattern).is_some(), "no DFA: {pattern}");
        }
    }

    #[test]
    fn required_literals_survive_case_folding() {
        use super::super::pattern_syntax::{literal_syntax_config, required_literals};
        let lits = |p: &str| {
            let hir =
                syntax::parse_with(&fold_non_ascii_case(p), &literal_syntax_config()).unwrap();
            required_literals(&hir).map(|set| {
                set.into_iter()
                    .map(|l| String::from_utf8(l).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            lits(r"\bUndeliver(ed|able)\b"),
            Some(vec!["undeliverable".into(), "undelivered".into()])
        );
        assert_eq!(
            lits("zustellung (fehlgeschlagen|gescheitert|verzögert)").map(|s| s.len()),
            Some(4)
        );
        assert_eq!(lits(r"\bnon[- ]?deliver"), Some(vec!["deliver".into()]));
        assert_eq!(lits(r"\w"), None);
        assert_eq!(lits("ab|cd"), None);
        assert_eq!(lits("(foo)?bar+"), None);
    }

    /// A pattern without literals of three bytes is prefiltered by shorter
    /// ones when it has them; still none for one that needs no literal.
    #[test]
    fn short_literals_only_without_longer_ones() {
        let lits = |p: &str| pattern_literals(p).ok().and_then(|k| k.literals);
        assert_eq!(
            lits(r"\b[245]\.\d{1,3}\.\d{1,3}\b"),
            Some(vec![b"2.".to_vec(), b"4.".to_vec(), b"5.".to_vec()])
        );
        assert_eq!(
            lits(r"\bundeliverable\b"),
            Some(vec![b"undeliverable".to_vec()])
        );
        assert_eq!(lits("ab|cd"), Some(vec![b"ab".to_vec(), b"cd".to_vec()]));
        assert_eq!(lits("a|cd"), None);
        assert_eq!(lits(r"\w"), None);
        assert_eq!(lits("@"), None);
    }

    #[test]
    fn matching_reports_each_rule_once() {
        let set = load(
            "rules:\n  - id: a\n    kind: bounce\n    field: subject\n    patterns: [foo, bar]\n    examples: [foo]\n",
        )
        .expect("valid");
        let hits = set.matching(&Target::Subject, "FOO bar");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, "a");
        assert!(set.matching(&Target::Body, "foo").is_empty());
    }
}
