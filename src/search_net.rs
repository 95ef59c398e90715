//! The search net: a server-side `UID SEARCH` that narrows a sweep's header
//! triage to the few messages that could be notices.
//!
//! Fetching the triage header fields of every inbox message costs ~400 bytes
//! a message on the wire. But the triage ([`Analyzer::is_candidate`]) only
//! accepts a message for a structural sign (a report or `message/*`
//! Content-Type, X-Failed-Recipients, `Auto-Submitted: auto-replied`, a null
//! Return-Path) or for a rule matching its subject, sender or a vendor
//! header — and every such rule needs one of its literals to occur there
//! ([`RuleSet::search_net`]). On a server whose SEARCH matches substrings
//! (Dovecot, Cyrus, most hosting providers), one SEARCH for those signs and
//! literals finds a superset of what the triage accepts; only its hits get
//! their header fetched and triaged, so the decision is the same.
//!
//! Gmail and Microsoft Exchange match whole words, so a literal such as
//! "undeliver" would miss "Undeliverable": there the net is off (see
//! [`word_search_server`]), as it is when a rule has no literal to search
//! for or a literal needs a feature the server lacks.
//!
//! [`Analyzer::is_candidate`]: crate::analysis::Analyzer::is_candidate

use crate::analysis::rules::{NetField, RuleSet};
use std::collections::HashSet;

/// How many search keys go into one SEARCH command. Dovecot evaluates each
/// command over every message, so fewer commands are faster; a bound keeps
/// each command line a few kilobytes.
pub const MAX_KEYS_PER_COMMAND: usize = 400;

/// A compiled search net: search keys, any one of which makes a hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchNet {
    /// The search keys, in IMAP syntax.
    keys: Vec<String>,
    /// Whether a key carries a non-ASCII literal (the command then says
    /// `CHARSET UTF-8`).
    utf8: bool,
}

/// The structural signs of [`crate::analysis::Analyzer::is_candidate`], as
/// search keys. A null Return-Path ("<>", or empty, which a substring
/// cannot express) is any Return-Path without an "@". A message without a
/// From is a hit too: a header the server cannot split has no fields, and
/// the triage looks at those messages whole.
const STRUCTURAL_KEYS: &[&str] = &[
    "HEADER Content-Type \"report\"",
    "HEADER Content-Type \"message/\"",
    "HEADER X-Failed-Recipients \"\"",
    "HEADER Auto-Submitted \"auto-replied\"",
    "HEADER Return-Path \"<>\"",
    "(HEADER Return-Path \"\" NOT HEADER Return-Path \"@\")",
    "NOT HEADER From \"\"",
];

impl SearchNet {
    /// The net for `rules` when the triage looks at `header_fields`.
    /// `literals` says whether the server takes non-synchronising literals
    /// (LITERAL+ or LITERAL-), which carry non-ASCII text. Errs, saying
    /// why, when no sound net exists.
    pub fn build(
        rules: &RuleSet,
        header_fields: &[&str],
        literals: bool,
    ) -> Result<SearchNet, String> {
        let terms = rules.search_net(header_fields)?;
        let mut keys: Vec<String> = STRUCTURAL_KEYS.iter().map(|k| k.to_string()).collect();
        let mut utf8 = false;
        for term in &terms {
            let text = if term.text.is_ascii() {
                quoted(&term.text)
            } else if literals {
                utf8 = true;
                format!("{{{}+}}\r\n{}", term.text.len(), term.text)
            } else {
                return Err(format!(
                    "the server takes no LITERAL+, which the non-ASCII rule text {:?} needs",
                    term.text
                ));
            };
            match &term.field {
                NetField::Subject => keys.push(format!("SUBJECT {text}")),
                NetField::Sender => {
                    keys.push(format!("FROM {text}"));
                    keys.push(format!("HEADER Return-Path {text}"));
                }
                NetField::Header(name) => keys.push(format!("HEADER {name} {text}")),
            }
        }
        let mut seen = HashSet::new();
        keys.retain(|k| seen.insert(k.clone()));
        Ok(SearchNet { keys, utf8 })
    }

