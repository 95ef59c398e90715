//! The interactive sign-in of `backsweep login`: obtain a refresh token once.
//!
//! - **Device code** (RFC 8628), for headless servers and SSH sessions: backsweep shows a short
//!   code and a web address; the user opens it on any device, signs in and enters the code;
//!   backsweep polls the token endpoint until that is done.
//! - **Browser** — authorization code with PKCE (RFC 7636, `S256`) and a loopback redirect
//!   (RFC 8252): backsweep listens on `http://127.0.0.1:PORT/` (a free port), prints the
//!   provider's sign-in address, and receives the code when the browser is sent back. The
//!   `state` parameter is checked, and the code is useless without the verifier that never
//!   left this process.
//!
//! Both end in [`super::tokens`] storing the tokens. What the user must see is handed to a
//! callback ([`Prompt`]), so the CLI prints it and tests can act on it.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use ring::rand::SecureRandom;
use sha2::{Digest, Sha256};

use super::http::{encode_component, read_request, response, Client};
use super::tokens::{store_login, token_request};
use super::{describe_error_response, OAuthError, OAuthSettings};

/// How long the browser flow waits for the redirect.
pub const BROWSER_WAIT: Duration = Duration::from_secs(300);

/// The device-code grant type (RFC 8628 3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How `backsweep login` signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    /// Device code (RFC 8628): a code to enter on any device.
    Device,
    /// A browser on this machine, PKCE with a loopback redirect.
    Browser,
}

impl LoginMethod {
    /// The method to use when the user did not choose: the device flow where the provider allows
    /// it (works over SSH too), else the browser.
    pub fn default_for(settings: &OAuthSettings) -> LoginMethod {
        if settings.device_authorization_url.is_some() {
            LoginMethod::Device
        } else {
            LoginMethod::Browser
        }
    }
}

/// What the user has to do, handed to the caller of [`login`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Open `verification_uri` and enter `user_code`.
    Device {
        /// Where to go.
        verification_uri: String,
        /// The code to enter there.
        user_code: String,
        /// The same address with the code filled in, if the provider gives one.
        verification_uri_complete: Option<String>,
        /// The provider's own instructions, if any.
        message: Option<String>,
    },
    /// Open `url` in a browser on this machine.
    Browser {
        /// The provider's sign-in address.
        url: String,
    },
}

/// Options of [`login`] beyond the method.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginOptions {
    /// Pre-fills the provider's sign-in form (the username).
    pub login_hint: Option<String>,
    /// Port of the browser flow's loopback listener; 0 = any free port. A fixed port lets a
    /// browser on another machine reach it through `ssh -L PORT:127.0.0.1:PORT`.
    pub redirect_port: u16,
}

/// Signs `account` in with `method` and stores the tokens; returns where they were stored.
/// Blocking.
pub fn login(
    account: &str,
    settings: &OAuthSettings,
    method: LoginMethod,
    options: &LoginOptions,
    prompt: &mut dyn FnMut(&Prompt),
) -> Result<String, OAuthError> {
    let answer = match method {
        LoginMethod::Device => device_flow(account, settings, prompt)?,
        LoginMethod::Browser => browser_flow(account, settings, options, prompt)?,
    };
    store_login(account, settings, &answer)
}

fn login_err(account: &str, detail: impl Into<String>) -> OAuthError {
    OAuthError::Login {
        account: account.to_string(),
        detail: detail.into(),
    }
}

