//! How rule patterns are read — their syntax, and the literals one of which
//! every match must contain (the prefilter of [`super::rules`]) — defined
//! once for the analysis and for `build.rs`, which precompiles the built-in
//! patterns (see [`super::precompiled`]). Sharing the file (by `#[path]` in
//! `build.rs`) guarantees that what the build precomputes is exactly what
//! the run-time code would compute from the same pattern.
//!
//! It depends on `regex-automata`'s syntax module and `regex-syntax` only,
//! so that the build script can include it.

use regex_automata::util::syntax;
use regex_syntax::hir::{Class, Hir, HirKind, Look};
use std::borrow::Cow;

/// The syntax of rule patterns: case-insensitive, on bytes, Unicode classes
/// off (ASCII `\b`, `\s` and `.` keep the engines on their fast DFAs;
/// non-ASCII letters get their case pairs from [`fold_non_ascii_case`]).
pub fn syntax_config() -> syntax::Config {
    syntax::Config::new()
        .case_insensitive(true)
        .unicode(false)
        .utf8(false)
}

/// With Unicode off, case-insensitivity covers ASCII only; so each
/// non-ASCII letter with a case pair becomes `(?:ü|Ü)` (or both letters
/// inside a character class), e.g. for subjects such as "Übermittlungsstatus"
/// or "Недоставленное сообщение".
pub fn fold_non_ascii_case(pattern: &str) -> String {
    // Only non-ASCII letters change: an ASCII pattern (most are) stays as
    // it is, without a walk through its characters.
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
            // Pushed piece by piece: collecting the cases into vectors and
            // `format!` were most of the start-up cost of the built-in
            // rules' non-ASCII patterns.
            c if !c.is_ascii() => match case_pair(c) {
                Some((l, u)) if in_class => {
                    out.push(l);
                    out.push(u);
                }
                Some((l, u)) => {
                    out.push_str("(?:");
                    out.push(l);
                    out.push('|');
                    out.push(u);
                    out.push(')');
                }
                None => out.push(c),
            },
            c => out.push(c),
        }
    }
    out
}

/// The lower and the upper case of `c`, if each is one character and they
/// differ (as for most letters; not for `ß`, whose upper case is `SS`).
fn case_pair(c: char) -> Option<(char, char)> {
    let mut lower = c.to_lowercase();
    let mut upper = c.to_uppercase();
    match (lower.next(), lower.next(), upper.next(), upper.next()) {
        (Some(l), None, Some(u), None) if l != u => Some((l, u)),
        _ => None,
    }
}

/// The syntax for extracting a pattern's required literals: as
/// [`syntax_config`] but case-sensitive. The prefilter compares literals
/// ASCII case-insensitively anyway, and case-insensitive parsing would turn
/// every letter into a two-letter class, which makes parsing and literal
/// extraction several times slower (they dominated start-up).
pub fn literal_syntax_config() -> syntax::Config {
    syntax_config().case_insensitive(false)
}

/// What [`pattern_literals`] finds out about a pattern: where the
/// prefilter needs to look for its matches.
pub struct PatternLiterals {
    /// Its required literals (see [`required_literals`]).
    pub literals: Option<Vec<Vec<u8>>>,
    /// When it has literals: the longest text it can match, if bounded.
    pub max_len: Option<usize>,
    /// When it has literals: no match contains a line feed, so a match
    /// lies within the line of the literal occurrence it contains.
    pub in_line: bool,
    /// When it is a [`Phrase`] whose every text starts with one of its
    /// literals: then it matches exactly where the phrase occurs at an
    /// occurrence of a literal, which is cheaper to check than running it.
    pub phrase: Option<Phrase>,
}

/// A pattern that is a plain phrase: a few texts (lower-case, compared
/// ASCII case-insensitively, as the pattern's syntax does), perhaps between
/// ASCII word boundaries (`\b`), and nothing else, e.g.
/// `\bdelivery (has )?failed\b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phrase {
    /// Its pieces in order, each the texts it matches (e.g. `delivery `,
    /// then `has ` or nothing, then `failed`): the phrase matches each
    /// choice of one text per piece, put together. Kept apart (not as all
    /// the texts they make) so that a check compares each piece once.
    /// Borrowed in the phrases `build.rs` wrote (so that start-up makes
    /// none of their ~1,000 vectors), owned in those found at run time.
    pub pieces: Cow<'static, [Piece]>,
    /// Whether it starts with `\b`.
    pub word_start: bool,
    /// Whether it ends with `\b`.
    pub word_end: bool,
}

/// The texts one piece of a [`Phrase`] matches (static or computed, as
/// the phrase's pieces).
pub type Piece = Cow<'static, [Cow<'static, [u8]>]>;

