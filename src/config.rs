//! The YAML configuration file, validated into typed settings.
//!
//! Why a two-stage design: the file is hand-written by users, so every mistake must be
//! reported with the place it was made (`config.yaml:LINE:COLUMN`). Stage one deserializes
//! into "raw" structs that mirror the file exactly (`deny_unknown_fields`, so a typo such as
//! `quarantin:` is an error rather than silently ignored). Fields whose *value* is checked
//! later are wrapped in [`serde_saphyr::Spanned`], which keeps their source location, so
//! stage two — semantic validation (`tls: none` on a non-loopback host, duplicate account
//! names, ...) — can still point at the offending line. Stage two fills in defaults
//! (ports from the TLS mode, addresses from the username, folder names) and resolves
//! relative paths against the directory of the config file, producing [`Config`].
//!
//! Nothing here touches the network or reads secrets: a password source is only
//! *described* ([`PasswordSource`]); [`crate::secrets`] resolves it when needed.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::oauth::providers::{self, Provider};
use crate::oauth::{OAuthSettings, SaslMechanism, TokenStore};

/// Environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "BACKSWEEP_CONFIG";

/// Default timeout for every network wait of an IMAP session, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// Errors from locating, reading, parsing or validating the configuration.
///
/// Every variant names the file; parse and validation errors also name
/// `line:column` when the location is known (it is for all YAML errors and for
/// every validated key).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was tried.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key or a value of the wrong type.
    #[error("{}: {message}", location_prefix(path, *line, *column))]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// What is wrong (from the YAML parser), possibly followed by a source snippet.
        message: String,
    },
    /// The YAML is well-formed but a value is not acceptable.
    #[error("{}: {message}", location_prefix(path, *line, *column))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// No config file was given and none exists at the default places.
    #[error(
        "no config file: pass --config PATH, set ${CONFIG_ENV}, or create {}",
        default_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "backsweep/config.yaml in your config directory".into())
    )]
    NotFound {
        /// The platform default that was looked at, if the platform has one.
        default_path: Option<PathBuf>,
    },
}

fn location_prefix(path: &Path, line: u64, column: u64) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{}:{}", path.display(), line, column)
    }
}

/// TLS mode of an IMAP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS, port 993). The default.
    Implicit,
    /// Plain connection upgraded with the STARTTLS command (port 143).
    Starttls,
    /// No encryption at all; only allowed to a loopback address.
    None,
}

impl TlsMode {
    /// The conventional port for this mode: 993 for implicit TLS, 143 otherwise.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::None => 143,
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Implicit => "implicit",
            TlsMode::Starttls => "starttls",
            TlsMode::None => "none",
        })
    }
}

/// What to do with a bounce whose verdict is `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownAction {
    /// Leave it in the inbox (the default: when in doubt, do nothing).
    #[default]
    Keep,
    /// Move it to the quarantine folder like backscatter.
    Quarantine,
}

/// Whether a sweep narrows the inbox with a server-side `UID SEARCH` (the
/// "search net") before fetching triage headers. The net relies on
/// substring SEARCH, which Dovecot, Cyrus and most hosting providers do but
/// Gmail and Microsoft Exchange (word search) do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
///
/// Off by default: on Dovecot the net halves the bytes a first sweep
/// downloads but makes it about twice as slow (the server evaluates a few
/// hundred SEARCH keys per message), and most users want the sweep fast.
/// It suits a metered or slow link.
pub enum SearchNet {
    /// On unless the server looks like Gmail or Exchange (by its capabilities).
    Auto,
    /// Always use the net (the server is known to search substrings).
    On,
    /// Never: fetch triage headers of every new message.
    #[default]
    Off,
}

/// Where an account's password comes from. Only a description: see
/// [`crate::secrets::resolve`] to obtain the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The OS keyring (service `backsweep`), under this entry name (the account
    /// name unless the config gives a custom one).
    Keyring {
        /// Keyring user/entry name.
        entry: String,
    },
    /// An environment variable.
    Env(String),
    /// A shell command (run with `sh -c`) that prints the password on stdout.
    Command(String),
    /// A file that holds the password and is readable by its owner only.
    File(PathBuf),
    /// OAuth2 (`auth: xoauth2` or `oauthbearer`): the secret is an access token, obtained
    /// from the tokens `backsweep login` stored and refreshed when needed
    /// ([`crate::oauth::tokens::access_token`]).
    OAuth2(Box<OAuthSettings>),
}

/// A calendar date (proleptic Gregorian), used for `since:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2024.
    pub year: i32,
    /// Month 1..=12.
    pub month: u32,
    /// Day of month 1..=31 (valid for the month).
    pub day: u32,
}

impl Date {
    /// Parses `YYYY-MM-DD`, checking that the day exists.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.split('-');
        let (y, m, d) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if !(all_digits(y) && all_digits(m) && all_digits(d)) {
            return None;
        }
        let date = Date {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
            day: d.parse().ok()?,
        };
        if date.month == 0 || date.month > 12 || date.day == 0 {
            return None;
        }
        if date.day > days_in_month(date.year, date.month) {
            return None;
        }
        Some(date)
    }

    /// Seconds since the Unix epoch at 00:00:00 UTC of this date.
    pub fn unix_seconds(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
    }

    /// The date in IMAP `date` syntax (`1-Feb-2024`), for `SEARCH SINCE`.
    pub fn imap_format(&self) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let m = MONTHS
            .get((self.month as usize).wrapping_sub(1))
            .copied()
            .unwrap_or("Jan");
        format!("{}-{}-{}", self.day, m, self.year)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// The (year, month, day) of a count of days since 1970-01-01, the inverse
/// of [`Date::unix_seconds`]'s day arithmetic (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One validated IMAP account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Unique name, used on the command line, in the state store and as keyring entry.
    pub name: String,
    /// IMAP server host name or IP address.
    pub host: String,
    /// TCP port (defaults from [`TlsMode::default_port`]).
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra trust anchor (PEM), in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Login name.
    pub username: String,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// The account's own addresses, lower-cased (never empty).
    pub addresses: Vec<String>,
    /// The folder that is swept (default `INBOX`).
    pub inbox: String,
    /// Sent folders to index; `None` = auto-detect SPECIAL-USE `\Sent`.
    pub sent: Option<Vec<String>>,
    /// Destination of backscatter (default `Quarantine`).
    pub quarantine: String,
    /// What to do with an `unknown` verdict.
    pub unknown: UnknownAction,
    /// The first sweep ignores inbox mail older than this date.
    pub since: Option<Date>,
    /// Timeout for each network wait.
    pub timeout: Duration,
    /// Keys and limits for the evidence beyond the sent index (tags, BATV, window).
    pub evidence: EvidenceSettings,
    /// The provider preset the account uses (`provider:`), if any. On Gmail, folders are
    /// labels: moving a message from INBOX to quarantine removes its `Inbox` label.
    pub provider: Option<Provider>,
    /// Whether to narrow the inbox with a server-side search first.
    pub search_net: SearchNet,
    /// Whether to compress the connection (`COMPRESS=DEFLATE`, RFC 4978)
    /// when the server offers it: a sweep's header pass is mostly field
    /// names and addresses, which shrink tenfold (default on).
    pub compress: bool,
    /// How many connections a sweep may open (1 or 2, default 2): with 2,
    /// a second connection reads the triage headers of a large inbox from
    /// the newest batch down while the first reads from the oldest up,
    /// judges and moves (see
    /// [`crate::prefetch`]); it only reads.
    pub connections: usize,
}

