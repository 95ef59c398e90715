//! A tiny OAuth2 authorization server on 127.0.0.1, for the tests: the token endpoint
//! (device-code, authorization-code with PKCE, refresh-token grants), the device authorization
//! endpoint, the authorization endpoint (which approves at once and redirects), and a token
//! introspection endpoint for Dovecot's `oauth2` passdb.
//!
//! Why a real server rather than a mock: the whole path — `backsweep login`, Dovecot validating
//! the access token, a refresh after the token expired, a revoked refresh token — runs over real
//! HTTP and real IMAP, without the internet. It signs in exactly one user and approves every
//! request for it without a human: the device flow is approved after the first poll, and
//! `GET /authorize` redirects straight back with a code, so a test can act as the browser.
//!
//! Controls for tests: [`TestProvider::expire_access_tokens`] makes every issued access token
//! inactive (what the IMAP server sees when a token expired early), and
//! [`TestProvider::revoke_refresh_tokens`] what a provider does when a user withdraws consent.
//! Refresh tokens rotate: a refresh invalidates the old one, so a client that forgets to store
//! the new one fails its next refresh.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::flows::pkce_challenge;
use super::http::{encode_component, read_request, response, Request};

/// Counters a test can assert on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// Device authorization requests.
    pub device_authorizations: u64,
    /// Token requests with the device-code grant (polls).
    pub device_polls: u64,
    /// Authorization codes exchanged successfully.
    pub code_exchanges: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Refreshes refused (`invalid_grant`).
    pub refused_refreshes: u64,
    /// Introspections that found an active token.
    pub introspections_active: u64,
    /// Introspections that found an unknown, expired or revoked token.
    pub introspections_inactive: u64,
}

#[derive(Debug, Default)]
struct State {
    stats: ProviderStats,
    /// access token → expiry (Unix seconds); 0 = expired by the test.
    access: HashMap<String, u64>,
    /// Valid refresh tokens.
    refresh: Vec<String>,
    /// device code → polls so far.
    devices: HashMap<String, u32>,
    /// authorization code → (PKCE challenge, redirect URI).
    codes: HashMap<String, (String, String)>,
    access_lifetime: u64,
}

