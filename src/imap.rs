//! One authenticated IMAP session: TLS, timeouts, header fetches and safe moves.
//!
//! Why a wrapper over `async-imap`: the library leaves the dangerous parts to its caller.
//! This module makes them safe once, for every other module:
//!
//! - **Timeouts.** async-imap has no per-command timeout, so a dead server hangs a client
//!   forever. Every network wait here (connect, TLS handshake, greeting, each command and
//!   each streamed response) runs under `tokio::time::timeout`. After a timeout or lost
//!   connection the session is marked broken and refuses further commands.
//! - **TLS.** rustls with the platform's root certificates plus an optional `ca_file`;
//!   implicit TLS, STARTTLS (async-imap has no helper: the pre-authentication exchange is
//!   done here on the raw stream, byte by byte so no bytes are left in a buffer when TLS
//!   starts), or no TLS to a loopback address only. An untrusted certificate gives an error
//!   that says so and points to `ca_file`.
//! - **OAuth2.** For an account with [`ConnectSettings::oauth`], the secret is an access
//!   token sent with `AUTHENTICATE XOAUTH2` (or `OAUTHBEARER`, whichever the configured one or
//!   the server offers). When the server rejects it, a fresh token is fetched from the provider
//!   once ([`crate::oauth::tokens::refresh_access_token`]) and the login retried on the same
//!   connection; `sweep`, the daemon and `check-config` all get this by connecting here.
//! - **Errors that tell the user what to do:** connect failed (host:port), certificate not
//!   trusted, authentication failed (never containing the secret), timeout.
//! - **Never mark mail read:** every content fetch uses `BODY.PEEK`.
//! - **Safe moves:** `UID MOVE` when offered; otherwise `UID COPY` + `\Deleted` +
//!   `UID EXPUNGE` only with UIDPLUS; otherwise copy and flag, but never a plain `EXPUNGE`
//!   (which would also expunge other clients' `\Deleted` mail). [`MoveOutcome`] says which.
//! - **Unsolicited responses** go to a bounded channel that silently drops when full; it is
//!   drained after every command into [`ImapSession::take_unsolicited`].

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::types::{Fetch, Flag, NameAttribute, UnsolicitedResponse};
use futures::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use crate::config::{is_loopback_host, Account, PasswordSource, TlsMode, DEFAULT_TIMEOUT_SECS};
use crate::oauth::{OAuthError, OAuthSettings, SaslMechanism};
use crate::secrets::Secret;

/// Most unsolicited responses kept for [`ImapSession::take_unsolicited`].
const MAX_UNSOLICITED: usize = 10_000;
/// Longest pre-authentication response line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Longest UID set sent in one command, in bytes. RFC 7162 (section 4) asks
/// clients to keep command lines to about 8,192 octets; the rest of the line
/// (tag, command, folder name or fetch items) fits in what is left. Long sets
/// matter: a server pays much of a MOVE or STORE per command (Dovecot rescans
/// a Maildir for each), so scattered backscatter should go in few commands.
const MAX_SET_BYTES: usize = 7_000;

/// What is needed to open a session (a subset of [`Account`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra trust anchor(s), PEM.
    pub ca_file: Option<PathBuf>,
    /// Login name.
    pub username: String,
    /// Timeout for each network wait.
    pub timeout: Duration,
    /// For an OAuth2 account: authenticate with the secret as a bearer token
    /// (XOAUTH2/OAUTHBEARER) and refresh it once when the server rejects it.
    pub oauth: Option<OAuthLogin>,
    /// Compress the connection after login when the server offers
    /// `COMPRESS=DEFLATE` (RFC 4978).
    pub compress: bool,
}

/// How an OAuth2 account logs in: which account's tokens, with which settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthLogin {
    /// The account name (names its stored tokens).
    pub account: String,
    /// The account's OAuth2 settings.
    pub settings: Arc<OAuthSettings>,
}

impl ConnectSettings {
    /// Settings with the default timeout.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        tls: TlsMode,
        username: impl Into<String>,
    ) -> Self {
        ConnectSettings {
            host: host.into(),
            port,
            tls,
            ca_file: None,
            username: username.into(),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            oauth: None,
            compress: true,
        }
    }

    fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl From<&Account> for ConnectSettings {
    fn from(a: &Account) -> Self {
        ConnectSettings {
            host: a.host.clone(),
            port: a.port,
            tls: a.tls,
            ca_file: a.ca_file.clone(),
            username: a.username.clone(),
            timeout: a.timeout,
            oauth: match &a.password {
                PasswordSource::OAuth2(settings) => Some(OAuthLogin {
                    account: a.name.clone(),
                    settings: Arc::new((**settings).clone()),
                }),
                _ => None,
            },
            compress: a.compress,
        }
    }
}

/// Errors of an IMAP session. None of them contains the password.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The TCP connection could not be made (DNS, refused, unreachable).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("{addr}: no answer within {} while {during}; the server may be down or overloaded, or the port may be wrong", fmt_secs(*after))]
    Timeout {
        /// `host:port`.
        addr: String,
        /// What was being waited for.
        during: String,
        /// The timeout.
        after: Duration,
    },
    /// The server's certificate did not verify.
    #[error(
        "{addr}: the server's TLS certificate is not trusted ({reason}). If the server uses a \
         private or self-signed CA, set `ca_file:` for this account to that CA's certificate (PEM){}",
        ca_file.as_ref().map(|p| format!("; the configured ca_file {} does not vouch for it", p.display())).unwrap_or_default()
    )]
    CertificateNotTrusted {
        /// `host:port`.
        addr: String,
        /// rustls's reason (unknown issuer, name mismatch, expired, ...).
        reason: String,
        /// The configured CA file, if any.
        ca_file: Option<PathBuf>,
    },
    /// Another TLS failure (protocol versions, handshake aborted, ...).
    #[error("{addr}: TLS handshake failed: {detail}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The `ca_file` could not be used.
    #[error("cannot use ca_file {path}: {detail}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// No trust anchors at all (no system roots found and no ca_file).
    #[error("no trusted root certificates: the system store is empty or unreadable ({detail}); install ca-certificates or set `ca_file:`")]
    NoRootCertificates {
        /// Errors from loading the system store.
        detail: String,
    },
    /// `tls: none` to a host that is not loopback.
    #[error("refusing an unencrypted connection to {host}: `tls: none` is only allowed to a loopback address")]
    PlaintextRefused {
        /// The host.
        host: String,
    },
    /// `tls: starttls` but the server does not offer STARTTLS.
    #[error("{addr}: the server does not offer STARTTLS; use `tls: implicit` (usually port 993)")]
    StartTlsUnsupported {
        /// `host:port`.
        addr: String,
    },
    /// The greeting was not `* OK` (e.g. `* BYE`), or pre-authentication talk failed.
    #[error("{addr}: unexpected response {during}: {detail}")]
    Greeting {
        /// `host:port`.
        addr: String,
        /// Where in the exchange.
        during: String,
        /// The server's line (or what was wrong with it).
        detail: String,
    },
    /// LOGIN / AUTHENTICATE was rejected.
    #[error("{addr}: authentication failed for user `{user}`: {detail}")]
    AuthFailed {
        /// `host:port`.
        addr: String,
        /// The login name.
        user: String,
        /// The server's answer (never the password).
        detail: String,
    },
    /// Neither LOGIN nor AUTHENTICATE PLAIN is possible.
    #[error("{addr}: the server disables LOGIN and does not offer AUTH=PLAIN; no supported authentication method")]
    NoAuthMethod {
        /// `host:port`.
        addr: String,
    },
    /// A command failed (NO/BAD) or the response could not be parsed.
    #[error("{addr}: {command} failed: {source}")]
    Command {
        /// `host:port`.
        addr: String,
        /// The command (without secrets).
        command: String,
        /// The library error.
        #[source]
        source: async_imap::error::Error,
    },
    /// The connection was lost or an earlier timeout made the session unusable.
    #[error("{addr}: connection lost{}", if during.is_empty() { String::new() } else { format!(" while {during}") })]
    ConnectionLost {
        /// `host:port`.
        addr: String,
        /// What was being done.
        during: String,
    },
    /// A caller error (empty field list, invalid header name, read-only mailbox, ...).
    #[error("{0}")]
    Invalid(String),
    /// The server rejected an OAuth2 access token and no new one could be obtained (the
    /// message names the account and says what to do, e.g. run `backsweep login`).
    #[error(transparent)]
    OAuth(#[from] OAuthError),
}

fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The transport under a session: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum ImapStream {
    /// Unencrypted (loopback only).
    Plain(TcpStream),
    /// TLS (implicit or after STARTTLS).
    Tls(Box<TlsStream<TcpStream>>),
    /// Either of them after `COMPRESS DEFLATE`.
    Compressed(Box<async_imap::DeflateStream<ImapStream>>),
}

