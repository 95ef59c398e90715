//! The command-line interface: the contract other tools drive backsweep
//! through (see DESIGN.md), with human output by default and JSON on request.
//!
//! Exit status: 0 success; 1 a runtime failure (a file could not be read, an
//! account failed); 2 a usage or configuration error.

use crate::analysis::{Analysis, Analyzer, MAX_ANALYSED_BYTES};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
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

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Analyse message files offline: say what kind each is (bounce,
    /// autoreply, challenge, feedback, none), which original it is about and
    /// which recipients failed. Reads nothing from any server.
    Inspect {
        /// Print one JSON object per file, one per line (JSON Lines).
        #[arg(long)]
        json: bool,
        /// Message files (RFC 5322, as saved by a mail client or a Maildir);
        /// `-` reads one message from standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
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
    init_logging();
    match cli.command {
        Command::Inspect { json, files } => inspect(json, &files),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKSWEEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `backsweep inspect`: analyse each file; a file that cannot be read gets
/// an error line and the others go on.
fn inspect(json: bool, files: &[PathBuf]) -> ExitCode {
    let analyzer = match Analyzer::builtin() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backsweep: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for path in files {
        let name = path.display().to_string();
        let result = read_bounded(path);
        let line = match result {
            Ok(bytes) => {
                let analysis = analyzer.analyze(&bytes);
                if json {
                    json_line(&name, &analysis)
                } else {
                    human_report(&name, &analysis)
                }
            }
            Err(e) => {
                failed = true;
                let message = format!("cannot read {name}: {e}");
                if json {
                    serde_json::json!({ "file": name, "error": message }).to_string() + "\n"
                } else {
                    eprintln!("backsweep: {message}");
                    continue;
                }
            }
        };
        if let Err(e) = out.write_all(line.as_bytes()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("backsweep: cannot write output: {e}");
            return ExitCode::from(EXIT_FAILURE);
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

fn json_line(file: &str, analysis: &Analysis) -> String {
    let mut value = serde_json::to_value(analysis).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("file".into(), serde_json::Value::String(file.to_string()));
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

fn human_report(file: &str, a: &Analysis) -> String {
    let mut s = format!("{file}: {}\n", describe_kind(a));
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