fn device_flow(
    account: &str,
    settings: &OAuthSettings,
    prompt: &mut dyn FnMut(&Prompt),
) -> Result<super::tokens::TokenAnswer, OAuthError> {
    let url = settings
        .device_authorization_url
        .as_deref()
        .ok_or_else(|| {
            login_err(
                account,
                "this provider does not offer the device-code flow for mail access; use \
             `backsweep login --browser` on a machine with a browser",
            )
        })?;
    let scope = settings.scopes.join(" ");
    let http_err = |detail: String| OAuthError::Http {
        account: account.to_string(),
        url: url.to_string(),
        detail,
    };
    let client = Client::new(settings.timeout).map_err(http_err)?;
    let (status, body) = client
        .post_form(
            url,
            &[
                ("client_id", settings.client_id.as_str()),
                ("scope", &scope),
            ],
        )
        .map_err(http_err)?;
    let field = |name: &str| body.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let (device_code, user_code) = match (field("device_code"), field("user_code")) {
        (Some(d), Some(u)) if (200..300).contains(&status) => (d, u),
        _ => {
            return Err(OAuthError::Provider {
                account: account.to_string(),
                url: url.to_string(),
                detail: describe_error_response(status, &body),
            })
        }
    };
    // Google calls it verification_url.
    let verification_uri = field("verification_uri")
        .or_else(|| field("verification_url"))
        .ok_or_else(|| http_err("the answer has no verification_uri".into()))?;
    let number = |name: &str| body.get(name).and_then(|v| v.as_u64());
    let expires_in = number("expires_in").unwrap_or(900).clamp(1, 3600);
    let mut interval = number("interval").unwrap_or(5).clamp(1, 60);
    prompt(&Prompt::Device {
        verification_uri,
        user_code,
        verification_uri_complete: field("verification_uri_complete"),
        message: field("message"),
    });
    let deadline = Instant::now() + Duration::from_secs(expires_in);
    loop {
        std::thread::sleep(Duration::from_secs(interval));
        if Instant::now() > deadline {
            return Err(login_err(
                account,
                "the code expired before the sign-in was completed; run `backsweep login` again",
            ));
        }
        let r = token_request(
            account,
            settings,
            &[("grant_type", DEVICE_GRANT), ("device_code", &device_code)],
        );
        match r {
            Ok(answer) => return Ok(answer),
            Err((Some(code), _)) if code == "authorization_pending" => {}
            Err((Some(code), _)) if code == "slow_down" => interval += 5,
            Err((Some(code), _)) if code == "access_denied" => {
                return Err(login_err(account, "the sign-in was declined"))
            }
            Err((Some(code), _)) if code == "expired_token" => return Err(login_err(
                account,
                "the code expired before the sign-in was completed; run `backsweep login` again",
            )),
            Err((_, e)) => return Err(e),
        }
    }
}

/// URL-safe base64 of `n` random bytes.
fn random_token(account: &str, n: usize) -> Result<String, OAuthError> {
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| login_err(account, "the system random number generator failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// The PKCE `S256` challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn browser_flow(
    account: &str,
    settings: &OAuthSettings,
    options: &LoginOptions,
    prompt: &mut dyn FnMut(&Prompt),
) -> Result<super::tokens::TokenAnswer, OAuthError> {
    let authorize = settings.authorization_url.as_deref().ok_or_else(|| {
        login_err(
            account,
            "no `authorization_url` is configured for this account, so the browser sign-in is \
             not possible; use `backsweep login --device`",
        )
    })?;
    let listen_err = |e: std::io::Error| {
        login_err(
            account,
            format!("cannot listen on 127.0.0.1:{}: {e}", options.redirect_port),
        )
    };
    let listener = TcpListener::bind(("127.0.0.1", options.redirect_port))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(listen_err)?;
    let port = listener.local_addr().map_err(listen_err)?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let verifier = random_token(account, 32)?;
    let state = random_token(account, 16)?;
    let scope = settings.scopes.join(" ");
    let challenge = pkce_challenge(&verifier);
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &settings.client_id),
        ("redirect_uri", &redirect_uri),
        ("scope", &scope),
        ("state", &state),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    if let Some(hint) = &options.login_hint {
        params.push(("login_hint", hint));
    }
    for (k, v) in &settings.authorize_params {
        params.push((k, v));
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    let separator = if authorize.contains('?') { '&' } else { '?' };
    prompt(&Prompt::Browser {
        url: format!("{authorize}{separator}{}", query.join("&")),
    });
    let code = wait_for_redirect(account, &listener, &state)?;
    token_request(
        account,
        settings,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &verifier),
        ],
    )
    .map_err(|(_, e)| e)
}

/// Page shown in the browser after the redirect.
fn page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>backsweep</title></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>"
    )
}

