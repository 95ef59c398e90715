//! Stored tokens and their refresh.
//!
//! An account's tokens (refresh token, current access token and its expiry) are one small JSON
//! document kept like a password: in the OS keyring (service `backsweep`), or — when the system
//! has no keyring, as on most headless servers — in a file of mode 0600 in a 0700 directory
//! under the state directory. The access token is cached there too, so a sweep every few minutes
//! does not ask the provider for a new token each time.
//!
//! [`access_token`] returns a token valid for at least [`REFRESH_MARGIN`], refreshing first when
//! needed; [`refresh_access_token`] refreshes unconditionally (after the IMAP server rejected a
//! token). A provider answer `invalid_grant` means the refresh token is dead: that becomes
//! [`OAuthError::ReloginRequired`]. Refreshes of one process are serialised so two connections
//! of the same account do not race each other's rotated refresh tokens.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::http::Client;
use super::{describe_error_response, OAuthError, OAuthSettings, TokenStore};
use crate::config::PasswordSource;
use crate::secrets::{self, Secret, SecretError};

/// An access token is refreshed when it has less than this left (a sweep of a large mailbox
/// must not run into its expiry).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A token with at least this long to live is still used when an early refresh fails.
const STILL_USABLE_SECS: u64 = 30;

/// Lifetime assumed when the provider does not say (`expires_in` missing).
const DEFAULT_LIFETIME_SECS: u64 = 3600;

/// Serialises refreshes within this process.
static REFRESH_LOCK: Mutex<()> = Mutex::new(());

/// The stored document. `Debug` is redacted.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredTokens {
    /// The long-lived refresh token.
    pub refresh_token: String,
    /// The current access token.
    pub access_token: String,
    /// When the access token expires (Unix seconds).
    pub expires_at: u64,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Drop for StoredTokens {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.refresh_token.zeroize();
        self.access_token.zeroize();
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token endpoint's successful answer.
pub(crate) struct TokenAnswer {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: u64,
}

/// Parses a successful token answer (RFC 6749 5.1).
pub(crate) fn parse_token_answer(
    account: &str,
    url: &str,
    body: &serde_json::Value,
) -> Result<TokenAnswer, OAuthError> {
    let access = body
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OAuthError::Http {
            account: account.to_string(),
            url: url.to_string(),
            detail: "the answer has no access_token".into(),
        })?;
    // Some providers send expires_in as a string.
    let lifetime = match body.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(DEFAULT_LIFETIME_SECS)
    .min(365 * 86_400);
    Ok(TokenAnswer {
        access_token: Secret::new(access),
        refresh_token: body
            .get("refresh_token")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(Secret::new),
        expires_at: now_secs().saturating_add(lifetime),
    })
}

/// POSTs to the token endpoint; on success the parsed answer, else the OAuth2 `error` code and
/// the error to report.
pub(crate) fn token_request(
    account: &str,
    settings: &OAuthSettings,
    form: &[(&str, &str)],
) -> Result<TokenAnswer, (Option<String>, OAuthError)> {
    let url = settings.token_url.as_str();
    let client_id = settings.client_id.as_str();
    let mut form: Vec<(&str, &str)> = form.to_vec();
    form.push(("client_id", client_id));
    if let Some(secret) = &settings.client_secret {
        form.push(("client_secret", secret.expose()));
    }
    let http_err = |detail: String| OAuthError::Http {
        account: account.to_string(),
        url: url.to_string(),
        detail,
    };
    let client = Client::new(settings.timeout).map_err(|d| (None, http_err(d)))?;
    let (status, body) = client
        .post_form(url, &form)
        .map_err(|d| (None, http_err(d)))?;
    if (200..300).contains(&status) && body.get("error").is_none() {
        return parse_token_answer(account, url, &body).map_err(|e| (None, e));
    }
    let code = body
        .get("error")
        .and_then(|e| e.as_str())
        .map(str::to_string);
    Err((
        code,
        OAuthError::Provider {
            account: account.to_string(),
            url: url.to_string(),
            detail: describe_error_response(status, &body),
        },
    ))
}