impl Phrase {
    /// Every text it matches, if at most [`MAX_LITERALS`].
    pub fn strings(&self) -> Option<Vec<Vec<u8>>> {
        self.pieces
            .iter()
            .try_fold(vec![Vec::new()], |strings, piece| {
                let texts: Vec<Vec<u8>> = piece.iter().map(|text| text.to_vec()).collect();
                product(&strings, &texts)
            })
    }

    /// Whether the pattern has a match that starts at `start` of
    /// `haystack` (the bytes around count for `\b`, as in a search).
    pub fn matches_at(&self, haystack: &[u8], start: usize) -> bool {
        (!self.word_start || is_word_boundary(haystack, start))
            && self.rest_matches_at(haystack, start, 0)
    }

    /// Whether the pieces from `piece` on match from `at` on. Tries each
    /// choice (at most [`MAX_LITERALS`] in all); the recursion is as deep as
    /// the pieces are many (two pieces of one text each are one).
    fn rest_matches_at(&self, haystack: &[u8], at: usize, piece: usize) -> bool {
        let Some(texts) = self.pieces.get(piece) else {
            return !self.word_end || is_word_boundary(haystack, at);
        };
        // The texts are lower-case already: only the haystack's bytes need
        // lower-casing (`eq_ignore_ascii_case` would do both sides).
        texts.iter().any(|text| {
            let end = at.saturating_add(text.len());
            haystack.get(at..end).is_some_and(|h| {
                h.iter()
                    .zip(text.iter())
                    .all(|(h, t)| h.to_ascii_lowercase() == *t)
            }) && self.rest_matches_at(haystack, end, piece + 1)
        })
    }
}

/// Whether `at` is an ASCII word boundary of `haystack` (`\b` with Unicode
/// off): a word byte (`[0-9A-Za-z_]`) on exactly one side of it.
fn is_word_boundary(haystack: &[u8], at: usize) -> bool {
    let word = |byte: Option<&u8>| byte.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let before = at.checked_sub(1).and_then(|i| haystack.get(i));
    word(before) != word(haystack.get(at))
}

/// The [`Phrase`] `hir` is, if it is one: a concatenation of pieces whose
/// texts are known and few ([`phrase_strings`]), perhaps between two `\b`.
fn phrase(hir: &Hir) -> Option<Phrase> {
    let subs = match hir.kind() {
        HirKind::Concat(subs) => subs.as_slice(),
        _ => std::slice::from_ref(hir),
    };
    let is_boundary = |h: &Hir| matches!(h.kind(), HirKind::Look(Look::WordAscii));
    let word_start = subs.first().is_some_and(is_boundary);
    let inner = &subs[usize::from(word_start)..];
    let word_end = inner.last().is_some_and(is_boundary);
    let inner = &inner[..inner.len() - usize::from(word_end)];
    let mut pieces: Vec<Vec<Vec<u8>>> = Vec::new();
    for sub in inner {
        let texts = phrase_strings(sub)?;
        match pieces.last_mut() {
            Some(last) if last.len() == 1 && texts.len() == 1 => last[0].extend(&texts[0]),
            _ => pieces.push(texts),
        }
    }
    let phrase = Phrase {
        pieces: pieces
            .into_iter()
            .map(|texts| Cow::Owned(texts.into_iter().map(Cow::Owned).collect()))
            .collect(),
        word_start,
        word_end,
    };
    let strings = phrase.strings()?;
    (!strings.iter().any(Vec::is_empty)).then_some(phrase)
}

/// Every text `hir` matches, lower-case, when they are at most
/// [`MAX_LITERALS`] and it has no look-around. (Unlike [`facts`], an
/// optional or briefly repeated piece keeps its texts.)
fn phrase_strings(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Empty => Some(vec![Vec::new()]),
        HirKind::Look(_) => None,
        HirKind::Literal(literal) => Some(vec![literal.0.to_ascii_lowercase()]),
        HirKind::Class(class) => class_literals(class),
        HirKind::Capture(capture) => phrase_strings(&capture.sub),
        HirKind::Repetition(rep) => {
            let max = rep.max.filter(|&max| max <= 4)?;
            let sub = phrase_strings(&rep.sub)?;
            let mut power = vec![Vec::new()];
            let mut all = Vec::new();
            for count in 0..=max {
                if count >= rep.min {
                    all.extend(power.iter().cloned());
                }
                if count < max {
                    power = product(&power, &sub)?;
                }
            }
            union(std::iter::once(Some(all)))
        }
        HirKind::Concat(subs) => subs.iter().try_fold(vec![Vec::new()], |strings, sub| {
            product(&strings, &phrase_strings(sub)?)
        }),
        HirKind::Alternation(subs) => union(subs.iter().map(phrase_strings)),
    }
}