impl AsyncRead for ImapStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ImapStream::Compressed(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ImapStream::Compressed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ImapStream::Compressed(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ImapStream::Compressed(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A folder from `LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// Mailbox name as the server spells it (modified UTF-7 is not decoded).
    pub name: String,
    /// Hierarchy delimiter, if any.
    pub delimiter: Option<String>,
    /// Attributes, e.g. `\HasNoChildren`, `\Sent`, `\Noselect`.
    pub attributes: Vec<String>,
}

impl FolderInfo {
    /// Whether the folder has this attribute (case-insensitive, e.g. `\Sent`).
    pub fn has_attribute(&self, attr: &str) -> bool {
        self.attributes.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }

    /// Whether the folder can be selected.
    pub fn selectable(&self) -> bool {
        !self.has_attribute("\\Noselect") && !self.has_attribute("\\NonExistent")
    }
}

/// What `SELECT`/`EXAMINE` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxStatus {
    /// UIDVALIDITY (a change invalidates every stored UID of this folder).
    pub uidvalidity: u32,
    /// The next UID to be assigned, if the server said.
    pub uidnext: Option<u32>,
    /// Number of messages.
    pub exists: u32,
}

/// One message's result of [`ImapSession::uid_fetch_headers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedHeaders {
    /// The message UID.
    pub uid: u32,
    /// Its flags (`\Seen`, keywords, ...), `\Recent` included if the server sent it.
    pub flags: Vec<String>,
    /// RFC822.SIZE of the whole message.
    pub size: Option<u32>,
    /// The requested header fields as raw bytes (ends with the blank line).
    pub header: Vec<u8>,
}

/// One message's result of [`ImapSession::uid_fetch_header_fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedHeaderFields {
    /// The message UID.
    pub uid: u32,
    /// The requested header fields as raw bytes (ends with the blank line).
    pub header: Vec<u8>,
}

/// One message's result of [`ImapSession::uid_fetch_prefixes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPrefix {
    /// The message UID.
    pub uid: u32,
    /// Its flags (`\Seen`, keywords, ...), `\Recent` included if the server sent it.
    pub flags: Vec<String>,
    /// RFC822.SIZE of the whole message.
    pub size: Option<u32>,
    /// The bytes asked for: the message's first bytes, or those from the
    /// requested offset on (at most the requested number).
    pub data: Vec<u8>,
}

/// Which way [`ImapSession::move_uids`] moved the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOutcome {
    /// `UID MOVE` (RFC 6851): atomic, nothing left behind.
    Moved,
    /// `UID COPY`, `+FLAGS.SILENT (\Deleted)`, `UID EXPUNGE` of exactly these UIDs (UIDPLUS).
    CopiedAndExpunged,
    /// `UID COPY` and `\Deleted` set, but **not expunged** (no UIDPLUS, and a plain EXPUNGE
    /// would remove other clients' deleted mail too). The originals stay, flagged deleted.
    CopiedAndFlaggedDeleted,
    /// Nothing to move (empty UID list).
    Nothing,
}

/// Compresses UIDs into an IMAP sequence set such as `1:3,7,9:10` (sorted, deduplicated).
pub fn uid_set(uids: &[u32]) -> String {
    uid_groups(uids, usize::MAX)
        .first()
        .map(|g| ranges_text(g))
        .unwrap_or_default()
}

/// `uids` sorted, deduplicated and split into the groups [`ImapSession::move_uids`]
/// sends one command each for: a caller that must know exactly which messages one
/// COPY carried (to record where quarantine stood just before it) moves each group
/// on its own.
pub fn command_groups(uids: &[u32]) -> Vec<Vec<u32>> {
    uid_groups(uids, MAX_SET_BYTES)
}

/// Like [`uid_set`], split so no set is longer than `max_bytes` (but never
/// empty: a set has at least one range).
fn uid_set_chunks(uids: &[u32], max_bytes: usize) -> Vec<String> {
    uid_groups(uids, max_bytes)
        .iter()
        .map(|g| ranges_text(g))
        .collect()
}

/// Sorted, deduplicated non-zero `uids` in groups whose sequence set
/// ([`ranges_text`]) is at most `max_bytes` long; a group always takes at
/// least one range.
fn uid_groups(uids: &[u32], max_bytes: usize) -> Vec<Vec<u32>> {
    /// Room a range may still need when it starts: `,` and `N:M` at most.
    const RANGE_ROOM: usize = 1 + 10 + 1 + 10;
    let digits = |u: u32| u.checked_ilog10().map_or(1, |d| d as usize + 1);
    let mut v: Vec<u32> = uids.iter().copied().filter(|&u| u > 0).collect();
    v.sort_unstable();
    v.dedup();
    let mut groups: Vec<Vec<u32>> = Vec::new();
    // Length of the last group's text, and the start of its last range.
    let mut len = 0;
    let mut start = 0;
    for u in v {
        let last = groups.last().and_then(|g| g.last()).copied();
        match last {
            Some(last) if last.checked_add(1) == Some(u) => {
                // "start" or "start:last" becomes "start:u".
                // (u > last, so u has at least as many digits.)
                len += if last == start {
                    1 + digits(u)
                } else {
                    digits(u) - digits(last)
                };
            }
            _ => {
                if groups.is_empty() || len + RANGE_ROOM > max_bytes {
                    groups.push(Vec::new());
                    len = 0;
                }
                len += usize::from(len > 0) + digits(u);
                start = u;
            }
        }
        if let Some(g) = groups.last_mut() {
            g.push(u);
        }
    }
    groups
}

/// A sorted, deduplicated group of UIDs as an IMAP sequence set.
fn ranges_text(group: &[u32]) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &u in group {
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(u) => *end = u,
            _ => ranges.push((u, u)),
        }
    }
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn flag_string(f: &Flag<'_>) -> String {
    match f {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => "\\Recent".into(),
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(s) => s.to_string(),
    }
}

fn name_attribute_string(a: &NameAttribute<'_>) -> String {
    match a {
        NameAttribute::NoInferiors => "\\Noinferiors".into(),
        NameAttribute::NoSelect => "\\Noselect".into(),
        NameAttribute::Marked => "\\Marked".into(),
        NameAttribute::Unmarked => "\\Unmarked".into(),
        NameAttribute::All => "\\All".into(),
        NameAttribute::Archive => "\\Archive".into(),
        NameAttribute::Drafts => "\\Drafts".into(),
        NameAttribute::Flagged => "\\Flagged".into(),
        NameAttribute::Junk => "\\Junk".into(),
        NameAttribute::Sent => "\\Sent".into(),
        NameAttribute::Trash => "\\Trash".into(),
        NameAttribute::Extension(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

/// The system roots, loaded once per process (parsing them costs milliseconds).
fn native_roots() -> &'static (Vec<CertificateDer<'static>>, String) {
    static ROOTS: OnceLock<(Vec<CertificateDer<'static>>, String)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let r = rustls_native_certs::load_native_certs();
        let errors = r
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        if !errors.is_empty() {
            tracing::debug!(%errors, "some system root certificates could not be loaded");
        }
        (r.certs, errors)
    })
}

/// The trust anchors every TLS connection uses: the system roots plus those in `ca_file`
/// (the OAuth2 HTTP client shares them with IMAP).
pub fn trusted_roots(
    ca_file: Option<&std::path::Path>,
) -> Result<Vec<CertificateDer<'static>>, ImapError> {
    let mut roots = rustls::RootCertStore::empty();
    let (native, native_errors) = native_roots();
    let mut anchors: Vec<CertificateDer<'static>> = native.clone();
    roots.add_parsable_certificates(native.iter().cloned());
    if let Some(path) = ca_file {
        let ca_err = |detail: String| ImapError::CaFile {
            path: path.to_path_buf(),
            detail,
        };
        let iter = CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))?;
        let mut n = 0;
        for c in iter {
            let c = c.map_err(|e| ca_err(format!("invalid PEM: {e}")))?;
            roots
                .add(c.clone())
                .map_err(|e| ca_err(format!("not a usable CA certificate: {e}")))?;
            anchors.push(c);
            n += 1;
        }
        if n == 0 {
            return Err(ca_err("no CERTIFICATE blocks found in the file".into()));
        }
    }
    if roots.is_empty() {
        return Err(ImapError::NoRootCertificates {
            detail: if native_errors.is_empty() {
                "no certificates found".into()
            } else {
                native_errors.clone()
            },
        });
    }
    Ok(anchors)
}

/// Builds the rustls client configuration: system roots plus `ca_file`.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, ImapError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(trusted_roots(ca_file)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Invalid(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Reads one CRLF-terminated line byte by byte (so nothing stays buffered), without the CRLF.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut line = Vec::with_capacity(128);
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b);
        if line.len() > MAX_LINE {
            return Err(std::io::Error::other("response line too long"));
        }
    }
}

fn capability_tokens(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|t| t.to_ascii_uppercase())
        .collect()
}

/// `[CAPABILITY ...]` in a status line, if any.
fn capability_code(line: &str) -> Option<Vec<String>> {
    let upper = line.to_ascii_uppercase();
    let start = upper.find("[CAPABILITY ")? + "[CAPABILITY ".len();
    let end = upper[start..].find(']')? + start;
    Some(capability_tokens(&line[start..end]))
}

struct PreAuth<'a> {
    settings: &'a ConnectSettings,
    addr: String,
}