/// An account's settings for evidence beyond the sent index (see
/// [`crate::evidence`]). All optional: without keys, tags and BATV are
/// simply not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceSettings {
    /// Tag keys as (key id, secret source), the current key (`tag_key`,
    /// used to mint) first, then `tag_old_keys` still accepted.
    pub tag_keys: Vec<(String, PasswordSource)>,
    /// A tag older than this (days, when the notice arrived) is expired.
    pub tag_max_age_days: u32,
    /// The BATV `prvs=` secret of the user's outgoing mail server.
    pub batv_key: Option<PasswordSource>,
    /// The recipient window in days (see [`crate::evidence::window`]).
    pub window_days: u32,
}

impl Default for EvidenceSettings {
    fn default() -> EvidenceSettings {
        EvidenceSettings {
            tag_keys: Vec::new(),
            tag_max_age_days: crate::evidence::tags::DEFAULT_MAX_AGE_DAYS,
            batv_key: None,
            window_days: crate::evidence::window::DEFAULT_WINDOW_DAYS,
        }
    }
}

/// The key id `tag_key` gets when `tag_key_id` is not set.
pub const DEFAULT_TAG_KEY_ID: &str = "k1";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this configuration was loaded from (or a label for in-memory text).
    pub path: PathBuf,
    /// Directory of the SQLite state (created on demand by [`crate::store`]).
    pub state_dir: PathBuf,
    /// Directory with rule files overriding the built-in rules.
    pub rules_dir: Option<PathBuf>,
    /// Accounts, in file order, with unique names.
    pub accounts: Vec<Account>,
}

// ---------------------------------------------------------------------------------------
// Raw file structure.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    rules_dir: Option<Spanned<String>>,
    accounts: Spanned<Vec<RawAccount>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Spanned<String>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    tls: Option<Spanned<TlsMode>>,
    ca_file: Option<Spanned<String>>,
    username: Spanned<String>,
    password: Option<Spanned<RawPassword>>,
    addresses: Option<Vec<Spanned<String>>>,
    inbox: Option<Spanned<String>>,
    sent: Option<Spanned<Vec<Spanned<String>>>>,
    quarantine: Option<Spanned<String>>,
    #[serde(default)]
    unknown: UnknownAction,
    since: Option<Spanned<String>>,
    timeout: Option<Spanned<u64>>,
    tag_key: Option<Spanned<RawPassword>>,
    tag_key_id: Option<Spanned<String>>,
    tag_old_keys: Option<Vec<RawOldTagKey>>,
    tag_max_age_days: Option<Spanned<u32>>,
    batv_key: Option<Spanned<RawPassword>>,
    window_days: Option<Spanned<u32>>,
    provider: Option<Spanned<Provider>>,
    auth: Option<Spanned<RawAuth>>,
    oauth: Option<Spanned<RawOAuth>>,
    #[serde(default)]
    search_net: SearchNet,
    compress: Option<bool>,
    connections: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOldTagKey {
    id: Spanned<String>,
    key: Spanned<RawPassword>,
}

/// `auth:` — how the account logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAuth {
    Password,
    Xoauth2,
    Oauthbearer,
}

/// `oauth:` — the OAuth2 client registration and, for a provider without a preset, its
/// endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    client_id: Spanned<String>,
    client_secret: Option<Spanned<String>>,
    tenant: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    device_authorization_url: Option<Spanned<String>>,
    authorization_url: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    token_store: RawTokenStore,
}

/// `oauth.token_store:` — where the tokens from `backsweep login` are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawTokenStore {
    #[default]
    Auto,
    Keyring,
    File,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum RawPassword {
    Keyring(KeyringSpec),
    Env(String),
    Command(String),
    File(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KeyringSpec {
    Flag(bool),
    Entry(String),
}

// ---------------------------------------------------------------------------------------

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text, path)
    }

    /// Parses and validates YAML text; `path` names the source in errors and is the base
    /// for relative paths in the file.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| parse_error(path, &e))?;
        Validator { path }.validate(raw)
    }

    /// Finds the config file: `cli_path` (from `--config`), else `$BACKSWEEP_CONFIG`, else
    /// `backsweep/config.yaml` in the platform config directory. The first two are returned
    /// as given (a missing file is reported by [`Config::load`]); the default must exist.
    pub fn locate(cli_path: Option<&Path>) -> Result<PathBuf, ConfigError> {
        let env = std::env::var_os(CONFIG_ENV);
        locate_from(
            cli_path,
            env.as_deref().map(Path::new),
            default_config_path(),
        )
    }

    /// Looks up an account by name.
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }
}

/// The platform default config file (`~/.config/backsweep/config.yaml` on Linux).
pub fn default_config_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|d| d.config_dir().join("backsweep").join("config.yaml"))
}

/// The platform default state directory (`~/.local/state/backsweep` on Linux, the local
/// data directory elsewhere).
pub fn default_state_dir() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|d| {
        d.state_dir()
            .unwrap_or_else(|| d.data_local_dir())
            .join("backsweep")
    })
}

fn locate_from(
    cli_path: Option<&Path>,
    env_path: Option<&Path>,
    default: Option<PathBuf>,
) -> Result<PathBuf, ConfigError> {
    if let Some(p) = cli_path {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = env_path.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p.to_path_buf());
    }
    match default {
        Some(p) if p.is_file() => Ok(p),
        other => Err(ConfigError::NotFound {
            default_path: other,
        }),
    }
}