/// The required literals of `pattern` (see [`required_literals`]) and, if
/// it has some, how far its matches reach; an error if the pattern is
/// invalid. `build.rs` precomputes this for the built-in patterns
/// (`precompiled::literals`).
pub fn pattern_literals(pattern: &str) -> Result<PatternLiterals, String> {
    let hir = syntax::parse_with(pattern, &literal_syntax_config()).map_err(|e| e.to_string())?;
    let literals = required_literals(&hir).or_else(|| short_literals(&hir));
    let max_len = literals.as_ref().and(hir.properties().maximum_len());
    let in_line = literals.is_some() && !may_match_line_feed(&hir);
    let phrase = literals.as_ref().and_then(|literals| {
        // Parsed case-sensitively, a part that turns case-insensitivity
        // off looks like the rest; a phrase would compare it in any case.
        if may_turn_off_case_insensitivity(pattern) {
            return None;
        }
        phrase(&hir).filter(|phrase| {
            phrase.strings().is_some_and(|strings| {
                strings
                    .iter()
                    .all(|s| literals.iter().any(|l| s.starts_with(l)))
            })
        })
    });
    Ok(PatternLiterals {
        literals,
        max_len,
        in_line,
        phrase,
    })
}

/// Whether `pattern` may turn case-insensitive matching off somewhere: a
/// flag group with `i` after its `-`, such as `(?-i)` or `(?m-i:...)`.
/// (Errs on the side of yes: an escaped `\(` followed by `?-i` counts too.)
fn may_turn_off_case_insensitivity(pattern: &str) -> bool {
    pattern.match_indices("(?").any(|(at, _)| {
        let flags = pattern[at + 2..]
            .split(|c: char| !(c.is_ascii_alphabetic() || c == '-'))
            .next()
            .unwrap_or_default();
        flags
            .split_once('-')
            .is_some_and(|(_, off)| off.contains('i'))
    })
}

/// Whether some text that `hir` matches contains a line feed.
fn may_match_line_feed(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(literal) => literal.0.contains(&b'\n'),
        HirKind::Class(Class::Bytes(class)) => class
            .ranges()
            .iter()
            .any(|r| r.start() <= b'\n' && b'\n' <= r.end()),
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .any(|r| r.start() <= '\n' && '\n' <= r.end()),
        HirKind::Repetition(rep) => rep.max != Some(0) && may_match_line_feed(&rep.sub),
        HirKind::Capture(capture) => may_match_line_feed(&capture.sub),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => subs.iter().any(may_match_line_feed),
    }
}

/// Literals shorter than this make no useful prefilter (they occur in most
/// texts): a pattern without longer ones is run through the whole text, or
/// around its [`short_literals`].
pub const MIN_LITERAL_LEN: usize = 3;

/// The shortest literals a pattern without longer ones is prefiltered by
/// ([`short_literals`]).
const MIN_SHORT_LITERAL_LEN: usize = 2;

/// For a pattern with no [`required_literals`]: a set of literals of at
/// least [`MIN_SHORT_LITERAL_LEN`] bytes one of which occurs in every text
/// it matches, e.g. `2.`, `4.` or `5.` for `\b[245]\.\d{1,3}\.\d{1,3}\b`.
/// Too common for a prefilter of their own, but the prefilter scan finds
/// them at no extra cost, and running a pattern around their occurrences
/// (usually a few) reads far less than running it through a whole body.
/// (Not used for search nets: a server search for them would find most
/// messages.)
fn short_literals(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    facts(hir)
        .required()
        .filter(|set| shortest(set) >= MIN_SHORT_LITERAL_LEN)
}

/// Prefilter literals are cut to this many bytes. A prefix of a required
/// literal is required too, and eight bytes ("undelive", "mail sys") are
/// rare enough in ordinary text; longer ones only make the automaton bigger
/// (building it for ~1,000 full-length literals was a quarter of start-up).
pub const MAX_PREFILTER_LITERAL: usize = 12;

/// Prefilter literals with a non-ASCII byte are cut to this many bytes:
/// each case pair of a non-ASCII letter (`(?:а|А)`) doubles a literal's
/// variants, and cut at [`MAX_PREFILTER_LITERAL`] bytes, the subject's
/// would need more transitions than the tables of `build.rs` can number
/// (~95,000); at ten, ~54,000.
pub const MAX_NON_ASCII_PREFILTER_LITERAL: usize = 10;