/// The account's access token, refreshed first when it expires within [`REFRESH_MARGIN`].
/// Blocking (HTTP, keyring).
pub fn access_token(account: &str, settings: &OAuthSettings) -> Result<Secret, OAuthError> {
    let _guard = REFRESH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let stored = load(account, &settings.token_store)?;
    let now = now_secs();
    if stored.expires_at > now.saturating_add(REFRESH_MARGIN.as_secs()) {
        return Ok(Secret::new(stored.access_token.as_str()));
    }
    match refresh_locked(account, settings, &stored) {
        // The provider is unreachable or failing, but the token still has a little time: use
        // it rather than fail a sweep that can still succeed.
        Err(e @ (OAuthError::Http { .. } | OAuthError::Provider { .. }))
            if stored.expires_at > now.saturating_add(STILL_USABLE_SECS) =>
        {
            tracing::warn!(account, error = %e, "cannot refresh the OAuth2 access token yet; using the current one until it expires");
            Ok(Secret::new(stored.access_token.as_str()))
        }
        other => other,
    }
}

/// Refreshes the access token now, whatever its expiry (the server rejected it).
/// Blocking (HTTP, keyring).
pub fn refresh_access_token(account: &str, settings: &OAuthSettings) -> Result<Secret, OAuthError> {
    let _guard = REFRESH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let stored = load(account, &settings.token_store)?;
    refresh_locked(account, settings, &stored)
}

fn refresh_locked(
    account: &str,
    settings: &OAuthSettings,
    stored: &StoredTokens,
) -> Result<Secret, OAuthError> {
    tracing::debug!(account, "refreshing the OAuth2 access token");
    let answer = token_request(
        account,
        settings,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", stored.refresh_token.as_str()),
        ],
    )
    .map_err(|(code, e)| match (code.as_deref(), e) {
        (Some("invalid_grant"), OAuthError::Provider { detail, .. }) => {
            OAuthError::ReloginRequired {
                account: account.to_string(),
                detail,
            }
        }
        (_, e) => e,
    })?;
    let tokens = StoredTokens {
        // Providers that rotate refresh tokens (Microsoft) send a new one; others keep the old.
        refresh_token: answer
            .refresh_token
            .as_ref()
            .map_or(stored.refresh_token.clone(), |r| r.expose().to_string()),
        access_token: answer.access_token.expose().to_string(),
        expires_at: answer.expires_at,
    };
    save(account, &settings.token_store, &tokens)?;
    Ok(answer.access_token)
}

/// Stores the tokens of a completed sign-in; returns where they went (for the user).
pub(crate) fn store_login(
    account: &str,
    settings: &OAuthSettings,
    answer: &TokenAnswer,
) -> Result<String, OAuthError> {
    let refresh = answer
        .refresh_token
        .as_ref()
        .ok_or_else(|| OAuthError::Login {
            account: account.to_string(),
            detail: "the provider issued no refresh token, so backsweep could not sign in again \
                 unattended; check that the scopes allow offline access (Microsoft: \
                 `offline_access`; Google: access_type=offline)"
                .into(),
        })?;
    let tokens = StoredTokens {
        refresh_token: refresh.expose().to_string(),
        access_token: answer.access_token.expose().to_string(),
        expires_at: answer.expires_at,
    };
    let _guard = REFRESH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    save(account, &settings.token_store, &tokens)
}

fn store_err(account: &str, detail: impl Into<String>) -> OAuthError {
    OAuthError::Store {
        account: account.to_string(),
        detail: detail.into(),
    }
}

fn parse(account: &str, text: &str, place: &str) -> Result<StoredTokens, OAuthError> {
    serde_json::from_str(text).map_err(|_| {
        store_err(
            account,
            format!("the stored tokens in {place} are damaged; run `backsweep login {account}`"),
        )
    })
}