impl PreAuth<'_> {
    fn timeout_err(&self, during: &str) -> ImapError {
        ImapError::Timeout {
            addr: self.addr.clone(),
            during: during.into(),
            after: self.settings.timeout,
        }
    }

    fn io_err(&self, during: &str, e: std::io::Error) -> ImapError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ImapError::ConnectionLost {
                addr: self.addr.clone(),
                during: during.into(),
            }
        } else {
            ImapError::Greeting {
                addr: self.addr.clone(),
                during: during.into(),
                detail: e.to_string(),
            }
        }
    }

    async fn line<S: AsyncRead + Unpin>(
        &self,
        s: &mut S,
        during: &str,
    ) -> Result<String, ImapError> {
        match timeout(self.settings.timeout, read_line(s)).await {
            Err(_) => Err(self.timeout_err(during)),
            Ok(Err(e)) => Err(self.io_err(during, e)),
            Ok(Ok(l)) => Ok(l),
        }
    }

    /// Reads the greeting; returns the capabilities it announced, if any.
    async fn greeting<S: AsyncRead + Unpin>(
        &self,
        s: &mut S,
    ) -> Result<Option<Vec<String>>, ImapError> {
        let during = "waiting for the server greeting";
        let line = self.line(s, during).await?;
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("* OK") {
            Ok(capability_code(&line))
        } else {
            Err(ImapError::Greeting {
                addr: self.addr.clone(),
                during: during.into(),
                detail: line,
            })
        }
    }

    /// Sends a tagged command and reads to its completion; returns untagged lines.
    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut S,
        tag: &str,
        command: &str,
    ) -> Result<Vec<String>, ImapError> {
        let during = format!("sending {command}");
        let write = async {
            s.write_all(format!("{tag} {command}\r\n").as_bytes())
                .await?;
            s.flush().await
        };
        match timeout(self.settings.timeout, write).await {
            Err(_) => return Err(self.timeout_err(&during)),
            Ok(Err(e)) => return Err(self.io_err(&during, e)),
            Ok(Ok(())) => {}
        }
        let during = format!("waiting for the answer to {command}");
        let mut untagged = Vec::new();
        loop {
            let line = self.line(s, &during).await?;
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                if rest.to_ascii_uppercase().starts_with("OK") {
                    return Ok(untagged);
                }
                return Err(ImapError::Greeting {
                    addr: self.addr.clone(),
                    during: format!("to {command}"),
                    detail: line,
                });
            }
            untagged.push(line);
        }
    }

    async fn capabilities<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut S,
        tag: &str,
    ) -> Result<Vec<String>, ImapError> {
        let lines = self.command(s, tag, "CAPABILITY").await?;
        Ok(lines
            .iter()
            .filter_map(|l| {
                let upper = l.to_ascii_uppercase();
                upper
                    .strip_prefix("* CAPABILITY ")
                    .map(|_| capability_tokens(&l["* CAPABILITY ".len()..]))
            })
            .flatten()
            .collect())
    }

    async fn tls_handshake(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ImapError> {
        let cfg = tls_config(self.settings.ca_file.as_deref())?;
        let host = self
            .settings
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| ImapError::Tls {
            addr: self.addr.clone(),
            detail: format!("invalid server name {host:?}: {e}"),
        })?;
        let connector = tokio_rustls::TlsConnector::from(cfg);
        match timeout(self.settings.timeout, connector.connect(name, tcp)).await {
            Err(_) => Err(self.timeout_err("in the TLS handshake")),
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(self.classify_tls_error(e)),
        }
    }

    fn classify_tls_error(&self, e: std::io::Error) -> ImapError {
        let inner = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned();
        match inner {
            Some(rustls::Error::InvalidCertificate(ce)) => ImapError::CertificateNotTrusted {
                addr: self.addr.clone(),
                reason: describe_cert_error(&ce),
                ca_file: self.settings.ca_file.clone(),
            },
            Some(other) => ImapError::Tls {
                addr: self.addr.clone(),
                detail: other.to_string(),
            },
            None if e.kind() == std::io::ErrorKind::UnexpectedEof => ImapError::Tls {
                addr: self.addr.clone(),
                detail: "the server closed the connection during the handshake (is this port really TLS? try `tls: starttls` on port 143)".into(),
            },
            None => ImapError::Tls {
                addr: self.addr.clone(),
                detail: e.to_string(),
            },
        }
    }
}

fn describe_cert_error(ce: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match ce {
        C::UnknownIssuer => "issued by an unknown certificate authority".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the certificate is not valid for this host name".into()
        }
        C::Expired | C::ExpiredContext { .. } => "the certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "the certificate is not valid yet".into(),
        C::Revoked => "the certificate was revoked".into(),
        C::BadSignature => "bad signature".into(),
        other => format!("{other:?}"),
    }
}

struct PlainAuth<'a> {
    user: &'a str,
    pass: &'a str,
}

impl async_imap::Authenticator for PlainAuth<'_> {
    type Response = zeroize::Zeroizing<Vec<u8>>;
    fn process(&mut self, _challenge: &[u8]) -> Self::Response {
        let mut v = Vec::with_capacity(self.user.len() + self.pass.len() + 2);
        v.push(0);
        v.extend_from_slice(self.user.as_bytes());
        v.push(0);
        v.extend_from_slice(self.pass.as_bytes());
        zeroize::Zeroizing::new(v)
    }
}

/// SASL XOAUTH2 / OAUTHBEARER with an access token. The first challenge gets the token; a
/// second one is the server's error report (JSON), which is kept for the error message and
/// answered as the mechanism requires (empty for XOAUTH2, `%x01` for OAUTHBEARER, RFC 7628).
struct BearerAuth {
    mechanism: SaslMechanism,
    payload: zeroize::Zeroizing<Vec<u8>>,
    sent: bool,
    server_error: Option<String>,
}

impl BearerAuth {
    fn new(mechanism: SaslMechanism, settings: &ConnectSettings, token: &Secret) -> BearerAuth {
        let user = settings.username.as_str();
        let text = match mechanism {
            SaslMechanism::Xoauth2 => {
                format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose())
            }
            SaslMechanism::Oauthbearer => {
                // gs2 saslname: `,` and `=` are escaped (RFC 5801).
                let name = user.replace('=', "=3D").replace(',', "=2C");
                format!(
                    "n,a={name},\x01host={}\x01port={}\x01auth=Bearer {}\x01\x01",
                    settings.host,
                    settings.port,
                    token.expose()
                )
            }
        };
        BearerAuth {
            mechanism,
            payload: zeroize::Zeroizing::new(text.into_bytes()),
            sent: false,
            server_error: None,
        }
    }
}

impl async_imap::Authenticator for &mut BearerAuth {
    type Response = zeroize::Zeroizing<Vec<u8>>;
    fn process(&mut self, challenge: &[u8]) -> Self::Response {
        if !self.sent {
            self.sent = true;
            return self.payload.clone();
        }
        let text: String = String::from_utf8_lossy(challenge)
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect();
        self.server_error = Some(text);
        zeroize::Zeroizing::new(match self.mechanism {
            SaslMechanism::Xoauth2 => Vec::new(),
            SaslMechanism::Oauthbearer => vec![1],
        })
    }
}

/// The bearer mechanism to use: the configured one when the server offers it, else the other
/// one if offered (so `auth: xoauth2` also works on an OAUTHBEARER-only server); the configured
/// one when the server lists no mechanisms before login.
fn choose_mechanism(configured: SaslMechanism, caps: &[String]) -> Option<SaslMechanism> {
    let offers = |m: SaslMechanism| caps.iter().any(|c| *c == format!("AUTH={}", m.imap_name()));
    let lists_any = caps.iter().any(|c| c.starts_with("AUTH="));
    if offers(configured) || !lists_any {
        Some(configured)
    } else if offers(configured.other()) {
        Some(configured.other())
    } else {
        None
    }
}

/// Authenticates with the access token `secret`; when the server rejects it, gets a fresh token
/// from the provider once and tries again on the same connection.
async fn bearer_login(
    pre: &PreAuth<'_>,
    client: async_imap::Client<ImapStream>,
    caps: &[String],
    oauth: &OAuthLogin,
    secret: &Secret,
) -> Result<async_imap::Session<ImapStream>, ImapError> {
    let settings = pre.settings;
    let mechanism =
        choose_mechanism(oauth.settings.mechanism, caps).ok_or_else(|| ImapError::AuthFailed {
            addr: pre.addr.clone(),
            user: settings.username.clone(),
            detail: "the server offers neither AUTH=XOAUTH2 nor AUTH=OAUTHBEARER, so OAuth2 \
                     cannot be used with it"
                .into(),
        })?;
    let mut client = client;
    let mut token = secret.clone();
    let mut refreshed = false;
    loop {
        let mut auth = BearerAuth::new(mechanism, settings, &token);
        let r = timeout(
            settings.timeout,
            client.authenticate(mechanism.imap_name(), &mut auth),
        )
        .await;
        let (e, back) = match r {
            Err(_) => return Err(pre.timeout_err("authenticating")),
            Ok(Ok(session)) => return Ok(session),
            Ok(Err(failed)) => failed,
        };
        let rejected = matches!(e, async_imap::error::Error::No(_));
        if !rejected || refreshed {
            let said = auth
                .server_error
                .map(|s| format!(" (server said: {s})"))
                .unwrap_or_default();
            let hint = if refreshed {
                "; a freshly refreshed token was rejected too: check that the account's scopes \
                 allow IMAP and that IMAP access is enabled for this mailbox"
            } else {
                ""
            };
            return Err(match e {
                async_imap::error::Error::ConnectionLost | async_imap::error::Error::Io(_) => {
                    ImapError::ConnectionLost {
                        addr: pre.addr.clone(),
                        during: "authenticating".into(),
                    }
                }
                other => ImapError::AuthFailed {
                    addr: pre.addr.clone(),
                    user: settings.username.clone(),
                    detail: format!("{} rejected: {other}{said}{hint}", mechanism.imap_name()),
                },
            });
        }
        tracing::info!(account = %oauth.account, "the server rejected the access token; refreshing it");
        let (account, oauth_settings) = (oauth.account.clone(), Arc::clone(&oauth.settings));
        token = tokio::task::spawn_blocking(move || {
            crate::oauth::tokens::refresh_access_token(&account, &oauth_settings)
        })
        .await
        .map_err(|e| ImapError::Invalid(format!("token refresh task failed: {e}")))??;
        refreshed = true;
        client = back;
    }
}