/// A required literal as the prefilter looks for it: cut to
/// [`MAX_PREFILTER_LITERAL`] bytes, or to
/// [`MAX_NON_ASCII_PREFILTER_LITERAL`] if those are not all ASCII (a
/// prefix of a required literal is required too).
pub fn prefilter_literal(mut literal: Vec<u8>) -> Vec<u8> {
    literal.truncate(MAX_PREFILTER_LITERAL);
    if !literal.is_ascii() {
        literal.truncate(MAX_NON_ASCII_PREFILTER_LITERAL);
    }
    literal
}

/// The prefilter literals of a target's patterns and the patterns that
/// need each: what `TargetSet` in `rules.rs` searches with, computed there
/// for a user's rules and by `build.rs` for the built-in ones (so that
/// start-up does not sort and group ~1,000 literals).
#[derive(Debug, PartialEq, Eq)]
pub struct LiteralGroups {
    /// Every required literal of the patterns as [`prefilter_literal`]
    /// cuts it, sorted, without duplicates.
    pub literals: Vec<Vec<u8>>,
    /// The patterns (indices, ascending) that require `literals[i]` are
    /// `patterns[starts[i]..starts[i + 1]]` (one more start than literals).
    pub starts: Vec<usize>,
    /// See `starts`.
    pub patterns: Vec<usize>,
    /// The patterns without literals (indices, ascending).
    pub always: Vec<usize>,
}

/// Groups the required literals of each pattern (`None`: it has none), in
/// pattern order, by literal (see [`LiteralGroups`]).
pub fn group_literals(
    per_pattern: impl IntoIterator<Item = Option<Vec<Vec<u8>>>>,
) -> LiteralGroups {
    // (literal, pattern) for each literal of each pattern, grouped by
    // literal below (a sort is cheaper than a map keyed by literals).
    let mut by_literal: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut always = Vec::new();
    for (index, literals) in per_pattern.into_iter().enumerate() {
        match literals {
            Some(literals) => {
                for literal in literals {
                    by_literal.push((prefilter_literal(literal), index));
                }
            }
            None => always.push(index),
        }
    }
    by_literal.sort_unstable();
    by_literal.dedup();
    let mut groups = LiteralGroups {
        literals: Vec::new(),
        starts: vec![0],
        patterns: Vec::with_capacity(by_literal.len()),
        always,
    };
    for (literal, index) in by_literal {
        if groups.literals.last() != Some(&literal) {
            if !groups.literals.is_empty() {
                groups.starts.push(groups.patterns.len());
            }
            groups.literals.push(literal);
        }
        groups.patterns.push(index);
    }
    if !groups.literals.is_empty() {
        groups.starts.push(groups.patterns.len());
    }
    groups
}

/// Upper bound on the literals of one set while extracting (cross products
/// of alternations and classes grow fast).
pub const MAX_LITERALS: usize = 64;

/// Classes with at most this many distinct bytes (after ASCII lower-casing)
/// count as a set of one-byte literals, e.g. `[- ]`, `\s` or a
/// case-insensitive letter `[Aa]`.
const MAX_CLASS_LITERALS: usize = 8;

/// The lower-case literals at least one of which occurs (ASCII
/// case-insensitively) in every text `hir` matches, or `None` when there is
/// no such set with literals of at least [`MIN_LITERAL_LEN`] bytes.
pub fn required_literals(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    facts(hir)
        .required()
        .filter(|set| shortest(set) >= MIN_LITERAL_LEN)
}

/// What literal extraction knows about a piece of pattern.
pub struct Facts {
    /// Every string it can match, lower-cased, when they are few.
    pub exact: Option<Vec<Vec<u8>>>,
    /// Literals one of which every match contains, besides `exact` (which
    /// is such a set too, when known).
    pub inner: Option<Vec<Vec<u8>>>,
}

impl Facts {
    fn exact(set: Vec<Vec<u8>>) -> Facts {
        Facts {
            exact: Some(set),
            inner: None,
        }
    }

    fn none() -> Facts {
        Facts {
            exact: None,
            inner: None,
        }
    }

    /// The best set of literals one of which every match contains (none
    /// empty).
    pub fn required(self) -> Option<Vec<Vec<u8>>> {
        better(self.inner, self.exact)
    }
}