/// A running test authorization server. Dropping it stops the server.
#[derive(Debug)]
pub struct TestProvider {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    client_id: String,
    user: String,
    port: u16,
    counter: AtomicU64,
    state: Arc<Mutex<State>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TestProvider {
    /// Starts the server on a free loopback port; it accepts `client_id` and signs in `user`.
    /// Access tokens live an hour unless [`TestProvider::set_access_lifetime`] says otherwise.
    pub fn start(client_id: &str, user: &str) -> std::io::Result<TestProvider> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            access_lifetime: 3600,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            client_id: client_id.to_string(),
            user: user.to_string(),
            port,
            counter: AtomicU64::new(1),
            state: Arc::clone(&state),
        };
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("backsweep-test-oauth".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => shared.serve(stream),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })?;
        Ok(TestProvider {
            port,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        self.url("/token")
    }

    /// The device authorization endpoint.
    pub fn device_authorization_url(&self) -> String {
        self.url("/device")
    }

    /// The authorization endpoint (approves at once and redirects).
    pub fn authorization_url(&self) -> String {
        self.url("/authorize")
    }

    /// The introspection endpoint for Dovecot (`introspection_mode = post`).
    pub fn introspection_url(&self) -> String {
        self.url("/introspect")
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Lifetime (`expires_in`) of access tokens issued from now on.
    pub fn set_access_lifetime(&self, secs: u64) {
        self.with_state(|s| s.access_lifetime = secs);
    }

    /// Makes every access token issued so far inactive.
    pub fn expire_access_tokens(&self) {
        self.with_state(|s| s.access.values_mut().for_each(|e| *e = 0));
    }

    /// Revokes every refresh token issued so far (refreshes then get `invalid_grant`).
    pub fn revoke_refresh_tokens(&self) {
        self.with_state(|s| s.refresh.clear());
    }

    /// The counters.
    pub fn stats(&self) -> ProviderStats {
        self.with_state(|s| s.stats)
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn json_response(status: &str, body: serde_json::Value) -> String {
    response(status, "application/json", "", &body.to_string())
}

fn oauth_error(code: &str) -> String {
    json_response(
        "400 Bad Request",
        serde_json::json!({ "error": code, "error_description": format!("test provider: {code}") }),
    )
}

impl Shared {
    fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let reply = match read_request(&stream) {
            Ok(request) => self.route(&request),
            Err(_) => oauth_error("invalid_request"),
        };
        let _ = stream.write_all(reply.as_bytes());
    }

    fn new_token(&self, kind: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{kind}-{n}-{}", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn route(&self, r: &Request) -> String {
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/device") => self.device(r),
            ("POST", "/token") => self.token(r),
            ("GET", "/authorize") => self.authorize(r),
            (_, "/introspect") => self.introspect(r),
            _ => response("404 Not Found", "text/plain", "", "not found"),
        }
    }

    fn device(&self, r: &Request) -> String {
        if r.param("client_id") != Some(&self.client_id) {
            return oauth_error("invalid_client");
        }
        let code = self.new_token("device");
        let mut s = self.state();
        s.stats.device_authorizations += 1;
        s.devices.insert(code.clone(), 0);
        json_response(
            "200 OK",
            serde_json::json!({
                "device_code": code,
                "user_code": "TEST-CODE",
                "verification_uri": format!("http://127.0.0.1:{}/verify", self.port),
                "expires_in": 60,
                "interval": 1,
            }),
        )
    }

    fn authorize(&self, r: &Request) -> String {
        let redirect = r.param("redirect_uri").unwrap_or_default().to_string();
        if r.param("client_id") != Some(&self.client_id)
            || r.param("response_type") != Some("code")
            || r.param("code_challenge_method") != Some("S256")
            || !redirect.starts_with("http://127.0.0.1:")
        {
            return response(
                "400 Bad Request",
                "text/plain",
                "",
                "bad authorization request",
            );
        }
        let challenge = r.param("code_challenge").unwrap_or_default().to_string();
        let code = self.new_token("code");
        self.state()
            .codes
            .insert(code.clone(), (challenge, redirect.clone()));
        let location = format!(
            "{redirect}?code={}&state={}",
            encode_component(&code),
            encode_component(r.param("state").unwrap_or_default())
        );
        response(
            "302 Found",
            "text/plain",
            &format!("Location: {location}\r\n"),
            "",
        )
    }

    fn issue(&self, s: &mut State, with_refresh: bool) -> String {
        let access = self.new_token("access");
        s.access
            .insert(access.clone(), now().saturating_add(s.access_lifetime));
        let mut body = serde_json::json!({
            "token_type": "Bearer",
            "access_token": access,
            "expires_in": s.access_lifetime,
        });
        if with_refresh {
            let refresh = self.new_token("refresh");
            s.refresh.push(refresh.clone());
            body["refresh_token"] = serde_json::Value::String(refresh);
        }
        json_response("200 OK", body)
    }

    fn token(&self, r: &Request) -> String {
        if r.param("client_id") != Some(&self.client_id) {
            return oauth_error("invalid_client");
        }
        let mut s = self.state();
        match r.param("grant_type") {
            Some("urn:ietf:params:oauth:grant-type:device_code") => {
                s.stats.device_polls += 1;
                let code = r.param("device_code").unwrap_or_default();
                let Some(polls) = s.devices.get_mut(code) else {
                    return oauth_error("invalid_grant");
                };
                *polls += 1;
                if *polls == 1 {
                    // The "user" approves right after the first poll.
                    return oauth_error("authorization_pending");
                }
                s.devices.remove(code);
                self.issue(&mut s, true)
            }
            Some("authorization_code") => {
                let code = r.param("code").unwrap_or_default();
                let Some((challenge, redirect)) = s.codes.remove(code) else {
                    return oauth_error("invalid_grant");
                };
                let verifier = r.param("code_verifier").unwrap_or_default();
                if pkce_challenge(verifier) != challenge
                    || r.param("redirect_uri") != Some(&redirect)
                {
                    return oauth_error("invalid_grant");
                }
                s.stats.code_exchanges += 1;
                self.issue(&mut s, true)
            }
            Some("refresh_token") => {
                let token = r.param("refresh_token").unwrap_or_default();
                let Some(i) = s.refresh.iter().position(|t| t == token) else {
                    s.stats.refused_refreshes += 1;
                    return oauth_error("invalid_grant");
                };
                // Rotation: the old refresh token is spent.
                s.refresh.remove(i);
                s.stats.refreshes += 1;
                self.issue(&mut s, true)
            }
            _ => oauth_error("unsupported_grant_type"),
        }
    }

    fn introspect(&self, r: &Request) -> String {
        let token = r
            .param("token")
            .map(str::to_string)
            .or_else(|| {
                r.authorization
                    .as_deref()
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let mut s = self.state();
        let active = s.access.get(&token).is_some_and(|&exp| exp > now());
        if active {
            s.stats.introspections_active += 1;
            json_response(
                "200 OK",
                serde_json::json!({ "active": true, "username": self.user }),
            )
        } else {
            s.stats.introspections_inactive += 1;
            json_response("200 OK", serde_json::json!({ "active": false }))
        }
    }
}