/// Why a step failed, before being turned into an [`ImapError`] (keeps borrows short).
enum Fail {
    Timeout,
    Imap(async_imap::error::Error),
}

/// Flattens "timed out" and "command failed" into one error.
fn flat<T>(
    r: Result<async_imap::error::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, Fail> {
    r.map_err(|_| Fail::Timeout)?.map_err(Fail::Imap)
}

/// Collects a response stream, each item under the timeout.
async fn collect_stream<S, T>(t: Duration, stream: S) -> Result<Vec<T>, Fail>
where
    S: futures::Stream<Item = async_imap::error::Result<T>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::new();
    loop {
        match timeout(t, stream.next()).await {
            Err(_) => return Err(Fail::Timeout),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(Fail::Imap(e)),
            Ok(Some(Ok(v))) => out.push(v),
        }
    }
}

/// An authenticated IMAP session.
pub struct ImapSession {
    session: async_imap::Session<ImapStream>,
    caps: HashSet<String>,
    settings: ConnectSettings,
    addr: String,
    broken: Option<String>,
    selected: Option<(String, bool)>,
    unsolicited: VecDeque<UnsolicitedResponse>,
}

/// Everything of an [`ImapSession`] but the async-imap session itself: what
/// waits while a call that consumes that session (IDLE, COMPRESS) runs.
struct SessionRest {
    caps: HashSet<String>,
    settings: ConnectSettings,
    addr: String,
    broken: Option<String>,
    selected: Option<(String, bool)>,
    unsolicited: VecDeque<UnsolicitedResponse>,
}

impl SessionRest {
    /// The whole session again, around the session the call gave back.
    fn rejoin(self, session: async_imap::Session<ImapStream>) -> ImapSession {
        let SessionRest {
            caps,
            settings,
            addr,
            broken,
            selected,
            unsolicited,
        } = self;
        ImapSession {
            session,
            caps,
            settings,
            addr,
            broken,
            selected,
            unsolicited,
        }
    }
}

impl fmt::Debug for ImapSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapSession")
            .field("addr", &self.addr)
            .field("user", &self.settings.username)
            .field("selected", &self.selected)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// Opens a session: TCP, TLS per `settings.tls`, greeting, LOGIN (or AUTHENTICATE PLAIN),
/// then CAPABILITY. Same as [`ImapSession::connect`].
pub async fn connect(
    settings: &ConnectSettings,
    secret: &Secret,
) -> Result<ImapSession, ImapError> {
    ImapSession::connect(settings, secret).await
}

impl ImapSession {
    /// Opens a session: TCP, TLS per `settings.tls`, greeting, LOGIN (or AUTHENTICATE PLAIN
    /// when the server disables LOGIN), then CAPABILITY.
    pub async fn connect(
        settings: &ConnectSettings,
        secret: &Secret,
    ) -> Result<ImapSession, ImapError> {
        let addr = settings.addr();
        let pre = PreAuth {
            settings,
            addr: addr.clone(),
        };
        if settings.tls == TlsMode::None && !is_loopback_host(&settings.host) {
            return Err(ImapError::PlaintextRefused {
                host: settings.host.clone(),
            });
        }
        let host = settings.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = match timeout(settings.timeout, TcpStream::connect((host, settings.port))).await {
            Err(_) => return Err(pre.timeout_err("connecting")),
            Ok(Err(source)) => return Err(ImapError::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);

        let (stream, caps) = match settings.tls {
            TlsMode::Implicit => {
                let mut tls = pre.tls_handshake(tcp).await?;
                let caps = match pre.greeting(&mut tls).await? {
                    Some(c) => c,
                    None => pre.capabilities(&mut tls, "bs0").await?,
                };
                (ImapStream::Tls(Box::new(tls)), caps)
            }
            TlsMode::None => {
                let mut tcp = tcp;
                let caps = match pre.greeting(&mut tcp).await? {
                    Some(c) => c,
                    None => pre.capabilities(&mut tcp, "bs0").await?,
                };
                (ImapStream::Plain(tcp), caps)
            }
            TlsMode::Starttls => {
                let mut tcp = tcp;
                let mut caps = pre.greeting(&mut tcp).await?.unwrap_or_default();
                if !caps.iter().any(|c| c == "STARTTLS") {
                    caps = pre.capabilities(&mut tcp, "bs0").await?;
                }
                if !caps.iter().any(|c| c == "STARTTLS") {
                    return Err(ImapError::StartTlsUnsupported { addr });
                }
                pre.command(&mut tcp, "bs1", "STARTTLS").await?;
                let mut tls = pre.tls_handshake(tcp).await?;
                // Capabilities from before TLS must be discarded (RFC 3501 6.2.1).
                let caps = pre.capabilities(&mut tls, "bs2").await?;
                (ImapStream::Tls(Box::new(tls)), caps)
            }
        };
        let client = async_imap::Client::new(stream);
        if let Some(oauth) = &settings.oauth {
            let session = bearer_login(&pre, client, &caps, oauth, secret).await?;
            return ImapSession::established(session, settings, addr).await;
        }
        let login_disabled = caps.iter().any(|c| c == "LOGINDISABLED");
        let has_plain = caps.iter().any(|c| c == "AUTH=PLAIN");
        let non_ascii = !secret.expose().is_ascii() || !settings.username.is_ascii();
        let user = settings.username.as_str();
        let auth_fail = |e: async_imap::error::Error| -> ImapError {
            match e {
                async_imap::error::Error::ConnectionLost => ImapError::ConnectionLost {
                    addr: addr.clone(),
                    during: "authenticating".into(),
                },
                async_imap::error::Error::Io(io) => ImapError::ConnectionLost {
                    addr: addr.clone(),
                    during: format!("authenticating ({io})"),
                },
                async_imap::error::Error::Validate(_) => ImapError::AuthFailed {
                    addr: addr.clone(),
                    user: user.to_string(),
                    detail: "the user name or password contains a line break or another character LOGIN cannot send".into(),
                },
                other => ImapError::AuthFailed {
                    addr: addr.clone(),
                    user: user.to_string(),
                    detail: other.to_string(),
                },
            }
        };
        let result = if login_disabled || (non_ascii && has_plain) {
            if !has_plain {
                return Err(ImapError::NoAuthMethod { addr });
            }
            let auth = PlainAuth {
                user,
                pass: secret.expose(),
            };
            timeout(settings.timeout, client.authenticate("PLAIN", auth))
                .await
                .map(|r| r.map_err(|(e, _)| e))
        } else {
            timeout(settings.timeout, client.login(user, secret.expose()))
                .await
                .map(|r| r.map_err(|(e, _)| e))
        };
        let session = match result {
            Err(_) => return Err(pre.timeout_err("authenticating")),
            Ok(Err(e)) => return Err(auth_fail(e)),
            Ok(Ok(s)) => s,
        };
        ImapSession::established(session, settings, addr).await
    }

    /// Wraps a freshly authenticated session and reads its capabilities.
    async fn established(
        session: async_imap::Session<ImapStream>,
        settings: &ConnectSettings,
        addr: String,
    ) -> Result<ImapSession, ImapError> {
        let mut me = ImapSession {
            session,
            caps: HashSet::new(),
            settings: settings.clone(),
            addr,
            broken: None,
            selected: None,
            unsolicited: VecDeque::new(),
        };
        me.refresh_capabilities().await?;
        if me.settings.compress && me.has_capability("COMPRESS=DEFLATE") {
            me = me.compressed().await?;
        }
        Ok(me)
    }

    /// Turns on `COMPRESS DEFLATE` (RFC 4978). A sweep's header pass is
    /// mostly repeated field names and addresses and shrinks about tenfold,
    /// which saves time on any real network link. (On loopback, where bytes
    /// are free, the server's compressing costs a first sweep of 50,000
    /// messages about 0.3–0.45 s of Dovecot's CPU: see the README.)
    async fn compressed(self) -> Result<ImapSession, ImapError> {
        let (session, rest) = self.into_parts();
        let r = timeout(
            rest.settings.timeout,
            session.compress(|s| ImapStream::Compressed(Box::new(s))),
        )
        .await;
        let session =
            match r {
                Ok(Ok(session)) => session,
                Err(_) => {
                    return Err(ImapError::Timeout {
                        addr: rest.addr,
                        during: "waiting for COMPRESS DEFLATE".into(),
                        after: rest.settings.timeout,
                    })
                }
                Ok(Err(e)) => return Err(ImapError::Command {
                    addr: rest.addr,
                    command:
                        "COMPRESS DEFLATE (set `compress: false` for this account to do without)"
                            .into(),
                    source: e,
                }),
            };
        tracing::debug!(addr = %rest.addr, "connection compressed (COMPRESS=DEFLATE)");
        Ok(rest.rejoin(session))
    }

    /// Splits off the async-imap session, for a call that consumes it; see
    /// [`SessionRest::rejoin`].
    fn into_parts(self) -> (async_imap::Session<ImapStream>, SessionRest) {
        let ImapSession {
            session,
            caps,
            settings,
            addr,
            broken,
            selected,
            unsolicited,
        } = self;
        let rest = SessionRest {
            caps,
            settings,
            addr,
            broken,
            selected,
            unsolicited,
        };
        (session, rest)
    }

    /// Whether the connection is compressed (`COMPRESS DEFLATE` is on).
    pub fn is_compressed(&self) -> bool {
        matches!(self.session.get_ref(), ImapStream::Compressed(_))
    }

    /// The server address (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Capabilities after login, upper-cased (e.g. `MOVE`, `UIDPLUS`, `IDLE`).
    pub fn capabilities(&self) -> &HashSet<String> {
        &self.caps
    }

    /// Whether the server advertised this capability (case-insensitive).
    pub fn has_capability(&self, cap: &str) -> bool {
        self.caps.contains(&cap.to_ascii_uppercase())
    }

    /// Re-reads CAPABILITY.
    pub async fn refresh_capabilities(&mut self) -> Result<(), ImapError> {
        self.usable("CAPABILITY")?;
        let caps = self.answered_capabilities("CAPABILITY").await?;
        self.caps = caps
            .iter()
            .map(|c| match c {
                async_imap::types::Capability::Imap4rev1 => "IMAP4REV1".to_string(),
                async_imap::types::Capability::Auth(a) => {
                    format!("AUTH={}", a.to_ascii_uppercase())
                }
                async_imap::types::Capability::Atom(a) => a.to_ascii_uppercase(),
            })
            .collect();
        Ok(())
    }

    /// Unsolicited responses (EXISTS, EXPUNGE, FETCH, ...) received so far, oldest first.
    pub fn take_unsolicited(&mut self) -> Vec<UnsolicitedResponse> {
        self.drain();
        self.unsolicited.drain(..).collect()
    }

    /// Whether an earlier timeout or lost connection made the session unusable.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    fn drain(&mut self) {
        while let Ok(r) = self.session.unsolicited_responses.try_recv() {
            if self.unsolicited.len() >= MAX_UNSOLICITED {
                self.unsolicited.pop_front();
            }
            self.unsolicited.push_back(r);
        }
    }

