//! Passwords and tokens: from the OS keyring, an environment variable, a command or a file.
//!
//! Why this module exists: a secret must never end up in a log line, an error message or a
//! `{:?}` dump, and each source has its own failure modes that the user must be able to fix
//! from the message alone. So:
//!
//! - [`Secret`] wraps the value; its `Debug` and `Display` print `<redacted>`, and the memory
//!   is wiped on drop. The only way to the value is the explicit [`Secret::expose`].
//! - A `command` source runs with `sh -c`; on failure the error carries its exit status and
//!   stderr, never its stdout (which may be a partial password).
//! - A `file` source is refused when group or others may read or write it, and the error
//!   says `chmod 600 PATH`.
//! - The keyring is the platform store (macOS Keychain, Windows Credential Manager, the
//!   Secret Service on Linux). A headless Linux server usually has no Secret Service (no
//!   D-Bus session, or nothing provides `org.freedesktop.secrets`); that error says so and
//!   names the other sources.
//!
//! Keyring calls are blocking, and the Linux backend (zbus with tokio) runs its own
//! single-threaded tokio runtime that panics when entered from inside another runtime. Every
//! keyring call therefore runs on a short-lived plain thread, which makes the functions here
//! safe to call from synchronous code and from inside async tasks alike.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::config::PasswordSource;

/// The keyring service name under which backsweep stores passwords.
pub const KEYRING_SERVICE: &str = "backsweep";

/// The other password sources, named in keyring errors.
const ALTERNATIVES: &str = "use another password source in the config instead: \
     `password: { env: VAR }`, `password: { command: \"pass show mail\" }` or \
     `password: { file: /path/to/file }` (mode 0600)";

/// A password or token. Never printed: `Debug` and `Display` show `<redacted>`, and the
/// memory is zeroed when the value is dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret value itself. Call only where it is sent (LOGIN, keyring).
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

