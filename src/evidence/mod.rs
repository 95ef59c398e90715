//! Evidence beyond the sent index: signed Message-ID tags, BATV signatures,
//! learned fingerprints of the user's mail and the recipient window.
//!
//! The verification in [`tags`], [`batv`], [`fingerprint`] and [`window`]
//! is pure; this module only gathers what it needs once per sweep (or
//! `inspect`): the keys, resolved from their secret sources, and the
//! fingerprint, read from the state store. The verdict
//! ([`crate::verdict::judge`]) decides what each piece of evidence means.

pub mod batv;
pub mod fingerprint;
pub mod tags;
pub mod window;

use crate::config::{Account, PasswordSource};
use crate::secrets::{self, SecretError};
use crate::store::{Store, StoreError};
use fingerprint::Fingerprint;
use tags::{TagKey, TagKeys};
use zeroize::Zeroizing;

/// Everything the verdict needs beyond the sent index, for one account.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// Tag keys (current first), if the account has a `tag_key`.
    pub tags: Option<TagKeys>,
    /// The BATV secret, if the account has a `batv_key`.
    pub batv_key: Option<BatvKey>,
    /// What the user's own mail looks like.
    pub fingerprint: Fingerprint,
    /// The recipient window in days.
    pub window_days: u32,
}

impl Default for Evidence {
    /// No keys, nothing learned, the default window.
    fn default() -> Evidence {
        Evidence {
            tags: None,
            batv_key: None,
            fingerprint: Fingerprint::default(),
            window_days: window::DEFAULT_WINDOW_DAYS,
        }
    }
}

/// A BATV secret (never printed).
#[derive(Clone)]
pub struct BatvKey(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for BatvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatvKey(<redacted>)")
    }
}

impl Evidence {
    /// Resolves the account's tag and BATV keys from their secret sources
    /// (may run a command or ask the keyring). The fingerprint starts empty:
    /// see [`Evidence::learn`].
    pub fn resolve(account: &Account) -> Result<Evidence, SecretError> {
        let settings = &account.evidence;
        let mut keys = Vec::new();
        for (id, source) in &settings.tag_keys {
            keys.push(TagKey {
                id: id.clone(),
                secret: resolve_bytes(&account.name, source)?,
            });
        }
        let tags = (!keys.is_empty()).then_some(TagKeys {
            keys,
            max_age_days: settings.tag_max_age_days,
        });
        let batv_key = match &settings.batv_key {
            Some(source) => Some(BatvKey(Zeroizing::new(resolve_bytes(
                &account.name,
                source,
            )?))),
            None => None,
        };
        Ok(Evidence {
            tags,
            batv_key,
            fingerprint: Fingerprint::default(),
            window_days: settings.window_days,
        })
    }

    /// Reads the fingerprint of the account's mail from the state store:
    /// the Message-IDs of the sent index and the relays learned from
    /// genuine bounces.
    pub fn learn(&mut self, store: &Store, account: &str) -> Result<(), StoreError> {
        let mut fingerprint = Fingerprint::default();
        let ids = store.sent_message_ids(account)?;
        fingerprint.learn_ids(ids.iter().map(String::as_str));
        let relays = store.relays(account)?;
        let mut originals: Vec<&str> = relays.iter().map(|(id, _)| id.as_str()).collect();
        originals.sort_unstable();
        originals.dedup();
        fingerprint.relay_bounces = originals.len() as u64;
        fingerprint.relay_domains = relays.iter().map(|(_, d)| d.clone()).collect();
        self.fingerprint = fingerprint;
        Ok(())
    }

    /// Mints a signed Message-ID (without angle brackets) with the current
    /// tag key for `domain`, dated `now`. `None` without a tag key.
    pub fn mint_tag(&self, domain: &str, now: i64) -> Option<Result<String, getrandom::Error>> {
        let key = self.tags.as_ref()?.keys.first()?;
        Some(tags::random_nonce().map(|nonce| tags::mint(key, domain, now, &nonce)))
    }
}

fn resolve_bytes(account: &str, source: &PasswordSource) -> Result<Vec<u8>, SecretError> {
    secrets::resolve(account, source).map(|s| s.expose().as_bytes().to_vec())
}
