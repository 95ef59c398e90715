//! BATV (Bounce Address Tag Validation) `prvs=` signatures on the address a
//! notice was delivered to.
//!
//! A mail server that signs the envelope sender of outgoing mail (Exim's
//! `${prvs ...}`, batv-tools' `batv-milter`) turns `user@domain` into
//!
//! ```text
//! prvs=KDDDSSSSSS=user@domain        (the BATV draft, Exim, batv-tools)
//! user+prvs=KDDDSSSSSS@domain        (sub-address form, for servers that
//!                                     deliver user+anything to user)
//! ```
//!
//! K is a key number (one digit), DDD the expiry day (days since 1970-01-01
//! modulo 1000; the signer writes today + 7), SSSSSS the first three bytes,
//! in hex, of HMAC-SHA1(secret, `K` `DDD` `user@domain`). A genuine bounce
//! goes to that signed address, so a valid signature there proves the user's
//! server sent the original; a forged sender is never signed (or is signed
//! wrongly). The check is as of the day the notice arrived, not the day of
//! the sweep. Pure: key and time come in as arguments.

use hmac::{KeyInit, Mac};
use sha1::Sha1;

/// Days a signature is valid after signing (Exim's fixed 7, batv-tools' default).
pub const LIFETIME_DAYS: i64 = 7;

/// A BATV-signed address, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The key number (0-9).
    pub key_number: u8,
    /// The expiry day (days since 1970-01-01, modulo 1000).
    pub expiry_day: u16,
    /// The claimed signature: six hex digits, lower case.
    pub signature: String,
    /// The address that was signed (`user@domain`, as written).
    pub address: String,
}

/// What the delivery address says as BATV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatvCheck {
    /// No `prvs=` signature.
    NotSigned,
    /// Signed with the key and not expired.
    Valid {
        /// The signed address.
        address: String,
    },
    /// Signed with the key, but expired when the notice arrived.
    Expired {
        /// The signed address.
        address: String,
    },
    /// A `prvs=` signature that the key did not make.
    Invalid {
        /// The signed address.
        address: String,
    },
}

/// Takes a `prvs=` address apart; `None` if it is not one.
pub fn parse(address: &str) -> Option<Signed> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = address.rsplit_once('@')?;
    let lower = local.to_ascii_lowercase();
    let (tag, user) = if let Some(rest) = lower.strip_prefix("prvs=") {
        let (tag, _) = rest.split_once('=')?;
        (tag.to_string(), &local[5 + tag.len() + 1..])
    } else {
        let at = lower.rfind("+prvs=")?;
        (lower[at + 6..].to_string(), &local[..at])
    };
    let bytes = tag.as_bytes();
    let well_formed = bytes.len() == 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4..].iter().all(u8::is_ascii_hexdigit);
    if !well_formed || user.is_empty() || domain.is_empty() {
        return None;
    }
    Some(Signed {
        key_number: bytes[0] - b'0',
        expiry_day: tag[1..4].parse().ok()?,
        signature: tag[4..].to_string(),
        address: format!("{user}@{domain}"),
    })
}

