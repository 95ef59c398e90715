//! Benchmark of the analysis core, and a whole-process comparison with Sisimai.
//!
//! Run with `cargo bench --bench analysis` (the bench profile is the release
//! profile). It prints numbers; it is not a pass/fail test. One run does:
//!
//! 1. **In process**: loads every labelled corpus message (both label files
//!    in `tests/corpus/`, via `tests/common`) into memory and runs
//!    [`backsweep::analysis::analyze`] over all of them repeatedly for at
//!    least `BACKSWEEP_BENCH_SECS` seconds (default 2) after a warm-up pass,
//!    then prints messages/s, MB/s (10^6 bytes) and the mean time per message,
//!    plus the slowest single call and the kinds found.
//! 2. **Whole process, backsweep**: runs the release binary
//!    `backsweep inspect --json FILE...` over the same files (paths relative
//!    to `tests/corpus/`, which is the working directory) and takes the best
//!    wall-clock time of 3 runs; once with the default jobs (one per CPU)
//!    and once with `--jobs 1` (one core, as Sisimai runs), each with its
//!    own ratio, so that the two are never confused. Cargo builds the binary for the bench
//!    (`CARGO_BIN_EXE_backsweep`); if it is missing, this runs
//!    `cargo build --release --bin backsweep` first. The number of JSON lines
//!    printed is checked against the number of files and reported, but a
//!    shortfall or a non-zero exit status is only a note.
//! 3. **Whole process, Sisimai** (Perl): runs `contrib/bench/sisimai-parse.pl`
//!    over the same files the same way and reports its best of 3, the two
//!    ratios Sisimai/backsweep, and how many files Sisimai recognised per
//!    label kind.
//!
//! Both tools get the files as argument lists, split into identical chunks
//! of at most [`MAX_ARG_BYTES`] bytes of arguments if needed; a run's time is
//! the sum over its chunks, started one after another; stdout and stderr are
//! captured through pipes for both.
//!
//! Sisimai is required: without it the bench prints the command that
//! installs it (`apt-get update && apt-get install -y libsisimai-perl`) and
//! exits with an error before measuring anything.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::env;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use backsweep::analysis::analyze;
use common::LabelledMessage;

