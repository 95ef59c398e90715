//! Robustness of [`backsweep::analysis::analyze`] against damaged and hostile
//! input: it must never panic and must stay fast, whatever the bytes.
//!
//! Two tests:
//!
//! - `corpus_mutations`: every labelled corpus file (see `tests/common`) is
//!   analysed as is, cut to its first byte, and in `BACKSWEEP_FUZZ_ROUNDS`
//!   (default 8) seeded mutations taken in rotation from [`ROTATION`]:
//!   truncation mid-header, at the end of the header, mid-boundary-line and
//!   anywhere; random byte flips; deleted and duplicated line ranges;
//!   LF→CR, LF→CRLF and CRLF→LF; inserted NUL and 0xFF runs; and a long
//!   (4–64 KiB) header line. Every 50th file also gets a 1 MiB header line.
//!   The empty message is analysed once.
//! - `synthetic_messages`: generated pathological messages — 200 and 2000
//!   nesting levels of multipart, of message/rfc822 and of bounces of
//!   bounces, 10 000 sibling parts, 10 000 DSN recipients, 100 000 header
//!   fields, megabyte lines, and 50 MiB messages of base64 lines (a plain
//!   one and a bounce returning it). Each runs on its own thread named after
//!   the case with a 2 MiB stack (like a Tokio worker), so that a stack
//!   overflow — which aborts the process and cannot be caught — names it.
//!
//! Every call runs under `catch_unwind`; panics are collected with the file
//! and mutation, and the test fails listing all of them. Every call must also
//! finish within [`time_bound`] of its thread's CPU time (5 s plus 0.5 s per
//! MiB of input in a debug build, a tenth of that in release); the slowest
//! case is printed. If a single call runs for more than ten times its bound
//! of wall-clock time, a watchdog prints the case and aborts the test
//! process, so that a hang names its input.
//! With `-- --nocapture` each test prints the time spent per kind of case and
//! its slowest call; with `RUST_BACKTRACE=1` a failure shows a backtrace per
//! panic location.
//!
//! The mutations are deterministic: set by `BACKSWEEP_FUZZ_SEED` (decimal or
//! `0x` hex; a fixed default) together with the file and round. Run more with
//! e.g. `BACKSWEEP_FUZZ_ROUNDS=100 cargo test --release --test robustness -- --nocapture`.

mod common;

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::env;
use std::hint::black_box;
use std::io::Write;
use std::panic::{self, PanicHookInfo};
use std::sync::{Mutex, Once};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use backsweep::analysis::analyze;
use common::{labelled_corpus, LabelledMessage};

/// Default seed of all mutations (override with `BACKSWEEP_FUZZ_SEED`).
const DEFAULT_SEED: u64 = 0xB0C5_5EE9_2024_0001;
/// Default mutations per corpus file (override with `BACKSWEEP_FUZZ_ROUNDS`).
const DEFAULT_ROUNDS: usize = 8;
/// Every this many files, a corpus file also gets a 1 MiB header line.
const HUGE_HEADER_EVERY: usize = 50;
const MIB: usize = 1 << 20;
/// Most panics (and slow calls) listed one by one in a failure message.
const MAX_LISTED: usize = 40;

// ---------------------------------------------------------------------------
// Settings

fn rounds() -> usize {
    match env::var("BACKSWEEP_FUZZ_ROUNDS") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("BACKSWEEP_FUZZ_ROUNDS={v:?} is not a number")),
        Err(_) => DEFAULT_ROUNDS,
    }
}