/// Compares the values (configs holding a secret, such as an OAuth2 client secret, are
/// compared in tests).
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be obtained or stored. No variant ever contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `{ env: VAR }` but the variable is not set (or not Unicode).
    #[error("account `{account}`: environment variable ${var} is not set (password source `env`)")]
    EnvMissing {
        /// Account name.
        account: String,
        /// Variable name.
        var: String,
    },
    /// The source produced an empty password.
    #[error("account `{account}`: the password from {source_kind} is empty")]
    Empty {
        /// Account name.
        account: String,
        /// Which source, e.g. `environment variable $X`.
        source_kind: String,
    },
    /// The password command could not be started.
    #[error("account `{account}`: cannot run the password command with `sh -c`: {source}")]
    CommandSpawn {
        /// Account name.
        account: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The password command exited unsuccessfully (stdout is deliberately not included).
    #[error(
        "account `{account}`: the password command failed ({status}){}",
        stderr_suffix(stderr)
    )]
    CommandFailed {
        /// Account name.
        account: String,
        /// Exit status description.
        status: String,
        /// The command's stderr, trimmed and truncated.
        stderr: String,
    },
    /// The password command printed something that is not UTF-8.
    #[error("account `{account}`: the password command printed bytes that are not UTF-8")]
    CommandNotUtf8 {
        /// Account name.
        account: String,
    },
    /// The password file could not be read.
    #[error("account `{account}`: cannot read password file {path}: {source}")]
    FileRead {
        /// Account name.
        account: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The password file may be read or written by group or others.
    #[error(
        "account `{account}`: password file {path} is accessible by group or others (mode {mode:04o}); \
         refusing to use it. Fix with: chmod 600 {path}"
    )]
    FilePermissions {
        /// Account name.
        account: String,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The keyring holds no password for this entry.
    #[error(
        "account `{account}`: no password in the OS keyring (service `{KEYRING_SERVICE}`, entry `{entry}`); \
         store one with `backsweep password set {account}`"
    )]
    KeyringNoEntry {
        /// Account name.
        account: String,
        /// Keyring entry name.
        entry: String,
    },
    /// There is no Secret Service (Linux): no D-Bus session bus, or no keyring daemon.
    #[error(
        "account `{account}`: no OS keyring available: this system has no Secret Service \
         (no D-Bus session, or nothing provides org.freedesktop.secrets, as is usual on a \
         headless server): {detail}. To use `keyring`, run a Secret Service such as \
         gnome-keyring or KeePassXC in a D-Bus session; or {ALTERNATIVES}"
    )]
    NoSecretService {
        /// Account name.
        account: String,
        /// The platform's error text.
        detail: String,
    },
    /// An OAuth2 account's access token could not be obtained (not signed in, refresh token
    /// revoked, provider unreachable); the message names the account and what to do.
    #[error(transparent)]
    OAuth(#[from] crate::oauth::OAuthError),
    /// Any other keyring failure (locked store, access denied, ...).
    #[error("account `{account}`: OS keyring error: {detail}; if the keyring cannot be used, {ALTERNATIVES}")]
    Keyring {
        /// Account name.
        account: String,
        /// The platform's error text.
        detail: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Resolves a password source for `account` (the account name, used in errors).
///
/// Blocking: may run a command or talk to the keyring. From async code, prefer
/// `tokio::task::spawn_blocking`.
pub fn resolve(account: &str, source: &PasswordSource) -> Result<Secret, SecretError> {
    match source {
        PasswordSource::Env(var) => from_env(account, var),
        PasswordSource::Command(cmd) => from_command(account, cmd),
        PasswordSource::File(path) => from_file(account, path),
        PasswordSource::Keyring { entry } => get_keyring_password(account, entry),
        PasswordSource::OAuth2(settings) => {
            Ok(crate::oauth::tokens::access_token(account, settings)?)
        }
    }
}

/// [`resolve`] on tokio's blocking pool, for async callers (a command, the keyring or an
/// OAuth2 token refresh may take seconds and must not stall other accounts' connections).
pub async fn resolve_async(account: &str, source: &PasswordSource) -> Result<Secret, SecretError> {
    let (name, src) = (account.to_string(), source.clone());
    match tokio::task::spawn_blocking(move || resolve(&name, &src)).await {
        Ok(r) => r,
        Err(e) => Err(SecretError::Keyring {
            account: account.to_string(),
            detail: format!("the task resolving the secret failed: {e}"),
        }),
    }
}

fn non_empty(account: &str, value: Zeroizing<String>, kind: String) -> Result<Secret, SecretError> {
    if value.is_empty() {
        return Err(SecretError::Empty {
            account: account.to_string(),
            source_kind: kind,
        });
    }
    Ok(Secret(value))
}

fn from_env(account: &str, var: &str) -> Result<Secret, SecretError> {
    let value = std::env::var(var).map_err(|_| SecretError::EnvMissing {
        account: account.to_string(),
        var: var.to_string(),
    })?;
    non_empty(
        account,
        Zeroizing::new(value),
        format!("environment variable ${var}"),
    )
}

/// Strips trailing CR/LF characters (the newline `echo`, `pass` and editors add).
fn trim_newlines(s: &mut String) {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
}

fn from_command(account: &str, cmd: &str) -> Result<Secret, SecretError> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| SecretError::CommandSpawn {
            account: account.to_string(),
            source,
        })?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if stderr.chars().count() > 500 {
            stderr = stderr.chars().take(500).collect::<String>() + "…";
        }
        return Err(SecretError::CommandFailed {
            account: account.to_string(),
            status: output.status.to_string(),
            stderr,
        });
    }
    let text = std::str::from_utf8(&stdout).map_err(|_| SecretError::CommandNotUtf8 {
        account: account.to_string(),
    })?;
    let mut value = Zeroizing::new(text.to_string());
    trim_newlines(&mut value);
    non_empty(account, value, "the password command".into())
}