fn parse_error(path: &Path, e: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let plain = e.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    // The plain rendering appends " at line L, column C"; the prefix already says it.
    let message = strip_location_suffix(&plain, line, column);
    ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

fn strip_location_suffix(msg: &str, line: u64, column: u64) -> String {
    let msg = msg.trim();
    for suffix in [
        format!(" at line {line}, column {column}"),
        format!(" at line {line} column {column}"),
    ] {
        if let Some(stripped) = msg.strip_suffix(&suffix) {
            return stripped.to_string();
        }
    }
    msg.to_string()
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn err_at<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            message: message.into(),
        }
    }

    /// Resolves `~/` and paths relative to the config file's directory.
    fn resolve_path(&self, p: &str) -> PathBuf {
        if let Some(rest) = p.strip_prefix("~/") {
            if let Some(home) = directories::BaseDirs::new() {
                return home.home_dir().join(rest);
            }
        }
        let pb = PathBuf::from(p);
        if pb.is_absolute() {
            return pb;
        }
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(pb),
            _ => pb,
        }
    }

    fn path_value(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        if v.value.trim().is_empty() {
            return Err(self.err_at(v, format!("`{key}` must not be empty")));
        }
        Ok(self.resolve_path(&v.value))
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let state_dir = match &raw.state_dir {
            Some(s) => self.path_value(s, "state_dir")?,
            None => default_state_dir().ok_or_else(|| ConfigError::Invalid {
                path: self.path.to_path_buf(),
                line: 0,
                column: 0,
                message: "no platform state directory (no home directory?): set `state_dir`".into(),
            })?,
        };
        let rules_dir = match &raw.rules_dir {
            Some(s) => Some(self.path_value(s, "rules_dir")?),
            None => None,
        };
        if raw.accounts.value.is_empty() {
            return Err(self.err_at(
                &raw.accounts,
                "`accounts` is empty: configure at least one account",
            ));
        }
        let mut accounts: Vec<Account> = Vec::with_capacity(raw.accounts.value.len());
        for ra in &raw.accounts.value {
            let acc = self.account(ra, &state_dir)?;
            if accounts.iter().any(|a| a.name == acc.name) {
                return Err(self.err_at(
                    &ra.name,
                    format!(
                        "duplicate account name `{}`: names must be unique",
                        acc.name
                    ),
                ));
            }
            accounts.push(acc);
        }
        Ok(Config {
            path: self.path.to_path_buf(),
            state_dir,
            rules_dir,
            accounts,
        })
    }

    fn nonempty(&self, v: &Spanned<String>, what: &str) -> Result<String, ConfigError> {
        let s = v.value.trim();
        if s.is_empty() {
            return Err(self.err_at(v, format!("{what} must not be empty")));
        }
        Ok(s.to_string())
    }

    /// A secret source (`password`, `tag_key`, ...): `{ keyring: true | ENTRY }`,
    /// `{ env: VAR }`, `{ command: CMD }` or `{ file: PATH }`. `default_entry`
    /// is the keyring entry for `keyring: true`.
    fn secret_source(
        &self,
        raw: &Spanned<RawPassword>,
        what: &str,
        default_entry: &str,
        ctx: &dyn Fn(String) -> String,
    ) -> Result<PasswordSource, ConfigError> {
        Ok(match &raw.value {
            RawPassword::Keyring(KeyringSpec::Flag(true)) => PasswordSource::Keyring {
                entry: default_entry.to_string(),
            },
            RawPassword::Keyring(KeyringSpec::Flag(false)) => {
                return Err(self.err_at(
                    raw,
                    ctx(format!(
                        "`keyring: false` is not a {what} source: use `keyring: true`, \
                         `env: VAR`, `command: \"...\"` or `file: PATH`"
                    )),
                ))
            }
            RawPassword::Keyring(KeyringSpec::Entry(e)) if e.trim().is_empty() => {
                return Err(self.err_at(raw, ctx("keyring entry name must not be empty".into())))
            }
            RawPassword::Keyring(KeyringSpec::Entry(e)) => PasswordSource::Keyring {
                entry: e.trim().to_string(),
            },
            RawPassword::Env(v) => {
                let v = v.trim();
                if v.is_empty() || v.contains('=') || v.contains('\0') {
                    return Err(self.err_at(
                        raw,
                        ctx(format!(
                            "`env: {v}` is not a valid environment variable name"
                        )),
                    ));
                }
                PasswordSource::Env(v.to_string())
            }
            RawPassword::Command(c) => {
                if c.trim().is_empty() {
                    return Err(
                        self.err_at(raw, ctx(format!("{what} `command` must not be empty")))
                    );
                }
                PasswordSource::Command(c.clone())
            }
            RawPassword::File(f) => {
                if f.trim().is_empty() {
                    return Err(self.err_at(raw, ctx(format!("{what} `file` must not be empty"))));
                }
                PasswordSource::File(self.resolve_path(f.trim()))
            }
        })
    }

    fn account(&self, ra: &RawAccount, state_dir: &Path) -> Result<Account, ConfigError> {
        let name = self.nonempty(&ra.name, "account `name`")?;
        if name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '/')
        {
            return Err(self.err_at(
                &ra.name,
                format!("account name `{name}` must not contain spaces, control characters or `/`"),
            ));
        }
        let ctx = |msg: String| format!("account `{name}`: {msg}");

        let provider = ra.provider.as_ref().map(|p| p.value);
        let preset = provider.map(|p| providers::preset(p, providers::MICROSOFT_DEFAULT_TENANT));
        let host = match (&ra.host, &preset) {
            (Some(h), _) => self.nonempty(h, &ctx("`host`".into()))?,
            (None, Some(p)) => p.host.to_string(),
            (None, None) => {
                return Err(self.err_at(
                    &ra.name,
                    ctx("`host` is missing: give the IMAP server's host name, or a \
                         `provider:` preset (gmail, microsoft365)"
                        .into()),
                ))
            }
        };
        let tls = ra
            .tls
            .as_ref()
            .map(|t| t.value)
            .unwrap_or(TlsMode::Implicit);
        if tls == TlsMode::None && !is_loopback_host(&host) {
            let at = ra
                .tls
                .as_ref()
                .map(|t| (t.referenced.line(), t.referenced.column()));
            let (line, column) = at.unwrap_or((0, 0));
            return Err(ConfigError::Invalid {
                path: self.path.to_path_buf(),
                line,
                column,
                message: ctx(format!(
                    "`tls: none` is only allowed to a loopback address (127.0.0.1, ::1, localhost), \
                     not to `{host}`: use `tls: implicit` or `tls: starttls`"
                )),
            });
        }
        let port = match &ra.port {
            Some(p) if p.value == 0 => {
                return Err(self.err_at(p, ctx("`port` must not be 0".into())))
            }
            Some(p) => p.value,
            None => tls.default_port(),
        };
        let ca_file = match &ra.ca_file {
            Some(c) => Some(self.path_value(c, "ca_file")?),
            None => None,
        };
        let username = self.nonempty(&ra.username, &ctx("`username`".into()))?;

        let auth = self.auth_kind(ra, &ctx)?;
        let raw_password = match (auth, &ra.password) {
            (RawAuth::Password, None) => {
                return Err(self.err_at(
                    &ra.name,
                    ctx("`password` is missing: give a password source (`password: { keyring: true }`, \
                         `env: VAR`, `command: \"...\"` or `file: PATH`), or sign in with OAuth2 \
                         (`auth: xoauth2` and an `oauth:` section)"
                        .into()),
                ))
            }
            (RawAuth::Password, Some(p)) => Some(p),
            (_, Some(p)) => {
                return Err(self.err_at(
                    p,
                    ctx("an OAuth2 account has no `password`: its tokens come from \
                         `backsweep login`; remove `password:`"
                        .into()),
                ))
            }
            (_, None) => None,
        };
        let password = match &raw_password {
            None => None,
            Some(rp) => Some(self.secret_source(rp, "password", &name, &ctx)?),
        };

        let addresses = match &ra.addresses {
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for a in list {
                    let v = a.value.trim().to_lowercase();
                    if !looks_like_address(&v) {
                        return Err(self.err_at(
                            a,
                            ctx(format!(
                                "`{}` is not an email address (local@domain)",
                                a.value
                            )),
                        ));
                    }
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                if out.is_empty() {
                    return Err(self.err_at(
                        &ra.username,
                        ctx("`addresses` is empty: list the account's own addresses".into()),
                    ));
                }
                out
            }
            None => {
                let u = username.to_lowercase();
                if !looks_like_address(&u) {
                    return Err(self.err_at(
                        &ra.username,
                        ctx(format!(
                            "username `{username}` is not an email address, so the account's \
                             addresses cannot be guessed: add `addresses: [you@example.com]`"
                        )),
                    ));
                }
                vec![u]
            }
        };

        let inbox = match &ra.inbox {
            Some(v) => self.nonempty(v, &ctx("`inbox`".into()))?,
            None => "INBOX".to_string(),
        };
        let quarantine = match &ra.quarantine {
            Some(v) => self.nonempty(v, &ctx("`quarantine`".into()))?,
            None => preset
                .as_ref()
                .map_or("Quarantine", |p| p.quarantine)
                .to_string(),
        };
        if provider == Some(Provider::Gmail) && is_gmail_system_folder(&quarantine) {
            let at = ra.quarantine.as_ref().unwrap_or(&ra.name);
            return Err(self.err_at(
                at,
                ctx(format!(
                    "`quarantine: {quarantine}` is one of Gmail's system folders; Gmail empties \
                     Spam and Trash after 30 days. Use a plain label such as `Quarantine`"
                )),
            ));
        }
        if same_mailbox(&quarantine, &inbox) {
            let at = ra.quarantine.as_ref().unwrap_or(&ra.name);
            return Err(self.err_at(
                at,
                ctx(format!("`quarantine` must differ from the inbox `{inbox}`")),
            ));
        }
        let sent = match &ra.sent {
            None => preset
                .as_ref()
                .and_then(|p| p.sent)
                .map(|folders| folders.iter().map(|f| f.to_string()).collect()),
            Some(list) => {
                if list.value.is_empty() {
                    return Err(self.err_at(
                        list,
                        ctx(
                            "`sent` is empty: list folders or remove the key to auto-detect \\Sent"
                                .into(),
                        ),
                    ));
                }
                let mut out = Vec::with_capacity(list.value.len());
                for s in &list.value {
                    let v = self.nonempty(s, &ctx("a `sent` folder".into()))?;
                    if same_mailbox(&v, &inbox) || same_mailbox(&v, &quarantine) {
                        return Err(self.err_at(
                            s,
                            ctx(format!(
                                "sent folder `{v}` must not be the inbox or the quarantine folder"
                            )),
                        ));
                    }
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                Some(out)
            }
        };
        let since = match &ra.since {
            None => None,
            Some(s) => Some(Date::parse(s.value.trim()).ok_or_else(|| {
                self.err_at(
                    s,
                    ctx(format!(
                        "`since: {}` is not a valid date (YYYY-MM-DD)",
                        s.value
                    )),
                )
            })?),
        };
        let timeout = match &ra.timeout {
            Some(t) if t.value == 0 || t.value > 3600 => {
                return Err(self.err_at(
                    t,
                    ctx("`timeout` must be between 1 and 3600 seconds".into()),
                ))
            }
            Some(t) => Duration::from_secs(t.value),
            None => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        };
        let connections = match &ra.connections {
            Some(c) if !(1..=2).contains(&c.value) => {
                return Err(self.err_at(c, ctx("`connections` must be 1 or 2".into())))
            }
            Some(c) => c.value,
            None => 2,
        };

        let evidence = self.evidence_settings(ra, &name, &ctx)?;
        let password = match password {
            Some(p) => p,
            None => PasswordSource::OAuth2(Box::new(
                self.oauth_settings(ra, auth, provider, &name, state_dir, timeout)?,
            )),
        };

        Ok(Account {
            name,
            host,
            port,
            tls,
            ca_file,
            username,
            password,
            addresses,
            inbox,
            sent,
            quarantine,
            unknown: ra.unknown,
            since,
            timeout,
            evidence,
            provider,
            search_net: ra.search_net,
            compress: ra.compress.unwrap_or(true),
            connections,
        })
    }

    /// The evidence keys of an account: `tag_key` (+ `tag_key_id`,
    /// `tag_old_keys`, `tag_max_age_days`), `batv_key`, `window_days`.
    fn evidence_settings(
        &self,
        ra: &RawAccount,
        name: &str,
        ctx: &dyn Fn(String) -> String,
    ) -> Result<EvidenceSettings, ConfigError> {
        let mut settings = EvidenceSettings::default();
        let key_id = |v: &Spanned<String>| {
            let id = v.value.trim().to_string();
            if crate::evidence::tags::is_valid_key_id(&id) {
                Ok(id)
            } else {
                Err(self.err_at(
                    v,
                    ctx(format!(
                        "tag key id `{id}` must be 1 to 16 lower-case letters or digits"
                    )),
                ))
            }
        };
        if let Some(raw) = &ra.tag_key {
            let id = match &ra.tag_key_id {
                Some(v) => key_id(v)?,
                None => DEFAULT_TAG_KEY_ID.to_string(),
            };
            let source = self.secret_source(raw, "tag_key", &format!("{name}.tag-key"), ctx)?;
            settings.tag_keys.push((id, source));
        } else if let Some(v) = ra.tag_key_id.as_ref().or(ra
            .tag_old_keys
            .as_ref()
            .and_then(|o| o.first())
            .map(|k| &k.id))
        {
            return Err(self.err_at(
                v,
                ctx("tag key settings without `tag_key`: add `tag_key: { env: VAR }` (or keyring, command, file)".into()),
            ));
        }
        for old in ra.tag_old_keys.iter().flatten() {
            let id = key_id(&old.id)?;
            if settings.tag_keys.iter().any(|(k, _)| *k == id) {
                return Err(self.err_at(
                    &old.id,
                    ctx(format!(
                        "tag key id `{id}` is used twice: every key needs its own id"
                    )),
                ));
            }
            let source = self.secret_source(
                &old.key,
                "tag_old_keys key",
                &format!("{name}.tag-key.{id}"),
                ctx,
            )?;
            settings.tag_keys.push((id, source));
        }
        if let Some(v) = &ra.tag_max_age_days {
            if v.value == 0 || v.value > 3660 {
                return Err(self.err_at(
                    v,
                    ctx("`tag_max_age_days` must be between 1 and 3660".into()),
                ));
            }
            settings.tag_max_age_days = v.value;
        }
        if let Some(raw) = &ra.batv_key {
            settings.batv_key =
                Some(self.secret_source(raw, "batv_key", &format!("{name}.batv-key"), ctx)?);
        }
        if let Some(v) = &ra.window_days {
            if v.value == 0 || v.value > 90 {
                return Err(self.err_at(v, ctx("`window_days` must be between 1 and 90".into())));
            }
            settings.window_days = v.value;
        }
        Ok(settings)
    }

    /// `auth:`, defaulting to `password` when a password is given and to `xoauth2` for an
    /// account with a `provider:` preset or an `oauth:` section but no password.
    fn auth_kind(
        &self,
        ra: &RawAccount,
        ctx: &dyn Fn(String) -> String,
    ) -> Result<RawAuth, ConfigError> {
        let auth = match &ra.auth {
            Some(a) => a.value,
            None if ra.password.is_none() && (ra.provider.is_some() || ra.oauth.is_some()) => {
                RawAuth::Xoauth2
            }
            None => RawAuth::Password,
        };
        if let (RawAuth::Password, Some(o)) = (auth, &ra.oauth) {
            return Err(self.err_at(
                o,
                ctx("an `oauth:` section needs `auth: xoauth2` (or `oauthbearer`)".into()),
            ));
        }
        Ok(auth)
    }

    /// The OAuth2 settings of an account: the preset's values, overridden by `oauth:`.
    fn oauth_settings(
        &self,
        ra: &RawAccount,
        auth: RawAuth,
        provider: Option<Provider>,
        name: &str,
        state_dir: &Path,
        timeout: Duration,
    ) -> Result<OAuthSettings, ConfigError> {
        let ctx = |msg: String| format!("account `{name}`: {msg}");
        let Some(ro) = &ra.oauth else {
            let msg = ctx(
                "OAuth2 needs an `oauth:` section with at least `client_id:`, the id \
                           of the app you registered with the provider (see the README)"
                    .into(),
            );
            return Err(match &ra.auth {
                Some(a) => self.err_at(a, msg),
                None => self.err_at(&ra.name, msg),
            });
        };
        let o = &ro.value;
        let client_id = self.nonempty(&o.client_id, &ctx("`oauth.client_id`".into()))?;
        let tenant = match (&o.tenant, provider) {
            (None, _) => providers::MICROSOFT_DEFAULT_TENANT.to_string(),
            (Some(t), Some(Provider::Microsoft365)) => {
                let v = t.value.trim();
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                {
                    return Err(self.err_at(
                        t,
                        ctx(format!(
                            "`oauth.tenant: {v}` is not a tenant id or domain \
                             (e.g. contoso.onmicrosoft.com, a GUID, or `organizations`)"
                        )),
                    ));
                }
                v.to_string()
            }
            (Some(t), _) => {
                return Err(self.err_at(
                    t,
                    ctx("`oauth.tenant` only applies to `provider: microsoft365`".into()),
                ))
            }
        };
        let preset = provider.map(|p| providers::preset(p, &tenant));
        let endpoint = |v: &Option<Spanned<String>>,
                        default: Option<String>,
                        key: &str|
         -> Result<Option<String>, ConfigError> {
            match v {
                None => Ok(default),
                Some(u) => {
                    let url = u.value.trim();
                    providers::check_endpoint_url(url)
                        .map_err(|m| self.err_at(u, ctx(format!("`oauth.{key}`: {m}"))))?;
                    Ok(Some(url.to_string()))
                }
            }
        };
        let token_url = endpoint(
            &o.token_url,
            preset.as_ref().map(|p| p.token_url.clone()),
            "token_url",
        )?
        .ok_or_else(|| {
            self.err_at(
                ro,
                ctx("`oauth.token_url` is required without a `provider:` preset".into()),
            )
        })?;
        let device_authorization_url = endpoint(
            &o.device_authorization_url,
            preset
                .as_ref()
                .and_then(|p| p.device_authorization_url.clone()),
            "device_authorization_url",
        )?;
        let authorization_url = endpoint(
            &o.authorization_url,
            preset.as_ref().map(|p| p.authorization_url.clone()),
            "authorization_url",
        )?;
        if device_authorization_url.is_none() && authorization_url.is_none() {
            return Err(self.err_at(
                ro,
                ctx(
                    "`oauth:` needs `device_authorization_url` (device-code sign-in) or \
                     `authorization_url` (browser sign-in), or both"
                        .into(),
                ),
            ));
        }
        let scopes: Vec<String> = match &o.scopes {
            Some(list) => {
                let mut out = Vec::new();
                for sc in &list.value {
                    let v = sc.value.trim();
                    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        return Err(self.err_at(
                            sc,
                            ctx(format!(
                                "`{}` is not a scope (one scope per list item)",
                                sc.value
                            )),
                        ));
                    }
                    out.push(v.to_string());
                }
                if out.is_empty() {
                    return Err(self.err_at(list, ctx("`oauth.scopes` is empty".into())));
                }
                out
            }
            None => match &preset {
                Some(p) => p.scopes.iter().map(|s| s.to_string()).collect(),
                None => {
                    return Err(self.err_at(
                        ro,
                        ctx("`oauth.scopes` is required without a `provider:` preset".into()),
                    ))
                }
            },
        };
        let client_secret = match &o.client_secret {
            Some(c) if c.value.trim().is_empty() => {
                return Err(self.err_at(c, ctx("`oauth.client_secret` is empty".into())))
            }
            Some(c) => Some(crate::secrets::Secret::new(c.value.trim())),
            None => None,
        };
        let entry = format!("oauth2:{name}");
        let file = state_dir.join("oauth").join(format!("{name}.json"));
        let token_store = match o.token_store {
            RawTokenStore::Auto => TokenStore::Auto { entry, file },
            RawTokenStore::Keyring => TokenStore::Keyring { entry },
            RawTokenStore::File => TokenStore::File(file),
        };
        Ok(OAuthSettings {
            provider,
            mechanism: if auth == RawAuth::Oauthbearer {
                SaslMechanism::Oauthbearer
            } else {
                SaslMechanism::Xoauth2
            },
            client_id,
            client_secret,
            token_url,
            device_authorization_url,
            authorization_url,
            scopes,
            authorize_params: preset
                .as_ref()
                .map(|p| {
                    p.authorize_params
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            token_store,
            timeout,
        })
    }
}