fn seed() -> u64 {
    match env::var("BACKSWEEP_FUZZ_SEED") {
        Ok(v) => {
            let t = v.trim();
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("BACKSWEEP_FUZZ_SEED={v:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// The longest a single `analyze` call on `len` bytes may take: generous, to
/// catch super-linear behaviour and hangs, not to measure speed.
fn time_bound(len: usize) -> Duration {
    let mib = len as f64 / MIB as f64;
    if cfg!(debug_assertions) {
        Duration::from_secs_f64(5.0 + 0.5 * mib)
    } else {
        Duration::from_secs_f64(0.5 + 0.05 * mib)
    }
}

// ---------------------------------------------------------------------------
// A small deterministic PRNG: xorshift64*, seeded through splitmix64.

struct Rng(u64);

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for one case, independent of every other case.
    fn for_case(seed: u64, file: usize, round: usize) -> Rng {
        let mixed = splitmix64(seed ^ splitmix64(file as u64) ^ splitmix64(!(round as u64)));
        Rng(mixed | 1) // xorshift must not start at 0
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

// ---------------------------------------------------------------------------
// Running one case: catch panics, time it, watch for hangs.

thread_local! {
    /// Set while `analyze` runs under `run_case` on this thread.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// The panic message and location captured by the hook, and the
    /// backtrace if `RUST_BACKTRACE` asks for one.
    static LAST_PANIC: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// The `analyze` calls running now, for the watchdog: thread, case, deadline.
static RUNNING: Mutex<Vec<(ThreadId, String, Instant)>> = Mutex::new(Vec::new());

/// Install (once per process) a panic hook that records panics inside
/// `run_case` instead of printing them, and leaves every other panic to the
/// previous hook; and start the watchdog.
fn install_hooks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if CAPTURING.with(Cell::get) {
                let backtrace = Backtrace::capture();
                let backtrace = (backtrace.status() == BacktraceStatus::Captured)
                    .then(|| backtrace.to_string());
                LAST_PANIC.with(|p| *p.borrow_mut() = Some((info.to_string(), backtrace)));
            } else {
                previous(info);
            }
        }));
        thread::Builder::new()
            .name("robustness-watchdog".into())
            .spawn(watchdog)
            .expect("cannot start the watchdog thread");
    });
}

fn watchdog() {
    loop {
        thread::sleep(Duration::from_millis(250));
        let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((_, case, _)) = running.iter().find(|(_, _, deadline)| now > *deadline) {
            // Written straight to stderr: the test harness's output capture
            // would be lost with the abort.
            let _ = writeln!(
                std::io::stderr(),
                "\nrobustness: analyze has been running for more than 10x its time bound on \
                 {case}; it probably hangs. Aborting."
            );
            std::process::abort();
        }
    }
}

/// A caught panic.
struct Panic {
    /// "panicked at FILE:LINE:COL:\nMESSAGE".
    message: String,
    /// Only with `RUST_BACKTRACE=1`.
    backtrace: Option<String>,
}

/// The CPU time this thread has used: what a call's time bound is checked
/// against, so that a loaded machine (the other tests of this file run at
/// the same time) does not make a linear-time call look super-linear.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `t` is; on failure
    // (it cannot fail for this clock) `t` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Elsewhere, wall time since the first call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The result of one `analyze` call.
struct Outcome {
    elapsed: Duration,
    panic: Option<Panic>,
}

fn run_case(label: &str, input: &[u8]) -> Outcome {
    let me = thread::current().id();
    // The watchdog's limit is wall time, for hangs: generous, as another
    // test (or program) may have the CPUs meanwhile.
    let deadline = Instant::now() + 10 * time_bound(input.len());
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((me, label.to_owned(), deadline));
    CAPTURING.with(|c| c.set(true));
    let start = thread_cpu_time();
    let result = panic::catch_unwind(|| {
        black_box(analyze(black_box(input)));
    });
    let elapsed = thread_cpu_time().saturating_sub(start);
    CAPTURING.with(|c| c.set(false));
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(id, _, _)| *id != me);
    let panic = result.err().map(|payload| {
        let (message, backtrace) =
            LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| {
                    let text = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic with a non-string payload".to_owned());
                    (text, None)
                });
        Panic { message, backtrace }
    });
    Outcome { elapsed, panic }
}

/// What a series of cases found.
#[derive(Default)]
struct Report {
    cases: usize,
    bytes: usize,
    busy: Duration,
    /// (case, size, time) of the slowest call.
    slowest: Option<(String, usize, Duration)>,
    /// (case, panic).
    panics: Vec<(String, Panic)>,
    /// (case, size, time, bound).
    too_slow: Vec<(String, usize, Duration, Duration)>,
    /// Per kind of case: (cases, bytes, time).
    by_kind: BTreeMap<&'static str, (usize, usize, Duration)>,
}

impl Report {
    fn run(&mut self, kind: &'static str, label: String, input: &[u8]) {
        let outcome = run_case(&label, input);
        self.record(kind, label, input.len(), outcome);
    }

