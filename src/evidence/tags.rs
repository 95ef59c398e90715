//! Signed Message-ID tags: proof that a message really came from the user,
//! for mail the sent index cannot see (web shops, CRMs, scripts).
//!
//! A program that sends on the user's behalf puts a minted Message-ID on its
//! mail; a bounce that quotes it proves the user sent the original. The
//! format (documented in the README, section "Signed Message-ID tags") is
//!
//! ```text
//! bst1.<key id>.<day>.<nonce>.<mac>@<domain>
//! ```
//!
//! - `bst1` — the format and its version;
//! - key id — `[a-z0-9]{1,16}`, names the key (so keys can be rotated);
//! - day — the UTC day it was minted, days since 1970-01-01, decimal;
//! - nonce — `[a-z0-9]{8,32}`, random, makes the Message-ID unique;
//! - mac — the first 10 bytes of HMAC-SHA256(key, `bst1.<key id>.<day>.<nonce>`)
//!   in lower-case base32 (RFC 4648 alphabet, no padding: 16 characters).
//!
//! Only lower-case letters, digits and dots: nothing a mail system quotes,
//! folds or rewrites, and verification lower-cases first, so an upper-cased
//! copy still verifies. Everything here is pure: keys and time come in as
//! arguments.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// The local part's first label: format and version.
pub const MAGIC: &str = "bst1";

/// Bytes of the HMAC kept in a tag (80 bits: far beyond guessing, short
/// enough for a Message-ID).
pub const MAC_BYTES: usize = 10;

/// Days a tag stays valid unless the config says otherwise: bounces arrive
/// within days, auto-replies within weeks (a vacation), so a month keeps
/// every real one and limits how long a leaked tag can be replayed.
pub const DEFAULT_MAX_AGE_DAYS: u32 = 30;

/// Seconds per day.
const DAY: i64 = 86_400;

/// One tag key: its id (carried in the tag) and the secret bytes.
#[derive(Clone)]
pub struct TagKey {
    /// The key id, `[a-z0-9]{1,16}`.
    pub id: String,
    /// The secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TagKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TagKey({}, <redacted>)", self.id)
    }
}

/// The keys an account verifies tags with: the current key (used to mint)
/// first, then old keys still accepted after a rotation.
#[derive(Debug, Clone)]
pub struct TagKeys {
    /// Current key first.
    pub keys: Vec<TagKey>,
    /// A tag older than this many days (at the time the notice arrived) is expired.
    pub max_age_days: u32,
}

/// What a Message-ID says as a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCheck {
    /// Not a backsweep tag at all.
    NotATag,
    /// A tag made with one of the keys, young enough.
    Valid {
        /// The key id.
        key_id: String,
        /// Its age in days when the notice arrived.
        age_days: i64,
    },
    /// A genuine tag, but older than the maximum age.
    Expired {
        /// Its age in days.
        age_days: i64,
    },
    /// Looks like a tag but is not one of ours: wrong MAC, unknown key,
    /// malformed or dated in the future.
    Invalid {
        /// Why, for people.
        why: String,
    },
}

/// Whether `id` is a valid key id.
pub fn is_valid_key_id(id: &str) -> bool {
    (1..=16).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The UTC day number (days since 1970-01-01) of a Unix time.
pub fn day_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(DAY)
}

/// Mints a Message-ID (without angle brackets) for `domain` with `key`,
/// dated `now` (Unix seconds), unique by `nonce` (`[a-z0-9]{8,32}`, e.g.
/// from [`random_nonce`]).
pub fn mint(key: &TagKey, domain: &str, now: i64, nonce: &str) -> String {
    let signed = signed_part(&key.id, day_of(now), nonce);
    let mac = mac(&key.secret, &signed);
    format!("{signed}.{mac}@{}", domain.to_ascii_lowercase())
}

/// A fresh random nonce: 16 lower-case base32 characters (80 bits).
pub fn random_nonce() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; MAC_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(base32_lower(&bytes))
}