/// The signature for `address` with key number `key_number` and expiry day
/// `expiry_day` (already modulo 1000), six lower-case hex digits.
pub fn signature(secret: &[u8], key_number: u8, expiry_day: u16, address: &str) -> String {
    let mut m = <hmac::Hmac<Sha1> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(format!("{}{:03}{address}", key_number % 10, expiry_day % 1000).as_bytes());
    m.finalize().into_bytes()[..3]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Signs `address` (`user@domain`) as a server would at `now` (Unix
/// seconds): `prvs=KDDDSSSSSS=user@domain`.
pub fn sign(secret: &[u8], key_number: u8, address: &str, now: i64) -> String {
    let expiry = expiry_day_for(now);
    format!(
        "prvs={}{expiry:03}{}={address}",
        key_number % 10,
        signature(secret, key_number, expiry, address)
    )
}

/// The expiry day a signer writes at `now`: today + [`LIFETIME_DAYS`], modulo 1000.
pub fn expiry_day_for(now: i64) -> u16 {
    u16::try_from((now.div_euclid(86_400) + LIFETIME_DAYS).rem_euclid(1000)).unwrap_or(0)
}

/// Checks `address` with `secret` as of `at` (Unix seconds: when the notice
/// arrived). The signed address is tried as written and lower-cased (some
/// delivery agents lower-case Delivered-To).
pub fn verify(address: &str, secret: &[u8], at: i64) -> BatvCheck {
    let Some(signed) = parse(address) else {
        return BatvCheck::NotSigned;
    };
    let claimed = signed.signature.to_ascii_lowercase();
    let matches = [signed.address.clone(), signed.address.to_ascii_lowercase()]
        .iter()
        .any(|a| signature(secret, signed.key_number, signed.expiry_day, a) == claimed);
    if !matches {
        return BatvCheck::Invalid {
            address: signed.address,
        };
    }
    // Days left until expiry, modulo 1000 (as batv-tools computes it): 0..=7
    // is in date; anything else has expired (or is implausibly far ahead).
    let today = at.div_euclid(86_400).rem_euclid(1000);
    let left = (i64::from(signed.expiry_day) - today).rem_euclid(1000);
    if left <= LIFETIME_DAYS {
        BatvCheck::Valid {
            address: signed.address,
        }
    } else {
        BatvCheck::Expired {
            address: signed.address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from `tests/vectors/batv_vectors.py`, an independent Python
    /// implementation of Exim's documented `${prvs{address}{secret}{key}}`
    /// algorithm (Exim spec, "Expansion items: prvs"; the same hash as
    /// batv-tools' `prvs_generate`): (secret, key number, Unix time,
    /// address, signed address).
    const VECTORS: &[(&str, u8, i64, &str, &str)] = include!("../../tests/vectors/batv.rs.in");

    #[test]
    fn matches_the_independent_implementation() {
        assert!(VECTORS.len() >= 5);
        for (secret, k, now, address, expected) in VECTORS {
            assert_eq!(&sign(secret.as_bytes(), *k, address, *now), expected);
            assert_eq!(
                verify(expected, secret.as_bytes(), *now),
                BatvCheck::Valid {
                    address: address.to_string()
                },
                "{expected}"
            );
        }
    }

    #[test]
    fn both_forms_parse() {
        let s = parse("<PRVS=1123abcdef=Alice@example.com>").expect("prvs");
        assert_eq!((s.key_number, s.expiry_day), (1, 123));
        assert_eq!(s.address, "Alice@example.com");
        let s = parse("alice+prvs=0999ABCDEF@example.com").expect("sub-address");
        assert_eq!((s.key_number, s.expiry_day), (0, 999));
        assert_eq!(s.address, "alice@example.com");
        for not in [
            "alice@example.com",
            "prvs=12=alice@example.com",
            "prvs=1123abcdeg=alice@example.com",
            "prvs=1123abcdef=@example.com",
            "alice+prvs=1123abcdef",
        ] {
            assert_eq!(parse(not), None, "{not}");
        }
    }

    #[test]
    fn sub_address_form_verifies_with_the_same_hash() {
        let now = 1_793_491_200;
        let signed = sign(b"k", 0, "alice@example.com", now);
        let tag = &signed[5..15];
        let sub = format!("alice+prvs={tag}@example.com");
        assert!(matches!(verify(&sub, b"k", now), BatvCheck::Valid { .. }));
    }

    #[test]
    fn wrong_key_expiry_and_case() {
        let now = 1_793_491_200;
        let signed = sign(b"key", 3, "Alice@Example.com", now);
        assert!(matches!(
            verify(&signed, b"other", now),
            BatvCheck::Invalid { .. }
        ));
        assert!(matches!(
            verify(&signed, b"key", now + 7 * 86_400),
            BatvCheck::Valid { .. }
        ));
        assert!(matches!(
            verify(&signed, b"key", now + 8 * 86_400),
            BatvCheck::Expired { .. }
        ));
        assert!(matches!(
            verify(&signed.to_ascii_uppercase(), b"key", now),
            BatvCheck::Invalid { .. }
        ));
        assert!(matches!(
            verify(&signed.to_ascii_lowercase(), b"key", now),
            BatvCheck::Invalid { .. }
        ));
        // Signed lower-case, delivered upper-cased: still verifies.
        let lower = sign(b"key", 3, "alice@example.com", now);
        assert!(matches!(
            verify(&lower.to_ascii_uppercase(), b"key", now),
            BatvCheck::Valid { .. }
        ));
        assert_eq!(
            verify("alice@example.com", b"key", now),
            BatvCheck::NotSigned
        );
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics_and_signing_round_trips(
            s in "\\PC{0,60}",
            local in "[a-zA-Z0-9.+_-]{1,20}",
            k in 0u8..10,
            now in 0i64..4_000_000_000,
        ) {
            let _ = verify(&s, b"k", now);
            let address = format!("{local}@example.org");
            let signed = sign(b"key", k, &address, now);
            let is_valid = matches!(verify(&signed, b"key", now), BatvCheck::Valid { .. });
            proptest::prop_assert!(is_valid, "{}", signed);
        }
    }
}