    fn record(&mut self, kind: &'static str, label: String, len: usize, outcome: Outcome) {
        let entry = self.by_kind.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += len;
        entry.2 += outcome.elapsed;
        self.cases += 1;
        self.bytes += len;
        self.busy += outcome.elapsed;
        let bound = time_bound(len);
        if outcome.elapsed > bound {
            self.too_slow
                .push((label.clone(), len, outcome.elapsed, bound));
        }
        if self
            .slowest
            .as_ref()
            .is_none_or(|(_, _, t)| outcome.elapsed > *t)
        {
            self.slowest = Some((label.clone(), len, outcome.elapsed));
        }
        if let Some(message) = outcome.panic {
            self.panics.push((label, message));
        }
    }

    fn merge(&mut self, other: Report) {
        self.cases += other.cases;
        self.bytes += other.bytes;
        self.busy += other.busy;
        if let Some((label, len, t)) = other.slowest {
            if self.slowest.as_ref().is_none_or(|(_, _, s)| t > *s) {
                self.slowest = Some((label, len, t));
            }
        }
        self.panics.extend(other.panics);
        self.too_slow.extend(other.too_slow);
        for (kind, (cases, bytes, time)) in other.by_kind {
            let entry = self.by_kind.entry(kind).or_default();
            entry.0 += cases;
            entry.1 += bytes;
            entry.2 += time;
        }
    }

    /// Print the summary, then fail on any panic or slow call.
    fn check(self, what: &str, wall: Duration) {
        println!(
            "{what}: {} cases, {:.1} MiB analysed in {:.2?} (wall {:.2?})",
            self.cases,
            self.bytes as f64 / MIB as f64,
            self.busy,
            wall
        );
        for (kind, (cases, bytes, time)) in &self.by_kind {
            println!(
                "  {kind:<44} {cases:>6} cases {:>9.2} MiB {:>10.2?}  mean {:>9.2?}",
                *bytes as f64 / MIB as f64,
                time,
                *time / (*cases).max(1) as u32
            );
        }
        if let Some((label, len, t)) = &self.slowest {
            println!(
                "{what}: slowest call {t:.2?} on {label} ({len} bytes; bound {:.2?})",
                time_bound(*len)
            );
        }
        let mut panics = self.panics;
        let mut too_slow = self.too_slow;
        panics.sort_by(|a, b| a.0.cmp(&b.0));
        too_slow.sort_by(|a, b| a.0.cmp(&b.0));
        let mut problems = String::new();
        if !panics.is_empty() {
            // Group by panic location (the first line of the hook's message),
            // with the first case's backtrace if there is one.
            let mut places: BTreeMap<&str, (usize, &Panic)> = BTreeMap::new();
            for (_, panic) in &panics {
                let place = panic.message.lines().next().unwrap_or("");
                places.entry(place).or_insert((0, panic)).0 += 1;
            }
            problems.push_str("\n  panic locations:");
            for (place, (n, first)) in &places {
                problems.push_str(&format!("\n    {n:>6} x {place}"));
                if let Some(backtrace) = &first.backtrace {
                    problems.push_str(&format!("\n{}", trim_backtrace(backtrace)));
                }
            }
            if places.values().all(|(_, p)| p.backtrace.is_none()) {
                problems.push_str("\n  (set RUST_BACKTRACE=1 for a backtrace of each location)");
            }
        }
        for (label, panic) in panics.iter().take(MAX_LISTED) {
            problems.push_str(&format!(
                "\n  PANIC    {label}\n           {}",
                indent(&panic.message)
            ));
        }
        if panics.len() > MAX_LISTED {
            problems.push_str(&format!(
                "\n  ... and {} more panics",
                panics.len() - MAX_LISTED
            ));
        }
        for (label, len, t, bound) in too_slow.iter().take(MAX_LISTED) {
            problems.push_str(&format!(
                "\n  TOO SLOW {label}: {t:.2?} for {len} bytes (bound {bound:.2?})"
            ));
        }
        if too_slow.len() > MAX_LISTED {
            problems.push_str(&format!(
                "\n  ... and {} more too slow",
                too_slow.len() - MAX_LISTED
            ));
        }
        assert!(
            problems.is_empty(),
            "{what}: analyze panicked in {} case(s) and was too slow in {} case(s):{problems}",
            panics.len(),
            too_slow.len()
        );
    }
}

