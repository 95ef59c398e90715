//! Provider presets: what a user would otherwise have to look up for Gmail and Microsoft 365
//! (IMAP host, OAuth2 endpoints, scopes, folder names), and the generic mode for any other
//! provider, whose endpoints come from the config.
//!
//! The values are the providers' published ones (Google: "OAuth 2.0 for Mobile & Desktop Apps"
//! and the Gmail IMAP/XOAUTH2 guide; Microsoft: "Authenticate an IMAP connection using OAuth" and
//! the identity platform v2.0 endpoints). No client id is built in: each user registers their
//! own app (see the README), so backsweep is never tied to someone else's registration.

use serde::Deserialize;

/// A provider preset named by `provider:` in an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Gmail and Google Workspace.
    Gmail,
    /// Microsoft 365 / Exchange Online (also Outlook.com with the `consumers` tenant).
    Microsoft365,
}

impl Provider {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Gmail => "gmail",
            Provider::Microsoft365 => "microsoft365",
        }
    }
}

/// Microsoft's default tenant: work, school and personal accounts.
pub const MICROSOFT_DEFAULT_TENANT: &str = "common";

/// Everything a preset fills in. Config keys given explicitly win over these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// IMAP host (implicit TLS on port 993).
    pub host: &'static str,
    /// Sent folders to index; `None` = SPECIAL-USE `\Sent` auto-detection (Gmail localises
    /// the name: `[Gmail]/Sent Mail`, `[Google Mail]/Sent Mail`, ...).
    pub sent: Option<&'static [&'static str]>,
    /// Default quarantine folder. On Gmail it is a label (see [`Preset::moves_are_labels`]).
    pub quarantine: &'static str,
    /// Token endpoint.
    pub token_url: String,
    /// Device authorization endpoint (RFC 8628), when the provider allows the device flow for
    /// the mail scope (Google does not).
    pub device_authorization_url: Option<String>,
    /// Authorization endpoint for the browser flow.
    pub authorization_url: String,
    /// Scopes: IMAP access plus whatever the provider needs to hand out a refresh token.
    pub scopes: &'static [&'static str],
    /// Extra query parameters for the authorization request.
    pub authorize_params: &'static [(&'static str, &'static str)],
    /// Whether folders are Gmail labels: a MOVE out of INBOX removes the `Inbox` label and adds
    /// the destination label; the message stays in `All Mail` and keeps its other labels.
    pub moves_are_labels: bool,
}

/// The preset for `provider`; `tenant` is used by Microsoft 365 only.
pub fn preset(provider: Provider, tenant: &str) -> Preset {
    match provider {
        Provider::Gmail => Preset {
            host: "imap.gmail.com",
            sent: None,
            quarantine: "Quarantine",
            token_url: "https://oauth2.googleapis.com/token".into(),
            // Google's device flow does not allow the https://mail.google.com/ scope.
            device_authorization_url: None,
            authorization_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            scopes: &["https://mail.google.com/"],
            // Without access_type=offline Google returns no refresh token; prompt=consent makes
            // it return one again on a repeated login.
            authorize_params: &[("access_type", "offline"), ("prompt", "consent")],
            moves_are_labels: true,
        },
        Provider::Microsoft365 => {
            let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
            Preset {
                host: "outlook.office365.com",
                sent: Some(&["Sent Items"]),
                quarantine: "Quarantine",
                token_url: format!("{base}/token"),
                device_authorization_url: Some(format!("{base}/devicecode")),
                authorization_url: format!("{base}/authorize"),
                scopes: &[
                    "https://outlook.office.com/IMAP.AccessAsUser.All",
                    "offline_access",
                ],
                authorize_params: &[],
                moves_are_labels: false,
            }
        }
    }
}

/// Checks an endpoint URL: `https://`, or `http://` to a loopback address only (a local test
/// server). Returns whether the host is a loopback address, or the reason the URL is not
/// acceptable.
pub fn check_endpoint_url(url: &str) -> Result<bool, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL (https://host/path)"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` is not a URL (https://host/path)"));
    }
    let loopback = crate::config::is_loopback_host(host);
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(loopback),
        "http" if loopback => Ok(true),
        "http" => Err(format!(
            "`{url}` is plain http to a host that is not loopback: tokens must travel over https"
        )),
        _ => Err(format!("`{url}` must start with https://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_secure_endpoints() {
        for p in [
            preset(Provider::Gmail, "x"),
            preset(Provider::Microsoft365, "contoso.onmicrosoft.com"),
        ] {
            check_endpoint_url(&p.token_url).expect("token url");
            check_endpoint_url(&p.authorization_url).expect("authorize url");
            if let Some(d) = &p.device_authorization_url {
                check_endpoint_url(d).expect("device url");
            }
        }
        let m = preset(Provider::Microsoft365, "contoso.onmicrosoft.com");
        assert_eq!(
            m.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert!(m.scopes.contains(&"offline_access"));
        assert!(preset(Provider::Gmail, "").moves_are_labels);
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(check_endpoint_url("https://example.com/token"), Ok(false));
        assert_eq!(check_endpoint_url("http://127.0.0.1:8080/token"), Ok(true));
        assert!(check_endpoint_url("http://[::1]:8080/token").is_ok());
        assert!(check_endpoint_url("http://localhost/token").is_ok());
        assert!(check_endpoint_url("http://example.com/token").is_err());
        assert!(check_endpoint_url("http://127.0.0.1.example.com/t").is_err());
        assert!(check_endpoint_url("ftp://example.com/").is_err());
        assert!(check_endpoint_url("example.com/token").is_err());
        assert!(check_endpoint_url("https:///token").is_err());
    }
}