/// Gmail's own folders (`[Gmail]/Spam`, `[Google Mail]/Trash`, ...), which are not labels a
/// quarantine may use.
fn is_gmail_system_folder(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("[gmail]/") || lower.starts_with("[google mail]/")
}

/// INBOX is case-insensitive in IMAP; other names are compared exactly.
fn same_mailbox(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case("INBOX") || b.eq_ignore_ascii_case("INBOX") {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Whether `host` is `localhost` or a loopback IP (127.0.0.0/8, ::1), with or
/// without IPv6 brackets.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim();
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    h.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// A simple `local@domain` shape check (no spaces, one `@`, both sides non-empty).
pub fn looks_like_address(s: &str) -> bool {
    let mut parts = s.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => {
            !local.is_empty()
                && !domain.is_empty()
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn civil_days_round_trip() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 11, 22), (1969, 12, 31)] {
            let days = days_from_civil(y, m, d);
            assert_eq!(civil_from_days(days), (i64::from(y), m, d));
        }
    }

    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("/etc/bs/config.yaml"))
    }

    fn err(text: &str) -> String {
        match load(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const MINIMAL: &str = "\
state_dir: /tmp/bs-state
accounts:
  - name: work
    host: imap.example.com
    username: Alice@Example.com
    password: { keyring: true }
";

    #[test]
    fn minimal_defaults() {
        let c = load(MINIMAL).expect("valid");
        assert_eq!(c.state_dir, PathBuf::from("/tmp/bs-state"));
        let a = &c.accounts[0];
        assert_eq!(a.name, "work");
        assert_eq!(a.port, 993);
        assert_eq!(a.tls, TlsMode::Implicit);
        assert_eq!(a.addresses, vec!["alice@example.com".to_string()]);
        assert_eq!(a.inbox, "INBOX");
        assert_eq!(a.sent, None);
        assert_eq!(a.quarantine, "Quarantine");
        assert_eq!(a.unknown, UnknownAction::Keep);
        assert_eq!(
            a.password,
            PasswordSource::Keyring {
                entry: "work".into()
            }
        );
        assert_eq!(a.timeout, Duration::from_secs(30));
        assert_eq!(a.since, None);
        assert_eq!(a.search_net, SearchNet::Off);
        assert!(c.account("work").is_some());
    }

    #[test]
    fn search_net_switch() {
        for (text, want) in [
            ("auto", SearchNet::Auto),
            ("on", SearchNet::On),
            ("off", SearchNet::Off),
        ] {
            let c = load(&format!("{MINIMAL}    search_net: {text}\n")).expect("valid");
            assert_eq!(c.accounts[0].search_net, want);
        }
        let e = err(&format!("{MINIMAL}    search_net: maybe\n"));
        assert!(e.contains("config.yaml:7"), "{e}");
    }

    #[test]
    fn compression_is_on_unless_turned_off() {
        assert!(load(MINIMAL).expect("valid").accounts[0].compress);
        let c = load(&format!("{MINIMAL}    compress: false\n")).expect("valid");
        assert!(!c.accounts[0].compress);
        let e = err(&format!("{MINIMAL}    compress: sometimes\n"));
        assert!(
            e.contains("config.yaml:7:15") && e.contains("boolean"),
            "{e}"
        );
    }

    #[test]
    fn two_connections_unless_told_one() {
        assert_eq!(load(MINIMAL).expect("valid").accounts[0].connections, 2);
        let c = load(&format!("{MINIMAL}    connections: 1\n")).expect("valid");
        assert_eq!(c.accounts[0].connections, 1);
        for bad in ["0", "3"] {
            let e = err(&format!("{MINIMAL}    connections: {bad}\n"));
            assert!(
                e.contains("config.yaml:7:18") && e.contains("must be 1 or 2"),
                "{e}"
            );
        }
        let e = err(&format!("{MINIMAL}    connections: many\n"));
        assert!(e.contains("config.yaml:7:18"), "{e}");
    }

    #[test]
    fn full_account() {
        let c = load(
            "\
state_dir: state
rules_dir: ~/rules
accounts:
  - name: a
    host: localhost
    tls: none
    ca_file: ca.pem
    username: alice
    password: { file: pw }
    addresses: [Alice@Example.com, alice@example.org, ALICE@example.com]
    inbox: inbox
    sent: [Sent, Sent/2024]
    quarantine: Junk/Backscatter
    unknown: quarantine
    since: 2024-02-29
    timeout: 5
  - name: b
    host: imap.example.com
    tls: starttls
    username: b@example.com
    password: { keyring: custom-entry }
  - name: c
    host: 127.0.0.5
    port: 10143
    tls: none
    username: c@example.com
    password: { env: C_PASS }
  - name: d
    host: '::1'
    tls: none
    username: d@example.com
    password: { command: \"pass show mail\" }
",
        )
        .expect("valid");
        assert_eq!(c.state_dir, PathBuf::from("/etc/bs/state"));
        assert!(c.rules_dir.is_some());
        let a = &c.accounts[0];
        assert_eq!(a.port, 143);
        assert_eq!(a.ca_file, Some(PathBuf::from("/etc/bs/ca.pem")));
        assert_eq!(
            a.password,
            PasswordSource::File(PathBuf::from("/etc/bs/pw"))
        );
        assert_eq!(a.addresses, vec!["alice@example.com", "alice@example.org"]);
        assert_eq!(
            a.sent,
            Some(vec!["Sent".to_string(), "Sent/2024".to_string()])
        );
        assert_eq!(a.unknown, UnknownAction::Quarantine);
        assert_eq!(
            a.since,
            Some(Date {
                year: 2024,
                month: 2,
                day: 29
            })
        );
        assert_eq!(a.timeout, Duration::from_secs(5));
        let b = &c.accounts[1];
        assert_eq!(b.port, 143);
        assert_eq!(
            b.password,
            PasswordSource::Keyring {
                entry: "custom-entry".into()
            }
        );
        assert_eq!(c.accounts[2].port, 10143);
        assert_eq!(c.accounts[2].password, PasswordSource::Env("C_PASS".into()));
        assert_eq!(
            c.accounts[3].password,
            PasswordSource::Command("pass show mail".into())
        );
    }

    #[test]
    fn unknown_top_level_key() {
        let e = err("state_dir: /x\nstate_dri: /y\naccounts: []\n");
        assert!(e.contains("config.yaml:2:1"), "{e}");
        assert!(e.contains("state_dri"), "{e}");
    }

    #[test]
    fn unknown_account_key() {
        let e = err(&format!("{MINIMAL}    quarantin: Junk\n"));
        assert!(e.contains("config.yaml:7:5"), "{e}");
        assert!(e.contains("quarantin"), "{e}");
    }

    #[test]
    fn bad_value_type() {
        let e = err(&MINIMAL.replace(
            "host: imap.example.com",
            "host: imap.example.com\n    port: seventy",
        ));
        assert!(e.contains("config.yaml:5:11"), "{e}");
        let e = err(&MINIMAL.replace(
            "host: imap.example.com",
            "host: imap.example.com\n    port: 70000",
        ));
        assert!(e.contains("config.yaml:5:11"), "{e}");
    }

    #[test]
    fn bad_tls_mode() {
        let e = err(&MINIMAL.replace(
            "host: imap.example.com",
            "host: imap.example.com\n    tls: ssl",
        ));
        assert!(e.contains("config.yaml:5:10"), "{e}");
    }

    #[test]
    fn malformed_yaml() {
        let e = err("accounts: [\n  - name: x\n");
        assert!(e.contains("config.yaml:"), "{e}");
        assert!(!e.contains("config.yaml:0:0"), "{e}");
    }

    #[test]
    fn missing_required_key() {
        let e = err("accounts:\n  - name: work\n    host: h\n    password: { env: X }\n");
        assert!(e.contains("username"), "{e}");
        assert!(e.contains("config.yaml:4:5"), "{e}");
    }

    #[test]
    fn tls_none_not_loopback() {
        let e = err(&MINIMAL.replace(
            "host: imap.example.com",
            "host: imap.example.com\n    tls: none",
        ));
        assert!(e.contains("config.yaml:5:10"), "{e}");
        assert!(e.contains("loopback"), "{e}");
        assert!(e.contains("account `work`"), "{e}");
    }

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "128.0.0.1",
            "localhost.example.com",
            "example.com",
            "::2",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn duplicate_account_names() {
        let e = err(&format!(
            "{MINIMAL}  - name: work\n    host: h2\n    username: b@example.com\n    password: {{ env: B }}\n"
        ));
        assert!(e.contains("config.yaml:7:11"), "{e}");
        assert!(e.contains("duplicate"), "{e}");
    }

    #[test]
    fn empty_accounts() {
        let e = err("state_dir: /x\naccounts: []\n");
        assert!(e.contains("config.yaml:2:11"), "{e}");
        assert!(e.contains("at least one account"), "{e}");
    }

    #[test]
    fn bad_password_sources() {
        let e = err(&MINIMAL.replace("{ keyring: true }", "{ keyring: false }"));
        assert!(e.contains("config.yaml:6:15"), "{e}");
        let e = err(&MINIMAL.replace("{ keyring: true }", "{ vault: x }"));
        assert!(e.contains("config.yaml:6:"), "{e}");
        assert!(e.contains("vault"), "{e}");
        let e = err(&MINIMAL.replace("{ keyring: true }", "{ command: \"\" }"));
        assert!(e.contains("config.yaml:6:15"), "{e}");
        let e = err(&MINIMAL.replace("{ keyring: true }", "{ env: \"A=B\" }"));
        assert!(e.contains("config.yaml:6:15"), "{e}");
    }

    #[test]
    fn username_not_an_address() {
        let e = err(&MINIMAL.replace("Alice@Example.com", "alice"));
        assert!(e.contains("config.yaml:5:15"), "{e}");
        assert!(e.contains("addresses"), "{e}");
        let ok = load(&MINIMAL.replace(
            "username: Alice@Example.com",
            "username: alice\n    addresses: [a@b.example]",
        ))
        .expect("valid");
        assert_eq!(ok.accounts[0].addresses, vec!["a@b.example"]);
    }

    #[test]
    fn bad_address() {
        let e = err(&format!(
            "{MINIMAL}    addresses: [ok@example.com, not-an-address]\n"
        ));
        assert!(e.contains("config.yaml:7:33"), "{e}");
    }

    #[test]
    fn bad_since() {
        for bad in ["2023-02-29", "2024-13-01", "24-01-01", "yesterday"] {
            let e = err(&format!("{MINIMAL}    since: {bad}\n"));
            assert!(e.contains("config.yaml:7:12"), "{bad}: {e}");
            assert!(e.contains("YYYY-MM-DD"), "{e}");
        }
    }

    #[test]
    fn bad_folders() {
        let e = err(&format!("{MINIMAL}    quarantine: inbox\n"));
        assert!(e.contains("config.yaml:7:17"), "{e}");
        let e = err(&format!("{MINIMAL}    sent: []\n"));
        assert!(e.contains("config.yaml:7:11"), "{e}");
        let e = err(&format!("{MINIMAL}    sent: [Sent, Quarantine]\n"));
        assert!(e.contains("config.yaml:7:18"), "{e}");
        let e = err(&format!("{MINIMAL}    inbox: ''\n"));
        assert!(e.contains("config.yaml:7:12"), "{e}");
    }

    #[test]
    fn bad_port_and_timeout() {
        let e = err(&format!("{MINIMAL}    port: 0\n"));
        assert!(e.contains("config.yaml:7:11"), "{e}");
        let e = err(&format!("{MINIMAL}    timeout: 0\n"));
        assert!(e.contains("config.yaml:7:14"), "{e}");
    }

    #[test]
    fn bad_unknown_action() {
        let e = err(&format!("{MINIMAL}    unknown: delete\n"));
        assert!(e.contains("config.yaml:7:14"), "{e}");
    }

    #[test]
    fn load_from_file_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.yaml");
        std::fs::write(&p, MINIMAL.replace("/tmp/bs-state", "st")).expect("write");
        let c = Config::load(&p).expect("load");
        assert_eq!(c.state_dir, dir.path().join("st"));
        std::fs::write(&p, "accounts: 3\n").expect("write");
        let e = Config::load(&p).expect_err("invalid").to_string();
        assert!(e.contains("config.yaml:1:11"), "{e}");
        let missing = dir.path().join("nope.yaml");
        let e = Config::load(&missing).expect_err("missing").to_string();
        assert!(e.contains("nope.yaml"), "{e}");
    }

    #[test]
    fn locate_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let def = dir.path().join("config.yaml");
        let cli = Path::new("/cli.yaml");
        let env = Path::new("/env.yaml");
        assert_eq!(
            locate_from(Some(cli), Some(env), None).ok(),
            Some(cli.to_path_buf())
        );
        assert_eq!(
            locate_from(None, Some(env), None).ok(),
            Some(env.to_path_buf())
        );
        assert!(matches!(
            locate_from(None, Some(Path::new("")), Some(def.clone())),
            Err(ConfigError::NotFound { .. })
        ));
        std::fs::write(&def, "x").expect("write");
        assert_eq!(locate_from(None, None, Some(def.clone())).ok(), Some(def));
        let e = locate_from(None, None, None).expect_err("none").to_string();
        assert!(e.contains("BACKSWEEP_CONFIG"), "{e}");
    }

    #[test]
    fn sample_config_is_valid() {
        let c = Config::from_yaml(
            include_str!("../contrib/config.sample.yaml"),
            Path::new("/home/alice/.config/backsweep/config.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.accounts.len(), 3);
        assert_eq!(c.accounts[0].port, 993);
        assert_eq!(c.accounts[1].port, 143);
        assert_eq!(c.accounts[1].unknown, UnknownAction::Quarantine);
        assert_eq!(c.accounts[2].provider, Some(Provider::Microsoft365));
        assert!(oauth_of(&c.accounts[2])
            .token_url
            .contains("/contoso.onmicrosoft.com/"));
    }

    fn oauth_of(a: &Account) -> &OAuthSettings {
        match &a.password {
            PasswordSource::OAuth2(o) => o,
            other => panic!("not OAuth2: {other:?}"),
        }
    }

    #[test]
    fn oauth_provider_presets() {
        let c = load(
            "\
state_dir: /st
accounts:
  - name: g
    provider: gmail
    username: a@gmail.com
    oauth: { client_id: 123.apps.googleusercontent.com, client_secret: GOCSPX-x }
  - name: m
    provider: microsoft365
    username: b@contoso.com
    auth: oauthbearer
    oauth:
      client_id: 0000-1111
      tenant: contoso.onmicrosoft.com
      token_store: file
  - name: app-password
    provider: gmail
    username: c@gmail.com
    password: { env: GMAIL_APP_PASSWORD }
",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let g = &c.accounts[0];
        assert_eq!(
            (g.host.as_str(), g.port, g.tls),
            ("imap.gmail.com", 993, TlsMode::Implicit)
        );
        assert_eq!(g.provider, Some(Provider::Gmail));
        assert_eq!(g.sent, None, "Gmail's Sent name is localised: auto-detect");
        let o = oauth_of(g);
        assert_eq!(o.mechanism, SaslMechanism::Xoauth2);
        assert_eq!(o.scopes, vec!["https://mail.google.com/"]);
        assert_eq!(o.device_authorization_url, None);
        assert!(o.client_secret.is_some());
        assert!(o
            .authorize_params
            .contains(&("access_type".into(), "offline".into())));
        assert_eq!(
            o.token_store,
            TokenStore::Auto {
                entry: "oauth2:g".into(),
                file: PathBuf::from("/st/oauth/g.json")
            }
        );
        let m = &c.accounts[1];
        assert_eq!(m.host, "outlook.office365.com");
        assert_eq!(m.sent, Some(vec!["Sent Items".to_string()]));
        let o = oauth_of(m);
        assert_eq!(o.mechanism, SaslMechanism::Oauthbearer);
        assert!(o
            .token_url
            .contains("/contoso.onmicrosoft.com/oauth2/v2.0/token"));
        assert!(o
            .device_authorization_url
            .as_deref()
            .is_some_and(|u| u.ends_with("/devicecode")));
        assert_eq!(
            o.token_store,
            TokenStore::File(PathBuf::from("/st/oauth/m.json"))
        );
        assert!(
            !format!("{c:?}").contains("GOCSPX"),
            "client secret printed"
        );
        assert_eq!(
            c.accounts[2].password,
            PasswordSource::Env("GMAIL_APP_PASSWORD".into())
        );
    }

    #[test]
    fn oauth_generic_provider() {
        let c = load(
            "\
accounts:
  - name: x
    host: imap.example.com
    username: a@example.com
    auth: xoauth2
    oauth:
      client_id: cid
      token_url: https://id.example.com/token
      authorization_url: https://id.example.com/authorize
      scopes: [imap, offline_access]
      token_store: keyring
",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let o = oauth_of(&c.accounts[0]);
        assert_eq!(o.provider, None);
        assert_eq!(o.scopes, vec!["imap", "offline_access"]);
        assert_eq!(
            o.token_store,
            TokenStore::Keyring {
                entry: "oauth2:x".into()
            }
        );
        assert!(o.authorize_params.is_empty());
    }

    #[test]
    fn oauth_config_errors_name_the_place() {
        let base =
            "accounts:\n  - name: x\n    host: imap.example.com\n    username: a@example.com\n";
        let cases: &[(&str, &str, &str)] = &[
            // (account lines, expected location, expected text)
            ("    auth: xoauth2\n", "config.yaml:5:11", "`oauth:` section"),
            (
                "    auth: xoauth2\n    oauth: { client_id: c, authorization_url: https://a/x, scopes: [s] }\n",
                "config.yaml:6:12",
                "token_url",
            ),
            (
                "    auth: xoauth2\n    oauth: { client_id: c, token_url: https://a/t, authorization_url: https://a/x }\n",
                "config.yaml:6:12",
                "scopes",
            ),
            (
                "    auth: xoauth2\n    oauth:\n      client_id: c\n      token_url: http://id.example.com/t\n      authorization_url: https://a/x\n      scopes: [s]\n",
                "config.yaml:8:18",
                "not loopback",
            ),
            (
                "    auth: xoauth2\n    oauth: { client_id: c, token_url: https://a/t, scopes: [s] }\n",
                "config.yaml:6:12",
                "device_authorization_url",
            ),
            (
                "    auth: xoauth2\n    password: { env: P }\n    oauth: { client_id: c }\n",
                "config.yaml:6:15",
                "no `password`",
            ),
            (
                "    password: { env: P }\n    oauth: { client_id: c }\n",
                "config.yaml:6:12",
                "auth: xoauth2",
            ),
            (
                "    provider: gmail\n    oauth: { client_id: c, tenant: t }\n",
                "config.yaml:6:36",
                "only applies",
            ),
            (
                "    provider: outlook\n    oauth: { client_id: c }\n",
                "config.yaml:5:15",
                "outlook",
            ),
            (
                "    provider: gmail\n    oauth: { client_id: c, scope: [x] }\n",
                "config.yaml:6:",
                "scope",
            ),
        ];
        for (lines, at, text) in cases {
            let e = err(&format!("{base}{lines}"));
            assert!(e.contains(at), "{lines}: expected {at}: {e}");
            assert!(e.contains(text), "{lines}: expected {text:?}: {e}");
        }
        let e = err(
            "accounts:\n  - name: g\n    provider: gmail\n    username: a@gmail.com\n    \
             quarantine: '[Gmail]/Spam'\n    oauth: { client_id: c }\n",
        );
        assert!(
            e.contains("config.yaml:5:17") && e.contains("30 days"),
            "{e}"
        );
        let e =
            err("accounts:\n  - name: x\n    username: a@example.com\n    password: { env: P }\n");
        assert!(
            e.contains("config.yaml:2:11") && e.contains("`host` is missing"),
            "{e}"
        );
        let e = err("accounts:\n  - name: x\n    host: h\n    username: a@example.com\n");
        assert!(
            e.contains("config.yaml:2:11") && e.contains("`password` is missing"),
            "{e}"
        );
    }

    #[test]
    fn dates() {
        let d = Date::parse("2024-02-01").expect("date");
        assert_eq!(d.imap_format(), "1-Feb-2024");
        assert_eq!(d.to_string(), "2024-02-01");
        assert_eq!(Date::parse("1970-01-01").map(|d| d.unix_seconds()), Some(0));
        assert_eq!(
            Date::parse("2000-03-01").map(|d| d.unix_seconds()),
            Some(951_868_800)
        );
        assert_eq!(Date::parse("2024-02-30"), None);
        assert_eq!(Date::parse("2024-2-3"), None);
    }

    #[test]
    fn evidence_keys() {
        let c = load(MINIMAL).expect("minimal");
        assert_eq!(c.accounts[0].evidence, EvidenceSettings::default());
        assert_eq!(c.accounts[0].evidence.window_days, 7);
        let c = load(&format!(
            "{MINIMAL}    tag_key: {{ env: TAG }}\n    tag_key_id: k2\n    tag_old_keys:\n      \
             - {{ id: k1, key: {{ file: old.key }} }}\n      - {{ id: k0, key: {{ keyring: true }} }}\n    \
             tag_max_age_days: 60\n    batv_key: {{ command: \"pass batv\" }}\n    window_days: 3\n"
        ))
        .expect("evidence keys");
        let e = &c.accounts[0].evidence;
        assert_eq!(
            e.tag_keys,
            vec![
                ("k2".to_string(), PasswordSource::Env("TAG".into())),
                (
                    "k1".to_string(),
                    PasswordSource::File("/etc/bs/old.key".into())
                ),
                (
                    "k0".to_string(),
                    PasswordSource::Keyring {
                        entry: "work.tag-key.k0".into()
                    }
                ),
            ]
        );
        assert_eq!(e.tag_max_age_days, 60);
        assert_eq!(
            e.batv_key,
            Some(PasswordSource::Command("pass batv".into()))
        );
        assert_eq!(e.window_days, 3);
        let default_id = load(&format!("{MINIMAL}    tag_key: {{ keyring: true }}\n")).expect("k1");
        assert_eq!(
            default_id.accounts[0].evidence.tag_keys,
            vec![(
                "k1".to_string(),
                PasswordSource::Keyring {
                    entry: "work.tag-key".into()
                }
            )]
        );
        for (extra, says) in [
            ("    tag_key_id: k2\n", "without `tag_key`"),
            ("    tag_key: { env: T }\n    tag_key_id: Big\n", "`Big`"),
            (
                "    tag_key: { env: T }\n    tag_old_keys: [ { id: k1, key: { env: U } } ]\n",
                "used twice",
            ),
            (
                "    tag_key: { command: \" \" }\n",
                "tag_key `command` must not be empty",
            ),
            ("    tag_key: { keyring: false }\n", "not a tag_key source"),
            ("    window_days: 0\n", "window_days"),
            (
                "    tag_key: { env: T }\n    tag_max_age_days: 0\n",
                "tag_max_age_days",
            ),
            (
                "    batv_key: { env: \"\" }\n",
                "not a valid environment variable",
            ),
            ("    tag_keys: { env: T }\n", "tag_keys"),
        ] {
            let e = err(&format!("{MINIMAL}{extra}"));
            assert!(e.contains(says), "{extra}: {e}");
        }
    }
}