/// The frames of a panic backtrace between the panic machinery and `run_case`.
fn trim_backtrace(backtrace: &str) -> String {
    let lines: Vec<&str> = backtrace.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.contains("robustness::run_case"))
        .unwrap_or(lines.len());
    let is_frame = |l: &&str| !l.trim_start().starts_with("at ");
    let start = lines[..end]
        .iter()
        .rposition(|l| {
            is_frame(l) && (l.contains("core::panicking::") || l.contains("rust_begin_unwind"))
        })
        .map_or(0, |i| i + 1);
    let start = start
        + lines[start..end]
            .iter()
            .take_while(|l| !is_frame(l))
            .count();
    lines[start..end].join("\n")
}

fn indent(message: &str) -> String {
    message.replace('\n', "\n           ")
}

// ---------------------------------------------------------------------------
// Mutations of corpus files

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    TruncateInHeader,
    TruncateAtHeaderEnd,
    TruncateInBoundary,
    TruncateAnywhere,
    FlipBytes,
    DeleteLines,
    DuplicateLines,
    LfToCr,
    LfToCrlf,
    CrlfToLf,
    InsertNul,
    InsertFf,
    LongHeaderLine,
}

impl Mutation {
    fn name(self) -> &'static str {
        match self {
            Mutation::TruncateInHeader => "truncate mid-header",
            Mutation::TruncateAtHeaderEnd => "truncate at header end",
            Mutation::TruncateInBoundary => "truncate mid-boundary",
            Mutation::TruncateAnywhere => "truncate anywhere",
            Mutation::FlipBytes => "flip bytes",
            Mutation::DeleteLines => "delete lines",
            Mutation::DuplicateLines => "duplicate lines",
            Mutation::LfToCr => "LF->CR",
            Mutation::LfToCrlf => "LF->CRLF",
            Mutation::CrlfToLf => "CRLF->LF",
            Mutation::InsertNul => "insert NUL runs",
            Mutation::InsertFf => "insert 0xFF runs",
            Mutation::LongHeaderLine => "long header line (4-64 KiB)",
        }
    }
}

/// The mutations, applied in rotation: file `i` in round `r` gets
/// `ROTATION[(i + r) % ROTATION.len()]`, so every file gets different ones
/// and every mutation is applied to a spread of files.
const ROTATION: [Mutation; 13] = [
    Mutation::TruncateInHeader,
    Mutation::FlipBytes,
    Mutation::LfToCrlf,
    Mutation::DeleteLines,
    Mutation::InsertNul,
    Mutation::TruncateInBoundary,
    Mutation::CrlfToLf,
    Mutation::DuplicateLines,
    Mutation::LongHeaderLine,
    Mutation::TruncateAnywhere,
    Mutation::InsertFf,
    Mutation::LfToCr,
    Mutation::TruncateAtHeaderEnd,
];

/// Offset of the blank line that ends the header (LF, CRLF or CR line
/// endings), or the length of the input if there is none.
fn header_end(b: &[u8]) -> usize {
    for i in 0..b.len() {
        let rest = &b[i + 1..];
        let blank_follows = match b[i] {
            b'\n' => rest.starts_with(b"\n") || rest.starts_with(b"\r\n"),
            b'\r' => rest.starts_with(b"\r"),
            _ => false,
        };
        if blank_follows {
            return i + 1;
        }
    }
    b.len()
}

/// Start offsets of the lines (after LF, or after a CR not followed by LF),
/// always beginning with 0.
fn line_starts(b: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, &c) in b.iter().enumerate() {
        if i + 1 < b.len() && (c == b'\n' || (c == b'\r' && b[i + 1] != b'\n')) {
            starts.push(i + 1);
        }
    }
    starts
}

/// A random range of whole lines `(first line, end offset)`; sometimes large.
fn line_range(starts: &[usize], len: usize, rng: &mut Rng) -> (usize, usize) {
    let first = rng.below(starts.len());
    let max_lines = starts.len() - first;
    let count = if rng.chance(4) {
        rng.between(1, max_lines)
    } else {
        rng.between(1, max_lines.min(16))
    };
    let end = starts.get(first + count).copied().unwrap_or(len);
    (first, end)
}

