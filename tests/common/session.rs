//! A plaintext loopback IMAP session for checks outside the code under test.

use backsweep::config::TlsMode;
use backsweep::imap::{ConnectSettings, ImapSession};
use backsweep::secrets::Secret;

/// Logs `user` in on 127.0.0.1:`port` without TLS (loopback only); panics on failure.
pub async fn loopback_session(port: u16, user: &str, pass: &str) -> ImapSession {
    let settings = ConnectSettings::new("127.0.0.1", port, TlsMode::None, user);
    ImapSession::connect(&settings, &Secret::new(pass))
        .await
        .unwrap_or_else(|e| panic!("login as {user}: {e}"))
}