/// Loads the stored tokens.
pub fn load(account: &str, store: &TokenStore) -> Result<StoredTokens, OAuthError> {
    match store {
        TokenStore::File(path) => load_file(account, path),
        TokenStore::Keyring { entry } => load_keyring(account, entry, false),
        // A file exists only when the last login found no keyring.
        TokenStore::Auto { file, .. } if file.exists() => load_file(account, file),
        TokenStore::Auto { entry, .. } => load_keyring(account, entry, true),
    }
}

fn load_file(account: &str, path: &Path) -> Result<StoredTokens, OAuthError> {
    if !path.exists() {
        return Err(OAuthError::NotLoggedIn {
            account: account.to_string(),
        });
    }
    // The password-file reader checks the 0600 mode and says how to fix it.
    let text = secrets::resolve(account, &PasswordSource::File(path.to_path_buf()))
        .map_err(|e| store_err(account, e.to_string()))?;
    parse(account, text.expose(), &path.display().to_string())
}

/// Reads the keyring entry; with `no_keyring_is_empty` a system without a keyring counts as
/// "nothing stored" (the `auto` store would have used its file).
fn load_keyring(
    account: &str,
    entry: &str,
    no_keyring_is_empty: bool,
) -> Result<StoredTokens, OAuthError> {
    let source = PasswordSource::Keyring {
        entry: entry.to_string(),
    };
    match secrets::resolve(account, &source) {
        Ok(text) => parse(account, text.expose(), "the OS keyring"),
        Err(SecretError::KeyringNoEntry { .. }) => Err(OAuthError::NotLoggedIn {
            account: account.to_string(),
        }),
        Err(SecretError::NoSecretService { .. }) if no_keyring_is_empty => {
            Err(OAuthError::NotLoggedIn {
                account: account.to_string(),
            })
        }
        Err(e) => Err(store_err(account, e.to_string())),
    }
}

/// Saves the tokens; returns a description of where.
pub fn save(
    account: &str,
    store: &TokenStore,
    tokens: &StoredTokens,
) -> Result<String, OAuthError> {
    let json = Zeroizing::new(
        serde_json::to_string(tokens).map_err(|e| store_err(account, e.to_string()))?,
    );
    match store {
        TokenStore::File(path) => save_file(account, path, &json),
        TokenStore::Keyring { entry } => save_keyring(account, entry, &json),
        TokenStore::Auto { entry, file } => {
            // Once a file is in use it stays in use (loading prefers it).
            if file.exists() {
                return save_file(account, file, &json);
            }
            match secrets::set_keyring_password(account, entry, &Secret::new(json.as_str())) {
                Ok(()) => Ok(keyring_place(entry)),
                Err(SecretError::NoSecretService { .. }) => {
                    tracing::info!(account, file = %file.display(), "no OS keyring: storing the OAuth2 tokens in a 0600 file");
                    save_file(account, file, &json)
                }
                Err(e) => Err(store_err(account, e.to_string())),
            }
        }
    }
}

fn keyring_place(entry: &str) -> String {
    format!(
        "the OS keyring (service `{}`, entry `{entry}`)",
        secrets::KEYRING_SERVICE
    )
}

fn save_keyring(account: &str, entry: &str, json: &str) -> Result<String, OAuthError> {
    secrets::set_keyring_password(account, entry, &Secret::new(json))
        .map_err(|e| store_err(account, e.to_string()))?;
    Ok(keyring_place(entry))
}

