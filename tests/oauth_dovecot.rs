//! OAuth2 end to end, without the internet: a local authorization server
//! (`backsweep::oauth::testprovider`) issues the tokens, and a private Dovecot validates them
//! with its `oauth2` passdb (token introspection against that server). The path a user takes —
//! `backsweep login` (device code, then the browser flow with PKCE, the test acting as the
//! browser), sweeps, an access token refreshed before it expires and after the server rejected
//! it, a revoked refresh token that asks for a new login while another account keeps working —
//! runs here over real HTTP and real IMAP.
//!
//! These tests FAIL (never skip) when Dovecot cannot be started: install it with
//! `apt-get install dovecot-imapd`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use backsweep::config::{Config, PasswordSource};
use backsweep::imap::{ConnectSettings, ImapError, ImapSession};
use backsweep::oauth::flows::{self, LoginMethod, Prompt};
use backsweep::oauth::testprovider::TestProvider;
use backsweep::oauth::{tokens, OAuthError, SaslMechanism};
use backsweep::secrets::Secret;
use backsweep::testserver::{yaml_path, TestServer, TestServerOptions};

const CLIENT_ID: &str = "backsweep-test-client";
const USER: &str = "alice@example.com";
const OTHER_USER: &str = "bob@example.com";
const OTHER_PASS: &str = "bob-password-1";

