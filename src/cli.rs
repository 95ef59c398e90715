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
        /// Message files (RFC 5322, as saved by a mail client or a Maildir);
        /// `-` reads one message from standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
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
            files,
        } => inspect(json, config_path.as_deref(), account.as_deref(), &files),
        Command::Sweep {
            account,
            dry_run,
            json,
        } => with_config(config_path.as_deref(), |ctx| {
            sweep(ctx, account.as_deref(), dry_run, json)
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
fn sweep(ctx: &Context, account: Option<&str>, dry_run: bool, json: bool) -> ExitCode {
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
            eprintln!("backsweep: release failed: {e:#}");
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
                    "{}: logged in to {}:{} as {}",
                    account.name, account.host, account.port, account.username
                );
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
                eprintln!("backsweep: {}: {e:#}", account.name);
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
                (Some(a), Ok(store)) => Some((a, store)),
                (_, Err(code)) => return code,
                (None, _) => None,
            }
        }
        None => None,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for chunk in files.chunks(256) {
        // One thread: the rule sets' lazy DFA caches are warm there, and the
        // state store (for judging) is not shared between threads.
        let judge = judge_with.as_ref().map(|(a, s)| (*a, s));
        let rendered: Vec<(String, bool)> = chunk
            .iter()
            .map(|p| render_file(p, json, &analyzer, judge))
            .collect();
        for (line, error) in rendered {
            failed |= error;
            if let Err(e) = out.write_all(line.as_bytes()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
                eprintln!("backsweep: cannot write output: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
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

/// Analyses one file for `inspect` (and judges it when a store is given):
/// the output text, and whether the file could not be read.
fn render_file(
    path: &Path,
    json: bool,
    analyzer: &Analyzer,
    judge: Option<(&Account, &Store)>,
) -> (String, bool) {
    let name = path.display().to_string();
    match read_bounded(path) {
        Ok(bytes) => {
            let analysis = analyzer.analyze(&bytes);
            let judgement = judge.and_then(|(account, store)| {
                let evidence = sweeper::StoreEvidence::new(store, account).ok()?;
                Some(crate::verdict::judge(&analysis, &evidence, None))
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
        if file.metadata()?.is_dir() {
            return Err(std::io::Error::other("is a directory"));
        }
        file.take(limit).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

fn json_line(
    file: &str,
    analysis: &Analysis,
    judgement: Option<&crate::verdict::Judgement>,
) -> String {
    let mut value = serde_json::to_value(analysis).unwrap_or_default();
    if let (Some(map), Some(j)) = (value.as_object_mut(), judgement) {
        map.insert(
            "verdict".into(),
            serde_json::Value::String(j.verdict.as_str().into()),
        );
        map.insert(
            "reasons".into(),
            serde_json::to_value(&j.reasons).unwrap_or_default(),
        );
    }
    // Keep `file` first for people reading the lines.
    let mut ordered = serde_json::Map::new();
    ordered.insert("file".into(), serde_json::Value::String(file.to_string()));
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            if k != "file" {
                ordered.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::Value::Object(ordered).to_string() + "\n"
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