fn replace_all(b: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 16);
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Insert `count` runs of `byte` (1–16 long), half of them in the header.
fn insert_runs(input: &[u8], byte: u8, rng: &mut Rng) -> (Vec<u8>, String) {
    let hdr = header_end(input);
    let count = rng.between(1, 8);
    let mut out = input.to_vec();
    let mut at = Vec::new();
    for _ in 0..count {
        let limit = if rng.chance(2) { hdr } else { out.len() };
        let pos = rng.below(limit + 1).min(out.len());
        let run = rng.between(1, 16);
        out.splice(pos..pos, std::iter::repeat_n(byte, run));
        at.push(format!("{run}@{pos}"));
    }
    (
        out,
        format!("insert 0x{byte:02X} runs (len@offset) {}", at.join(" ")),
    )
}

/// A header line of about `len` bytes, of one of several shapes that parsers
/// treat differently, ending with CRLF.
fn long_header(len: usize, rng: &mut Rng) -> (Vec<u8>, &'static str) {
    let (name, unit, shape): (&str, &str, _) = match rng.below(5) {
        0 => ("X-Backsweep-Long: ", "a", "unfolded letters"),
        1 => ("To: ", "user@example.com, ", "address list"),
        2 => ("Subject: ", "=?UTF-8?B?w6TDtsO8?= ", "encoded words"),
        3 => (
            "References: ",
            "<id.0123456789@example.com> ",
            "message-id list",
        ),
        _ => (
            "Content-Type: multipart/mixed; boundary=",
            "b",
            "huge boundary",
        ),
    };
    let mut line = name.as_bytes().to_vec();
    while line.len() < len {
        line.extend_from_slice(unit.as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    (line, shape)
}

/// Apply `mutation` to `input`; `whole` asks line-ending conversions to
/// cover the whole message (otherwise a random range). Returns the mutated
/// bytes and a description for reports.
fn mutate(mutation: Mutation, input: &[u8], rng: &mut Rng, whole: bool) -> (Vec<u8>, String) {
    let len = input.len();
    match mutation {
        Mutation::TruncateInHeader => {
            let at = rng.below(header_end(input).max(1));
            (
                input[..at].to_vec(),
                format!("truncated mid-header at {at}"),
            )
        }
        Mutation::TruncateAtHeaderEnd => {
            let at = header_end(input);
            (
                input[..at].to_vec(),
                format!("truncated at header end {at}"),
            )
        }
        Mutation::TruncateInBoundary => {
            let body = header_end(input);
            let starts = line_starts(input);
            let boundaries: Vec<usize> = starts
                .iter()
                .copied()
                .filter(|&s| s >= body && input[s..].starts_with(b"--") && input.len() > s + 3)
                .collect();
            if boundaries.is_empty() {
                let at = rng.below(len + 1);
                (
                    input[..at].to_vec(),
                    format!("no boundary line; truncated at {at}"),
                )
            } else {
                let start = boundaries[rng.below(boundaries.len())];
                let line_len = input[start..]
                    .iter()
                    .position(|&c| c == b'\n' || c == b'\r')
                    .unwrap_or(len - start);
                let at = start + rng.between(1, line_len.max(2) - 1);
                (
                    input[..at].to_vec(),
                    format!("truncated mid-boundary-line at {at}"),
                )
            }
        }
        Mutation::TruncateAnywhere => {
            let at = rng.below(len + 1);
            (input[..at].to_vec(), format!("truncated at {at}"))
        }
        Mutation::FlipBytes => {
            let mut out = input.to_vec();
            let mut at = Vec::new();
            if !out.is_empty() {
                for _ in 0..rng.between(1, 16) {
                    let pos = rng.below(out.len());
                    out[pos] ^= rng.between(1, 255) as u8;
                    at.push(pos.to_string());
                }
            }
            (out, format!("bytes flipped at {}", at.join(",")))
        }
        Mutation::DeleteLines => {
            let starts = line_starts(input);
            let (first, end) = line_range(&starts, len, rng);
            let mut out = input.to_vec();
            out.drain(starts[first]..end);
            (
                out,
                format!("deleted bytes {}..{end} (whole lines)", starts[first]),
            )
        }
        Mutation::DuplicateLines => {
            let starts = line_starts(input);
            let (first, end) = line_range(&starts, len, rng);
            let copy = input[starts[first]..end].to_vec();
            let to = starts[rng.below(starts.len())];
            let mut out = input.to_vec();
            out.splice(to..to, copy);
            (
                out,
                format!("lines {}..{end} duplicated at {to}", starts[first]),
            )
        }
        Mutation::LfToCr | Mutation::LfToCrlf | Mutation::CrlfToLf => {
            let (from, to, name): (&[u8], &[u8], _) = match mutation {
                Mutation::LfToCr => (b"\n", b"\r", "LF->CR"),
                Mutation::LfToCrlf => (b"\n", b"\r\n", "LF->CRLF"),
                _ => (b"\r\n", b"\n", "CRLF->LF"),
            };
            let (a, b) = if whole {
                (0, len)
            } else {
                let x = rng.below(len + 1);
                let y = rng.below(len + 1);
                (x.min(y), x.max(y))
            };
            let mut out = input[..a].to_vec();
            out.extend(replace_all(&input[a..b], from, to));
            out.extend_from_slice(&input[b..]);
            (out, format!("{name} in bytes {a}..{b}"))
        }
        Mutation::InsertNul => insert_runs(input, 0x00, rng),
        Mutation::InsertFf => insert_runs(input, 0xFF, rng),
        Mutation::LongHeaderLine => {
            let size = rng.between(4 << 10, 64 << 10);
            inject_header(input, size, rng)
        }
    }
}

/// Insert a header line of about `size` bytes at a random header line.
fn inject_header(input: &[u8], size: usize, rng: &mut Rng) -> (Vec<u8>, String) {
    let hdr = header_end(input);
    let starts: Vec<usize> = line_starts(input)
        .into_iter()
        .filter(|&s| s <= hdr)
        .collect();
    let at = starts[rng.below(starts.len())];
    let (line, shape) = long_header(size, rng);
    let mut out = input.to_vec();
    out.splice(at..at, line);
    (out, format!("{size}-byte header line ({shape}) at {at}"))
}

/// Analyse one corpus file as is, cut to one byte, and in `rounds` mutations.
fn run_file(index: usize, msg: &LabelledMessage, rounds: usize, seed: u64, report: &mut Report) {
    let bytes = &msg.bytes;
    report.run("original", format!("{} [original]", msg.file), bytes);
    report.run(
        "truncated to 1 byte",
        format!("{} [truncated to 1 byte]", msg.file),
        &bytes[..bytes.len().min(1)],
    );
    for round in 0..rounds {
        let mutation = ROTATION[(index + round) % ROTATION.len()];
        let mut rng = Rng::for_case(seed, index, round);
        let whole = round < ROTATION.len();
        let (mutated, detail) = mutate(mutation, bytes, &mut rng, whole);
        report.run(
            mutation.name(),
            format!("{} [round {round}: {detail}]", msg.file),
            &mutated,
        );
    }
    if index.is_multiple_of(HUGE_HEADER_EVERY) {
        let mut rng = Rng::for_case(seed, index, usize::MAX);
        let (mutated, detail) = inject_header(bytes, MIB, &mut rng);
        report.run(
            "1 MiB header line",
            format!("{} [{detail}]", msg.file),
            &mutated,
        );
    }
}

#[test]
fn corpus_mutations() {
    install_hooks();
    let corpus = labelled_corpus();
    let (rounds, seed) = (rounds(), seed());
    let workers = thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8));
    println!(
        "corpus: {} files, {rounds} mutation rounds each, seed {seed:#x}, {workers} threads",
        corpus.len()
    );
    let start = Instant::now();
    let mut report = Report::default();
    report.run("empty message", "[empty message]".to_owned(), b"");
    thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let corpus = &corpus;
                thread::Builder::new()
                    .name(format!("robustness-corpus-{worker}"))
                    .spawn_scoped(scope, move || {
                        let mut report = Report::default();
                        for (index, msg) in corpus.iter().enumerate().skip(worker).step_by(workers)
                        {
                            run_file(index, msg, rounds, seed, &mut report);
                        }
                        report
                    })
                    .expect("cannot start a worker thread")
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(r) => report.merge(r),
                Err(_) => panic!("a worker thread panicked outside analyze (a bug in this test)"),
            }
        }
    });
    report.check("corpus mutations", start.elapsed());
}