/// Checks a Message-ID (with or without angle brackets) against `keys`, as
/// of `at` (Unix seconds: when the notice arrived).
pub fn verify(message_id: &str, keys: &TagKeys, at: i64) -> TagCheck {
    let id = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase();
    let Some((local, _domain)) = id.rsplit_once('@') else {
        return TagCheck::NotATag;
    };
    let Some(rest) = local.strip_prefix(MAGIC).and_then(|r| r.strip_prefix('.')) else {
        return TagCheck::NotATag;
    };
    let invalid = |why: &str| TagCheck::Invalid { why: why.into() };
    let parts: Vec<&str> = rest.split('.').collect();
    let [key_id, day, nonce, claimed] = parts[..] else {
        return invalid("malformed tag (expected bst1.<key>.<day>.<nonce>.<mac>)");
    };
    let Some(day) = parse_day(day) else {
        return invalid("malformed tag day");
    };
    if !is_valid_nonce(nonce) || !is_valid_key_id(key_id) {
        return invalid("malformed tag");
    }
    let Some(key) = keys.keys.iter().find(|k| k.id == key_id) else {
        return TagCheck::Invalid {
            why: format!("tag key `{key_id}` is not configured"),
        };
    };
    let expected = mac(&key.secret, &signed_part(key_id, day, nonce));
    if !constant_time_eq(expected.as_bytes(), claimed.as_bytes()) {
        return invalid("tag signature does not match");
    }
    let age_days = day_of(at) - day;
    // One day of slack for clocks and time zones around midnight.
    if age_days < -1 {
        return invalid("tag is dated in the future");
    }
    if age_days > i64::from(keys.max_age_days) {
        return TagCheck::Expired { age_days };
    }
    TagCheck::Valid {
        key_id: key_id.to_string(),
        age_days,
    }
}

/// The text the MAC covers.
fn signed_part(key_id: &str, day: i64, nonce: &str) -> String {
    format!("{MAGIC}.{key_id}.{day}.{nonce}")
}

/// The truncated HMAC-SHA256 of `text`, base32 lower case.
fn mac(secret: &[u8], text: &str) -> String {
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(text.as_bytes());
    let full = m.finalize().into_bytes();
    base32_lower(&full[..MAC_BYTES])
}

