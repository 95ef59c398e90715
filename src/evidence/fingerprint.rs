//! Learned fingerprints of the user's own mail: which domains and shapes
//! their Message-IDs have (from the sent index) and which relays their mail
//! leaves through (from the Received chains of bounces whose original was
//! found in the sent index).
//!
//! A spammer forging the user's address does not use the user's mail
//! programs or servers: the forged original's Message-ID is made by the
//! spam tool (another domain, another shape) and its Received chain starts
//! at a botnet host and ends at the victim's MX, never at the user's
//! submission server. So an original whose Message-ID domain, shape or
//! relays the user never uses is strong evidence of backscatter.
//!
//! A fingerprint only counts once enough mail was seen (the thresholds
//! below): a young index knows only some of the user's mail programs, and
//! calling mail from the others forged would hide real bounces. It never
//! overrides a sent-index hit or a valid tag (the verdict checks those
//! first). Pure: built from plain lists, no store access here.

use std::collections::{HashMap, HashSet};

/// Sent messages needed before Message-ID domains are trusted. People use a
/// few mail programs (desktop, phone, webmail), each making its own
/// Message-ID domain; 50 messages is weeks of ordinary use, enough for each
/// program in regular use to have appeared.
pub const MIN_SENT_FOR_DOMAINS: u64 = 50;

/// Messages with one Message-ID domain needed before that domain's shapes
/// are trusted (the same reasoning, per domain).
pub const MIN_SENT_FOR_SHAPES: u64 = 50;

/// A domain whose Message-IDs took more shapes than this is treated as
/// shapeless (e.g. Gmail's ids vary in punctuation): only a program that
/// writes ids one or two ways gives a usable shape.
pub const MAX_SHAPES_PER_DOMAIN: usize = 3;

/// Genuine bounces with a Received chain needed before the relay set is
/// trusted: one or two bounces may all have gone through one of the user's
/// providers while they also send through another.
pub const MIN_BOUNCES_FOR_RELAYS: u64 = 3;

/// What the user's own mail looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    /// Message-IDs of sent mail seen.
    pub sent_messages: u64,
    /// Per Message-ID domain (lower case): shape → count.
    pub id_domains: HashMap<String, HashMap<String, u64>>,
    /// Relay domains (of `by` hosts) seen in genuine bounces' originals.
    pub relay_domains: HashSet<String>,
    /// Genuine bounces the relays were learned from.
    pub relay_bounces: u64,
}

/// Why an original does not look like the user's mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Its Message-ID domain never appears in the user's sent mail.
    IdDomain(String),
    /// Its Message-ID has a shape the user's program for that domain never makes.
    IdShape(String),
    /// None of its relays is one the user's mail goes through.
    Relays(Vec<String>),
}

impl Fingerprint {
    /// Learns from the Message-IDs of the user's sent mail.
    pub fn learn_ids<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            let Some((local, domain)) = id.rsplit_once('@') else {
                continue;
            };
            self.sent_messages += 1;
            *self
                .id_domains
                .entry(domain.to_ascii_lowercase())
                .or_default()
                .entry(shape(local))
                .or_default() += 1;
        }
    }

    /// Learns relays from one genuine bounce's original Received chain.
    pub fn learn_relays(&mut self, received: &[String]) {
        let domains = relay_domains(received);
        if !domains.is_empty() {
            self.relay_bounces += 1;
            self.relay_domains.extend(domains);
        }
    }

    /// Whether Message-ID domains are trusted yet.
    pub fn knows_domains(&self) -> bool {
        self.sent_messages >= MIN_SENT_FOR_DOMAINS
    }

    /// Whether the relay set is trusted yet.
    pub fn knows_relays(&self) -> bool {
        self.relay_bounces >= MIN_BOUNCES_FOR_RELAYS
    }

    /// Checks an original Message-ID against the learned ids.
    pub fn check_id(&self, message_id: &str) -> Option<Mismatch> {
        if !self.knows_domains() {
            return None;
        }
        let (local, domain) = message_id.rsplit_once('@')?;
        let domain = domain.to_ascii_lowercase();
        let Some(shapes) = self.id_domains.get(&domain) else {
            return Some(Mismatch::IdDomain(domain));
        };
        let seen: u64 = shapes.values().sum();
        let stable = seen >= MIN_SENT_FOR_SHAPES && shapes.len() <= MAX_SHAPES_PER_DOMAIN;
        let this = shape(local);
        (stable && !shapes.contains_key(&this)).then_some(Mismatch::IdShape(this))
    }

    /// Checks an original's Received chain against the learned relays.
    pub fn check_relays(&self, received: &[String]) -> Option<Mismatch> {
        if !self.knows_relays() {
            return None;
        }
        let domains = relay_domains(received);
        if domains.is_empty() || domains.iter().any(|d| self.relay_domains.contains(d)) {
            return None;
        }
        Some(Mismatch::Relays(domains))
    }
}