    /// The search keys (for tests and logs).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The `UID SEARCH` criteria (everything after `UID SEARCH `) that
    /// together find the net's hits among `uids` (an IMAP UID set such as
    /// `"1:1000"`), at most `max_keys` keys each.
    pub fn commands(&self, uids: &str, max_keys: usize) -> Vec<String> {
        let charset = if self.utf8 { "CHARSET UTF-8 " } else { "" };
        self.keys
            .chunks(max_keys.max(1))
            .map(|chunk| format!("{charset}UID {uids} {}", any_of(chunk)))
            .collect()
    }
}

/// `OR` over keys as a balanced tree, so that nesting stays shallow.
fn any_of(keys: &[String]) -> String {
    match keys {
        [] => "ALL".to_string(),
        [one] => one.clone(),
        _ => {
            let (left, right) = keys.split_at(keys.len() / 2);
            format!("OR {} {}", any_of(left), any_of(right))
        }
    }
}

/// An IMAP quoted string (the text has no CR, LF or NUL: see [`crate::analysis::rules::NetTerm`]).
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether the capabilities look like a server whose SEARCH matches words,
/// not substrings: Gmail (`X-GM-EXT-1`) or Microsoft Exchange / Office 365
/// (its own capabilities, or the bare `IMAP4` token only Exchange announces).
pub fn word_search_server<'a>(capabilities: impl IntoIterator<Item = &'a String>) -> bool {
    capabilities.into_iter().any(|c| {
        [
            "X-GM-EXT-1",
            "IMAP4",
            "CLIENTACCESSRULES",
            "CLIENTNETWORKPRESENCELOCATION",
            "BACKENDAUTHENTICATE",
            "XPROXY3",
        ]
        .iter()
        .any(|sign| c.eq_ignore_ascii_case(sign))
    })
}