/// Waits for the browser's redirect carrying our `state`; answers it and returns the code.
fn wait_for_redirect(
    account: &str,
    listener: &TcpListener,
    state: &str,
) -> Result<String, OAuthError> {
    let deadline = Instant::now() + BROWSER_WAIT;
    loop {
        if Instant::now() > deadline {
            return Err(login_err(
                account,
                "no answer from the browser within 5 minutes; run `backsweep login` again",
            ));
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(login_err(account, format!("loopback listener: {e}"))),
        };
        if let Some(result) = handle_redirect(account, stream, state) {
            return result;
        }
    }
}

/// One request to the loopback listener: `None` when it is not the redirect (a favicon, a
/// stray or forged request), which is answered and ignored.
fn handle_redirect(
    account: &str,
    mut stream: TcpStream,
    state: &str,
) -> Option<Result<String, OAuthError>> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = read_request(&stream).ok()?;
    let reply = |stream: &mut TcpStream, status: &str, title: &str, text: &str| {
        let _ = stream.write_all(
            response(status, "text/html; charset=utf-8", "", &page(title, text)).as_bytes(),
        );
    };
    if request.path != "/" || request.param("state") != Some(state) {
        reply(&mut stream, "404 Not Found", "Not found", "");
        return None;
    }
    if let Some(error) = request.param("error") {
        let detail = match request.param("error_description") {
            Some(d) => format!("{error}: {}", super::one_line(d, 300)),
            None => error.to_string(),
        };
        reply(
            &mut stream,
            "200 OK",
            "Sign-in failed",
            "backsweep was not authorised. You can close this window.",
        );
        return Some(Err(login_err(
            account,
            format!("the provider answered {detail}"),
        )));
    }
    let code = request.param("code").filter(|c| !c.is_empty())?.to_string();
    reply(
        &mut stream,
        "200 OK",
        "Signed in",
        "backsweep received the authorisation. You can close this window.",
    );
    Some(Ok(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The browser flow against the test provider, the test acting as the browser: a forged
    /// redirect with the wrong `state` is refused and ignored, the real one completes.
    #[test]
    fn browser_flow_checks_state_and_pkce() {
        let provider = super::super::testprovider::TestProvider::start("cid", "u@example.com")
            .expect("provider");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t.json");
        let settings = super::super::test_settings(
            provider.token_url(),
            Some(provider.authorization_url()),
            super::super::TokenStore::File(file.clone()),
        );
        let mut browser = None;
        let place = login(
            "t",
            &settings,
            LoginMethod::default_for(&settings),
            &LoginOptions::default(),
            &mut |p: &Prompt| {
                let Prompt::Browser { url } = p else {
                    panic!("expected the browser flow, got {p:?}")
                };
                assert!(url.contains("access_type=offline"), "{url}");
                let redirect = super::super::http::parse_urlencoded(
                    url.split_once('?').map(|(_, q)| q).unwrap_or_default(),
                )
                .into_iter()
                .find(|(k, _)| k == "redirect_uri")
                .map(|(_, v)| v)
                .expect("redirect_uri");
                let url = url.clone();
                browser = Some(std::thread::spawn(move || {
                    let forged = ureq::get(&format!("{redirect}?code=evil&state=wrong")).call();
                    assert!(
                        matches!(forged, Err(ureq::Error::StatusCode(404))),
                        "{forged:?}"
                    );
                    let mut page = ureq::get(&url).call().expect("browser");
                    page.body_mut().read_to_string().expect("page")
                }));
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(place.contains("t.json"), "{place}");
        let page = browser.expect("prompted").join().expect("browser thread");
        assert!(page.contains("Signed in"), "{page}");
        assert_eq!(provider.stats().code_exchanges, 1);
        let stored = crate::oauth::tokens::load("t", &settings.token_store).expect("stored");
        assert!(stored.refresh_token.starts_with("refresh-"));
    }

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let t = random_token("a", 32).expect("random");
        assert_eq!(t.len(), 43);
        assert_ne!(t, random_token("a", 32).expect("random"));
    }
}
