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

use regex_automata::meta::Regex as MetaRegex;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternSet};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// The rule files built into the binary, by file name.
pub const BUILTIN_RULE_FILES: &[(&str, &str)] = &[
    ("bounce.yaml", include_str!("../../rules/bounce.yaml")),
    ("autoreply.yaml", include_str!("../../rules/autoreply.yaml")),
    ("challenge.yaml", include_str!("../../rules/challenge.yaml")),
    ("feedback.yaml", include_str!("../../rules/feedback.yaml")),
    ("senders.yaml", include_str!("../../rules/senders.yaml")),
];

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

/// All rules, compiled into one regex set per target for a single linear
/// pass over each piece of text.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Per target: the set of all its patterns, and for each pattern the
    /// index of its rule in `rules`.
    sets: HashMap<Target, (MetaRegex, Vec<usize>)>,
}

impl RuleSet {
    /// The built-in rules. They are validated by the test suite, so failure
    /// here means a broken build rather than bad user input.
    ///
    /// Their examples are checked by the test suite, not at every start-up:
    /// the compiled-in files cannot change after the tests ran, and the check
    /// would double the start-up time of a one-file `inspect`.
    pub fn builtin() -> Result<RuleSet, RuleError> {
        Self::compile(
            BUILTIN_RULE_FILES
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string())),
        )
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
        let set = Self::compile(files)?;
        set.check_examples()?;
        Ok(set)
    }

    /// Parses and compiles rules (ids, fields and patterns validated), without
    /// running the examples.
    fn compile(files: impl IntoIterator<Item = (String, String)>) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        let mut seen = HashSet::new();
        for (file, text) in files {
            let raw: RawRuleFile = serde_saphyr::from_str(&text).map_err(|e| RuleError {
                file: file.clone(),
                message: e.to_string(),
            })?;
            for raw_rule in raw.rules {
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
        let mut by_target: HashMap<Target, (Vec<String>, Vec<usize>)> = HashMap::new();
        for (index, rule) in rules.iter().enumerate() {
            let entry = by_target.entry(rule.target.clone()).or_default();
            for p in &rule.patterns {
                entry.0.push(p.clone());
                entry.1.push(index);
            }
        }
        let mut sets = HashMap::new();
        for (target, (patterns, owners)) in by_target {
            let set = compile_set(&patterns).map_err(|message| {
                // Name the culprit: compile the patterns one by one (only on
                // this error path, to keep start-up fast).
                for (pattern, owner) in patterns.iter().zip(&owners) {
                    if let Err(e) = compile_set(std::slice::from_ref(pattern)) {
                        let rule = &rules[*owner];
                        return RuleError {
                            file: rule.file.clone(),
                            message: format!(
                                "rule {:?}: pattern {pattern:?} is invalid: {e}",
                                rule.id
                            ),
                        };
                    }
                }
                RuleError {
                    file: "(all rule files)".into(),
                    message: format!("patterns for {target:?} do not compile together: {message}"),
                }
            })?;
            sets.insert(target, (set, owners));
        }
        Ok(RuleSet { rules, sets })
    }

    /// Every rule must match each of its examples and none of its
    /// not_examples, through the same compiled sets that analysis uses.
    pub fn check_examples(&self) -> Result<(), RuleError> {
        for (index, rule) in self.rules.iter().enumerate() {
            let err = |message: String| RuleError {
                file: rule.file.clone(),
                message: format!("rule {:?}: {message}", rule.id),
            };
            let Some((set, owners)) = self.sets.get(&rule.target) else {
                continue;
            };
            let hits = |text: &str| -> Vec<usize> {
                which(set, text.as_bytes())
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

    /// The header names that header rules look at (lower case).
    pub fn header_targets(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().filter_map(|t| match t {
            Target::Header(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The rules whose patterns match `text` at `target`, each once.
    pub fn matching<'a>(&'a self, target: &Target, text: &str) -> Vec<&'a Rule> {
        let Some((set, owners)) = self.sets.get(target) else {
            return Vec::new();
        };
        let mut hits: Vec<usize> = which(set, text.as_bytes())
            .into_iter()
            .map(|i| owners[i])
            .collect();
        hits.dedup();
        hits.into_iter().map(|i| &self.rules[i]).collect()
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
    let patterns: Vec<String> = raw
        .patterns
        .iter()
        .map(|p| fold_non_ascii_case(p))
        .collect();
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

/// Compiles patterns into one multi-pattern regex that reports every
/// pattern that matches. Case-insensitive, on bytes, Unicode classes off:
/// ASCII `\b`, `\s` and `.` keep the engine on its fast lazy DFA (a Unicode
/// word boundary sends it to the slow PikeVM, and Unicode `.{0,80}` makes
/// automata that take long to build); non-ASCII literals still match as
/// UTF-8, with their case handled by [`fold_non_ascii_case`]. Prefilters and
/// the capture engines are left out: an overlapping "which patterns" search
/// uses neither, and building them is most of the start-up cost.
fn compile_set(patterns: &[String]) -> Result<MetaRegex, String> {
    MetaRegex::builder()
        .configure(
            MetaRegex::config()
                .match_kind(MatchKind::All)
                .auto_prefilter(false)
                .onepass(false)
                .backtrack(false)
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT * 8))
                // The lazy DFA's state cache: a set of many phrases needs more
                // than the default, or the cache is rebuilt on every message.
                .hybrid_cache_capacity(DFA_CACHE_LIMIT),
        )
        .syntax(
            syntax::Config::new()
                .case_insensitive(true)
                .unicode(false)
                .utf8(false),
        )
        .build_many(patterns)
        .map_err(|e| e.to_string())
}

/// The indices of the patterns that match somewhere in `text`.
fn which(set: &MetaRegex, text: &[u8]) -> Vec<usize> {
    let mut found = PatternSet::new(set.pattern_len());
    set.which_overlapping_matches(&Input::new(text), &mut found);
    found.iter().map(|p| p.as_usize()).collect()
}

/// With Unicode off, case-insensitivity covers ASCII only; so each
/// non-ASCII letter with a case pair becomes `(?:ü|Ü)` (or both letters
/// inside a character class), e.g. for subjects such as "Übermittlungsstatus"
/// or "Недоставленное сообщение".
fn fold_non_ascii_case(pattern: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<RuleSet, RuleError> {
        RuleSet::from_sources([("t.yaml".to_string(), yaml.to_string())])
    }

    #[test]
    fn builtin_rules_load_and_every_example_matches() {
        let set = RuleSet::builtin().expect("built-in rules are valid");
        set.check_examples().unwrap_or_else(|e| panic!("{e}"));
        assert!(set.rules().len() > 20);
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