pub fn facts(hir: &Hir) -> Facts {
    match hir.kind() {
        // They match the empty string: neutral inside a concatenation.
        HirKind::Empty | HirKind::Look(_) => Facts::exact(vec![Vec::new()]),
        HirKind::Literal(literal) => Facts::exact(vec![literal.0.to_ascii_lowercase()]),
        HirKind::Class(class) => class_literals(class).map_or_else(Facts::none, Facts::exact),
        HirKind::Capture(capture) => facts(&capture.sub),
        HirKind::Repetition(rep) => {
            if rep.min == 0 {
                return Facts::none();
            }
            let sub = facts(&rep.sub);
            if rep.max == Some(rep.min) && rep.min <= 4 {
                if let Some(exact) = &sub.exact {
                    let mut all = Some(vec![Vec::new()]);
                    for _ in 0..rep.min {
                        all = all.and_then(|a| product(&a, exact));
                    }
                    if let Some(all) = all {
                        return Facts::exact(all);
                    }
                }
            }
            Facts {
                exact: None,
                inner: sub.required(),
            }
        }
        HirKind::Alternation(subs) => {
            let subs: Vec<Facts> = subs.iter().map(facts).collect();
            if subs.iter().all(|f| f.exact.is_some()) {
                if let Some(exact) = union(subs.iter().map(|f| f.exact.clone())) {
                    return Facts::exact(exact);
                }
            }
            Facts {
                exact: None,
                inner: union(subs.into_iter().map(Facts::required)),
            }
        }
        HirKind::Concat(subs) => {
            // Runs of consecutive exact pieces concatenate into longer
            // literals; any run, or any required set of a piece, will do:
            // keep the best. If the whole is one run, it is exact.
            let mut whole = true;
            let mut run = vec![Vec::new()];
            let mut best = None;
            for sub in subs.iter().map(facts) {
                match sub.exact {
                    Some(e) => {
                        run = match product(&run, &e) {
                            Some(longer) => longer,
                            None => {
                                whole = false;
                                best = better(best, Some(run));
                                e
                            }
                        };
                    }
                    None => {
                        whole = false;
                        best = better(best, Some(std::mem::replace(&mut run, vec![Vec::new()])));
                        best = better(best, sub.inner);
                    }
                }
            }
            if whole {
                Facts::exact(run)
            } else {
                Facts {
                    exact: None,
                    inner: better(best, Some(run)),
                }
            }
        }
    }
}

/// A small class as one-byte (or, for a Unicode class, one-character)
/// lower-case literals.
fn class_literals(class: &Class) -> Option<Vec<Vec<u8>>> {
    let mut set: Vec<Vec<u8>> = Vec::new();
    match class {
        Class::Bytes(bytes) => {
            for range in bytes.ranges() {
                if usize::from(range.end() - range.start()) >= MAX_CLASS_LITERALS * 2 {
                    return None;
                }
                for b in range.start()..=range.end() {
                    set.push(vec![b.to_ascii_lowercase()]);
                }
                if set.len() > MAX_CLASS_LITERALS * 2 {
                    return None;
                }
            }
        }
        Class::Unicode(chars) => {
            for range in chars.ranges() {
                if (range.end() as u32 - range.start() as u32) >= MAX_CLASS_LITERALS as u32 * 2 {
                    return None;
                }
                for c in range.start()..=range.end() {
                    set.push(c.to_string().into_bytes().to_ascii_lowercase());
                }
                if set.len() > MAX_CLASS_LITERALS * 2 {
                    return None;
                }
            }
        }
    }
    set.sort();
    set.dedup();
    (set.len() <= MAX_CLASS_LITERALS).then_some(set)
}

/// Every `a` followed by every `b`, if not too many.
fn product(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if a.len() * b.len() > MAX_LITERALS {
        return None;
    }
    let mut out: Vec<Vec<u8>> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| [x.as_slice(), y].concat()))
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// The union of sets, if all are known and not too many.
fn union(sets: impl Iterator<Item = Option<Vec<Vec<u8>>>>) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for set in sets {
        out.extend(set?);
    }
    out.sort();
    out.dedup();
    (out.len() <= MAX_LITERALS).then_some(out)
}

/// The length of the shortest literal of `set`.
pub fn shortest(set: &[Vec<u8>]) -> usize {
    set.iter().map(Vec::len).min().unwrap_or(0)
}

/// The better prefilter of two required sets: longer shortest literal, then
/// fewer literals. A set with an empty literal requires nothing.
pub fn better(a: Option<Vec<Vec<u8>>>, b: Option<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
    let a = a.filter(|s| !s.is_empty() && shortest(s) > 0);
    let b = b.filter(|s| !s.is_empty() && shortest(s) > 0);
    match (a, b) {
        (Some(a), Some(b)) => {
            let key = |s: &Vec<Vec<u8>>| (shortest(s), std::cmp::Reverse(s.len()));
            Some(if key(&b) > key(&a) { b } else { a })
        }
        (a, b) => a.or(b),
    }
}