/// Whether the server takes non-synchronising literals.
pub fn takes_literals<'a>(capabilities: impl IntoIterator<Item = &'a String>) -> bool {
    capabilities
        .into_iter()
        .any(|c| c.eq_ignore_ascii_case("LITERAL+") || c.eq_ignore_ascii_case("LITERAL-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::TRIAGE_FIELDS;

    fn rules(yaml: &str) -> RuleSet {
        RuleSet::from_sources([("t.yaml".to_string(), yaml.to_string())]).expect("rules")
    }

    #[test]
    fn builtin_rules_give_a_sound_net() {
        let net = SearchNet::build(&RuleSet::builtin().expect("rules"), TRIAGE_FIELDS, true)
            .expect("the built-in rules have a net");
        let keys = net.keys();
        for want in [
            "SUBJECT \"delivery\"",
            "FROM \"mailer",
            "HEADER Return-Path \"<>\"",
            "HEADER x-autorespond \"\"",
        ] {
            assert!(
                keys.iter().any(|k| k.starts_with(want)),
                "{want}: {keys:#?}"
            );
        }
        // The list manager's `^From:` is framing, never searched for; its
        // address part is.
        assert!(!keys.iter().any(|k| k.contains("\"from:")), "{keys:#?}");
        assert!(keys.iter().any(|k| k == "FROM \"-admin@\""), "{keys:#?}");
        // Header rules on fields the triage does not fetch are not in it.
        assert!(!keys.iter().any(|k| k.contains("x-postfix")), "{keys:#?}");
        // Non-ASCII subjects travel as literals.
        assert!(keys.iter().any(|k| k.starts_with("SUBJECT {")), "{keys:#?}");
        assert!(net.commands("1:9", 10_000)[0].starts_with("CHARSET UTF-8 UID 1:9 OR "));
        assert!(
            SearchNet::build(&RuleSet::builtin().expect("rules"), TRIAGE_FIELDS, false).is_err()
        );
    }

    #[test]
    fn literals_are_quoted_cut_and_minimised() {
        let net = SearchNet::build(
            &rules(
                r#"
rules:
  - id: s
    kind: bounce
    field: subject
    patterns: ['say "hi\\there', 'mail\ssystem', 'mail system error']
    examples: ['say "hi\there', 'mail system']
  - id: f
    kind: automated
    field: sender
    patterns: ['^From: robot']
    examples: ['From: robot']
"#,
            ),
            &[],
            false,
        )
        .expect("net");
        let keys = net.keys();
        assert!(
            keys.contains(&r#"SUBJECT "say \"hi\\there""#.to_string()),
            "{keys:#?}"
        );
        // `\s` may be a line end: only the words are searched, and
        // "mail system error" adds nothing to "system".
        assert!(
            keys.contains(&"SUBJECT \"system\"".to_string()),
            "{keys:#?}"
        );
        assert!(!keys.iter().any(|k| k.contains("error")), "{keys:#?}");
        // "From: robot" is framing plus "robot".
        assert!(keys.contains(&"FROM \"robot\"".to_string()), "{keys:#?}");
        assert!(keys.contains(&"HEADER Return-Path \"robot\"".to_string()));
    }

    #[test]
    fn a_pattern_without_a_literal_means_no_net() {
        let e = SearchNet::build(
            &rules(
                r#"
rules:
  - id: any-ab
    kind: bounce
    field: subject
    patterns: ['\d+x\d+']
    examples: ['12x3']
"#,
            ),
            &[],
            true,
        )
        .expect_err("no literal of 3 bytes");
        assert!(e.contains("any-ab"), "{e}");
        // "Return-Path: <>" is all framing but the "<>", too short alone.
        let e = SearchNet::build(
            &rules(
                r#"
rules:
  - id: null-sender
    kind: automated
    field: sender
    patterns: ['(?m)^Return-Path:\s*<>']
    examples: ["From: x\nReturn-Path: <>"]
"#,
            ),
            &[],
            true,
        )
        .expect_err("only framing");
        assert!(e.contains("null-sender"), "{e}");
        // A header rule without a literal becomes "has the field".
        let net = SearchNet::build(
            &rules(
                r#"
rules:
  - id: h
    kind: challenge
    field: header
    header: x-challenge
    patterns: ['\S']
    examples: ['y']
"#,
            ),
            &["X-Challenge"],
            true,
        )
        .expect("net");
        assert!(net.keys().contains(&"HEADER x-challenge \"\"".to_string()));
    }

    #[test]
    fn commands_split_and_balance() {
        let net = SearchNet {
            keys: (1..=5).map(|i| format!("K{i}")).collect(),
            utf8: false,
        };
        assert_eq!(
            net.commands("1:10", 10),
            vec!["UID 1:10 OR OR K1 K2 OR K3 OR K4 K5"]
        );
        assert_eq!(
            net.commands("7", 2),
            vec!["UID 7 OR K1 K2", "UID 7 OR K3 K4", "UID 7 K5"]
        );
    }

    #[test]
    fn word_search_servers_are_recognised() {
        let caps = |s: &str| -> Vec<String> { s.split(' ').map(str::to_string).collect() };
        assert!(word_search_server(&caps("IMAP4rev1 X-GM-EXT-1 UIDPLUS")));
        assert!(word_search_server(&caps(
            "IMAP4 IMAP4rev1 AUTH=PLAIN SASL-IR UIDPLUS MOVE ID UNSELECT CLIENTACCESSRULES"
        )));
        assert!(!word_search_server(&caps(
            "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ MOVE"
        )));
        assert!(takes_literals(&caps("IMAP4rev1 LITERAL+")));
        assert!(!takes_literals(&caps("IMAP4rev1")));
    }
}