/// Writes the file atomically (temporary file of mode 0600, then rename), its directory 0700.
fn save_file(account: &str, path: &Path, json: &str) -> Result<String, OAuthError> {
    let io = |what: &str, e: std::io::Error| {
        store_err(account, format!("cannot {what} {}: {e}", path.display()))
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // The directory holds only token files: keep others out.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("protect the directory of", e))?;
    }
    let mut file = options.open(&tmp).map_err(|e| io("write", e))?;
    #[cfg(unix)]
    {
        // An existing temporary file keeps its old mode: enforce 0600.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("protect", e))?;
    }
    file.write_all(json.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("write", e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io("write", e))?;
    Ok(format!("{} (mode 0600)", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_store(dir: &Path) -> TokenStore {
        TokenStore::File(dir.join("oauth").join("work.json"))
    }

    fn tokens(expires_at: u64) -> StoredTokens {
        StoredTokens {
            refresh_token: "r-secret".into(),
            access_token: "a-secret".into(),
            expires_at,
        }
    }

    #[cfg(unix)]
    #[test]
    fn file_store_round_trip_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = file_store(dir.path());
        assert!(matches!(
            load("work", &store),
            Err(OAuthError::NotLoggedIn { .. })
        ));
        let place = save("work", &store, &tokens(42)).expect("save");
        assert!(place.contains("0600"), "{place}");
        let path = dir.path().join("oauth").join("work.json");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(dir.path().join("oauth"))
            .expect("dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let back = load("work", &store).expect("load");
        assert_eq!(back.refresh_token, "r-secret");
        assert_eq!(back.expires_at, 42);
        assert!(!format!("{back:?}").contains("secret"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load("work", &store).expect_err("refused").to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::write(&path, "{not json").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = load("work", &store).expect_err("damaged").to_string();
        assert!(e.contains("backsweep login work"), "{e}");
    }

    /// `auto` on a machine without a Secret Service (CI, servers) falls back to the 0600 file,
    /// and keeps using it. With a keyring present the test would write to the user's real
    /// keyring, so it then only checks that nothing was written to the file.
    #[cfg(target_os = "linux")]
    #[test]
    fn auto_store_falls_back_to_a_file_without_keyring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("oauth").join("x.json");
        let store = TokenStore::Auto {
            entry: "backsweep-unit-test-oauth-auto".into(),
            file: file.clone(),
        };
        let no_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && !std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| Path::new(&d).join("bus").exists())
                .unwrap_or(false);
        if !no_bus {
            assert!(!file.exists());
            return;
        }
        assert!(matches!(
            load("x", &store),
            Err(OAuthError::NotLoggedIn { .. })
        ));
        let place = save("x", &store, &tokens(7)).expect("save");
        assert!(place.contains("x.json"), "{place}");
        assert_eq!(load("x", &store).expect("load").expires_at, 7);
        save("x", &store, &tokens(8)).expect("save again");
        assert_eq!(load("x", &store).expect("load").expires_at, 8);
    }

    /// An early refresh that cannot reach the provider falls back to the current token while
    /// it still lives, and is an error once it does not.
    #[test]
    fn unreachable_provider_uses_the_current_token_while_it_lives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = file_store(dir.path());
        // Nothing listens on a port we just closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let settings = super::super::test_settings(
            format!("http://127.0.0.1:{port}/token"),
            None,
            store.clone(),
        );
        save("w", &store, &tokens(now_secs() + 120)).expect("save");
        let t = access_token("w", &settings).expect("still usable");
        assert_eq!(t.expose(), "a-secret");
        save("w", &store, &tokens(now_secs() + 5)).expect("save");
        let e = access_token("w", &settings).expect_err("expired");
        assert!(matches!(e, OAuthError::Http { .. }), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn token_answers() {
        let v = serde_json::json!({"access_token": "a", "expires_in": "60", "refresh_token": "r"});
        let a = parse_token_answer("w", "u", &v).expect("ok");
        assert_eq!(a.access_token.expose(), "a");
        assert!(a.expires_at >= now_secs() + 59 && a.expires_at <= now_secs() + 61);
        assert_eq!(
            a.refresh_token.map(|r| r.expose().to_string()),
            Some("r".into())
        );
        let v = serde_json::json!({"token_type": "Bearer"});
        assert!(parse_token_answer("w", "u", &v).is_err());
        let v = serde_json::json!({"access_token": "a"});
        let a = parse_token_answer("w", "u", &v).expect("ok");
        assert!(a.expires_at >= now_secs() + DEFAULT_LIFETIME_SECS - 1);
        assert!(a.refresh_token.is_none());
    }
}
