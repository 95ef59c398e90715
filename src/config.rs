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
pub enum SearchNet {
    /// On unless the server looks like Gmail or Exchange (by its capabilities).
    #[default]
    Auto,
    /// Always use the net (the server is known to search substrings).
    On,
    /// Never: fetch triage headers of every new message.
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
    /// Whether to narrow the inbox with a server-side search first.
    pub search_net: SearchNet,
}

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
    host: Spanned<String>,
    port: Option<Spanned<u16>>,
    tls: Option<Spanned<TlsMode>>,
    ca_file: Option<Spanned<String>>,
    username: Spanned<String>,
    password: Spanned<RawPassword>,
    addresses: Option<Vec<Spanned<String>>>,
    inbox: Option<Spanned<String>>,
    sent: Option<Spanned<Vec<Spanned<String>>>>,
    quarantine: Option<Spanned<String>>,
    #[serde(default)]
    unknown: UnknownAction,
    since: Option<Spanned<String>>,
    timeout: Option<Spanned<u64>>,
    #[serde(default)]
    search_net: SearchNet,
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
            let acc = self.account(ra)?;
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

    fn account(&self, ra: &RawAccount) -> Result<Account, ConfigError> {
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

        let host = self.nonempty(&ra.host, &ctx("`host`".into()))?;
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

        let password = match &ra.password.value {
            RawPassword::Keyring(KeyringSpec::Flag(true)) => PasswordSource::Keyring {
                entry: name.clone(),
            },
            RawPassword::Keyring(KeyringSpec::Flag(false)) => {
                return Err(self.err_at(
                    &ra.password,
                    ctx(
                        "`keyring: false` is not a password source: use `keyring: true`, \
                         `env: VAR`, `command: \"...\"` or `file: PATH`"
                            .into(),
                    ),
                ))
            }
            RawPassword::Keyring(KeyringSpec::Entry(e)) if e.trim().is_empty() => {
                return Err(self.err_at(
                    &ra.password,
                    ctx("keyring entry name must not be empty".into()),
                ))
            }
            RawPassword::Keyring(KeyringSpec::Entry(e)) => PasswordSource::Keyring {
                entry: e.trim().to_string(),
            },
            RawPassword::Env(v) => {
                let v = v.trim();
                if v.is_empty() || v.contains('=') || v.contains('\0') {
                    return Err(self.err_at(
                        &ra.password,
                        ctx(format!(
                            "`env: {v}` is not a valid environment variable name"
                        )),
                    ));
                }
                PasswordSource::Env(v.to_string())
            }
            RawPassword::Command(c) => {
                if c.trim().is_empty() {
                    return Err(self.err_at(
                        &ra.password,
                        ctx("password `command` must not be empty".into()),
                    ));
                }
                PasswordSource::Command(c.clone())
            }
            RawPassword::File(f) => {
                if f.trim().is_empty() {
                    return Err(self.err_at(
                        &ra.password,
                        ctx("password `file` must not be empty".into()),
                    ));
                }
                PasswordSource::File(self.resolve_path(f.trim()))
            }
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
            None => "Quarantine".to_string(),
        };
        if same_mailbox(&quarantine, &inbox) {
            let at = ra.quarantine.as_ref().unwrap_or(&ra.name);
            return Err(self.err_at(
                at,
                ctx(format!("`quarantine` must differ from the inbox `{inbox}`")),
            ));
        }
        let sent = match &ra.sent {
            None => None,
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
            search_net: ra.search_net,
        })
    }
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
        assert_eq!(a.search_net, SearchNet::Auto);
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
        assert_eq!(c.accounts.len(), 2);
        assert_eq!(c.accounts[0].port, 993);
        assert_eq!(c.accounts[1].port, 143);
        assert_eq!(c.accounts[1].unknown, UnknownAction::Quarantine);
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
}