struct Setup {
    provider: TestProvider,
    server: TestServer,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn setup(mechanism: &str) -> Setup {
    let provider = TestProvider::start(CLIENT_ID, USER).expect("start the test OAuth2 provider");
    let server = TestServer::start(
        &[(USER, "not-used-for-oauth"), (OTHER_USER, OTHER_PASS)],
        TestServerOptions {
            oauth2_introspection_url: Some(provider.introspection_url()),
            ..TestServerOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("cannot start the private Dovecot: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("bob.pw");
    std::fs::write(&pw, OTHER_PASS).expect("write password");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let yaml = format!(
        "state_dir: {state}
accounts:
  - name: work
    host: 127.0.0.1
    port: {port}
    ca_file: {ca}
    username: {USER}
    auth: {mechanism}
    oauth:
      client_id: {CLIENT_ID}
      token_url: {token}
      device_authorization_url: {device}
      authorization_url: {authorize}
      scopes: [mail, offline_access]
      token_store: file
  - name: other
    host: 127.0.0.1
    port: {port}
    ca_file: {ca}
    username: {OTHER_USER}
    password: {{ file: {pw} }}
",
        state = yaml_path(&dir.path().join("state")),
        port = server.tls_port(),
        ca = yaml_path(&server.ca_file()),
        token = provider.token_url(),
        device = provider.device_authorization_url(),
        authorize = provider.authorization_url(),
        pw = yaml_path(&pw),
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).expect("write config");
    Setup {
        provider,
        server,
        dir,
        config,
    }
}

impl Setup {
    fn backsweep(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_backsweep"));
        c.env_remove("BACKSWEEP_CONFIG")
            .env_remove("BACKSWEEP_LOG")
            .arg("--config")
            .arg(&self.config);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.backsweep().args(args).output().expect("run backsweep")
    }

    fn token_file(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join("state")
            .join("oauth")
            .join("work.json")
    }

    fn account_settings(&self) -> backsweep::oauth::OAuthSettings {
        let config = Config::load(&self.config).unwrap_or_else(|e| panic!("{e}"));
        match &config.account("work").expect("work").password {
            PasswordSource::OAuth2(s) => (**s).clone(),
            other => panic!("not an OAuth2 account: {other:?}"),
        }
    }
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Sweep output lines (JSON) by account.
fn sweep_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout_of(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn login_sweep_refresh_and_relogin_against_dovecot() {
    let s = setup("xoauth2");
    s.server
        .deliver(
            USER,
            "INBOX",
            b"From: a@example.org\r\nTo: alice@example.com\r\nSubject: hello\r\nMessage-ID: <1@example.org>\r\n\r\nhi\r\n",
            "",
        )
        .expect("deliver");

    // Before any login: a clear message, and the password account still works.
    let o = s.run(&["sweep", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("run `backsweep login work`"),
        "{}",
        describe(&o)
    );
    assert!(!err.contains("password set"), "{}", describe(&o));

    // 1. Device-code login. Short-lived access token, so the next sweep must refresh first.
    s.provider.set_access_lifetime(60);
    let o = s.run(&["login", "work", "--device"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = stdout_of(&o);
    assert!(out.contains("TEST-CODE"), "{out}");
    assert!(out.contains("/verify"), "{out}");
    assert!(out.contains("IMAP login to 127.0.0.1"), "{out}");
    let stats = s.provider.stats();
    // Its own IMAP check already refreshed the 60-second token once.
    let after_login = stats.refreshes;
    assert_eq!(stats.device_authorizations, 1);
    assert_eq!(stats.device_polls, 2, "approved after the first poll");
    assert!(
        stats.introspections_active >= 1,
        "Dovecot checked the token"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.token_file())
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let stored = std::fs::read_to_string(s.token_file()).expect("token file");
    assert!(
        !out.contains("refresh-") && !out.contains("access-"),
        "tokens printed: {out}"
    );
    assert!(stored.contains("refresh-"), "the refresh token is stored");

    // 2. Sweep: the 60-second token is refreshed before use (no rejected login).
    s.provider.set_access_lifetime(3600);
    let o = s.run(&["sweep", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let lines = sweep_lines(&o);
    assert_eq!(lines.len(), 2, "{}", describe(&o));
    assert_eq!(lines[0]["account"], "work");
    assert_eq!(lines[0]["examined"], 1);
    let stats = s.provider.stats();
    assert_eq!(stats.refreshes, after_login + 1, "refreshed before expiry");
    assert_eq!(stats.introspections_inactive, 0, "no token was rejected");

    // 3. The server stops accepting the (still unexpired) access token: refresh and retry.
    s.provider.expire_access_tokens();
    let o = s.run(&["sweep", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let stats = s.provider.stats();
    assert_eq!(
        stats.refreshes,
        after_login + 2,
        "refreshed after the rejection"
    );
    assert_eq!(stats.introspections_inactive, 1, "one rejected login");

    // 4. Consent withdrawn: one clear message, the other account goes on, exit 1.
    s.provider.revoke_refresh_tokens();
    s.provider.expire_access_tokens();
    let o = s.run(&["sweep", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        err.matches("backsweep login work").count(),
        1,
        "one message: {}",
        describe(&o)
    );
    assert!(err.contains("revoked or has expired"), "{}", describe(&o));
    assert!(
        !err.contains("refresh-") && !err.contains("access-"),
        "token in message: {err}"
    );
    let lines = sweep_lines(&o);
    assert!(lines[0]["error"].is_string(), "{}", describe(&o));
    assert_eq!(lines[1]["account"], "other");
    assert!(lines[1].get("error").is_none(), "{}", describe(&o));

    // 5. Sign in again, this time with the browser flow; the test is the browser.
    let mut child = s
        .backsweep()
        .args(["login", "work", "--browser"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn login");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("login printed no sign-in address")
            .expect("read stdout");
        if let Some(u) = line.trim().strip_prefix(&s.provider.authorization_url()) {
            break format!("{}{u}", s.provider.authorization_url());
        }
    };
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    // GET the authorization URL; the provider redirects to backsweep's loopback listener.
    let mut page = ureq::get(&url).call().expect("browser request");
    let body = page.body_mut().read_to_string().expect("page");
    assert!(body.contains("Signed in"), "{body}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait for login");
    assert!(status.success(), "login failed: {rest:?}");
    assert_eq!(s.provider.stats().code_exchanges, 1);

    let o = s.run(&["sweep", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
}

/// Both bearer mechanisms against Dovecot through the library, and the errors of the
/// connect path: a rejected token is refreshed, a dead refresh token is `ReloginRequired`.
#[tokio::test(flavor = "current_thread")]
async fn xoauth2_and_oauthbearer_sessions() {
    let s = setup("oauthbearer");
    let settings = s.account_settings();
    assert_eq!(settings.mechanism, SaslMechanism::Oauthbearer);
    let settings_for_login = settings.clone();
    let mut prompts = Vec::new();
    let place = tokio::task::spawn_blocking(move || {
        let r = flows::login(
            "work",
            &settings_for_login,
            LoginMethod::Device,
            &flows::LoginOptions {
                login_hint: Some(USER.into()),
                redirect_port: 0,
            },
            &mut |p: &Prompt| prompts.push(p.clone()),
        );
        (r, prompts)
    })
    .await
    .expect("join");
    let (place, prompts) = place;
    let place = place.unwrap_or_else(|e| panic!("{e}"));
    assert!(place.contains("work.json"), "{place}");
    assert!(matches!(&prompts[..], [Prompt::Device { user_code, .. }] if user_code == "TEST-CODE"));

    let config = Config::load(&s.config).unwrap_or_else(|e| panic!("{e}"));
    let account = config.account("work").expect("work");
    for mechanism in [SaslMechanism::Oauthbearer, SaslMechanism::Xoauth2] {
        let mut cs = ConnectSettings::from(account);
        cs.timeout = Duration::from_secs(10);
        let oauth = cs.oauth.as_mut().expect("oauth");
        let mut changed = (*oauth.settings).clone();
        changed.mechanism = mechanism;
        oauth.settings = std::sync::Arc::new(changed);
        let token = tokens::access_token("work", &settings).unwrap_or_else(|e| panic!("{e}"));
        let session = ImapSession::connect(&cs, &token)
            .await
            .unwrap_or_else(|e| panic!("{mechanism:?}: {e}"));
        session.logout().await.expect("logout");
    }

    // A token the server rejects is replaced by a refreshed one.
    let cs = {
        let mut cs = ConnectSettings::from(account);
        cs.timeout = Duration::from_secs(10);
        cs
    };
    let before = s.provider.stats().refreshes;
    let session = ImapSession::connect(&cs, &Secret::new("not-a-token"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    session.logout().await.expect("logout");
    assert_eq!(s.provider.stats().refreshes, before + 1);

    // A dead refresh token: ReloginRequired, which says what to do.
    s.provider.revoke_refresh_tokens();
    match ImapSession::connect(&cs, &Secret::new("not-a-token")).await {
        Err(ImapError::OAuth(OAuthError::ReloginRequired { account, .. })) => {
            assert_eq!(account, "work")
        }
        other => panic!("expected ReloginRequired, got {other:?}"),
    }
}
