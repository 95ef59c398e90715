//! How rule patterns are read: the one definition shared by the analysis
//! ([`super::rules`]) and by `build.rs`, which precompiles the built-in
//! patterns into DFAs (see [`super::precompiled`]). Sharing the file (by
//! `#[path]` in `build.rs`) guarantees that a precompiled automaton matches
//! exactly what the run-time compiler would build from the same pattern.
//!
//! It depends on `regex-automata`'s syntax module only, so that the build
//! script can include it.

use regex_automata::util::syntax;

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