/// The shape of a Message-ID's local part: each run of letters and digits
/// becomes `x`, other characters stay, runs beyond 12 tokens are cut. A
/// program writes its ids one way (`x-x-x-x-x` for a UUID, `x.x` for
/// Postfix), a spam tool another.
pub fn shape(local: &str) -> String {
    let mut out = String::new();
    let mut tokens = 0;
    let mut in_run = false;
    for c in local.chars() {
        if c.is_ascii_alphanumeric() {
            if !in_run {
                out.push('x');
                tokens += 1;
                in_run = true;
            }
        } else {
            out.push(c);
            tokens += 1;
            in_run = false;
        }
        if tokens >= 12 {
            break;
        }
    }
    out
}

/// The domains (last two labels, three under a two-letter country code
/// with a short second label such as `co.uk`) of the `by` hosts in a
/// Received chain.
pub fn relay_domains(received: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in received {
        let lower = r.to_ascii_lowercase();
        let Some(at) = find_word(&lower, "by") else {
            continue;
        };
        let host: String = lower[at + 2..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .collect();
        if let Some(d) = registrable(host.trim_end_matches('.')) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = i == 0 || bytes[i - 1].is_ascii_whitespace();
        let after = bytes
            .get(i + word.len())
            .is_some_and(u8::is_ascii_whitespace);
        before && after
    })
}

fn registrable(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
    if labels.len() < 2 || labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return None; // a bare name or an IP address says nothing about a provider
    }
    let n = labels.len();
    let take = if n >= 3 && labels[n - 1].len() == 2 && labels[n - 2].len() <= 3 {
        3
    } else {
        2
    };
    Some(labels[n - take.min(n)..].join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(n: usize) -> Fingerprint {
        let mut f = Fingerprint::default();
        let ids: Vec<String> = (0..n)
            .map(|i| format!("{i:08x}-aaaa-bbbb-cccc-{i:012x}@mail.example.com"))
            .collect();
        f.learn_ids(ids.iter().map(String::as_str));
        f
    }

    #[test]
    fn shapes() {
        assert_eq!(shape("1b4e28ba-2fa1-11d2-883f-0016d3cca427"), "x-x-x-x-x");
        assert_eq!(shape("20261101120000.ABC123"), "x.x");
        assert_eq!(shape("CAF=x+y_z"), "x=x+x_x");
    }

    #[test]
    fn domains_need_enough_sent_mail() {
        let young = learned(10);
        assert_eq!(young.check_id("spam123@evil.example"), None);
        let f = learned(60);
        assert_eq!(
            f.check_id("spam123@Evil.Example"),
            Some(Mismatch::IdDomain("evil.example".into()))
        );
        assert_eq!(
            f.check_id("0000abcd-1111-2222-3333-444455556666@MAIL.example.com"),
            None
        );
        assert_eq!(
            f.check_id("forged.12345@mail.example.com"),
            Some(Mismatch::IdShape("x.x".into()))
        );
    }

    #[test]
    fn a_domain_with_many_shapes_is_not_shape_checked() {
        let mut f = learned(60);
        let ids = [
            "a.b@mail.example.com",
            "a_b@mail.example.com",
            "a+b@mail.example.com",
        ];
        f.learn_ids(ids);
        assert_eq!(f.check_id("a=b@mail.example.com"), None);
    }

    #[test]
    fn relays() {
        let chain = |by: &str| {
            vec![
                format!("from mx.victim.example by {by} with ESMTP id 1"),
                "from [10.0.0.1] (unknown) by smtp.provider.co.uk with ESMTPSA".to_string(),
            ]
        };
        assert_eq!(
            relay_domains(&chain("mx1.victim.example")),
            vec!["victim.example".to_string(), "provider.co.uk".to_string()]
        );
        let mut f = Fingerprint::default();
        f.learn_relays(&chain("in.partner.example"));
        let spam = vec!["from bot (1.2.3.4) by mx.other.example; Mon, 2 Nov 2026".to_string()];
        assert_eq!(f.check_relays(&spam), None, "too few bounces learned");
        f.learn_relays(&chain("in.partner.example"));
        f.learn_relays(&chain("in.partner.example"));
        assert_eq!(
            f.check_relays(&spam),
            Some(Mismatch::Relays(vec!["other.example".into()]))
        );
        assert_eq!(f.check_relays(&chain("mx.anyone.example")), None);
        assert_eq!(f.check_relays(&["from x by 10.0.0.1".to_string()]), None);
        assert_eq!(f.check_relays(&[]), None);
    }
}
