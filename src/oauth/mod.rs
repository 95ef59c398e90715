//! OAuth2 for IMAP (XOAUTH2 / OAUTHBEARER): provider presets, the interactive sign-in of
//! `backsweep login`, and access tokens that are refreshed before they expire.
//!
//! Why this exists: Microsoft 365 no longer accepts passwords over IMAP and Gmail only with
//! app passwords. An OAuth2 account signs in once, interactively ([`flows`]: the device-code
//! flow of RFC 8628 for headless machines, the authorization-code flow with PKCE, RFC 7636,
//! over a loopback redirect for desktops). The refresh token it gets is stored like a password
//! ([`tokens`]: the OS keyring, or a 0600 file when there is none) and every later connection
//! turns it into a short-lived access token, so `sweep` and the daemon run unattended.
//!
//! Boundaries: this module never talks IMAP. [`crate::secrets::resolve`] hands an account's
//! current access token to [`crate::imap`], which authenticates with it and, when the server
//! rejects it, asks [`tokens::refresh_access_token`] for a new one once. A refresh token the
//! provider no longer accepts is reported as [`OAuthError::ReloginRequired`], whose message
//! tells the user to run `backsweep login ACCOUNT`.
//!
//! Tokens never appear in logs or errors: they are [`Secret`]s, and provider error responses
//! are reduced to their `error` / `error_description` fields.

pub mod flows;
mod http;
pub mod providers;
pub mod testprovider;
pub mod tokens;

use std::path::PathBuf;

use crate::secrets::Secret;
pub use providers::Provider;

/// The SASL mechanism an OAuth2 account authenticates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaslMechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    Xoauth2,
    /// RFC 7628 `OAUTHBEARER`.
    Oauthbearer,
}

impl SaslMechanism {
    /// The IMAP name (`XOAUTH2`, `OAUTHBEARER`).
    pub fn imap_name(self) -> &'static str {
        match self {
            SaslMechanism::Xoauth2 => "XOAUTH2",
            SaslMechanism::Oauthbearer => "OAUTHBEARER",
        }
    }

    /// The other bearer-token mechanism (used when the server offers only that one).
    pub fn other(self) -> SaslMechanism {
        match self {
            SaslMechanism::Xoauth2 => SaslMechanism::Oauthbearer,
            SaslMechanism::Oauthbearer => SaslMechanism::Xoauth2,
        }
    }
}

/// Where an account's tokens are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStore {
    /// The OS keyring when there is one, else `file` (mode 0600). The default.
    Auto {
        /// Keyring entry name (service `backsweep`).
        entry: String,
        /// The fallback file.
        file: PathBuf,
    },
    /// Only the OS keyring.
    Keyring {
        /// Keyring entry name (service `backsweep`).
        entry: String,
    },
    /// Only this file (mode 0600).
    File(PathBuf),
}

/// An account's validated OAuth2 settings (preset values merged with the config's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// The preset the values came from, if any (`None` = generic provider).
    pub provider: Option<Provider>,
    /// The SASL mechanism to use first.
    pub mechanism: SaslMechanism,
    /// The registered application's client id.
    pub client_id: String,
    /// The client secret, for providers that want one even from installed apps (Google).
    pub client_secret: Option<Secret>,
    /// Token endpoint (code exchange and refresh).
    pub token_url: String,
    /// Device authorization endpoint (RFC 8628), if the provider allows that flow.
    pub device_authorization_url: Option<String>,
    /// Authorization endpoint for the browser (PKCE) flow, if any.
    pub authorization_url: Option<String>,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (Google: `access_type=offline`).
    pub authorize_params: Vec<(String, String)>,
    /// Where the tokens are kept.
    pub token_store: TokenStore,
    /// Timeout of each HTTP request to the provider.
    pub timeout: std::time::Duration,
}

/// Why an OAuth2 step failed. The messages name the account and say what to do; none contains
/// a token.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// No tokens are stored for the account yet.
    #[error("account `{account}`: not signed in to the OAuth2 provider yet (no stored token); run `backsweep login {account}`")]
    NotLoggedIn {
        /// The account.
        account: String,
    },
    /// The provider rejected the refresh token: revoked, expired, or the password changed.
    #[error("account `{account}`: the OAuth2 provider no longer accepts the stored refresh token ({detail}); it was revoked or has expired. Run `backsweep login {account}` to sign in again")]
    ReloginRequired {
        /// The account.
        account: String,
        /// The provider's `error` and `error_description`.
        detail: String,
    },
    /// The provider answered with another OAuth2 error.
    #[error("account `{account}`: the OAuth2 provider refused the request to {url}: {detail}")]
    Provider {
        /// The account.
        account: String,
        /// The endpoint.
        url: String,
        /// The provider's `error` and `error_description`, or the HTTP status.
        detail: String,
    },
    /// The provider could not be reached or answered something that is not OAuth2.
    #[error("account `{account}`: cannot talk to the OAuth2 provider at {url}: {detail}")]
    Http {
        /// The account.
        account: String,
        /// The endpoint.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The tokens could not be read or written.
    #[error("account `{account}`: OAuth2 token store: {detail}")]
    Store {
        /// The account.
        account: String,
        /// What went wrong (never the token).
        detail: String,
    },
    /// The interactive sign-in did not complete (denied, timed out, wrong state, ...).
    #[error("account `{account}`: sign-in failed: {detail}")]
    Login {
        /// The account.
        account: String,
        /// What happened and what to do.
        detail: String,
    },
}

/// An OAuth2 error response's `error` and `error_description`, or the HTTP status.
fn describe_error_response(status: u16, body: &serde_json::Value) -> String {
    let error = body.get("error").and_then(|e| e.as_str());
    let description = body.get("error_description").and_then(|e| e.as_str());
    match (error, description) {
        (Some(e), Some(d)) => format!("{e}: {}", one_line(d, 300)),
        (Some(e), None) => e.to_string(),
        _ => format!("HTTP status {status}"),
    }
}

/// `s` on one line, at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        flat.chars().take(max).collect::<String>() + "…"
    } else {
        flat
    }
}

/// Settings for unit tests: a generic provider at `token_url` (browser flow at
/// `authorization_url`), client id `cid`, scope `mail`.
#[cfg(test)]
pub(crate) fn test_settings(
    token_url: String,
    authorization_url: Option<String>,
    token_store: TokenStore,
) -> OAuthSettings {
    OAuthSettings {
        provider: None,
        mechanism: SaslMechanism::Xoauth2,
        client_id: "cid".into(),
        client_secret: None,
        token_url,
        device_authorization_url: None,
        authorization_url,
        scopes: vec!["mail".into()],
        authorize_params: vec![("access_type".into(), "offline".into())],
        token_store,
        timeout: std::time::Duration::from_secs(10),
    }
}