    fn usable(&self, command: &str) -> Result<(), ImapError> {
        match &self.broken {
            Some(why) => Err(ImapError::ConnectionLost {
                addr: self.addr.clone(),
                during: format!("{command} (session unusable after: {why})"),
            }),
            None => Ok(()),
        }
    }

    /// Converts a step's outcome, marking the session broken on timeouts and I/O failures.
    fn settle<T>(&mut self, r: Result<T, Fail>, command: &str) -> Result<T, ImapError> {
        self.drain();
        match r {
            Ok(v) => Ok(v),
            Err(Fail::Timeout) => {
                self.broken = Some(format!("timeout in {command}"));
                Err(ImapError::Timeout {
                    addr: self.addr.clone(),
                    during: format!("waiting for {command}"),
                    after: self.settings.timeout,
                })
            }
            Err(Fail::Imap(async_imap::error::Error::ConnectionLost)) => {
                self.broken = Some(format!("connection lost in {command}"));
                Err(ImapError::ConnectionLost {
                    addr: self.addr.clone(),
                    during: command.to_string(),
                })
            }
            Err(Fail::Imap(e)) => {
                if matches!(
                    e,
                    async_imap::error::Error::Io(_) | async_imap::error::Error::Parse(_)
                ) {
                    self.broken = Some(format!("{command}: {e}"));
                }
                Err(ImapError::Command {
                    addr: self.addr.clone(),
                    command: command.to_string(),
                    source: e,
                })
            }
        }
    }

    /// All folders (`LIST "" "*"`) with their attributes, including SPECIAL-USE ones.
    pub async fn list_folders(&mut self) -> Result<Vec<FolderInfo>, ImapError> {
        self.usable("LIST")?;
        let mut folders = self.list_raw("\"*\"").await?;
        // Servers with SPECIAL-USE but without LIST attributes by default need RETURN.
        let any_special = folders.iter().any(|f| {
            [
                "\\Sent",
                "\\Junk",
                "\\Trash",
                "\\Drafts",
                "\\Archive",
                "\\All",
                "\\Flagged",
            ]
            .iter()
            .any(|a| f.has_attribute(a))
        });
        if !any_special
            && self.has_capability("SPECIAL-USE")
            && self.has_capability("LIST-EXTENDED")
        {
            let with_use = self.list_raw("\"*\" RETURN (SPECIAL-USE)").await?;
            for f in &mut folders {
                if let Some(w) = with_use.iter().find(|w| w.name == f.name) {
                    for a in &w.attributes {
                        if !f.has_attribute(a) {
                            f.attributes.push(a.clone());
                        }
                    }
                }
            }
        }
        Ok(folders)
    }

    async fn list_raw(&mut self, pattern: &str) -> Result<Vec<FolderInfo>, ImapError> {
        let t = self.settings.timeout;
        let r = async {
            let stream = flat(timeout(t, self.session.list(Some(""), Some(pattern))).await)?;
            collect_stream(t, stream).await
        }
        .await;
        let names = self.settle(r, "LIST")?;
        self.confirm_complete("LIST").await?;
        Ok(names
            .iter()
            .map(|name| FolderInfo {
                name: name.name().to_string(),
                delimiter: name.delimiter().map(str::to_string),
                attributes: name
                    .attributes()
                    .iter()
                    .map(name_attribute_string)
                    .collect(),
            })
            .collect())
    }

    /// Names of the folders with a SPECIAL-USE attribute such as `\Sent`.
    pub async fn find_special_use(&mut self, attr: &str) -> Result<Vec<String>, ImapError> {
        Ok(self
            .list_folders()
            .await?
            .into_iter()
            .filter(|f| f.has_attribute(attr) && f.selectable())
            .map(|f| f.name)
            .collect())
    }

    /// `SELECT` (read-write; needed for moves and flag changes).
    pub async fn select(&mut self, mailbox: &str) -> Result<MailboxStatus, ImapError> {
        self.open_mailbox(mailbox, false).await
    }

    /// `EXAMINE` (read-only; cannot change anything, not even `\Recent`).
    pub async fn examine(&mut self, mailbox: &str) -> Result<MailboxStatus, ImapError> {
        self.open_mailbox(mailbox, true).await
    }

    async fn open_mailbox(
        &mut self,
        mailbox: &str,
        read_only: bool,
    ) -> Result<MailboxStatus, ImapError> {
        let command = if read_only { "EXAMINE" } else { "SELECT" };
        self.usable(command)?;
        self.selected = None;
        let t = self.settings.timeout;
        let r = if read_only {
            timeout(t, self.session.examine(mailbox)).await
        } else {
            timeout(t, self.session.select(mailbox)).await
        };
        let what = format!("{command} {mailbox}");
        let mb = self.settle(flat(r), &what)?;
        // A cut connection would otherwise pass for an answer without UIDNEXT or EXISTS.
        self.confirm_complete(&what).await?;
        let uidvalidity = mb.uid_validity.ok_or_else(|| {
            ImapError::Invalid(format!(
                "{}: {what} did not report UIDVALIDITY; cannot track this folder safely",
                self.addr
            ))
        })?;
        self.selected = Some((mailbox.to_string(), read_only));
        Ok(MailboxStatus {
            uidvalidity,
            uidnext: mb.uid_next,
            exists: mb.exists,
        })
    }

    /// `STATUS mailbox (UIDVALIDITY UIDNEXT)`: where a folder that is not
    /// selected stands, e.g. the quarantine folder just before a copy.
    pub async fn status_uidnext(&mut self, mailbox: &str) -> Result<(u32, u32), ImapError> {
        self.usable("STATUS")?;
        let what = format!("STATUS {mailbox}");
        let r = timeout(
            self.settings.timeout,
            self.session.status(mailbox, "(UIDVALIDITY UIDNEXT)"),
        )
        .await;
        let mb = self.settle(flat(r), &what)?;
        self.confirm_complete(&what).await?;
        match (mb.uid_validity, mb.uid_next) {
            (Some(validity), Some(next)) => Ok((validity, next)),
            _ => Err(ImapError::Invalid(format!(
                "{}: {what} did not report UIDVALIDITY and UIDNEXT",
                self.addr
            ))),
        }
    }