fn parse_day(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 7 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_valid_nonce(s: &str) -> bool {
    (8..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 4648 base32, lower case, without padding.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(id: &str, secret: &str) -> TagKey {
        TagKey {
            id: id.into(),
            secret: secret.as_bytes().to_vec(),
        }
    }

    fn keys(list: Vec<TagKey>) -> TagKeys {
        TagKeys {
            keys: list,
            max_age_days: 30,
        }
    }

    const NOW: i64 = 1_793_491_200; // 2026-11-01

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 section 10, lower-cased, padding removed.
        assert_eq!(base32_lower(b"f"), "my");
        assert_eq!(base32_lower(b"fo"), "mzxq");
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn known_vector() {
        // Computed independently with Python: hmac.new(b"secret",
        // b"bst1.k1.20758.abcdefgh", "sha256").digest()[:10], base32, lower.
        let id = mint(&key("k1", "secret"), "Example.COM", NOW, "abcdefgh");
        assert_eq!(id, "bst1.k1.20758.abcdefgh.qwzzbm2yeyn6lcpq@example.com");
    }

    #[test]
    fn survives_upper_casing_and_brackets() {
        let k = keys(vec![key("k1", "secret")]);
        let id = mint(&k.keys[0], "example.com", NOW, "abcdefgh");
        let shouted = format!("<{}>", id.to_uppercase());
        assert!(matches!(verify(&shouted, &k, NOW), TagCheck::Valid { .. }));
    }

    #[test]
    fn ordinary_ids_are_not_tags() {
        let k = keys(vec![key("k1", "secret")]);
        for id in [
            "CAF=abc@mail.gmail.com",
            "20261101.123@example.com",
            "bst1@x",
            "nonsense",
        ] {
            assert_eq!(verify(id, &k, NOW), TagCheck::NotATag, "{id}");
        }
        assert!(matches!(
            verify("bst1.k1.x.y.z@example.com", &k, NOW),
            TagCheck::Invalid { .. }
        ));
    }

    #[test]
    fn unknown_key_and_future_dates_are_invalid() {
        let k = keys(vec![key("k1", "secret")]);
        let other = mint(&key("k9", "secret"), "example.com", NOW, "abcdefgh");
        assert!(matches!(verify(&other, &k, NOW), TagCheck::Invalid { .. }));
        let future = mint(&k.keys[0], "example.com", NOW + 3 * DAY, "abcdefgh");
        assert!(matches!(verify(&future, &k, NOW), TagCheck::Invalid { .. }));
        let tomorrow = mint(&k.keys[0], "example.com", NOW + DAY, "abcdefgh");
        assert!(matches!(verify(&tomorrow, &k, NOW), TagCheck::Valid { .. }));
    }

    #[test]
    fn random_nonces_are_well_formed_and_differ() {
        let a = random_nonce().expect("random");
        let b = random_nonce().expect("random");
        assert!(is_valid_nonce(&a) && a.len() == 16);
        assert_ne!(a, b);
    }

    fn nonce() -> impl Strategy<Value = String> {
        "[a-z0-9]{8,32}"
    }

    fn key_id() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,16}"
    }

    proptest! {
        #[test]
        fn mint_then_verify_round_trips(
            secret in proptest::collection::vec(any::<u8>(), 1..64),
            id in key_id(),
            n in nonce(),
            now in 0i64..4_000_000_000,
            age in 0i64..=30,
        ) {
            let k = TagKeys { keys: vec![TagKey { id: id.clone(), secret }], max_age_days: 30 };
            let tag = mint(&k.keys[0], "example.org", now, &n);
            prop_assert!(tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'@'));
            prop_assert_eq!(verify(&tag, &k, now + age * DAY), TagCheck::Valid { key_id: id, age_days: age });
        }

        #[test]
        fn old_tags_expire(
            n in nonce(),
            max_age in 0u32..400,
            extra in 1i64..1000,
        ) {
            let k = TagKeys { keys: vec![key("k1", "s")], max_age_days: max_age };
            let tag = mint(&k.keys[0], "example.org", NOW, &n);
            let at = NOW + (i64::from(max_age) + extra) * DAY;
            prop_assert_eq!(verify(&tag, &k, at), TagCheck::Expired { age_days: i64::from(max_age) + extra });
        }

        #[test]
        fn rotation_keeps_old_keys_valid_and_dropping_them_invalidates(
            n in nonce(),
            old_secret in "[ -~]{1,40}",
            new_secret in "[ -~]{1,40}",
        ) {
            let old = key("old", &old_secret);
            let new = key("new", &new_secret);
            let tag = mint(&old, "example.org", NOW, &n);
            let rotated = keys(vec![new.clone(), old]);
            let is_valid = matches!(verify(&tag, &rotated, NOW), TagCheck::Valid { .. });
            prop_assert!(is_valid);
            let dropped = keys(vec![new]);
            let is_invalid = matches!(verify(&tag, &dropped, NOW), TagCheck::Invalid { .. });
            prop_assert!(is_invalid);
        }

        #[test]
        fn any_changed_character_invalidates(
            n in nonce(),
            pos in 0usize..64,
            replacement in "[a-z0-9]",
        ) {
            let k = keys(vec![key("k1", "secret")]);
            let tag = mint(&k.keys[0], "example.org", NOW, &n);
            let local_len = tag.find('@').unwrap_or(0);
            let pos = pos % local_len;
            let mut bytes = tag.clone().into_bytes();
            prop_assume!(bytes[pos] != b'.' && bytes[pos] != replacement.as_bytes()[0]);
            bytes[pos] = replacement.as_bytes()[0];
            let forged = String::from_utf8(bytes).unwrap_or_default();
            let accepted = matches!(verify(&forged, &k, NOW), TagCheck::Valid { .. } | TagCheck::Expired { .. });
            prop_assert!(!accepted, "{} accepted", forged);
        }

        #[test]
        fn verify_never_panics(s in "\\PC{0,80}") {
            let k = keys(vec![key("k1", "secret")]);
            let _ = verify(&s, &k, NOW);
        }
    }
}