// ---------------------------------------------------------------------------
// Synthetic pathological messages

const HEAD: &str = "From: Mail Delivery System <mailer-daemon@example.net>\r\n\
                    To: someone@example.com\r\n\
                    Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
                    MIME-Version: 1.0\r\n";

/// A multipart/report DSN (`HEAD` not included) whose message/rfc822 part
/// returns whatever goes between the two halves returned here.
fn dsn(level: usize) -> (String, String) {
    let before = format!(
        "Subject: Undelivered Mail Returned to Sender ({level})\r\n\
         Message-ID: <dsn-{level}@example.net>\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"r{level}\"\r\n\
         \r\n\
         --r{level}\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         Your message could not be delivered.\r\n\
         --r{level}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx{level}.example.net\r\n\
         \r\n\
         Final-Recipient: rfc822; user{level}@example.org\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         \r\n\
         --r{level}\r\n\
         Content-Type: message/rfc822\r\n\
         \r\n"
    );
    (before, format!("\r\n--r{level}--\r\n"))
}

fn nested_multipart(levels: usize, terminated: bool) -> Vec<u8> {
    let mut m = format!("{HEAD}Subject: nested multipart\r\n");
    for i in 0..levels {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    m.push_str("Content-Type: text/plain\r\n\r\nthe innermost part\r\n");
    if terminated {
        for i in (0..levels).rev() {
            m.push_str(&format!("--b{i}--\r\n"));
        }
    }
    m.into_bytes()
}

fn nested_rfc822(levels: usize) -> Vec<u8> {
    let mut m = String::from(HEAD);
    for i in 0..levels {
        m.push_str(&format!(
            "Subject: level {i}\r\nMessage-ID: <level-{i}@example.com>\r\n\
             Content-Type: message/rfc822\r\n\r\nFrom: someone@example.com\r\n"
        ));
    }
    m.push_str("Subject: innermost\r\nMessage-ID: <innermost@example.com>\r\n\r\nhello\r\n");
    m.into_bytes()
}

/// A bounce of a bounce of ... of an ordinary message.
fn nested_bounces(levels: usize) -> Vec<u8> {
    let mut m = String::new();
    for level in (0..levels).rev() {
        m.push_str(HEAD);
        m.push_str(&dsn(level).0);
    }
    m.push_str(
        "From: someone@example.com\r\nSubject: original\r\n\
         Message-ID: <original@example.com>\r\n\r\nhello\r\n",
    );
    for level in 0..levels {
        m.push_str(&dsn(level).1);
    }
    m.into_bytes()
}

fn many_parts(parts: usize) -> Vec<u8> {
    let mut m = format!(
        "{HEAD}Subject: many parts\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n"
    );
    for i in 0..parts {
        m.push_str(&format!(
            "--p\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    m.push_str("--p--\r\n");
    m.into_bytes()
}

fn many_recipients(count: usize) -> Vec<u8> {
    let mut fields = String::from("Reporting-MTA: dns; mx.example.net\r\n");
    for i in 0..count {
        fields.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; user{i}@example.org\r\n\
             Original-Recipient: rfc822; user{i}@example.org\r\n\
             Action: failed\r\nStatus: 5.1.1\r\n"
        ));
    }
    format!(
        "{HEAD}Subject: Undelivered Mail\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n\
         --r\r\nContent-Type: message/delivery-status\r\n\r\n{fields}\r\n--r--\r\n"
    )
    .into_bytes()
}

fn many_header_fields(count: usize) -> Vec<u8> {
    let mut m = String::from(HEAD);
    for i in 0..count {
        m.push_str(&format!(
            "Received: from h{i}.example.net by mx.example.net; x\r\n"
        ));
    }
    m.push_str("Subject: many fields\r\n\r\nhello\r\n");
    m.into_bytes()
}

fn long_subject(len: usize) -> Vec<u8> {
    let mut m = format!("{HEAD}Subject: ").into_bytes();
    m.resize(m.len() + len, b'x');
    m.extend_from_slice(b"\r\n\r\nhello\r\n");
    m
}

fn long_body_line(len: usize) -> Vec<u8> {
    let mut m = format!("{HEAD}Subject: long line\r\n\r\n").into_bytes();
    m.resize(m.len() + len, b'y');
    m
}

fn quoted_printable_soft_breaks(len: usize) -> Vec<u8> {
    let mut m = format!(
        "{HEAD}Subject: soft breaks\r\nContent-Type: text/plain\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    .into_bytes();
    while m.len() < len {
        m.extend_from_slice(b"=\r\n");
    }
    m
}

/// About `size` bytes of 76-character base64 lines.
fn base64_lines(size: usize) -> String {
    const LINE: &str =
        "QmFja3N3ZWVwIHJvYnVzdG5lc3MgdGVzdDogcmVwZWF0ZWQgYmFzZTY0IGxpbmVzLCA1MCBNaUIu\r\n";
    LINE.repeat(size / LINE.len() + 1)
}

fn attachment_message(size: usize) -> String {
    format!(
        "From: someone@example.com\r\nTo: other@example.org\r\nSubject: big attachment\r\n\
         Message-ID: <big@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"a\"\r\n\r\n\
         --a\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n\
         --a\r\nContent-Type: application/octet-stream; name=\"big.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}--a--\r\n",
        base64_lines(size)
    )
}

fn big_plain(size: usize) -> Vec<u8> {
    attachment_message(size).into_bytes()
}

fn big_bounce(size: usize) -> Vec<u8> {
    let (before, after) = dsn(0);
    format!("{HEAD}{before}{}{after}", attachment_message(size)).into_bytes()
}

/// Builds the input of a synthetic case.
type Generator = fn() -> Vec<u8>;

/// The synthetic cases: name and generator.
fn synthetic_cases() -> Vec<(&'static str, Generator)> {
    vec![
        ("nested multipart, 200 levels", || {
            nested_multipart(200, true)
        }),
        ("nested multipart, 200 levels, unterminated", || {
            nested_multipart(200, false)
        }),
        ("nested multipart, 2000 levels", || {
            nested_multipart(2000, true)
        }),
        ("nested message/rfc822, 200 levels", || nested_rfc822(200)),
        ("nested message/rfc822, 2000 levels", || nested_rfc822(2000)),
        ("nested bounces, 200 levels", || nested_bounces(200)),
        ("nested bounces, 2000 levels", || nested_bounces(2000)),
        ("10000 sibling parts", || many_parts(10_000)),
        ("DSN with 10000 recipients", || many_recipients(10_000)),
        ("100000 header fields", || many_header_fields(100_000)),
        ("1 MiB subject line", || long_subject(MIB)),
        ("1 MiB body line without newline", || long_body_line(MIB)),
        ("1 MiB of quoted-printable soft line breaks", || {
            quoted_printable_soft_breaks(MIB)
        }),
        ("50 MiB message of base64 lines", || big_plain(50 * MIB)),
        ("50 MiB bounce returning base64 lines", || {
            big_bounce(50 * MIB)
        }),
    ]
}

#[test]
fn synthetic_messages() {
    install_hooks();
    let start = Instant::now();
    let mut report = Report::default();
    for (name, generate) in synthetic_cases() {
        // A fresh 2 MiB thread per case: a stack overflow aborts the process
        // with "thread '<name>' has overflowed its stack", naming the case.
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .stack_size(2 * MIB)
            .spawn(move || {
                let input = generate();
                (input.len(), run_case(name, &input))
            })
            .expect("cannot start a case thread");
        match handle.join() {
            Ok((len, outcome)) => report.record(name, name.to_owned(), len, outcome),
            Err(_) => {
                panic!("{name}: the case thread panicked outside analyze (a bug in this test)")
            }
        }
    }
    report.check("synthetic messages", start.elapsed());
}

// ---------------------------------------------------------------------------
// Self-checks of the helpers above

#[test]
fn helpers_behave() {
    assert_eq!(header_end(b"A: b\n\nbody"), 5);
    assert_eq!(header_end(b"A: b\r\n\r\nbody"), 6);
    assert_eq!(header_end(b"A: b\r\rbody"), 5);
    assert_eq!(header_end(b"A: b\nC: d\n"), 10);
    assert_eq!(line_starts(b"a\nb\r\nc\rd"), vec![0, 2, 5, 7]);
    assert_eq!(replace_all(b"a\r\nb\n", b"\r\n", b"\n"), b"a\nb\n");
    let mut a = Rng::for_case(1, 2, 3);
    let mut b = Rng::for_case(1, 2, 3);
    let mut c = Rng::for_case(1, 2, 4);
    let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
    assert_eq!(x, y);
    assert_ne!(x, z);
    // Every mutation copes with the smallest inputs.
    for input in [&b""[..], b"x", b"\n", b"\r\n\r\n", b"--"] {
        for (round, &m) in ROTATION.iter().enumerate() {
            let mut rng = Rng::for_case(7, 0, round);
            let _ = mutate(m, input, &mut rng, round % 2 == 0);
        }
    }
}