fn from_file(account: &str, path: &Path) -> Result<Secret, SecretError> {
    let read_err = |source| SecretError::FileRead {
        account: account.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError::FilePermissions {
                account: account.to_string(),
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut value = Zeroizing::new(String::new());
    file.read_to_string(&mut value).map_err(read_err)?;
    trim_newlines(&mut value);
    non_empty(account, value, format!("file {}", path.display()))
}

/// Runs `f` on a fresh thread that is outside any tokio runtime (see the module docs).
fn on_plain_thread<T: Send + 'static>(
    account: &str,
    f: impl FnOnce() -> Result<T, keyring::Error> + Send + 'static,
) -> Result<T, KeyringFailure> {
    let handle = std::thread::Builder::new()
        .name("backsweep-keyring".into())
        .spawn(f)
        .map_err(|e| KeyringFailure::Other(format!("cannot start keyring thread: {e}")))?;
    match handle.join() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(e)),
        Err(_) => Err(KeyringFailure::Other(format!(
            "the keyring backend panicked while handling account `{account}`"
        ))),
    }
}

enum KeyringFailure {
    NoEntry,
    NoService(String),
    Other(String),
}

/// Tells "there is no Secret Service here" apart from other keyring failures.
fn classify(e: keyring::Error) -> KeyringFailure {
    match e {
        keyring::Error::NoEntry => KeyringFailure::NoEntry,
        keyring::Error::PlatformFailure(ref inner) | keyring::Error::NoStorageAccess(ref inner) => {
            let detail = inner.to_string();
            if cfg!(any(
                target_os = "linux",
                target_os = "freebsd",
                target_os = "openbsd"
            )) && looks_like_no_secret_service(&detail)
            {
                KeyringFailure::NoService(detail)
            } else {
                KeyringFailure::Other(e.to_string())
            }
        }
        other => KeyringFailure::Other(other.to_string()),
    }
}

fn looks_like_no_secret_service(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "serviceunknown",
        "org.freedesktop.secrets",
        "no such file or directory",
        "dbus_session_bus_address",
        "d-bus",
        "dbus",
        "connection refused",
        "address",
    ]
    .iter()
    .any(|needle| d.contains(needle))
}

fn keyring_error(account: &str, f: KeyringFailure, entry: &str) -> SecretError {
    match f {
        KeyringFailure::NoEntry => SecretError::KeyringNoEntry {
            account: account.to_string(),
            entry: entry.to_string(),
        },
        KeyringFailure::NoService(detail) => SecretError::NoSecretService {
            account: account.to_string(),
            detail,
        },
        KeyringFailure::Other(detail) => SecretError::Keyring {
            account: account.to_string(),
            detail,
        },
    }
}

fn get_keyring_password(account: &str, entry: &str) -> Result<Secret, SecretError> {
    let e = entry.to_string();
    let value = on_plain_thread(account, move || {
        keyring::Entry::new(KEYRING_SERVICE, &e)?.get_password()
    })
    .map_err(|f| keyring_error(account, f, entry))?;
    non_empty(account, Zeroizing::new(value), "the OS keyring".into())
}

/// Stores `secret` in the OS keyring under service `backsweep` and `entry` (normally the
/// account name; see [`PasswordSource::Keyring`]). `account` is used in error messages.
pub fn set_keyring_password(
    account: &str,
    entry: &str,
    secret: &Secret,
) -> Result<(), SecretError> {
    if secret.expose().is_empty() {
        return Err(SecretError::Empty {
            account: account.to_string(),
            source_kind: "the input".into(),
        });
    }
    let e = entry.to_string();
    let value = secret.clone();
    on_plain_thread(account, move || {
        keyring::Entry::new(KEYRING_SERVICE, &e)?.set_password(value.expose())
    })
    .map_err(|f| keyring_error(account, f, entry))
}

