//! The command-line interface: the contract other tools drive backsweep
//! through (see DESIGN.md), with human output by default and JSON on request.
//!
//! Exit status: 0 success; 1 a runtime failure (a file could not be read, an
//! account failed); 2 a usage or configuration error.

use crate::analysis::rules::RuleSet;
use crate::analysis::{Analysis, Analyzer, MAX_ANALYSED_BYTES};
use crate::config::{Account, Config, PasswordSource};
use crate::secrets::{self, Secret};
use crate::store::Store;
use crate::sweeper::{self, SweepOptions};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// backsweep keeps backscatter — bounces, auto-replies and challenges for
/// mail you never sent — out of your IMAP inbox, and leaves genuine bounces
/// where you will see them.
#[derive(Debug, Parser)]
#[command(name = "backsweep", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: $BACKSWEEP_CONFIG, then the platform
    /// config dir's backsweep/config.yaml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on standard error: `human` or `json` (one object a line,
    /// for log collectors). The level comes from $BACKSWEEP_LOG (e.g. `info`,
    /// `backsweep=debug`); the default shows warnings and errors.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass over the accounts: index new sent mail, judge new inbox mail,
    /// move backscatter to quarantine. Then exit (for cron and systemd timers).
    Sweep {
        /// Only this account (default: all).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Judge and print what would be done; move nothing, remember nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON (one object per account, one per line).
        #[arg(long)]
        json: bool,
        /// Messages per header fetch, and how often progress is recorded
        /// (a sweep that is stopped starts again from the last recorded batch).
        #[arg(long, value_name = "N", default_value_t = sweeper::BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
        batch: usize,
    },
    /// Run in the background: watch every account at once (IMAP IDLE, or
    /// NOOP polling where the server has no IDLE) and sweep each as soon as
    /// new mail arrives. Reconnects after faults with backoff; SIGTERM or
    /// SIGINT finish the move in flight and exit 0; SIGHUP reloads the
    /// config. Speaks the systemd notify protocol when $NOTIFY_SOCKET is set.
    /// See contrib/ for systemd, launchd and cron files.
    Daemon {
        /// Re-issue IDLE after this many seconds (servers may drop it after 29 minutes).
        #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=1740))]
        idle_renew_secs: u64,
        /// Sweep at least this often even without new mail (refreshes the Sent index).
        #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
        sent_refresh_secs: u64,
        /// On servers without IDLE, poll with NOOP this often.
        #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        poll_secs: u64,
        /// First pause before reconnecting after a failure; doubles with each
        /// failure in a row.
        #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        retry_min_ms: u64,
        /// Longest pause before reconnecting (fractions allowed, e.g. 0.5).
        #[arg(long, value_name = "SECS", default_value_t = 300.0, value_parser = positive_seconds)]
        retry_max_secs: f64,
    },
    /// Move quarantined messages back to the inbox and remember that you
    /// want them there: they are never moved again.
    Release {
        /// The account (needed when the config has several).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Release every message in the quarantine folder.
        #[arg(long, conflicts_with = "uids")]
        all: bool,
        /// UIDs in the quarantine folder (as shown by `status` or a mail client).
        #[arg(value_name = "UID", required_unless_present = "all")]
        uids: Vec<u32>,
    },
    /// Per account: last sweep, sent index, verdict counts.
    Status {
        /// Print JSON (one object per account, one per line).
        #[arg(long)]
        json: bool,
    },
    /// Validate the config, resolve the secrets, log in, and show the
    /// server's capabilities and folders.
    CheckConfig {
        /// Only this account (default: all).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Store or delete an account's password in the OS keyring.
    Password {
        /// What to do.
        #[command(subcommand)]
        action: PasswordAction,
    },
    /// Analyse message files offline: say what kind each is (bounce,
    /// autoreply, challenge, feedback, none), which original it is about and
    /// which recipients failed. Reads nothing from any server. With a config
    /// (--config or $BACKSWEEP_CONFIG) whose state holds a sent index, also
    /// gives the verdict and its reasons.
    Inspect {
        /// Print one JSON object per file, one per line (JSON Lines).
        #[arg(long)]
        json: bool,
        /// The account whose sent index judges the files (default: the first).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Analyse up to N files at once [default: the number of CPUs]; 1
        /// analyses one after another. The output is the same whatever N:
        /// in argument order, as each file's turn comes. (Files judged
        /// against a sent index are always judged one after another.)
        #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=MAX_INSPECT_JOBS))]
        jobs: Option<u16>,
        /// Message files (RFC 5322, as saved by a mail client or a Maildir);
        /// `-` reads one message from standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Mint signed values for mail that never reaches your Sent folder (web
    /// shops, CRMs, scripts): a bounce quoting one proves you sent the
    /// original. Needs `tag_key` in the account's config.
    Tag {
        /// What to mint.
        #[command(subcommand)]
        what: TagWhat,
    },
    /// Sign an OAuth2 account (Microsoft 365, Gmail, ...) in to its provider,
    /// once; later sweeps refresh its access token by themselves.
    ///
    /// For accounts with `auth: xoauth2` or `oauthbearer`. The tokens are
    /// stored like a password (OS keyring, or a 0600 file in the state
    /// directory when there is no keyring). By default the
    /// device-code flow is used where the provider allows it (a code to enter
    /// on any device: works over SSH), else the browser flow (a browser on
    /// this machine, redirected back to http://127.0.0.1:PORT/). Run it again
    /// when backsweep says the sign-in was revoked or has expired.
    Login {
        /// The account name from the config.
        account: String,
        /// Use the device-code flow (RFC 8628).
        #[arg(long, conflicts_with = "browser")]
        device: bool,
        /// Use a browser on this machine (authorization code with PKCE).
        #[arg(long)]
        browser: bool,
        /// With --browser: listen for the browser's redirect on this port
        /// instead of a random free one, so that a browser on another machine
        /// can reach it through `ssh -L PORT:127.0.0.1:PORT this-host`.
        #[arg(long, value_name = "PORT", requires = "browser")]
        port: Option<u16>,
    },
    /// Run the built-in demo: a private IMAP server on 127.0.0.1 seeded with
    /// sample mail (ordinary mail, sent mail, genuine bounces, backscatter),
    /// one sweep, and a before/after table. Needs Dovecot (Debian:
    /// apt-get install dovecot-imapd). Touches no real mailbox.
    Demo {
        /// Keep the demo server running afterwards so you can look with a
        /// mail client (Ctrl-C stops it).
        #[arg(long)]
        keep: bool,
    },
}

/// `tag` subcommands.
#[derive(Debug, Subcommand)]
pub enum TagWhat {
    /// Print a new signed Message-ID, with angle brackets, for the program's
    /// `Message-ID:` header. One per message: each call gives a new one.
    MessageId {
        /// The account whose tag key signs (needed when the config has several).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// The domain after the `@` [default: the domain of the account's
        /// first address].
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
    },
}

/// `password` subcommands.
#[derive(Debug, Subcommand)]
pub enum PasswordAction {
    /// Read the password from the terminal (or standard input) and store it
    /// in the OS keyring for ACCOUNT (whose config says `password: { keyring: true }`).
    Set {
        /// The account name from the config.
        account: String,
    },
    /// Delete ACCOUNT's password from the OS keyring.
    Delete {
        /// The account name from the config.
        account: String,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    init_logging(cli.log_format == "json");
    let config_path = cli.config.clone();
    match cli.command {
        Command::Inspect {
            json,
            account,
            jobs,
            files,
        } => {
            let jobs = jobs.map_or_else(default_jobs, usize::from);
            inspect(
                json,
                config_path.as_deref(),
                account.as_deref(),
                jobs,
                &files,
            )
        }
        Command::Sweep {
            account,
            dry_run,
            json,
            batch,
        } => with_config(config_path.as_deref(), |ctx| {
            sweep(ctx, account.as_deref(), dry_run, json, batch)
        }),
        Command::Daemon {
            idle_renew_secs,
            sent_refresh_secs,
            poll_secs,
            retry_min_ms,
            retry_max_secs,
        } => {
            let options = crate::daemon::DaemonOptions {
                idle_renew: std::time::Duration::from_secs(idle_renew_secs),
                sent_refresh: std::time::Duration::from_secs(sent_refresh_secs),
                poll_interval: std::time::Duration::from_secs(poll_secs),
                retry_min: std::time::Duration::from_millis(retry_min_ms),
                retry_max: std::time::Duration::from_secs_f64(retry_max_secs),
            };
            daemon(config_path.as_deref(), options)
        }
        Command::Release { account, all, uids } => with_config(config_path.as_deref(), |ctx| {
            release(ctx, account.as_deref(), all, &uids)
        }),
        Command::Status { json } => with_config(config_path.as_deref(), |ctx| status(ctx, json)),
        Command::CheckConfig { account } => with_config(config_path.as_deref(), |ctx| {
            check_config(ctx, account.as_deref())
        }),
        Command::Password { action } => {
            with_config(config_path.as_deref(), |ctx| password(ctx, action))
        }
        Command::Tag {
            what: TagWhat::MessageId { account, domain },
        } => with_config(config_path.as_deref(), |ctx| {
            tag_message_id(ctx, account.as_deref(), domain.as_deref())
        }),
        Command::Login {
            account,
            device,
            browser,
            port,
        } => with_config(config_path.as_deref(), |ctx| {
            let method = match (device, browser) {
                (true, _) => Some(crate::oauth::flows::LoginMethod::Device),
                (_, true) => Some(crate::oauth::flows::LoginMethod::Browser),
                _ => None,
            };
            login(ctx, &account, method, port.unwrap_or(0))
        }),
        Command::Demo { keep } => match runtime() {
            Ok(rt) => match rt.block_on(crate::demo::run(&crate::demo::DemoOptions { keep })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("backsweep demo: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            },
            Err(code) => code,
        },
    }
}

/// What every config-driven command needs.
struct Context {
    config: Config,
    analyzer: Analyzer,
}

/// Loads the config and rules, reporting a problem as a usage error (exit 2).
fn with_config(path: Option<&Path>, run: impl FnOnce(&Context) -> ExitCode) -> ExitCode {
    match load_context(path) {
        Ok(ctx) => run(&ctx),
        Err(message) => {
            eprintln!("backsweep: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn load_context(path: Option<&Path>) -> Result<Context, String> {
    let path = Config::locate(path).map_err(|e| e.to_string())?;
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    let rules = match &config.rules_dir {
        Some(dir) => RuleSet::with_dir(dir),
        None => RuleSet::builtin(),
    }
    .map_err(|e| e.to_string())?;
    Ok(Context {
        config,
        analyzer: Analyzer::new(rules),
    })
}

/// A number of seconds > 0 and at most a day (command-line values).
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// `backsweep daemon`: a config problem at start is a usage error (exit 2);
/// a config problem at SIGHUP keeps the running config.
fn daemon(path: Option<&Path>, options: crate::daemon::DaemonOptions) -> ExitCode {
    let ctx = match load_context(path) {
        Ok(ctx) => ctx,
        Err(message) => {
            eprintln!("backsweep: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut reload = || load_context(path).map(|c| (c.config, c.analyzer));
    match rt.block_on(crate::daemon::run(
        ctx.config,
        ctx.analyzer,
        &mut reload,
        options,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backsweep daemon: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The accounts a command applies to; an unknown name is a usage error.
fn select_accounts<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<Vec<&'a Account>, ExitCode> {
    match name {
        None => Ok(config.accounts.iter().collect()),
        Some(n) => match config.account(n) {
            Some(a) => Ok(vec![a]),
            None => {
                let known: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
                eprintln!(
                    "backsweep: no account named {n:?} in {} (accounts: {})",
                    config.path.display(),
                    known.join(", ")
                );
                Err(ExitCode::from(EXIT_USAGE))
            }
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("backsweep: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_FAILURE)
        })
}

fn open_store(config: &Config) -> Result<Store, ExitCode> {
    Store::open(&config.state_dir).map_err(|e| {
        eprintln!("backsweep: {e}");
        ExitCode::from(EXIT_FAILURE)
    })
}

/// `backsweep sweep`: each account in turn; one failing account does not
/// stop the others, but makes the exit status 1.
fn sweep(
    ctx: &Context,
    account: Option<&str>,
    dry_run: bool,
    json: bool,
    batch: usize,
) -> ExitCode {
    let accounts = match select_accounts(&ctx.config, account) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut store = match open_store(&ctx.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut failed = false;
    for account in accounts {
        use std::io::IsTerminal;
        let options = SweepOptions {
            dry_run,
            progress: !json && std::io::stderr().is_terminal(),
            batch,
            ..SweepOptions::default()
        };
        match rt.block_on(sweeper::sweep_account(
            account,
            &mut store,
            &ctx.analyzer,
            options,
        )) {
            Ok(report) if json => {
                println!("{}", serde_json::to_string(&report).unwrap_or_default())
            }
            Ok(report) => print!("{}", human_sweep_report(&report)),
            Err(e) => {
                failed = true;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "account": account.name, "error": e.to_string() })
                    );
                }
                eprintln!("backsweep: sweep failed: {e}");
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// The human-readable sweep report: a summary line and one line per
/// message that was moved (or would be), or kept for a reason worth seeing.
pub fn human_sweep_report(r: &sweeper::SweepReport) -> String {
    let mut s = format!(
        "{}{}: {} new sent indexed ({} in index); {} new inbox messages, {} looked at closely, {} {}; {} KB downloaded\n",
        r.account,
        if r.dry_run { " (dry run)" } else { "" },
        r.sent_indexed,
        r.sent_total,
        r.examined,
        r.candidates,
        r.quarantined,
        if r.dry_run { "would be quarantined" } else { "quarantined" },
        r.bytes_downloaded / 1024,
    );
    for m in &r.messages {
        let reason = m.reasons.first().map(|r| r.detail.as_str()).unwrap_or("");
        s.push_str(&format!(
            "  {:<10} uid {:<6} {:<11} {:<9} {} | {}\n    {}\n",
            m.action,
            m.uid,
            m.verdict.as_str(),
            m.kind.as_str(),
            truncate(&m.from, 40),
            truncate(&m.subject, 50),
            reason
        ));
    }
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// `backsweep release`: move messages from quarantine back to the inbox and
/// remember the decision (by Message-ID and content hash).
fn release(ctx: &Context, account: Option<&str>, all: bool, uids: &[u32]) -> ExitCode {
    let accounts = match select_accounts(&ctx.config, account) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if accounts.len() != 1 {
        eprintln!("backsweep: the config has several accounts; say which with --account NAME");
        return ExitCode::from(EXIT_USAGE);
    }
    let account = accounts[0];
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let store = match open_store(&ctx.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match rt.block_on(release_async(account, &store, all, uids)) {
        Ok(n) => {
            println!(
                "{}: released {n} message(s) to {}",
                account.name, account.inbox
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            // `{e}`: the errors here carry their causes in their own message;
            // the alternate form would repeat each cause once per level.
            eprintln!("backsweep: release failed: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn release_async(
    account: &Account,
    store: &Store,
    all: bool,
    uids: &[u32],
) -> anyhow::Result<usize> {
    let mut session = sweeper::connect(account).await?;
    session.select(&account.quarantine).await?;
    let uids: Vec<u32> = if all {
        session.uid_search("ALL").await?
    } else {
        uids.to_vec()
    };
    if uids.is_empty() {
        return Ok(0);
    }
    let prefixes = session
        .uid_fetch_prefixes(&uids, sweeper::PREFIX_BYTES)
        .await?;
    let found: Vec<u32> = prefixes.iter().map(|p| p.uid).collect();
    if let Some(missing) = uids.iter().find(|u| !found.contains(u)) {
        anyhow::bail!("no message with UID {missing} in {}", account.quarantine);
    }
    // Remember first: if the move is interrupted, the messages are still
    // recognised as released wherever they end up.
    for p in &prefixes {
        let analysis = crate::analysis::analyze(&p.data);
        store.released_insert(
            &account.name,
            analysis.message_id.as_deref(),
            Some(&sweeper::content_hash(&p.data)),
        )?;
        store.audit_append(&crate::store::AuditEntry {
            account: account.name.clone(),
            mailbox: account.quarantine.clone(),
            uid: p.uid,
            message_id: analysis.message_id.clone(),
            verdict: "released".into(),
            rules: vec!["user.release".into()],
            action: "released".into(),
            destination: Some(account.inbox.clone()),
        })?;
    }
    session.move_uids(&found, &account.inbox).await?;
    let _ = session.logout().await;
    Ok(found.len())
}

/// `backsweep tag message-id`: mint a signed Message-ID.
fn tag_message_id(ctx: &Context, account: Option<&str>, domain: Option<&str>) -> ExitCode {
    let account = match select_accounts(&ctx.config, account) {
        Ok(list) if list.len() == 1 => list[0],
        Ok(_) => {
            eprintln!("backsweep: the config has several accounts: choose one with --account NAME");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(code) => return code,
    };
    if account.evidence.tag_keys.is_empty() {
        eprintln!(
            "backsweep: account `{}` has no tag key: add `tag_key: {{ env: VAR }}` (or keyring, \
             command, file) to its config",
            account.name
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let domain = match domain {
        Some(d) if crate::config::looks_like_address(&format!("x@{d}")) => d.to_string(),
        Some(d) => {
            eprintln!("backsweep: `{d}` is not a domain name");
            return ExitCode::from(EXIT_USAGE);
        }
        None => account
            .addresses
            .first()
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.to_string())
            .unwrap_or_default(),
    };
    let evidence = match crate::evidence::Evidence::resolve(account) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("backsweep: tag key: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match evidence.mint_tag(&domain, crate::store::now_unix()) {
        Some(Ok(id)) => {
            println!("<{id}>");
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("backsweep: no randomness for the tag: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
        None => ExitCode::from(EXIT_USAGE),
    }
}

/// `backsweep status`.
fn status(ctx: &Context, json: bool) -> ExitCode {
    let store = match open_store(&ctx.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut failed = false;
    for account in &ctx.config.accounts {
        let name = &account.name;
        let info = (|| -> Result<serde_json::Value, crate::store::StoreError> {
            let last = store.last_sweep(name)?;
            let counts = store.audit_counts(name)?;
            let by_rule = store.audit_rule_counts(name)?;
            let inbox = store.watermark(name, &account.inbox)?;
            Ok(serde_json::json!({
                "account": name,
                "last_sweep": last.as_ref().map(|l| serde_json::json!({
                    "started": l.started,
                    "finished": l.finished,
                    "counts": l.counts_json.as_deref().and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok()),
                })),
                "sent_index": { "messages": store.sent_count(name)?, "covers_since": store.sent_coverage(name)? },
                "inbox_last_uid": inbox.map(|w| w.last_uid),
                "verdicts": counts.iter().map(|(v, a, n)| serde_json::json!({"verdict": v, "action": a, "count": n})).collect::<Vec<_>>(),
                "verdicts_by_rule": by_rule.iter().map(|(v, r, n)| serde_json::json!({"verdict": v, "rule": r, "count": n})).collect::<Vec<_>>(),
            }))
        })();
        match info {
            Ok(v) if json => println!("{v}"),
            Ok(v) => print!("{}", human_status(&v)),
            Err(e) => {
                failed = true;
                eprintln!("backsweep: {name}: {e}");
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

fn human_status(v: &serde_json::Value) -> String {
    let mut s = format!("{}:\n", v["account"].as_str().unwrap_or("?"));
    match v["last_sweep"].as_object() {
        Some(l) => s.push_str(&format!(
            "  last sweep: started {} ({}), {}\n",
            format_time(l.get("started").and_then(|t| t.as_i64())),
            if l.get("finished").is_some_and(|f| !f.is_null()) {
                "finished"
            } else {
                "did not finish"
            },
            l.get("counts").map(|c| c.to_string()).unwrap_or_default()
        )),
        None => s.push_str("  never swept\n"),
    }
    s.push_str(&format!(
        "  sent index: {} messages, covering mail sent since {}\n",
        v["sent_index"]["messages"],
        format_time(v["sent_index"]["covers_since"].as_i64())
    ));
    if let Some(rows) = v["verdicts"].as_array() {
        for r in rows {
            s.push_str(&format!(
                "  {:<12} {:<10} {}\n",
                r["verdict"].as_str().unwrap_or(""),
                r["action"].as_str().unwrap_or(""),
                r["count"]
            ));
        }
    }
    if let Some(rows) = v["verdicts_by_rule"].as_array().filter(|r| !r.is_empty()) {
        s.push_str("  by deciding rule:\n");
        for r in rows {
            s.push_str(&format!(
                "  {:<12} {:<32} {}\n",
                r["verdict"].as_str().unwrap_or(""),
                r["rule"].as_str().filter(|r| !r.is_empty()).unwrap_or("-"),
                r["count"]
            ));
        }
    }
    s
}

fn format_time(t: Option<i64>) -> String {
    match t {
        Some(secs) => {
            let days = secs.div_euclid(86_400);
            let rem = secs.rem_euclid(86_400);
            let (y, m, d) = crate::config::civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
                rem / 3600,
                rem % 3600 / 60
            )
        }
        None => "-".into(),
    }
}

/// `backsweep check-config`: everything short of sweeping.
fn check_config(ctx: &Context, account: Option<&str>) -> ExitCode {
    let accounts = match select_accounts(&ctx.config, account) {
        Ok(a) => a,
        Err(code) => return code,
    };
    println!(
        "config {}: valid, {} account(s), {} rules",
        ctx.config.path.display(),
        ctx.config.accounts.len(),
        ctx.analyzer.rules().rules().len()
    );
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut failed = false;
    for account in accounts {
        let result = rt.block_on(async {
            let mut session = sweeper::connect(account).await?;
            let mut caps: Vec<String> = session.capabilities().iter().cloned().collect();
            caps.sort();
            let folders = session.list_folders().await?;
            let sent = match &account.sent {
                Some(s) => s.clone(),
                None => session.find_special_use("\\Sent").await?,
            };
            let _ = session.logout().await;
            anyhow::Ok((caps, folders, sent))
        });
        match result {
            Ok((caps, folders, sent)) => {
                println!(
                    "{}: logged in to {}:{} as {}{}",
                    account.name,
                    account.host,
                    account.port,
                    account.username,
                    match &account.password {
                        PasswordSource::OAuth2(o) =>
                            format!(" with OAuth2 ({})", o.mechanism.imap_name()),
                        _ => String::new(),
                    }
                );
                if account.provider == Some(crate::oauth::Provider::Gmail) {
                    println!(
                        "  note: on Gmail folders are labels: moving to {} removes the Inbox label; the message stays in All Mail and keeps its other labels",
                        account.quarantine
                    );
                }
                println!("  capabilities: {}", caps.join(" "));
                let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
                println!("  folders: {}", names.join(", "));
                if sent.is_empty() {
                    println!("  sent folders: none found — set `sent:` in the config, or bounces cannot be matched to your sent mail");
                } else {
                    println!("  sent folders: {}", sent.join(", "));
                }
                let has_q = names.contains(&account.quarantine.as_str());
                println!(
                    "  quarantine: {}{}",
                    account.quarantine,
                    if has_q {
                        ""
                    } else {
                        " (will be created by the first sweep)"
                    }
                );
                for (cap, what) in [
                    ("MOVE", "moves use COPY + UID EXPUNGE"),
                    (
                        "UIDPLUS",
                        "without MOVE, moved mail is only flagged \\Deleted",
                    ),
                ] {
                    if !caps.iter().any(|c| c.eq_ignore_ascii_case(cap)) {
                        println!("  note: no {cap}: {what}");
                    }
                }
            }
            Err(e) => {
                failed = true;
                // `{e}`: every error here already includes its cause in its message.
                eprintln!("backsweep: {}: {e}", account.name);
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// `backsweep password set|delete`.
fn password(ctx: &Context, action: PasswordAction) -> ExitCode {
    let name = match &action {
        PasswordAction::Set { account } | PasswordAction::Delete { account } => account.clone(),
    };
    let account = match select_accounts(&ctx.config, Some(&name)) {
        Ok(a) => a[0],
        Err(code) => return code,
    };
    let entry = match &account.password {
        PasswordSource::Keyring { entry } => entry.clone(),
        PasswordSource::OAuth2(_) => {
            eprintln!(
                "backsweep: account {name} signs in with OAuth2 and has no password; run `backsweep login {name}` instead"
            );
            return ExitCode::from(EXIT_USAGE);
        }
        _ => {
            eprintln!(
                "backsweep: account {name} does not take its password from the keyring; set `password: {{ keyring: true }}` in {} first",
                ctx.config.path.display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match action {
        PasswordAction::Set { .. } => read_password(&name).and_then(|secret| {
            secrets::set_keyring_password(&name, &entry, &secret).map_err(|e| e.to_string())
        }),
        PasswordAction::Delete { .. } => {
            secrets::delete_keyring_password(&name, &entry).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => {
            println!("{name}: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("backsweep: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `backsweep login`: the interactive OAuth2 sign-in, then a test login to the IMAP server.
fn login(
    ctx: &Context,
    name: &str,
    method: Option<crate::oauth::flows::LoginMethod>,
    redirect_port: u16,
) -> ExitCode {
    use crate::oauth::flows::{self, LoginMethod, Prompt};
    let account = match select_accounts(&ctx.config, Some(name)) {
        Ok(a) => a[0],
        Err(code) => return code,
    };
    let PasswordSource::OAuth2(settings) = &account.password else {
        eprintln!(
            "backsweep: account {name} logs in with a password, not OAuth2: set `auth: xoauth2` \
             and an `oauth:` section in {} first (see the README)",
            ctx.config.path.display()
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let method = method.unwrap_or_else(|| LoginMethod::default_for(settings));
    let mut show = |prompt: &Prompt| {
        match prompt {
            Prompt::Device {
                verification_uri,
                user_code,
                verification_uri_complete,
                message: _,
            } => {
                println!(
                    "To sign in account {name} ({}), open {verification_uri} in a browser on any \
                     device and enter the code\n\n    {user_code}\n",
                    account.username
                );
                if let Some(complete) = verification_uri_complete {
                    println!("(or open {complete}, which has the code filled in)\n");
                }
                println!("Waiting for the sign-in to complete...");
            }
            Prompt::Browser { url } => {
                println!(
                    "To sign in account {name} ({}), open this address in a browser on this \
                     machine:\n\n    {url}\n\nWaiting up to {} minutes for the browser to come back...",
                    account.username,
                    flows::BROWSER_WAIT.as_secs() / 60
                );
                open_in_browser(url);
            }
        }
        let _ = std::io::stdout().flush();
    };
    let options = flows::LoginOptions {
        login_hint: Some(account.username.clone()),
        redirect_port,
    };
    let stored = match flows::login(&account.name, settings, method, &options, &mut show) {
        Ok(place) => place,
        Err(e) => {
            eprintln!("backsweep: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    println!("Signed in. Tokens stored in {stored}.");
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let checked = rt.block_on(async {
        let session = sweeper::connect(account).await?;
        let _ = session.logout().await;
        anyhow::Ok(())
    });
    match checked {
        Ok(()) => {
            println!(
                "IMAP login to {}:{} as {} works.",
                account.host, account.port, account.username
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("backsweep: signed in, but the IMAP login failed: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Opens `url` in the desktop's browser when there is a desktop and a terminal (best effort;
/// the address is printed anyway).
fn open_in_browser(url: &str) {
    use std::io::IsTerminal;
    let desktop = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || cfg!(target_os = "macos");
    if !desktop || !std::io::stdout().is_terminal() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

fn read_password(account: &str) -> Result<Secret, String> {
    use std::io::IsTerminal;
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {account}: "))
            .map_err(|e| e.to_string())?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if value.is_empty() {
        return Err("empty password: nothing stored".into());
    }
    Ok(Secret::new(value))
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKSWEEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // async-imap traces every command it sends, LOGIN passwords and AUTHENTICATE tokens
    // included: never let that through, whatever $BACKSWEEP_LOG says.
    let filter = match "async_imap::imap_stream=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // Colours only on a terminal: the journal, cron mail and log files get
    // plain lines (NO_COLOR is honoured too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `backsweep inspect`: analyse each file; a file that cannot be read gets
/// an error line and the others go on. With a config, each file is also
/// judged against that account's sent index.
fn inspect(
    json: bool,
    config_path: Option<&Path>,
    account: Option<&str>,
    jobs: usize,
    files: &[PathBuf],
) -> ExitCode {
    // A config named explicitly must load; the platform default is used
    // only when it exists.
    let explicit = config_path.is_some() || std::env::var_os(crate::config::CONFIG_ENV).is_some();
    let ctx = match Config::locate(config_path) {
        Ok(path) if explicit || path.exists() => match load_context(Some(&path)) {
            Ok(ctx) => Some(ctx),
            Err(message) => {
                eprintln!("backsweep: {message}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        _ => None,
    };
    let analyzer = match &ctx {
        Some(ctx) => ctx.analyzer.clone(),
        None => match Analyzer::builtin() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("backsweep: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let judge_with = match &ctx {
        Some(ctx) => {
            let chosen = match account {
                Some(_) => match select_accounts(&ctx.config, account) {
                    Ok(a) => a.first().copied(),
                    Err(code) => return code,
                },
                None => ctx.config.accounts.first(),
            };
            match (chosen, open_store(&ctx.config)) {
                (Some(a), Ok(store)) => {
                    // Offline analysis goes on without keys that cannot be
                    // resolved here: tags and BATV are then not checked.
                    let mut evidence = crate::evidence::Evidence::resolve(a).unwrap_or_else(|e| {
                        eprintln!("backsweep: warning: {e}; tags and BATV are not checked");
                        crate::evidence::Evidence {
                            window_days: a.evidence.window_days,
                            ..crate::evidence::Evidence::default()
                        }
                    });
                    if let Err(e) = evidence.learn(&store, &a.name) {
                        eprintln!("backsweep: {e}");
                        return ExitCode::from(EXIT_FAILURE);
                    }
                    Some((a, store, evidence))
                }
                (_, Err(code)) => return code,
                (None, _) => None,
            }
        }
        None => None,
    };
    keep_freed_memory();
    let stdout = std::io::stdout();
    // A pipe's worth at a time: each write to a pipe wakes its reader,
    // which then competes with the workers for the CPUs.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut failed = false;
    let mut print = |(line, error): &(String, bool)| {
        failed |= error;
        out.write_all(line.as_bytes())
    };
    // Analysis is pure and the analyzer is shared, so files are analysed on
    // `jobs` threads; judging reads the state store, whose connection is not
    // shared between threads, so it stays on this one.
    let printed = match &judge_with {
        Some((account, store, evidence)) => files.iter().try_for_each(|p| {
            print(&render_file(
                p,
                json,
                &analyzer,
                Some((account, store, evidence)),
            ))
        }),
        None => crate::ordered::for_each_ordered(
            files,
            jobs,
            |p| render_file(p, json, &analyzer, None),
            print,
        ),
    };
    if let Err(e) = printed {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
        eprintln!("backsweep: cannot write output: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Err(e) = out.flush() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("backsweep: cannot write output: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Tells the allocator to keep the memory it is given back, for the rest of
/// this (short) process, instead of returning it to the system.
///
/// `inspect` allocates and frees the same few hundred KiB per file, over
/// and over. By default glibc hands freed memory at the top of the heap
/// back to the system (above 128 KiB) and serves blocks from 128 KiB up
/// with their own mappings, so the next file faults the same pages in
/// again: about 250-290 of the ~1,100-1,300 page faults of a run over the
/// 1,357 corpus files, a few per cent of its time. Peak memory is
/// unchanged; it is merely not released early. (The daemon, which runs for
/// weeks, keeps the default.)
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Below glibc's 32 MiB ceiling for the mapping threshold, and well
        // above the largest block analysis asks for (a message is read up
        // to MAX_ANALYSED_BYTES).
        const KEEP: libc::c_int = 16 * 1024 * 1024;
        // SAFETY: mallopt only sets allocator parameters; it reads and
        // writes no memory of ours, and a value it refuses is ignored
        // (then glibc keeps its default, which is merely slower).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * KEEP);
        }
    }
}

/// The most threads `inspect --jobs` accepts (more than any machine's cores
/// gains nothing, and each thread costs a stack).
const MAX_INSPECT_JOBS: i64 = 256;

/// `inspect`'s default number of jobs: one per CPU this process may use.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Analyses one file for `inspect` (and judges it when a store is given):
/// the output text, and whether the file could not be read.
fn render_file(
    path: &Path,
    json: bool,
    analyzer: &Analyzer,
    judge: Option<(&Account, &Store, &crate::evidence::Evidence)>,
) -> (String, bool) {
    let name = path.display().to_string();
    match read_bounded(path) {
        Ok(bytes) => {
            let analysis = analyzer.analyze(&bytes);
            let judgement = judge.and_then(|(account, store, extra)| {
                let evidence = sweeper::StoreEvidence::new(store, account)
                    .ok()?
                    .with_evidence(extra);
                let arrived = sweeper::header_date(&bytes);
                Some(crate::verdict::judge(&analysis, &evidence, arrived))
            });
            let line = if json {
                json_line(&name, &analysis, judgement.as_ref())
            } else {
                human_report(&name, &analysis, judgement.as_ref())
            };
            (line, false)
        }
        Err(e) => {
            let message = format!("cannot read {name}: {e}");
            if json {
                (
                    serde_json::json!({ "file": name, "error": message }).to_string() + "\n",
                    true,
                )
            } else {
                eprintln!("backsweep: {message}");
                (String::new(), true)
            }
        }
    }
}

/// Reads a message file (or stdin for `-`), keeping one byte more than
/// analysis reads so that truncation can be reported, never the whole of a
/// huge file.
fn read_bounded(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let limit = (MAX_ANALYSED_BYTES + 1) as u64;
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)?;
    } else {
        let file = std::fs::File::open(path)?;
        let metadata = file.metadata()?;
        if metadata.is_dir() {
            return Err(std::io::Error::other("is a directory"));
        }
        // A regular file is read as the size it has now, in one read: the
        // read that would find the end of the file costs a system call per
        // file, a visible part of `inspect` over many small files. (A file
        // that grows meanwhile is read as it was; pipes, devices and
        // files that report no size are read to their end.)
        let size = metadata.len().min(limit);
        let want = if metadata.is_file() && size > 0 {
            size
        } else {
            limit
        };
        // Sized up front: `take` hides the file's size from read_to_end,
        // whose doubling reallocations were a visible part of `inspect`.
        bytes.reserve_exact(size as usize);
        file.take(want).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

fn json_line(
    file: &str,
    analysis: &Analysis,
    judgement: Option<&crate::verdict::Judgement>,
) -> String {
    // Sized for a typical line (about 600 bytes): growing from empty was
    // most of the allocator's work in printing.
    let mut out = String::with_capacity(1024);
    crate::jsonl::push_line(&mut out, file, analysis, judgement);
    out
}

fn human_report(file: &str, a: &Analysis, judgement: Option<&crate::verdict::Judgement>) -> String {
    let mut s = format!("{file}: {}\n", describe_kind(a));
    if let Some(j) = judgement {
        s.push_str(&format!("  verdict: {}\n", j.verdict));
        for r in &j.reasons {
            s.push_str(&format!("    - {} ({})\n", r.detail, r.rule));
        }
    }
    if a.original_message_ids.is_empty() {
        if a.kind != crate::analysis::Kind::None {
            s.push_str("  original Message-ID: not found in the message\n");
        }
    } else {
        for (i, id) in a.original_message_ids.iter().enumerate() {
            let label = if i == 0 {
                "original Message-ID"
            } else {
                "  also"
            };
            s.push_str(&format!("  {label}: <{id}>\n"));
        }
    }
    if !a.recipients.is_empty() {
        let label = match a.kind {
            crate::analysis::Kind::Bounce => "failed recipients",
            crate::analysis::Kind::Feedback => "reported recipients",
            _ => "answered by",
        };
        s.push_str(&format!("  {label}: {}\n", a.recipients.join(", ")));
    }
    let o = &a.original;
    for (label, value) in [
        ("From", &o.from),
        ("To", &o.to),
        ("Subject", &o.subject),
        ("Date", &o.date),
    ] {
        if let Some(v) = value {
            s.push_str(&format!("  original {label}: {v}\n"));
        }
    }
    if !o.received.is_empty() {
        s.push_str(&format!("  original Received hops: {}\n", o.received.len()));
    }
    if a.truncated {
        s.push_str(&format!(
            "  note: only the first {MAX_ANALYSED_BYTES} bytes were analysed\n"
        ));
    }
    if a.unparsed {
        s.push_str("  note: the MIME structure could not be parsed; read as plain text\n");
    }
    if !a.rules.is_empty() {
        s.push_str(&format!("  because: {}\n", a.rules.join(", ")));
    }
    s
}

fn describe_kind(a: &Analysis) -> &'static str {
    use crate::analysis::Kind;
    match a.kind {
        Kind::Bounce => "bounce (delivery status notification)",
        Kind::Autoreply => "autoreply (auto-reply or read receipt)",
        Kind::Challenge => "challenge (challenge-response request)",
        Kind::Feedback => "feedback (abuse or authentication report)",
        Kind::None => "none (ordinary mail)",
    }
}