    /// The selected mailbox and whether it is read-only.
    pub fn selected(&self) -> Option<(&str, bool)> {
        self.selected.as_ref().map(|(m, ro)| (m.as_str(), *ro))
    }

    fn require_selected(&self, writable: bool) -> Result<(), ImapError> {
        match &self.selected {
            None => Err(ImapError::Invalid("no mailbox selected".into())),
            Some((m, true)) if writable => Err(ImapError::Invalid(format!(
                "mailbox {m} was opened read-only (EXAMINE); SELECT it to change anything"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// `UID SEARCH <criteria>` in the selected mailbox; UIDs ascending.
    pub async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        self.usable("UID SEARCH")?;
        self.require_selected(false)?;
        let r = timeout(self.settings.timeout, self.session.uid_search(criteria)).await;
        let set = self.settle(flat(r), "UID SEARCH")?;
        self.confirm_complete("UID SEARCH").await?;
        let mut v: Vec<u32> = set.into_iter().collect();
        v.sort_unstable();
        Ok(v)
    }

    async fn fetch_all(
        &mut self,
        set: &str,
        query: &str,
        command: &str,
    ) -> Result<Vec<Fetch>, ImapError> {
        let mut fetched = Vec::new();
        self.fetch_each(set, query, command, |f| fetched.push(f))
            .await?;
        Ok(fetched)
    }

    /// Like [`ImapSession::fetch_all`], but hands each response to `each`
    /// as it arrives, so the caller works while the server is still
    /// sending. Until this returns `Ok`, what `each` saw may be an answer
    /// cut short: nothing may be decided on it before.
    async fn fetch_each(
        &mut self,
        set: &str,
        query: &str,
        command: &str,
        mut each: impl FnMut(Fetch),
    ) -> Result<(), ImapError> {
        let t = self.settings.timeout;
        let r = async {
            let stream = flat(timeout(t, self.session.uid_fetch(set, query)).await)?;
            let mut stream = std::pin::pin!(stream);
            loop {
                match timeout(t, stream.next()).await {
                    Err(_) => return Err(Fail::Timeout),
                    Ok(None) => return Ok(()),
                    Ok(Some(Err(e))) => return Err(Fail::Imap(e)),
                    Ok(Some(Ok(f))) => each(f),
                }
            }
        }
        .await;
        self.settle(r, command)?;
        self.confirm_complete(command).await
    }

    /// Proves that a response really ended with its tagged completion. async-imap ends a
    /// response stream quietly when the connection closes between two lines, so a cut
    /// connection would otherwise look like a short but complete answer (and messages
    /// missing from it like messages expunged meanwhile). A `CAPABILITY` answered on the
    /// same connection proves the connection was still there after the answer (see
    /// [`ImapSession::answered_capabilities`] for why that must be checked too). (Found by
    /// the daemon's connection-cutting fault test.) `CAPABILITY`,
    /// not `NOOP`: Dovecot answers a NOOP by re-reading the mailbox, which on a
    /// 50,000-message Maildir costs ~0.1 s each time and tripled the time of a first
    /// sweep. Nothing relies on the NOOP's view update: sweeps stop at the highest UID a
    /// `UID SEARCH` has shown, not at UIDNEXT.
    async fn confirm_complete(&mut self, command: &str) -> Result<(), ImapError> {
        self.answered_capabilities(&format!("{command} (checking the connection)"))
            .await
            .map(|_| ())
    }

    /// `CAPABILITY`, proven answered. async-imap collects its answer until the
    /// stream ends, so a connection that closes before the answer (a read
    /// that meets the end of the stream, where a write would have failed a
    /// moment later) gives an empty list, not an error. Every server lists
    /// `IMAP4rev1` or `IMAP4rev2` (RFC 3501 7.2.1, RFC 9051 7.2.2): without
    /// it there was no answer, and the session is unusable. (Found by the
    /// daemon's connection-cutting fault test: a cut prefix fetch, confirmed
    /// "complete" this way, passed four messages by unjudged.)
    async fn answered_capabilities(
        &mut self,
        command: &str,
    ) -> Result<async_imap::types::Capabilities, ImapError> {
        let r = timeout(self.settings.timeout, self.session.capabilities()).await;
        let caps = self.settle(flat(r), command)?;
        let answered = caps.iter().any(|c| match c {
            async_imap::types::Capability::Imap4rev1 => true,
            async_imap::types::Capability::Atom(a) => a.eq_ignore_ascii_case("IMAP4rev2"),
            async_imap::types::Capability::Auth(_) => false,
        });
        if !answered {
            self.broken = Some(format!("connection lost in {command}"));
            return Err(ImapError::ConnectionLost {
                addr: self.addr.clone(),
                during: format!(
                    "{command} (the answer ended without the IMAP4rev1 capability every server lists)"
                ),
            });
        }
        Ok(caps)
    }

    /// Fetches UID, FLAGS, RFC822.SIZE and `BODY.PEEK[HEADER.FIELDS (fields)]` for a UID set
    /// (e.g. `"1:500"` or the output of [`uid_set`]) in the selected mailbox. Never sets
    /// `\Seen`. Note IMAP's rule that `N:*` always includes the highest UID even when it is
    /// below N: filter the result by UID if you use `*`.
    pub async fn uid_fetch_headers(
        &mut self,
        uids: &str,
        fields: &[&str],
    ) -> Result<Vec<FetchedHeaders>, ImapError> {
        let fetches = self
            .fetch_header_fields(uids, fields, "UID FLAGS RFC822.SIZE")
            .await?;
        Ok(fetches
            .iter()
            .filter_map(|f| {
                Some(FetchedHeaders {
                    uid: f.uid?,
                    flags: f.flags().map(|fl| flag_string(&fl)).collect(),
                    size: f.size,
                    header: f.header().map(<[u8]>::to_vec).unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Fetches only UID and `BODY.PEEK[HEADER.FIELDS (fields)]`, like
    /// [`ImapSession::uid_fetch_headers`] without flags and size: what a sweep
    /// asks of every message. The size is not free: a server that does not
    /// store it (a Maildir whose file names lack `W=`) reads the whole message
    /// to count its line ends, which made a sweep's header pass a third slower.
    pub async fn uid_fetch_header_fields(
        &mut self,
        uids: &str,
        fields: &[&str],
    ) -> Result<Vec<FetchedHeaderFields>, ImapError> {
        let fetches = self.fetch_header_fields(uids, fields, "UID").await?;
        Ok(fetches
            .iter()
            .filter_map(|f| {
                Some(FetchedHeaderFields {
                    uid: f.uid?,
                    header: f.header().map(<[u8]>::to_vec).unwrap_or_default(),
                })
            })
            .collect())
    }

    /// `UID FETCH uids (items BODY.PEEK[HEADER.FIELDS (fields)])`, checked.
    async fn fetch_header_fields(
        &mut self,
        uids: &str,
        fields: &[&str],
        items: &str,
    ) -> Result<Vec<Fetch>, ImapError> {
        self.usable("UID FETCH")?;
        self.require_selected(false)?;
        if fields.is_empty() {
            return Err(ImapError::Invalid(
                "uid_fetch_headers: no header fields requested".into(),
            ));
        }
        if let Some(bad) = fields.iter().find(|f| {
            f.is_empty()
                || !f
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return Err(ImapError::Invalid(format!(
                "invalid header field name {bad:?}"
            )));
        }
        validate_uid_set(uids)?;
        let query = format!("({items} BODY.PEEK[HEADER.FIELDS ({})])", fields.join(" "));
        self.fetch_all(uids, &query, "UID FETCH (headers)").await
    }

    /// Fetches at most `max_bytes` of one message from its start (`BODY.PEEK[]<0.N>`).
    /// `None` if the UID does not exist.
    pub async fn uid_fetch_prefix(
        &mut self,
        uid: u32,
        max_bytes: u32,
    ) -> Result<Option<Vec<u8>>, ImapError> {
        Ok(self
            .uid_fetch_prefixes(&[uid], max_bytes)
            .await?
            .into_iter()
            .find(|p| p.uid == uid)
            .map(|p| p.data))
    }

    /// Like [`ImapSession::uid_fetch_prefix`] for many UIDs in one command.
    pub async fn uid_fetch_prefixes(
        &mut self,
        uids: &[u32],
        max_bytes: u32,
    ) -> Result<Vec<FetchedPrefix>, ImapError> {
        self.uid_fetch_slices(uids, 0, max_bytes).await
    }

    /// At most `max_bytes` of each message from byte `offset` on
    /// (`BODY.PEEK[]<offset.max_bytes>`): the continuation of a prefix, so that
    /// reading further never downloads the start again.
    pub async fn uid_fetch_slices(
        &mut self,
        uids: &[u32],
        offset: u32,
        max_bytes: u32,
    ) -> Result<Vec<FetchedPrefix>, ImapError> {
        let mut out = Vec::new();
        self.uid_fetch_slices_each(uids, offset, max_bytes, |p| out.push(p))
            .await?;
        Ok(out)
    }

    /// Like [`ImapSession::uid_fetch_slices`], handing each message to
    /// `each` as it arrives: a sweep analyses one prefix while the server
    /// sends the next. Only an `Ok` says the answer was complete.
    pub async fn uid_fetch_slices_each(
        &mut self,
        uids: &[u32],
        offset: u32,
        max_bytes: u32,
        mut each: impl FnMut(FetchedPrefix),
    ) -> Result<(), ImapError> {
        self.usable("UID FETCH")?;
        self.require_selected(false)?;
        let query = format!("(UID FLAGS RFC822.SIZE BODY.PEEK[]<{offset}.{max_bytes}>)");
        for set in uid_set_chunks(uids, MAX_SET_BYTES) {
            self.fetch_each(&set, &query, "UID FETCH (prefix)", |f| {
                if let Some(uid) = f.uid {
                    each(FetchedPrefix {
                        uid,
                        flags: f.flags().map(|fl| flag_string(&fl)).collect(),
                        size: f.size,
                        data: f.body().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Creates a folder unless it exists (and subscribes it). Returns whether it was created.
    pub async fn create_folder_if_missing(&mut self, name: &str) -> Result<bool, ImapError> {
        self.usable("CREATE")?;
        if name.is_empty() || name.contains(['\r', '\n', '*', '%']) {
            return Err(ImapError::Invalid(format!("invalid folder name {name:?}")));
        }
        let quoted = format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
        if self.list_raw(&quoted).await?.iter().any(|f| f.name == name) {
            return Ok(false);
        }
        let what = format!("CREATE {name}");
        let t = self.settings.timeout;
        let r = timeout(t, self.session.create(name)).await;
        match self.settle(flat(r), &what) {
            Ok(()) => {}
            // Created concurrently by someone else: fine.
            Err(ImapError::Command {
                source: async_imap::error::Error::No(msg),
                ..
            }) if msg.to_ascii_uppercase().contains("ALREADYEXISTS") => return Ok(false),
            Err(e) => return Err(e),
        }
        let r = timeout(t, self.session.subscribe(name)).await;
        if let Err(e) = self.settle(flat(r), "SUBSCRIBE") {
            if self.is_broken() {
                return Err(e);
            }
            tracing::debug!(error = %e, folder = name, "could not subscribe the new folder");
        }
        Ok(true)
    }

    /// Moves messages of the selected (read-write) mailbox to `dest`, using the safest way
    /// the server offers (see [`MoveOutcome`]). Flags, including `\Seen`, are preserved.
    pub async fn move_uids(&mut self, uids: &[u32], dest: &str) -> Result<MoveOutcome, ImapError> {
        self.usable("MOVE")?;
        self.require_selected(true)?;
        let chunks = uid_set_chunks(uids, MAX_SET_BYTES);
        if chunks.is_empty() {
            return Ok(MoveOutcome::Nothing);
        }
        let t = self.settings.timeout;
        let outcome = if self.has_capability("MOVE") {
            MoveOutcome::Moved
        } else if self.has_capability("UIDPLUS") {
            MoveOutcome::CopiedAndExpunged
        } else {
            MoveOutcome::CopiedAndFlaggedDeleted
        };
        for set in chunks {
            if outcome == MoveOutcome::Moved {
                let r = timeout(t, self.session.uid_mv(&set, dest)).await;
                self.settle(flat(r), "UID MOVE")?;
                continue;
            }
            let r = timeout(t, self.session.uid_copy(&set, dest)).await;
            self.settle(flat(r), "UID COPY")?;
            self.store_deleted(&set).await?;
            if outcome == MoveOutcome::CopiedAndExpunged {
                let r = async {
                    let stream = flat(timeout(t, self.session.uid_expunge(&set)).await)?;
                    collect_stream(t, stream).await
                }
                .await;
                self.settle(r, "UID EXPUNGE")?;
            }
            // STORE and EXPUNGE answers end quietly on a cut connection.
            self.confirm_complete("UID COPY fallback").await?;
        }
        Ok(outcome)
    }

    async fn store_deleted(&mut self, set: &str) -> Result<(), ImapError> {
        let t = self.settings.timeout;
        let r = async {
            let stream =
                flat(timeout(t, self.session.uid_store(set, "+FLAGS.SILENT (\\Deleted)")).await)?;
            collect_stream(t, stream).await
        }
        .await;
        self.settle(r, "UID STORE +FLAGS.SILENT (\\Deleted)")
            .map(|_| ())
    }

    /// Adds flags or keywords (e.g. `$Backscatter`) to messages of the selected mailbox,
    /// silently. Refuses `\Seen` and `\Deleted` (use the dedicated operations).
    pub async fn add_flags(&mut self, uids: &[u32], flags: &[&str]) -> Result<(), ImapError> {
        self.usable("UID STORE")?;
        self.require_selected(true)?;
        if let Some(bad) = flags.iter().find(|f| {
            f.eq_ignore_ascii_case("\\Seen")
                || f.eq_ignore_ascii_case("\\Deleted")
                || f.is_empty()
                || f.bytes().any(|b| {
                    b.is_ascii_whitespace() || b"(){%*\"]".contains(&b) || b.is_ascii_control()
                })
        }) {
            return Err(ImapError::Invalid(format!("refusing to set flag {bad:?}")));
        }
        if flags.is_empty() {
            return Ok(());
        }
        let t = self.settings.timeout;
        for set in uid_set_chunks(uids, MAX_SET_BYTES) {
            let q = format!("+FLAGS.SILENT ({})", flags.join(" "));
            let r = async {
                let stream = flat(timeout(t, self.session.uid_store(&set, &q)).await)?;
                collect_stream(t, stream).await
            }
            .await;
            self.settle(r, "UID STORE +FLAGS.SILENT")?;
        }
        self.confirm_complete("UID STORE +FLAGS.SILENT").await
    }

    /// `NOOP` (keep-alive; also collects unsolicited EXISTS/EXPUNGE).
    pub async fn noop(&mut self) -> Result<(), ImapError> {
        self.usable("NOOP")?;
        let fut = self.session.noop();
        // `simple` needs &mut self while `fut` borrows the session: inline instead.
        let r = timeout(self.settings.timeout, fut).await;
        self.settle(flat(r), "NOOP")
    }

    /// `LOGOUT`, under the timeout. The session is consumed.
    pub async fn logout(mut self) -> Result<(), ImapError> {
        self.usable("LOGOUT")?;
        let r = timeout(self.settings.timeout, self.session.logout()).await;
        self.settle(flat(r), "LOGOUT")
    }

    /// Runs a raw command and checks it ends with OK (escape hatch; do not pass secrets).
    pub async fn run_command(&mut self, command: &str) -> Result<(), ImapError> {
        self.usable(command)?;
        let fut = self.session.run_command_and_check_ok(command);
        let r = timeout(self.settings.timeout, fut).await;
        self.settle(flat(r), command)
    }
}

impl ImapSession {
    /// `APPEND` a message to `mailbox` with no flags (a new, unread message), as a mail
    /// server delivering it would. For tests, benchmarks and tools; the sweep never
    /// appends.
    pub async fn append(&mut self, mailbox: &str, message: &[u8]) -> Result<(), ImapError> {
        self.usable("APPEND")?;
        let r = timeout(
            self.settings.timeout,
            self.session.append(mailbox, None, None, message),
        )
        .await;
        self.settle(flat(r), "APPEND")
    }
}

/// Why [`ImapSession::idle`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleEnd {
    /// The server reported new mail (`EXISTS` or `RECENT`), possibly already before IDLE
    /// began: sweep now.
    NewMail,
    /// The wait ran its full length without news; IDLE should be re-issued (RFC 2177:
    /// servers may drop an IDLE older than 30 minutes).
    Timeout,
    /// The caller's stop future completed (shutdown or reload).
    Stopped,
}

/// Whether an unsolicited response announces new mail.
fn announces_new_mail(r: &UnsolicitedResponse) -> bool {
    matches!(
        r,
        UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
    )
}

impl ImapSession {
    /// Whether the unsolicited responses received so far announce new mail (`EXISTS` or
    /// `RECENT`). Consumes them; used after `NOOP` polling and before IDLE, so that mail
    /// reported during another command is never left waiting for the next wake-up.
    pub fn take_new_mail(&mut self) -> bool {
        self.take_unsolicited().iter().any(announces_new_mail)
    }

    /// `IDLE` (RFC 2177) on the selected mailbox until the server reports new mail, `max`
    /// passes, or `stop` completes; then `DONE`, and the session is handed back.
    ///
    /// New mail already reported before the call (during an earlier command, or while
    /// IDLE was starting) returns [`IdleEnd::NewMail`] at once. Expunges and flag
    /// changes do not end the wait. Entering and leaving IDLE run under the session
    /// timeout; a `BYE` or a closed connection during the wait is
    /// [`ImapError::ConnectionLost`]. On an error the session is dropped.
    pub async fn idle(
        mut self,
        max: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(ImapSession, IdleEnd), ImapError> {
        self.usable("IDLE")?;
        self.require_selected(false)?;
        if !self.has_capability("IDLE") {
            return Err(ImapError::Invalid(format!(
                "{}: the server does not offer IDLE; poll with NOOP instead",
                self.addr
            )));
        }
        if self.take_new_mail() {
            return Ok((self, IdleEnd::NewMail));
        }
        let (session, mut rest) = self.into_parts();
        let t = rest.settings.timeout;
        let lost = |during: &str| ImapError::ConnectionLost {
            addr: rest.addr.clone(),
            during: during.to_string(),
        };
        let timed_out = |during: &str| ImapError::Timeout {
            addr: rest.addr.clone(),
            during: during.to_string(),
            after: t,
        };
        // The session's queue of unsolicited responses, readable while IDLE owns it.
        let queue = session.unsolicited_responses.clone();
        let mut handle = session.idle();
        match timeout(t, handle.init()).await {
            Err(_) => return Err(timed_out("starting IDLE")),
            Ok(Err(e)) => return Err(lost(&format!("starting IDLE ({e})"))),
            Ok(Ok(())) => {}
        }
        let mut end = None;
        while let Ok(r) = queue.try_recv() {
            if announces_new_mail(&r) {
                end = Some(IdleEnd::NewMail);
            }
            rest.unsolicited.push_back(r);
        }
        let deadline = tokio::time::Instant::now() + max;
        let mut stop = std::pin::pin!(stop);
        let mut stopped = false;
        while end.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if stopped || left.is_zero() {
                end = Some(if stopped {
                    IdleEnd::Stopped
                } else {
                    IdleEnd::Timeout
                });
                break;
            }
            let (wait, interrupt) = handle.wait_with_timeout(left);
            let mut wait = std::pin::pin!(wait);
            let r = tokio::select! {
                r = &mut wait => r,
                () = &mut stop => {
                    stopped = true;
                    drop(interrupt);
                    // Dropping the interrupt source ends the wait at once.
                    match timeout(t, &mut wait).await {
                        Ok(r) => r,
                        Err(_) => return Err(timed_out("leaving IDLE")),
                    }
                }
            };
            use async_imap::extensions::idle::IdleResponse;
            use imap_proto::{MailboxDatum, Response, Status};
            match r {
                Ok(IdleResponse::Timeout) => end = Some(IdleEnd::Timeout),
                Ok(IdleResponse::ManualInterrupt) if stopped => end = Some(IdleEnd::Stopped),
                // The stream ended without our asking: the connection is gone.
                Ok(IdleResponse::ManualInterrupt) => return Err(lost("in IDLE")),
                Ok(IdleResponse::NewData(data)) => match data.parsed() {
                    Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_)) => {
                        end = Some(IdleEnd::NewMail)
                    }
                    Response::Data {
                        status: Status::Bye,
                        ..
                    } => return Err(lost("in IDLE (the server said BYE)")),
                    _ => {}
                },
                Err(e) => return Err(lost(&format!("in IDLE ({e})"))),
            }
        }
        let session = match timeout(t, handle.done()).await {
            Err(_) => return Err(timed_out("leaving IDLE (DONE)")),
            Ok(Err(e)) => return Err(lost(&format!("leaving IDLE ({e})"))),
            Ok(Ok(s)) => s,
        };
        let mut me = rest.rejoin(session);
        me.drain();
        Ok((me, end.unwrap_or(IdleEnd::Timeout)))
    }
}

/// The first parts of a multipart message, each with its MIME header (see
/// [`ImapSession::uid_fetch_parts`]).
#[derive(Debug, Clone)]
pub struct FetchedParts {
    /// The message's UID.
    pub uid: u32,
    /// Per part (1, 2, ...): its MIME header and the start of its content;
    /// `None` when the server returned nothing for it.
    pub parts: Vec<Option<(Vec<u8>, Vec<u8>)>>,
}

impl ImapSession {
    /// Fetches, for each UID, the MIME header and at most `max_bytes[i]` of
    /// the content of the top-level parts 1..=`max_bytes.len()`
    /// (`BODY.PEEK[n.MIME] BODY.PEEK[n]<0.N>`): the pieces of a report a
    /// notice's analysis reads, without the attachments between them.
    pub async fn uid_fetch_parts(
        &mut self,
        uids: &[u32],
        max_bytes: &[u32],
    ) -> Result<Vec<FetchedParts>, ImapError> {
        use async_imap::imap_proto::{MessageSection, SectionPath};
        self.usable("UID FETCH")?;
        self.require_selected(false)?;
        let items: Vec<String> = max_bytes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("BODY.PEEK[{0}.MIME] BODY.PEEK[{0}]<0.{n}>", i + 1))
            .collect();
        let query = format!("(UID {})", items.join(" "));
        let mut out = Vec::new();
        for set in uid_set_chunks(uids, MAX_SET_BYTES) {
            let fetches = self.fetch_all(&set, &query, "UID FETCH (parts)").await?;
            out.extend(fetches.iter().filter_map(|f| {
                let parts = (1..=max_bytes.len() as u32)
                    .map(|n| {
                        let mime =
                            f.section(&SectionPath::Part(vec![n], Some(MessageSection::Mime)))?;
                        let content = f.section(&SectionPath::Part(vec![n], None))?;
                        (!mime.is_empty()).then(|| (mime.to_vec(), content.to_vec()))
                    })
                    .collect();
                Some(FetchedParts { uid: f.uid?, parts })
            }));
        }
        Ok(out)
    }
}

fn validate_uid_set(s: &str) -> Result<(), ImapError> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b',' || b == b'*')
    {
        return Err(ImapError::Invalid(format!("invalid UID set {s:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[3, 1, 2, 7, 9, 10, 10, 0]), "1:3,7,9:10");
        assert_eq!(
            uid_set(&[u32::MAX, u32::MAX - 1]),
            format!("{}:{}", u32::MAX - 1, u32::MAX)
        );
        assert_eq!(uid_set_chunks(&[1, 3, 5, 7], 1 + 22), vec!["1,3", "5,7"]);
        assert_eq!(uid_set_chunks(&[1, 3, 5, 7], 0), vec!["1", "3", "5", "7"]);
        // Scattered UIDs of every width, and runs: every chunk within the
        // bound and filled close to it (the counting matches the text).
        let uids: Vec<u32> = (0..20_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % 3_000_000 + 1)
            .chain(99_990..100_020)
            .chain(u32::MAX - 3..=u32::MAX)
            .collect();
        let chunks = uid_set_chunks(&uids, MAX_SET_BYTES);
        assert!(chunks.len() > 1);
        assert!(
            chunks.iter().all(|c| c.len() <= MAX_SET_BYTES),
            "a chunk is too long"
        );
        let (last, full) = chunks.split_last().expect("more than one chunk");
        assert!(
            full.iter().all(|c| c.len() > MAX_SET_BYTES - 30),
            "a chunk ends too early"
        );
        assert!(!last.is_empty());
        assert_eq!(chunks.join(","), uid_set(&uids));
    }

    #[test]
    fn capability_codes() {
        assert_eq!(
            capability_code("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] Dovecot ready."),
            Some(vec![
                "IMAP4REV1".into(),
                "STARTTLS".into(),
                "AUTH=PLAIN".into()
            ])
        );
        assert_eq!(capability_code("* OK ready"), None);
    }

    #[test]
    fn settings_from_account_and_addr() {
        let mut s = ConnectSettings::new("::1", 993, TlsMode::Implicit, "u");
        assert_eq!(s.addr(), "[::1]:993");
        s.host = "imap.example.com".into();
        assert_eq!(s.addr(), "imap.example.com:993");
        assert_eq!(s.timeout, Duration::from_secs(30));
    }

    #[test]
    fn bearer_mechanism_choice_and_payloads() {
        let caps = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let x = SaslMechanism::Xoauth2;
        let o = SaslMechanism::Oauthbearer;
        assert_eq!(choose_mechanism(x, &caps(&["AUTH=XOAUTH2"])), Some(x));
        assert_eq!(choose_mechanism(x, &caps(&["AUTH=OAUTHBEARER"])), Some(o));
        assert_eq!(
            choose_mechanism(o, &caps(&["AUTH=XOAUTH2", "AUTH=OAUTHBEARER"])),
            Some(o)
        );
        assert_eq!(choose_mechanism(o, &caps(&["IMAP4REV1"])), Some(o));
        assert_eq!(choose_mechanism(x, &caps(&["AUTH=PLAIN"])), None);

        let s = ConnectSettings::new("imap.example.com", 993, TlsMode::Implicit, "a,b=c@x");
        let token = Secret::new("tok");
        let mut a = BearerAuth::new(x, &s, &token);
        let mut auth = &mut a;
        use async_imap::Authenticator;
        assert_eq!(
            auth.process(b"").as_slice(),
            b"user=a,b=c@x\x01auth=Bearer tok\x01\x01"
        );
        assert!(auth.process(b"{\"status\":\"401\"}").is_empty());
        assert_eq!(a.server_error.as_deref(), Some("{\"status\":\"401\"}"));
        let mut b = BearerAuth::new(o, &s, &token);
        let mut auth = &mut b;
        assert_eq!(
            auth.process(b"").as_slice(),
            b"n,a=a=2Cb=3Dc@x,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(auth.process(b"{}").as_slice(), b"\x01");
    }

    #[test]
    fn uid_set_validation() {
        assert!(validate_uid_set("1:*").is_ok());
        assert!(validate_uid_set("1,2:4").is_ok());
        assert!(validate_uid_set("").is_err());
        assert!(validate_uid_set("1 BODY[]").is_err());
    }
}