/// Deletes the keyring entry. A missing entry is reported as [`SecretError::KeyringNoEntry`].
pub fn delete_keyring_password(account: &str, entry: &str) -> Result<(), SecretError> {
    let e = entry.to_string();
    on_plain_thread(account, move || {
        keyring::Entry::new(KEYRING_SERVICE, &e)?.delete_credential()
    })
    .map_err(|f| keyring_error(account, f, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            pw: Secret,
        }
        assert!(!format!("{:?}", Holder { pw: s.clone() }).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn env_source() {
        // Only read the environment: setting variables races with other test threads.
        let path = std::env::var("PATH").expect("PATH is set");
        let s = resolve("a", &PasswordSource::Env("PATH".into())).expect("set");
        assert_eq!(s.expose(), path);
        let var = "BACKSWEEP_TEST_SURELY_UNSET_7F3A";
        let e = resolve("a", &PasswordSource::Env(var.into())).expect_err("unset");
        assert!(e.to_string().contains(var), "{e}");
    }

    #[test]
    fn command_source() {
        let s = resolve(
            "a",
            &PasswordSource::Command("printf 'pw with space\\n\\n'".into()),
        )
        .expect("ok");
        assert_eq!(s.expose(), "pw with space");
        let s = resolve("a", &PasswordSource::Command("echo hello".into())).expect("ok");
        assert_eq!(s.expose(), "hello");
    }

    #[test]
    fn command_failure_shows_stderr_not_stdout() {
        let e = resolve(
            "acct",
            &PasswordSource::Command(
                "echo topsecret; echo 'gpg: decryption failed' >&2; exit 3".into(),
            ),
        )
        .expect_err("fails")
        .to_string();
        assert!(e.contains("gpg: decryption failed"), "{e}");
        assert!(e.contains('3'), "{e}");
        assert!(e.contains("acct"), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn command_empty_output() {
        let e = resolve("a", &PasswordSource::Command("true".into())).expect_err("empty");
        assert!(matches!(e, SecretError::Empty { .. }), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn file_source_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pw");
        std::fs::write(&p, "filepw\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let s = resolve("a", &PasswordSource::File(p.clone())).expect("0600 ok");
        assert_eq!(s.expose(), "filepw");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(resolve("a", &PasswordSource::File(p.clone())).is_ok());
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = resolve("a", &PasswordSource::File(p.clone()))
                .expect_err("refused")
                .to_string();
            assert!(e.contains(&format!("chmod 600 {}", p.display())), "{e}");
            assert!(!e.contains("filepw"), "{e}");
        }
        let e = resolve("a", &PasswordSource::File(dir.path().join("missing")))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn no_secret_service_message() {
        let e = keyring_error(
            "work",
            classify(keyring::Error::PlatformFailure(
                "zbus error: org.freedesktop.DBus.Error.ServiceUnknown: The name \
                 org.freedesktop.secrets was not provided by any .service files"
                    .into(),
            )),
            "work",
        )
        .to_string();
        if cfg!(target_os = "linux") {
            assert!(e.contains("no Secret Service"), "{e}");
        }
        for alt in ["env:", "command:", "file:"] {
            assert!(e.contains(alt), "{e}");
        }
    }

    /// On this (headless) machine there is normally no Secret Service: the real call must
    /// return an error (not hang or panic), also from inside a tokio runtime.
    #[test]
    fn keyring_call_is_safe_inside_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let r = rt.block_on(async {
            resolve(
                "t",
                &PasswordSource::Keyring {
                    entry: "backsweep-unit-test-nonexistent".into(),
                },
            )
        });
        match r {
            Ok(_) => panic!("unexpected password in the keyring"),
            Err(e) => {
                let msg = e.to_string();
                let no_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
                    && !std::env::var_os("XDG_RUNTIME_DIR")
                        .map(|d| Path::new(&d).join("bus").exists())
                        .unwrap_or(false);
                if cfg!(target_os = "linux") && no_bus {
                    assert!(matches!(e, SecretError::NoSecretService { .. }), "{msg}");
                }
                assert!(
                    matches!(
                        e,
                        SecretError::NoSecretService { .. }
                            | SecretError::KeyringNoEntry { .. }
                            | SecretError::Keyring { .. }
                    ),
                    "{msg}"
                );
            }
        }
    }
}