/// Most argument bytes given to one process, well below Linux's 2 MiB
/// `ARG_MAX` (which also has to hold the environment).
const MAX_ARG_BYTES: usize = 96 * 1024;
/// Whole-process runs per tool; the best is reported.
const RUNS: usize = 3;
const INSTALL_SISIMAI: &str = "apt-get update && apt-get install -y libsisimai-perl";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(sisimai_version) = sisimai_version() else {
        eprintln!(
            "error: Sisimai (Perl) is not installed; this benchmark compares against it.\n\
             Install it (as root) with:\n\n    {INSTALL_SISIMAI}\n"
        );
        return Ok(ExitCode::FAILURE);
    };

    let corpus = common::labelled_corpus();
    let total_bytes: usize = corpus.iter().map(|m| m.bytes.len()).sum();
    println!("backsweep analysis benchmark");
    println!(
        "corpus: {} labelled messages, {:.2} MB ({})",
        corpus.len(),
        mb(total_bytes),
        common::corpus_dir().display()
    );

    in_process(&corpus, total_bytes)?;

    let files: Vec<&str> = corpus.iter().map(|m| m.file.as_str()).collect();
    let chunks = chunk_args(&files);
    println!(
        "\nwhole process over the same {} files ({} command line{}), best of {RUNS} wall clock:",
        files.len(),
        chunks.len(),
        if chunks.len() == 1 { "" } else { "s" }
    );

    let backsweep_bin = backsweep_binary(manifest_dir)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let backsweep = best_of(&backsweep_bin, &["inspect", "--json"], &chunks)?;
    let one_core = best_of(
        &backsweep_bin,
        &["inspect", "--json", "--jobs", "1"],
        &chunks,
    )?;
    let lines = json_lines(&backsweep.stdout);
    let timing = |label: &str, wall: Duration, note: &str| {
        println!(
            "  {label:<40} {:>7.3} s  {:>6.0} files/s  ({note})",
            secs(wall),
            files.len() as f64 / secs(wall)
        );
    };
    timing(
        "backsweep inspect --json",
        backsweep.wall,
        &format!("default: {cpus} jobs, all CPUs"),
    );
    timing(
        "backsweep inspect --json --jobs 1",
        one_core.wall,
        "one core",
    );
    if one_core.stdout != backsweep.stdout {
        println!("    note: the --jobs 1 output differs from the default output");
    }
    if lines.total < files.len() {
        println!(
            "    note: printed {} JSON line(s) for {} files ({} not JSON) - is `inspect --json` implemented?",
            lines.json,
            files.len(),
            lines.total - lines.json
        );
    } else {
        println!("    kinds: {}", histogram(&lines.kinds));
    }
    for problem in backsweep.problems.iter().chain(&one_core.problems) {
        println!("    note: {problem}");
    }

    let script = manifest_dir.join("contrib/bench/sisimai-parse.pl");
    if !script.is_file() {
        bail!("{} is missing", script.display());
    }
    let script_arg = script.to_string_lossy().into_owned();
    let sisimai = best_of(Path::new("perl"), &[&script_arg], &chunks)?;
    if let Some(problem) = sisimai.problems.first() {
        bail!("the Sisimai script failed: {problem}");
    }
    timing(
        &format!("sisimai {sisimai_version} (perl)"),
        sisimai.wall,
        "one process, one core",
    );
    let ratio = |label: &str, wall: Duration, note: &str| {
        println!(
            "  {label:<40} {:>7.1}x  ({note})",
            secs(sisimai.wall) / secs(wall)
        );
    };
    ratio(
        &format!("ratio sisimai/backsweep, default ({cpus} jobs)"),
        backsweep.wall,
        "whole process, backsweep on all CPUs",
    );
    ratio(
        "ratio sisimai/backsweep, --jobs 1",
        one_core.wall,
        "whole process, both on one core",
    );
    sisimai_summary(&corpus, &sisimai.stdout);
    if !sisimai.stderr.is_empty() {
        let warnings = String::from_utf8_lossy(&sisimai.stderr);
        println!(
            "    ({} line(s) of Perl warnings on stderr, first: {})",
            warnings.lines().count(),
            warnings.lines().next().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// 1. In process

fn in_process(corpus: &[LabelledMessage], total_bytes: usize) -> Result<()> {
    let min_time = match env::var("BACKSWEEP_BENCH_SECS") {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .with_context(|| format!("BACKSWEEP_BENCH_SECS={v:?} is not a number of seconds"))?,
        Err(_) => Duration::from_secs(2),
    };

    // Warm-up pass (first-use initialisation, caches), collecting the kinds.
    let mut kinds = BTreeMap::new();
    for message in corpus {
        let analysis = analyze(black_box(&message.bytes));
        let kind = serde_json::to_value(analysis.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{:?}", analysis.kind));
        *kinds.entry(kind).or_insert(0usize) += 1;
    }

    // Timed passes; each call is timed too, for the slowest message (the
    // clock reads cost well under a microsecond).
    let mut slowest: Option<(&LabelledMessage, Duration)> = None;
    let mut passes = 0usize;
    let start = Instant::now();
    while passes < 3 || start.elapsed() < min_time {
        for message in corpus {
            let call = Instant::now();
            black_box(analyze(black_box(&message.bytes)));
            let t = call.elapsed();
            if slowest.is_none_or(|(_, s)| t > s) {
                slowest = Some((message, t));
            }
        }
        passes += 1;
    }
    let elapsed = secs(start.elapsed());
    let messages = passes * corpus.len();
    println!(
        "\nin process: analyze() over the corpus {passes} times in {elapsed:.2} s (after 1 warm-up pass)"
    );
    println!(
        "  {:>10.0} messages/s  {:>8.1} MB/s  mean {:.1} µs/message",
        messages as f64 / elapsed,
        mb(passes * total_bytes) / elapsed,
        elapsed * 1e6 / messages as f64
    );
    if let Some((message, t)) = slowest {
        println!(
            "  slowest single call: {:.1} µs  {} ({} bytes)",
            secs(t) * 1e6,
            message.file,
            message.bytes.len()
        );
    }
    println!("  kinds: {}", histogram(&kinds));
    Ok(())
}

// ---------------------------------------------------------------------------
// 2./3. Whole process

/// Split the file arguments into command lines of at most `MAX_ARG_BYTES`.
fn chunk_args<'a>(files: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut chunks: Vec<Vec<&str>> = vec![Vec::new()];
    let mut size = 0;
    for &file in files {
        let arg = file.len() + 1 + std::mem::size_of::<usize>(); // NUL and argv pointer
        let current = chunks.last_mut().expect("chunks is never empty");
        if !current.is_empty() && size + arg > MAX_ARG_BYTES {
            chunks.push(vec![file]);
            size = arg;
        } else {
            current.push(file);
            size += arg;
        }
    }
    chunks
}

/// The output of one complete run of a tool over all chunks.
struct ToolRun {
    /// Sum of the chunks' wall-clock times.
    wall: Duration,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Chunks that exited unsuccessfully.
    problems: Vec<String>,
}

fn run_tool(program: &Path, args: &[&str], chunks: &[Vec<&str>]) -> Result<ToolRun> {
    let mut run = ToolRun {
        wall: Duration::ZERO,
        stdout: Vec::new(),
        stderr: Vec::new(),
        problems: Vec::new(),
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let mut command = Command::new(program);
        command
            .args(args)
            .args(chunk)
            .current_dir(common::corpus_dir())
            .stdin(Stdio::null());
        let start = Instant::now();
        let Output {
            status,
            stdout,
            stderr,
        } = command
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        run.wall += start.elapsed();
        if !status.success() {
            let first = String::from_utf8_lossy(&stderr);
            run.problems.push(format!(
                "{} exited with {status} on chunk {} of {} ({})",
                program.display(),
                i + 1,
                chunks.len(),
                first.lines().next().unwrap_or("no stderr")
            ));
        }
        run.stdout.extend(stdout);
        run.stderr.extend(stderr);
    }
    Ok(run)
}

/// Run a tool `RUNS` times and keep the fastest run (its output too).
fn best_of(program: &Path, args: &[&str], chunks: &[Vec<&str>]) -> Result<ToolRun> {
    let mut best: Option<ToolRun> = None;
    for _ in 0..RUNS {
        let run = run_tool(program, args, chunks)?;
        if best.as_ref().is_none_or(|b| run.wall < b.wall) {
            best = Some(run);
        }
    }
    best.context("no runs")
}

/// Where the release `backsweep` binary is: the one Cargo built for this
/// bench, else next to this bench's own profile directory; built with
/// `cargo build --release --bin backsweep` if missing.
fn backsweep_binary(manifest_dir: &Path) -> Result<PathBuf> {
    if let Some(path) = option_env!("CARGO_BIN_EXE_backsweep").map(PathBuf::from) {
        if path.is_file() {
            return Ok(path);
        }
    }
    // This bench runs as <target>/<profile>/deps/analysis-<hash>.
    let exe = env::current_exe().context("cannot locate the bench executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected bench executable location")?;
    let path = profile_dir.join(format!("backsweep{}", env::consts::EXE_SUFFIX));
    if !path.is_file() {
        println!("(building the backsweep binary: cargo build --release --bin backsweep)");
        let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args(["build", "--release", "--bin", "backsweep"])
            .current_dir(manifest_dir)
            .status()
            .context("cannot run cargo build")?;
        if !status.success() {
            bail!("cargo build --release --bin backsweep failed ({status})");
        }
        if !path.is_file() {
            bail!("{} does not exist after cargo build", path.display());
        }
    }
    Ok(path)
}

/// The installed Sisimai version, or `None` if Perl or Sisimai is missing.
fn sisimai_version() -> Option<String> {
    let output = Command::new("perl")
        .args(["-MSisimai", "-e", "print Sisimai->version"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !version.is_empty()).then_some(version)
}

/// What `backsweep inspect --json` printed.
struct JsonLines {
    total: usize,
    json: usize,
    kinds: BTreeMap<String, usize>,
}

fn json_lines(stdout: &[u8]) -> JsonLines {
    let text = String::from_utf8_lossy(stdout);
    let mut lines = JsonLines {
        total: 0,
        json: 0,
        kinds: BTreeMap::new(),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        lines.total += 1;
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            lines.json += 1;
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("(no kind)");
            *lines.kinds.entry(kind.to_owned()).or_insert(0) += 1;
        }
    }
    lines
}

/// Print how many files Sisimai recognised, overall and per label kind.
///
/// A file counts as recognised if Sisimai produced at least one record for
/// it; it counts as autoreply if all its reasons are `vacation`, as feedback
/// if one is `feedback`, else as a bounce.
fn sisimai_summary(corpus: &[LabelledMessage], stdout: &[u8]) {
    let text = String::from_utf8_lossy(stdout);
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    let mut as_kind: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(file), Some(records), reasons) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let reasons = reasons.unwrap_or_default();
        let kind = if records.parse::<usize>().unwrap_or(0) == 0 {
            "none"
        } else if reasons.split(',').all(|r| r == "vacation") {
            "autoreply"
        } else if reasons.split(',').any(|r| r == "feedback") {
            "feedback"
        } else {
            "bounce"
        };
        found.insert(file, kind);
        *as_kind.entry(kind.to_owned()).or_insert(0) += 1;
    }
    let recognised = found.values().filter(|k| **k != "none").count();
    println!(
        "    sisimai printed {} of {} lines; recognised {recognised} files ({})",
        found.len(),
        corpus.len(),
        histogram(&as_kind)
    );
    let mut per_label: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for message in corpus {
        let entry = per_label.entry(message.kind.as_str()).or_default();
        entry.0 += 1;
        if found
            .get(message.file.as_str())
            .is_some_and(|k| *k != "none")
        {
            entry.1 += 1;
        }
    }
    let parts: Vec<String> = per_label
        .iter()
        .map(|(kind, (files, hit))| format!("{kind} {hit}/{files}"))
        .collect();
    println!(
        "    recognised by label kind: {} (sisimai parses bounces, feedback, vacation)",
        parts.join(", ")
    );
}

// ---------------------------------------------------------------------------
// Formatting

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn histogram(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "(none)".to_owned();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
