//! End-to-end sweep benchmark: numbers, not a pass/fail test.
//!
//! Run with
//!
//! ```text
//! cargo bench --bench sweep
//! ```
//!
//! (needs Debian's `dovecot-imapd`, `openssl` and `imapfilter`; the run itself takes about
//! half a minute on 2 cores, plus the release build).
//!
//! What it does, in one run:
//!
//! 1. Starts a private Dovecot on 127.0.0.1 ([`backsweep::testserver::TestServer`]) with
//!    three users holding the **same** mailbox (the files are written once for `bench` and
//!    hard-linked into `bench2` and `bench3`, so every tool starts from a cold, untouched
//!    copy): an INBOX of 50,000 messages, 4–20 KB each (sizes uniform from a seeded
//!    xorshift PRNG), 5 % of them bounces — half genuine (the enclosed original's
//!    Message-ID is one of the user's Sent messages), half backscatter (original From
//!    forged as the user, Message-ID not in Sent, dated after the Sent folder starts) — in
//!    Postfix (`multipart/report` with `message/rfc822` or `text/rfc822-headers`), Exim and
//!    qmail styles; plus 2,000 messages in `Sent`, all older than the bounces.
//! 2. Puts a byte-counting TCP proxy in front of Dovecot's implicit-TLS port (TLS passes
//!    through unchanged; server→client bytes are counted) and measures, through it:
//!    - the **header floor**: one connection, `UID FETCH 1:* (BODY.PEEK[HEADER])` of the
//!      whole INBOX (user `bench3`, cold; then once more warm, for reference);
//!    - **backsweep's first sweep**: the binary built by cargo for this bench
//!      (`target/release/backsweep --config CFG sweep`, user `bench`), wall time and bytes;
//!    - an **incremental sweep** right after, with nothing new (5 runs, median; after a 3 s
//!      pause, because Dovecot rescans a Maildir directory changed less than ~1 s ago on
//!      every access), next to the protocol floor of such a check (login, SELECT INBOX,
//!      logout) and the process start (`backsweep --version`). The first run after the
//!      first sweep usually shows as the max: Dovecot spends ~0.2 s on the first SELECT of
//!      INBOX after the 1,250 moves, whichever client sends it;
//!    - **imapfilter** (Debian's) running `contrib/bench/imapfilter-bounces.lua`: a
//!      header-search move of the bounces to `FilterQuarantine` (user `bench2`).
//! 3. Logs in after each tool and classifies what was moved by the Message-IDs it generated:
//!    backscatter moved, genuine bounces and ordinary mail wrongly moved, messages lost or
//!    duplicated, `\Seen` flags changed.
//! 4. Prints a summary table with the ratios DESIGN.md's targets are about (first sweep ÷
//!    header floor, backsweep ÷ imapfilter, incremental sweep in ms, bytes as % of the
//!    mailbox).
//!
//! If `backsweep sweep` fails (for instance before the command exists) the bench says
//! `backsweep sweep failed: ...`, still runs the other measurements, and exits 1 at the
//! end. A missing `imapfilter` is an error (the install command is printed), never a skip.
//!
//! Environment knobs (for development; the defaults are the benchmark):
//! `BENCH_INBOX` (50000), `BENCH_SENT` (2000), `BENCH_SEED`, `BENCH_KEEP=1` (keep the
//! work directory with the config, state and every tool's output, and print its path),
//! `BENCH_BACKSWEEP_BIN` (another backsweep binary, e.g. to compare two builds),
//! `BENCH_IMAPFILTER` (another imapfilter), `BENCH_COMPRESS=off` (a server that does not
//! offer COMPRESS=DEFLATE; by default it does, like Gmail, Cyrus and many Dovecot hosts),
//! `BENCH_SEARCH_NET` (`auto`, `on` or `off`: the
//! account's `search_net` key; unset: the default), `BENCH_CONNECTIONS` (`1` or `2`: the
//! account's `connections` key; unset: the default). `BACKSWEEP_LOG` reaches backsweep unchanged.

use anyhow::{anyhow, bail, Context, Result};
use backsweep::testserver::{TestServer, TestServerOptions};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// User swept by backsweep.
const USER_SWEEP: &str = "bench";
/// User filtered by imapfilter (same mailbox).
const USER_FILTER: &str = "bench2";
/// User whose headers are fetched for the floor (same mailbox).
const USER_FLOOR: &str = "bench3";
const PASSWORD: &str = "benchpw";
/// The account's own address (From of sent mail and of the forged originals).
const ADDRESS: &str = "bench@example.com";
const DISPLAY_NAME: &str = "Bench User";
/// Where the user's mail leaves (Received of genuine originals).
const USER_RELAY: &str = "smtp.example.com";
/// The user's inbound MX (Received of everything delivered).
const USER_MX: &str = "mx.example.com";

const DEFAULT_INBOX: usize = 50_000;
const DEFAULT_SENT: usize = 2_000;
const DEFAULT_SEED: u64 = 0x5eed_bac5_ca77_e401;
const MIN_SIZE: usize = 4 * 1024;
const MAX_SIZE: usize = 20 * 1024;
const DAY: i64 = 86_400;

/// Time limits for the tools (the whole bench must stay well under 10 minutes).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(300);
const FILTER_TIMEOUT: Duration = Duration::from_secs(300);
const IMAP_TIMEOUT: Duration = Duration::from_secs(120);
/// Runs of the short measurements (incremental sweep, process start); the median is shown.
const REPEATS: usize = 5;
/// Pause between the first and the incremental sweeps (see `backsweep_sweeps`).
const SETTLE: Duration = Duration::from_secs(3);

/// Path of the binary cargo builds for this bench (release profile).
const BACKSWEEP_BIN: &str = env!("CARGO_BIN_EXE_backsweep");
const IMAPFILTER_LUA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/bench/imapfilter-bounces.lua"
);

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("sweep bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Seeded PRNG
// ---------------------------------------------------------------------------------------

/// xorshift64* — tiny, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 scrambles nearby seeds; xorshift must not start at 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo).max(0) as u64 + 1)) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }

    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n).map(|_| char::from(A[self.below(A.len())])).collect()
    }

    fn base64(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n).map(|_| char::from(A[self.below(A.len())])).collect()
    }

    fn ip(&mut self) -> String {
        // Documentation ranges only.
        let nets = ["192.0.2", "198.51.100", "203.0.113"];
        format!("{}.{}", self.pick(&nets), self.range(1, 254))
    }
}

// ---------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------

/// RFC 5322 date of a Unix time shown in a zone `offset_min` minutes east of UTC.
fn rfc5322_date(ts: i64, offset_min: i32) -> String {
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = ts + i64::from(offset_min) * 60;
    let days = local.div_euclid(DAY);
    let secs = local.rem_euclid(DAY);
    let (y, m, d) = backsweep::config::civil_from_days(days);
    let sign = if offset_min < 0 { '-' } else { '+' };
    let off = offset_min.unsigned_abs();
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        WD[days.rem_euclid(7) as usize],
        d,
        MON[(m - 1) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        sign,
        off / 60,
        off % 60
    )
}

fn random_zone(rng: &mut Rng) -> i32 {
    *rng.pick(&[0, 60, 120, -300, -420, 330, 540, 60, 0, -240])
}

// ---------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------

static FIRST: LazyLock<Vec<&str>> = LazyLock::new(|| {
    "Alice Bruno Carol Dmitri Erin Farid Grace Hans Ines Judy Kenji Laura Mateo Nadia Oscar \
     Priya Quentin Rosa Sven Tomoko Ursula Victor Wen Ximena Yusuf Zoe"
        .split_whitespace()
        .collect()
});
static LAST: LazyLock<Vec<&str>> = LazyLock::new(|| {
    "Abbott Berger Castro Dubois Eriksen Fischer Garcia Hoffmann Ivanova Jensen Kowalski \
     Lindqvist Moreau Nakamura Okafor Petrov Rossi Schmidt Tanaka Urbano Vogel Weber Yilmaz \
     Zhang"
        .split_whitespace()
        .collect()
});
const DOMAINS: &[&str] = &[
    "example.net",
    "example.org",
    "mail.example.edu",
    "corp.example",
    "partner.example",
    "university.example",
    "consulting.example",
    "family.example",
];
const VICTIM_DOMAINS: &[&str] = &[
    "isp.example.br",
    "mail.example.ru",
    "example.co.jp",
    "webmail.example.de",
    "provider.example.fr",
    "telco.example.it",
    "example.com.au",
    "freemail.example.pl",
];
const REMOTE_MX: &[&str] = &[
    "mx1.example.net",
    "mail.isp.example.br",
    "mx.example.co.jp",
    "smtp-in.provider.example.fr",
    "mx2.telco.example.it",
    "mail.example.com.au",
    "mx.freemail.example.pl",
    "inbound.example.org",
];
static WORDS: LazyLock<Vec<&str>> = LazyLock::new(|| {
    "the project meeting we should review budget next week and a plan for release please \
     find attached notes from our call I think it is ready but there are still some open \
     questions about design team will send update to all customers when schedule allows \
     thanks again your help with this report numbers look good so far let me know if you \
     have any concerns otherwise proceed as discussed on Monday draft contract has been \
     signed by both parties new office opens in spring lunch Friday sounds great can bring \
     slides agenda includes hiring server migration database backup travel expenses invoice \
     approved deadline moved quarter results kids weekend garden photos holiday trip train \
     tickets booked conference talk accepted paper reviewers comments minor changes"
        .split_whitespace()
        .collect()
});
const SUBJECTS: &[&str] = &[
    "Meeting notes",
    "Budget review for next quarter",
    "Lunch on Friday?",
    "Draft contract",
    "Holiday photos",
    "Conference talk accepted",
    "Server migration plan",
    "Question about the invoice",
    "Weekend plans",
    "Project status update",
    "Hiring: second round interviews",
    "Paper reviews are in",
    "Travel expenses",
    "Agenda for Monday",
    "Database backup schedule",
    "Train tickets booked",
];
const SENT_SUBJECTS: &[&str] = &[
    "Re: Meeting notes",
    "Quarterly numbers",
    "Re: Lunch on Friday?",
    "Signed contract attached",
    "Re: Server migration plan",
    "Invoice 2024-",
    "Slides for the talk",
    "Re: Weekend plans",
    "Follow-up on our call",
    "Introduction",
    "Re: Hiring: second round interviews",
    "Reference letter",
];
const SPAM_SUBJECTS: &[&str] = &[
    "Exclusive offer just for you",
    "Your account has been suspended",
    "Re: Invoice overdue",
    "Make money from home",
    "You have won a prize",
    "Urgent: payment pending",
    "Cheap watches and more",
    "Final notice: claim your reward",
    "Re: your order",
    "Investment opportunity",
];
const NEWSLETTERS: &[(&str, &str, &str)] = &[
    (
        "Example News Daily",
        "news@news.example",
        "daily.news.example",
    ),
    ("Shop Deals", "deals@shop.example", "deals.shop.example"),
    (
        "Rust Weekly",
        "weekly@rust-weekly.example",
        "weekly.rust-weekly.example",
    ),
    (
        "City Library",
        "events@library.example",
        "events.library.example",
    ),
    (
        "Travel Club",
        "offers@travel.example",
        "offers.travel.example",
    ),
];
const NOTIFIERS: &[(&str, &str, &str, bool)] = &[
    ("CI Server", "ci@build.example", "Build #{} passed", false),
    (
        "Issue Tracker",
        "tracker@issues.example",
        "[PROJ-{}] Comment added",
        false,
    ),
    (
        "Monitoring",
        "alerts@monitor.example",
        "[RESOLVED] disk usage on db{}",
        true,
    ),
    (
        "Calendar",
        "calendar@cal.example",
        "Reminder: team sync #{}",
        true,
    ),
    (
        "Bank",
        "noreply@bank.example",
        "Your statement {} is ready",
        false,
    ),
    (
        "Parcel Service",
        "noreply@parcel.example",
        "Your parcel {} has shipped",
        false,
    ),
];

/// Lines of prose, CRLF-terminated, until at least `target` bytes.
fn prose(rng: &mut Rng, target: usize) -> String {
    let mut out = String::with_capacity(target + 100);
    let mut line = String::new();
    while out.len() + line.len() < target {
        let w = rng.pick(&WORDS);
        if line.len() + w.len() + 1 > 72 {
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
            if rng.chance(0.15) {
                out.push_str("\r\n");
            }
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push_str(".\r\n");
    }
    out
}

/// HTML paragraphs until at least `target` bytes.
fn html(rng: &mut Rng, title: &str, target: usize) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\r\n\
         <body style=\"font-family:Arial,sans-serif\">\r\n<h1>{title}</h1>\r\n"
    );
    while out.len() < target {
        out.push_str("<p>");
        let len = rng.range(150, 400);
        let words = prose(rng, len).replace("\r\n", " ");
        out.push_str(words.trim());
        out.push_str("</p>\r\n");
    }
    out.push_str("</body></html>\r\n");
    out
}

fn person(rng: &mut Rng) -> (String, String) {
    let f = rng.pick(&FIRST);
    let l = rng.pick(&LAST);
    let d = rng.pick(DOMAINS);
    (
        format!("{f} {l}"),
        format!("{}.{}@{d}", f.to_lowercase(), l.to_lowercase()),
    )
}

fn dkim(rng: &mut Rng, domain: &str) -> String {
    let b = rng.base64(344);
    let folded: Vec<&str> = b
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s2024;\r\n\
         \tt=1700000000; h=from:to:subject:date:message-id:mime-version;\r\n\
         \tbh={}=;\r\n\tb={}\r\n",
        rng.base64(43),
        folded.join("\r\n\t ")
    )
}

fn received(rng: &mut Rng, from_host: &str, by_host: &str, ts: i64, for_addr: &str) -> String {
    format!(
        "Received: from {from_host} ({from_host} [{ip}])\r\n\tby {by_host} (Postfix) with ESMTPS id {id}\r\n\
         \tfor <{for_addr}>; {date}\r\n",
        ip = rng.ip(),
        id = rng.alnum(11).to_uppercase(),
        date = rfc5322_date(ts, 0)
    )
}

// ---------------------------------------------------------------------------------------
// The mailbox
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Ordinary,
    Genuine,
    Backscatter,
}

#[derive(Debug, Clone, Copy)]
enum BounceStyle {
    PostfixFull,
    PostfixHeaders,
    Exim,
    Qmail,
}

impl BounceStyle {
    fn name(self) -> &'static str {
        match self {
            BounceStyle::PostfixFull => "postfix message/rfc822",
            BounceStyle::PostfixHeaders => "postfix text/rfc822-headers",
            BounceStyle::Exim => "exim",
            BounceStyle::Qmail => "qmail",
        }
    }
}

/// One message of the user's Sent folder.
struct SentMeta {
    message_id: String,
    to_name: String,
    to_addr: String,
    subject: String,
    date: i64,
    zone: i32,
    size: usize,
    seed: u64,
}

/// One INBOX message, before its bytes are made.
struct Planned {
    kind: Kind,
    date: i64,
    size: usize,
    seen: bool,
    seed: u64,
    /// For a genuine bounce: the Sent message it is about.
    sent_ref: Option<usize>,
}

/// What the bench expects of each message it wrote, by Message-ID.
#[derive(Debug, Clone, Copy)]
struct Expect {
    kind: Kind,
    seen: bool,
    size: usize,
}

struct Mailbox {
    /// Message-ID (no brackets) → expectation, INBOX only.
    inbox: HashMap<String, Expect>,
    inbox_bytes: u64,
    sent_bytes: u64,
    sent_count: usize,
    styles: HashMap<&'static str, usize>,
}

/// The header block of an original message (as it left the sender), CRLF-terminated,
/// including the blank line.
struct Original {
    headers: String,
    message_id: String,
    recipient: String,
}

fn sent_headers(s: &SentMeta) -> String {
    format!(
        "Message-ID: <{id}>\r\nDate: {date}\r\nMIME-Version: 1.0\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0\r\n\
         Content-Language: en-US\r\nTo: {to_name} <{to}>\r\nFrom: {DISPLAY_NAME} <{ADDRESS}>\r\n\
         Subject: {subject}\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n",
        id = s.message_id,
        date = rfc5322_date(s.date, s.zone),
        to_name = s.to_name,
        to = s.to_addr,
        subject = s.subject,
    )
}

fn sent_message(s: &SentMeta) -> String {
    let head = sent_headers(s);
    let mut rng = Rng::new(s.seed);
    let body = prose(&mut rng, s.size.saturating_sub(head.len()).max(200));
    format!("{head}{body}")
}

/// The original a genuine bounce encloses: the Sent message as it left the user's relay.
fn genuine_original(s: &SentMeta, rng: &mut Rng) -> Original {
    let mut headers = String::new();
    headers.push_str(&format!("Return-Path: <{ADDRESS}>\r\n"));
    headers.push_str(&format!(
        "Received: from [192.168.1.23] (unknown [{ip}])\r\n\t(Authenticated sender: {ADDRESS})\r\n\
         \tby {USER_RELAY} (Postfix) with ESMTPSA id {id}\r\n\tfor <{to}>; {date}\r\n",
        ip = rng.ip(),
        id = rng.alnum(11).to_uppercase(),
        to = s.to_addr,
        date = rfc5322_date(s.date + 2, 0),
    ));
    headers.push_str(&dkim(rng, "example.com"));
    headers.push_str(&sent_headers(s));
    Original {
        headers,
        message_id: s.message_id.clone(),
        recipient: s.to_addr.clone(),
    }
}

/// A spam run's message with the user's address forged as sender.
fn forged_original(rng: &mut Rng, date: i64) -> Original {
    let victim = format!(
        "{}{}@{}",
        rng.pick(&WORDS).to_lowercase(),
        rng.range(1, 9999),
        rng.pick(VICTIM_DOMAINS)
    );
    // Half look like the user's own mail client's ids, half like a spam tool's.
    let message_id = if rng.chance(0.5) {
        format!("{}-{}-{}@example.com", rng.hex(8), rng.hex(4), rng.hex(12))
    } else {
        format!(
            "{}.{}@{}",
            rng.range(100_000, 999_999),
            rng.alnum(10),
            rng.pick(&["localhost", "pc-01.example.test", "mailer.example.biz"])
        )
    };
    let from = if rng.chance(0.5) {
        format!("{DISPLAY_NAME} <{ADDRESS}>")
    } else {
        ADDRESS.to_string()
    };
    let bot = format!("host-{}.dyn.example.net", rng.range(1, 60_000));
    let headers = format!(
        "Return-Path: <{ADDRESS}>\r\nReceived: from {bot} ({bot} [{ip}])\r\n\tby {mx} with SMTP id {qid}\r\n\
         \tfor <{victim}>; {d}\r\nMessage-ID: <{message_id}>\r\nDate: {d}\r\nFrom: {from}\r\n\
         To: <{victim}>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: 7bit\r\n\
         X-Mailer: Microsoft Outlook Express 6.00.2900.5512\r\n\r\n",
        ip = rng.ip(),
        mx = rng.pick(REMOTE_MX),
        qid = rng.alnum(10),
        d = rfc5322_date(date, random_zone(rng)),
        subject = rng.pick(SPAM_SUBJECTS),
    );
    Original {
        headers,
        message_id,
        recipient: victim,
    }
}

/// A bounce to the user, about `orig`, about `target` bytes long.
fn bounce_message(
    rng: &mut Rng,
    style: BounceStyle,
    orig: &Original,
    date: i64,
    target: usize,
) -> (String, String) {
    let host = rng.pick(REMOTE_MX).to_string();
    let zone = random_zone(rng);
    let d = rfc5322_date(date, zone);
    let qid = rng.alnum(10).to_uppercase();
    let rcpt = &orig.recipient;
    let envelope = format!(
        "Return-Path: <>\r\nDelivered-To: {ADDRESS}\r\n{}",
        received(rng, &host, USER_MX, date + 3, ADDRESS)
    );
    let diag = format!(
        "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
    );
    match style {
        BounceStyle::PostfixFull | BounceStyle::PostfixHeaders => {
            let id = format!("{}.{qid}@{host}", rng.range(20_000_000, 29_999_999));
            let boundary = format!("{qid}.{date}/{host}");
            let full = matches!(style, BounceStyle::PostfixFull);
            let mut m = format!(
                "{envelope}Date: {d}\r\nFrom: MAILER-DAEMON@{host} (Mail Delivery System)\r\n\
                 Subject: Undelivered Mail Returned to Sender\r\nTo: {ADDRESS}\r\n\
                 Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
                 Content-Transfer-Encoding: 8bit\r\nMessage-Id: <{id}>\r\n\r\n\
                 This is a MIME-encapsulated message.\r\n\r\n--{boundary}\r\n\
                 Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
                 This is the mail system at host {host}.\r\n\r\n\
                 I'm sorry to have to inform you that your message could not\r\n\
                 be delivered to one or more recipients. It's attached below.\r\n\r\n\
                 For further assistance, please send mail to postmaster.\r\n\r\n\
                 If you do so, please include this problem report. You can\r\n\
                 delete your own text from the attached returned message.\r\n\r\n\
                 \x20                  The mail system\r\n\r\n\
                 <{rcpt}>: host {rhost}[{rip}] said: {diag} (in reply to RCPT TO command)\r\n"
                , rhost = rng.pick(REMOTE_MX), rip = rng.ip()
            );
            let dsn = format!(
                "\r\n--{boundary}\r\nContent-Description: Delivery report\r\n\
                 Content-Type: message/delivery-status\r\n\r\n\
                 Reporting-MTA: dns; {host}\r\nX-Postfix-Queue-ID: {qid}\r\n\
                 X-Postfix-Sender: rfc822; {ADDRESS}\r\nArrival-Date: {d}\r\n\r\n\
                 Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\n\
                 Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; {rhost}\r\n\
                 Diagnostic-Code: smtp; {diag}\r\n\r\n--{boundary}\r\n",
                rhost = rng.pick(REMOTE_MX)
            );
            if full {
                m.push_str(&dsn);
                m.push_str(
                    "Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\
                     Content-Transfer-Encoding: 8bit\r\n\r\n",
                );
                m.push_str(&orig.headers);
                let tail = format!("\r\n--{boundary}--\r\n");
                let body = target.saturating_sub(m.len() + tail.len()).max(200);
                m.push_str(&prose(rng, body));
                m.push_str(&tail);
            } else {
                // Headers only: the notification carries the session transcript instead.
                let tail_len = dsn.len() + orig.headers.len() + 120;
                m.push_str("\r\nTranscript of the delivery attempts follows.\r\n\r\n");
                let mut t = date - 3600;
                while m.len() + tail_len < target {
                    t += rng.range(30, 300) as i64;
                    m.push_str(&format!(
                        "{}: connect to {}[{}]:25: attempt {}; {}\r\n",
                        rfc5322_date(t, 0),
                        rng.pick(REMOTE_MX),
                        rng.ip(),
                        rng.range(1, 9),
                        rng.pick(&[
                            "450 4.7.1 greylisted, please try again later",
                            "421 4.4.2 connection timed out",
                            "451 4.3.0 temporary local problem",
                            "550 5.1.1 user unknown",
                        ])
                    ));
                }
                m.push_str(&dsn);
                m.push_str(
                    "Content-Description: Undelivered Message Headers\r\n\
                     Content-Type: text/rfc822-headers\r\n\r\n",
                );
                m.push_str(&orig.headers);
                m.push_str(&format!("--{boundary}--\r\n"));
            }
            (id, m)
        }
        BounceStyle::Exim => {
            let id = format!(
                "E1{}-{}-{}@{host}",
                rng.alnum(5),
                rng.alnum(6),
                rng.alnum(2)
            );
            let mut m = format!(
                "{envelope}Received: from mail by {host} with local (Exim 4.96)\r\n\
                 \tid {eid}\r\n\tfor {ADDRESS}; {d}\r\nX-Failed-Recipients: {rcpt}\r\n\
                 Auto-Submitted: auto-replied\r\nFrom: Mail Delivery System <Mailer-Daemon@{host}>\r\n\
                 To: {ADDRESS}\r\nReferences: <{oid}>\r\nContent-Type: text/plain\r\n\
                 Subject: Mail delivery failed: returning message to sender\r\nMessage-Id: <{id}>\r\n\
                 Date: {d}\r\n\r\n\
                 This message was created automatically by mail delivery software.\r\n\r\n\
                 A message that you sent could not be delivered to one or more of its\r\n\
                 recipients. This is a permanent error. The following address(es) failed:\r\n\r\n\
                 \x20 {rcpt}\r\n    host {rhost} [{rip}]\r\n\
                 \x20   SMTP error from remote mail server after RCPT TO:<{rcpt}>:\r\n\
                 \x20   {diag}\r\n\r\n\
                 ------ This is a copy of the message, including all the headers. ------\r\n\r\n",
                eid = id.split('@').next().unwrap_or_default().trim_start_matches('E'),
                oid = orig.message_id,
                rhost = rng.pick(REMOTE_MX),
                rip = rng.ip(),
            );
            m.push_str(&orig.headers);
            let body = target.saturating_sub(m.len()).max(200);
            m.push_str(&prose(rng, body));
            (id, m)
        }
        BounceStyle::Qmail => {
            let id = format!("{}.{}.qmail@{host}", date, rng.range(1000, 99_999));
            let mut m = format!(
                "{envelope}Received: (qmail {pid} invoked for bounce); {d}\r\nDate: {d}\r\n\
                 From: MAILER-DAEMON@{host}\r\nTo: {ADDRESS}\r\nSubject: failure notice\r\n\
                 Message-ID: <{id}>\r\n\r\n\
                 Hi. This is the qmail-send program at {host}.\r\n\
                 I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\
                 This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n\
                 <{rcpt}>:\r\nRemote host said: {diag}\r\nGiving up on {rip}.\r\n\r\n\
                 --- Below this line is a copy of the message.\r\n\r\n",
                pid = rng.range(1000, 99_999),
                rip = rng.ip(),
            );
            m.push_str(&orig.headers);
            let body = target.saturating_sub(m.len()).max(200);
            m.push_str(&prose(rng, body));
            (id, m)
        }
    }
}

/// An ordinary message (personal, newsletter or notification) of about `target` bytes.
fn ordinary_message(
    rng: &mut Rng,
    date: i64,
    target: usize,
    n: usize,
    sent: &[SentMeta],
) -> (String, String) {
    let zone = random_zone(rng);
    let d = rfc5322_date(date, zone);
    let roll = rng.below(100);
    let mut m = String::with_capacity(target + 200);
    if roll < 55 {
        // Personal mail, sometimes a reply to something the user sent.
        let (name, addr) = person(rng);
        let domain = addr.split('@').nth(1).unwrap_or("example.net").to_string();
        let id = format!("{}.{}.{n}@{domain}", rng.hex(12), rng.range(1000, 9999));
        m.push_str(&format!(
            "Return-Path: <{addr}>\r\nDelivered-To: {ADDRESS}\r\n"
        ));
        m.push_str(&received(
            rng,
            &format!("mail.{domain}"),
            USER_MX,
            date + 2,
            ADDRESS,
        ));
        m.push_str(&dkim(rng, &domain));
        let reply_to_sent = !sent.is_empty() && rng.chance(0.12);
        let subject = if reply_to_sent {
            let s = rng.pick(sent);
            m.push_str(&format!(
                "In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n",
                id = s.message_id
            ));
            format!("Re: {}", s.subject.trim_start_matches("Re: "))
        } else {
            rng.pick(SUBJECTS).to_string()
        };
        m.push_str(&format!(
            "Message-ID: <{id}>\r\nDate: {d}\r\nFrom: {name} <{addr}>\r\nTo: {DISPLAY_NAME} <{ADDRESS}>\r\n\
             Subject: {subject}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        ));
        let body = target.saturating_sub(m.len()).max(200);
        m.push_str(&prose(rng, body));
        (id, m)
    } else if roll < 80 {
        // Newsletter: multipart/alternative with HTML.
        let (name, addr, list) = *rng.pick(NEWSLETTERS);
        let domain = addr.split('@').nth(1).unwrap_or("example.net").to_string();
        let id = format!("nl.{}.{n}@{domain}", rng.hex(16));
        let boundary = format!("=_alt_{}", rng.hex(24));
        let title = format!("{name} — issue {}", rng.range(1, 400));
        m.push_str(&format!(
            "Return-Path: <bounces+{}@{domain}>\r\nDelivered-To: {ADDRESS}\r\n",
            rng.hex(10)
        ));
        m.push_str(&received(
            rng,
            &format!("out.{domain}"),
            USER_MX,
            date + 2,
            ADDRESS,
        ));
        m.push_str(&dkim(rng, &domain));
        m.push_str(&format!(
            "Message-ID: <{id}>\r\nDate: {d}\r\nFrom: {name} <{addr}>\r\nTo: {ADDRESS}\r\n\
             Subject: {title}\r\nList-Id: {name} <{list}>\r\n\
             List-Unsubscribe: <https://{domain}/unsubscribe/{u}>, <mailto:unsubscribe@{domain}?subject={u}>\r\n\
             List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nPrecedence: bulk\r\n\
             Feedback-ID: {fid}:newsletter:{domain}\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n",
            u = rng.hex(20),
            fid = rng.range(1, 999),
        ));
        let budget = target.saturating_sub(m.len() + 3 * boundary.len() + 200);
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        ));
        m.push_str(&prose(rng, budget * 2 / 5));
        m.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        ));
        m.push_str(&html(rng, &title, budget * 3 / 5));
        m.push_str(&format!("\r\n--{boundary}--\r\n"));
        (id, m)
    } else {
        // Machine notification; some carry Auto-Submitted like real monitoring tools.
        let (name, addr, subject, auto) = *rng.pick(NOTIFIERS);
        let domain = addr.split('@').nth(1).unwrap_or("example.net").to_string();
        let id = format!("{}.{n}.notify@{domain}", rng.hex(20));
        let subject = subject.replace("{}", &rng.range(100, 99_999).to_string());
        m.push_str(&format!(
            "Return-Path: <{addr}>\r\nDelivered-To: {ADDRESS}\r\n"
        ));
        m.push_str(&received(
            rng,
            &format!("smtp.{domain}"),
            USER_MX,
            date + 1,
            ADDRESS,
        ));
        m.push_str(&format!(
            "Message-ID: <{id}>\r\nDate: {d}\r\nFrom: {name} <{addr}>\r\nTo: {ADDRESS}\r\n\
             Subject: {subject}\r\nMIME-Version: 1.0\r\n"
        ));
        if auto {
            m.push_str("Auto-Submitted: auto-generated\r\nX-Auto-Response-Suppress: All\r\n");
        }
        if rng.chance(0.5) {
            m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
            let body = target.saturating_sub(m.len()).max(200);
            m.push_str(&prose(rng, body));
        } else {
            let boundary = format!("----=_Part_{}", rng.range(100_000, 999_999));
            m.push_str(&format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
                 --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            ));
            let budget = target.saturating_sub(m.len() + 200);
            m.push_str(&prose(rng, budget / 2));
            m.push_str(&format!(
                "\r\n--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            ));
            m.push_str(&html(rng, &subject, budget / 2));
            m.push_str(&format!("\r\n--{boundary}--\r\n"));
        }
        (id, m)
    }
}

/// Writes the mailbox into `users[0]`'s Maildir and hard-links it into the others'.
fn seed_mailbox(
    server: &TestServer,
    users: &[&str],
    inbox_total: usize,
    sent_total: usize,
    seed: u64,
    now: i64,
) -> Result<Mailbox> {
    let mut rng = Rng::new(seed);
    let primary = users[0];
    let primary_root = server.maildir(primary);
    let deliver_all = |folder: &str, bytes: &[u8], flags: &str| -> Result<()> {
        let path = server
            .deliver(primary, folder, bytes, flags)
            .with_context(|| format!("delivering into {primary}/{folder}"))?;
        let rel = path
            .strip_prefix(&primary_root)
            .context("delivered file outside the Maildir")?
            .to_path_buf();
        for u in &users[1..] {
            let dest = server.maildir(u).join(&rel);
            std::fs::hard_link(&path, &dest)
                .or_else(|_| std::fs::copy(&path, &dest).map(|_| ()))
                .with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
        }
        Ok(())
    };

    // Sent: spread over [now-180d, now-21d], oldest first.
    let mut sent: Vec<SentMeta> = (0..sent_total)
        .map(|i| {
            let (to_name, to_addr) = person(&mut rng);
            let mut subject = rng.pick(SENT_SUBJECTS).to_string();
            if subject.ends_with('-') {
                subject.push_str(&format!("{:04}", rng.range(1, 9999)));
            }
            SentMeta {
                message_id: format!(
                    "{}-{}-{}.{i}@example.com",
                    rng.hex(8),
                    rng.hex(4),
                    rng.hex(12)
                ),
                to_name,
                to_addr,
                subject,
                date: rng.range_i64(now - 180 * DAY, now - 21 * DAY),
                zone: 60,
                size: rng.range(MIN_SIZE, MAX_SIZE),
                seed: rng.next_u64(),
            }
        })
        .collect();
    sent.sort_by_key(|s| s.date);
    let mut sent_bytes = 0u64;
    for s in &sent {
        let m = sent_message(s);
        sent_bytes += m.len() as u64;
        deliver_all("Sent", m.as_bytes(), "S")?;
    }

    // INBOX plan: 5 % bounces (half genuine), in the last 20 days; the rest over a year.
    let bounces = inbox_total / 20;
    let genuine = if sent.is_empty() { 0 } else { bounces / 2 };
    let mut plan: Vec<Planned> = Vec::with_capacity(inbox_total);
    let mut sent_order: Vec<usize> = (0..sent.len()).collect();
    for i in (1..sent_order.len()).rev() {
        let j = rng.below(i + 1);
        sent_order.swap(i, j);
    }
    for i in 0..inbox_total {
        let kind = if i < genuine {
            Kind::Genuine
        } else if i < bounces {
            Kind::Backscatter
        } else {
            Kind::Ordinary
        };
        let date = match kind {
            Kind::Ordinary => rng.range_i64(now - 365 * DAY, now - 60),
            _ => rng.range_i64(now - 20 * DAY, now - 60),
        };
        let seen = if kind == Kind::Ordinary {
            rng.chance(if date < now - 3 * DAY { 0.9 } else { 0.4 })
        } else {
            rng.chance(0.3)
        };
        plan.push(Planned {
            kind,
            date,
            size: rng.range(MIN_SIZE, MAX_SIZE),
            seen,
            seed: rng.next_u64(),
            // Genuine bounces each refer to a different Sent message (while there are enough).
            sent_ref: (kind == Kind::Genuine).then(|| sent_order[i % sent_order.len().max(1)]),
        });
    }
    plan.sort_by_key(|p| p.date);

    let mut inbox = HashMap::with_capacity(inbox_total);
    let mut inbox_bytes = 0u64;
    let mut styles: HashMap<&'static str, usize> = HashMap::new();
    for (n, p) in plan.iter().enumerate() {
        let mut r = Rng::new(p.seed);
        let (id, bytes) = match p.kind {
            Kind::Ordinary => ordinary_message(&mut r, p.date, p.size, n, &sent),
            Kind::Genuine | Kind::Backscatter => {
                let orig = match p.sent_ref {
                    Some(i) => genuine_original(&sent[i], &mut r),
                    None => {
                        let sent_at = p.date - r.range_i64(60, 6 * 3600);
                        forged_original(&mut r, sent_at)
                    }
                };
                let style = match r.below(100) {
                    0..=34 => BounceStyle::PostfixFull,
                    35..=49 => BounceStyle::PostfixHeaders,
                    50..=79 => BounceStyle::Exim,
                    _ => BounceStyle::Qmail,
                };
                *styles.entry(style.name()).or_default() += 1;
                bounce_message(&mut r, style, &orig, p.date, p.size)
            }
        };
        if inbox
            .insert(
                id.clone(),
                Expect {
                    kind: p.kind,
                    seen: p.seen,
                    size: bytes.len(),
                },
            )
            .is_some()
        {
            bail!("generated a duplicate Message-ID <{id}>");
        }
        inbox_bytes += bytes.len() as u64;
        deliver_all("INBOX", bytes.as_bytes(), if p.seen { "S" } else { "" })?;
    }
    Ok(Mailbox {
        inbox,
        inbox_bytes,
        sent_bytes,
        sent_count: sent.len(),
        styles,
    })
}

// ---------------------------------------------------------------------------------------
// Byte-counting proxy
// ---------------------------------------------------------------------------------------

/// Loopback TCP proxy to one port, counting bytes in each direction (TLS passes through).
struct Proxy {
    port: u16,
    down: Arc<AtomicU64>,
    up: Arc<AtomicU64>,
    active: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

/// Decrements the active-connection count when both directions of a connection are done.
struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Traffic through the proxy during one measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    down: u64,
    up: u64,
    connections: usize,
}

impl Proxy {
    fn start(target_port: u16) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        let proxy = Proxy {
            port,
            down: Arc::default(),
            up: Arc::default(),
            active: Arc::default(),
            connections: Arc::default(),
        };
        let (down, up, active, conns) = (
            proxy.down.clone(),
            proxy.up.clone(),
            proxy.active.clone(),
            proxy.connections.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                active.fetch_add(1, Ordering::SeqCst);
                conns.fetch_add(1, Ordering::SeqCst);
                let guard = Arc::new(ConnGuard(active.clone()));
                let pairs = [
                    (server.try_clone(), client.try_clone(), down.clone()),
                    (client.try_clone(), server.try_clone(), up.clone()),
                ];
                for (from, to, counter) in pairs {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let guard = guard.clone();
                    std::thread::spawn(move || {
                        pump(from, to, &counter);
                        drop(guard);
                    });
                }
            }
        });
        Ok(proxy)
    }

    /// Waits until no connection is open (at most 10 s), then returns and resets the counts.
    fn take(&self) -> Traffic {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Traffic {
            down: self.down.swap(0, Ordering::SeqCst),
            up: self.up.swap(0, Ordering::SeqCst),
            connections: self.connections.swap(0, Ordering::SeqCst),
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, counter: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

// ---------------------------------------------------------------------------------------
// A minimal synchronous IMAP client (floor measurement and checks)
// ---------------------------------------------------------------------------------------

/// One server response: its text (lines joined, literals left out) and its literals.
struct Response {
    text: String,
    literals: Vec<Vec<u8>>,
}

struct Imap {
    conn: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    tag: u32,
}

fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots.add(cert.context("parsing the CA file")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl Imap {
    /// Connects with implicit TLS to 127.0.0.1:`port`, verifying against `tls`, and logs in.
    fn login(port: u16, tls: Arc<rustls::ClientConfig>, user: &str) -> Result<Imap> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(IMAP_TIMEOUT))?;
        tcp.set_write_timeout(Some(IMAP_TIMEOUT))?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
        let conn = rustls::ClientConnection::new(tls, name)?;
        let mut imap = Imap {
            conn: BufReader::with_capacity(256 * 1024, rustls::StreamOwned::new(conn, tcp)),
            tag: 0,
        };
        let greeting = imap.read_response()?;
        if !greeting.text.starts_with("* OK") {
            bail!("unexpected greeting {:?}", greeting.text);
        }
        imap.command(&format!("LOGIN \"{user}\" \"{PASSWORD}\""), |_| {})
            .with_context(|| format!("LOGIN {user}"))?;
        Ok(imap)
    }

    /// Reads one response, with its literals.
    fn read_response(&mut self) -> Result<Response> {
        let mut text = String::new();
        let mut literals = Vec::new();
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            let n = self.conn.read_until(b'\n', &mut line)?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            let s = String::from_utf8_lossy(&line);
            let s = s.trim_end_matches(['\r', '\n']);
            text.push_str(s);
            let literal_len = s
                .strip_suffix('}')
                .and_then(|rest| rest.rfind('{').map(|i| &rest[i + 1..]))
                .and_then(|digits| digits.trim_end_matches('+').parse::<usize>().ok());
            match literal_len {
                Some(len) => {
                    let mut lit = vec![0u8; len];
                    self.conn.read_exact(&mut lit)?;
                    literals.push(lit);
                }
                None => return Ok(Response { text, literals }),
            }
        }
    }

    /// Sends a command and reads until its tagged answer, which must be OK. Untagged
    /// responses go to `on_untagged`.
    fn command(&mut self, cmd: &str, mut on_untagged: impl FnMut(Response)) -> Result<String> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        let stream = self.conn.get_mut();
        stream.write_all(format!("{tag} {cmd}\r\n").as_bytes())?;
        stream.flush()?;
        loop {
            let r = self.read_response()?;
            if let Some(rest) = r.text.strip_prefix(&tag) {
                let rest = rest.trim_start();
                if rest.starts_with("OK") {
                    return Ok(rest.to_string());
                }
                let shown = cmd.split_whitespace().next().unwrap_or_default();
                bail!("{shown} failed: {rest}");
            }
            on_untagged(r);
        }
    }

    /// Selects (or examines) a mailbox; returns its message count.
    fn open(&mut self, mailbox: &str, read_only: bool) -> Result<usize> {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        let mut exists = 0usize;
        self.command(&format!("{verb} \"{mailbox}\""), |r| {
            if let Some(n) = r
                .text
                .strip_prefix("* ")
                .and_then(|t| t.strip_suffix(" EXISTS"))
                .and_then(|n| n.parse().ok())
            {
                exists = n;
            }
        })?;
        Ok(exists)
    }

    fn logout(mut self) {
        let _ = self.command("LOGOUT", |_| {});
    }
}

/// One message as listed on the server.
struct Listed {
    /// Message-ID without brackets.
    id: String,
    seen: bool,
    size: Option<usize>,
}

/// Every message in a mailbox; empty when the mailbox does not exist.
fn list_mailbox(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    user: &str,
    mailbox: &str,
) -> Result<Vec<Listed>> {
    let mut imap = Imap::login(port, tls.clone(), user)?;
    let exists = match imap.open(mailbox, true) {
        Ok(n) => n,
        Err(e) if format!("{e:#}").contains("NONEXISTENT") => 0,
        Err(e) => return Err(e.context(format!("EXAMINE {mailbox}"))),
    };
    let mut out = Vec::with_capacity(exists);
    if exists > 0 {
        imap.command(
            "UID FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
            |r| {
                if !r.text.contains(" FETCH ") {
                    return;
                }
                let seen = r
                    .text
                    .find("FLAGS (")
                    .and_then(|i| r.text[i..].find(')').map(|j| &r.text[i..i + j]))
                    .is_some_and(|flags| flags.contains("\\Seen"));
                let id = r
                    .literals
                    .first()
                    .map(|l| message_id_of(&String::from_utf8_lossy(l)))
                    .unwrap_or_default();
                let size = r.text.find("RFC822.SIZE ").and_then(|i| {
                    r.text[i + 12..]
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|n| n.parse().ok())
                });
                out.push(Listed { id, seen, size });
            },
        )?;
    }
    imap.logout();
    Ok(out)
}

/// The Message-ID (no brackets) in a `Message-ID:` header block; empty if none.
fn message_id_of(header: &str) -> String {
    header
        .find('<')
        .and_then(|i| header[i + 1..].find('>').map(|j| &header[i + 1..i + 1 + j]))
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------

struct Measured {
    label: String,
    wall: Option<Duration>,
    traffic: Option<Traffic>,
    note: String,
}

/// Fetches every INBOX header over one connection; returns (wall, headers, header bytes).
fn header_floor(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    user: &str,
) -> Result<(Duration, usize, u64)> {
    let start = Instant::now();
    let mut imap = Imap::login(port, tls.clone(), user)?;
    imap.open("INBOX", false)?;
    let mut count = 0usize;
    let mut bytes = 0u64;
    imap.command("UID FETCH 1:* (BODY.PEEK[HEADER])", |r| {
        if let Some(l) = r.literals.first() {
            count += 1;
            bytes += l.len() as u64;
        }
    })?;
    imap.logout();
    Ok((start.elapsed(), count, bytes))
}

/// Connect, TLS, LOGIN, SELECT INBOX, LOGOUT: the least a "nothing new?" check costs.
fn session_floor(port: u16, tls: &Arc<rustls::ClientConfig>, user: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut imap = Imap::login(port, tls.clone(), user)?;
    imap.open("INBOX", false)?;
    imap.logout();
    Ok(start.elapsed())
}

/// Runs a tool through the proxy; wall time and traffic, or a message with its output.
fn measure_tool(
    proxy: &Proxy,
    mut cmd: Command,
    timeout: Duration,
    log: &Path,
    show_lines: usize,
) -> std::result::Result<(Duration, Traffic), String> {
    proxy.take();
    let result = run_timed(&mut cmd, timeout, log);
    let traffic = proxy.take();
    match result {
        Ok((status, wall)) if status.success() => {
            if show_lines > 0 {
                println!(
                    "    {}, {} downloaded, {} connection(s)\n{}",
                    secs(wall),
                    mb(traffic.down),
                    traffic.connections,
                    output_tail(log, show_lines)
                );
            }
            Ok((wall, traffic))
        }
        Ok((status, wall)) => Err(format!(
            "{status} after {}\n{}",
            secs(wall),
            output_tail(log, 12)
        )),
        Err(e) => Err(format!("{e:#}\n{}", output_tail(log, 12))),
    }
}

/// Median (sorts the slice).
fn median(xs: &mut [Duration]) -> Option<Duration> {
    xs.sort();
    xs.get(xs.len() / 2).copied()
}

/// The system load average line (the machine may be shared; read numbers against it).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Runs a program with stdout/stderr to files and a time limit; returns status and wall.
fn run_timed(cmd: &mut Command, timeout: Duration, log: &Path) -> Result<(ExitStatus, Duration)> {
    let out = File::create(log.with_extension("out"))?;
    let err = File::create(log.with_extension("err"))?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, start.elapsed()));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {} s (killed)", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The last `n` lines of a tool's output files.
fn output_tail(log: &Path, n: usize) -> String {
    let mut lines = Vec::new();
    for ext in ["out", "err"] {
        let text = std::fs::read_to_string(log.with_extension(ext)).unwrap_or_default();
        lines.extend(text.lines().map(str::to_string));
    }
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a tool did to one user's mailbox, judged by Message-ID.
#[derive(Default)]
struct Outcome {
    moved_backscatter: usize,
    moved_genuine: usize,
    moved_ordinary: usize,
    left_backscatter: usize,
    lost: usize,
    duplicated: usize,
    altered: usize,
    foreign: usize,
    seen_changed: usize,
}

fn judge(
    mailbox: &Mailbox,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    user: &str,
    quarantine: &str,
) -> Result<Outcome> {
    let inbox = list_mailbox(port, tls, user, "INBOX")?;
    let quarantined = list_mailbox(port, tls, user, quarantine)?;
    let mut o = Outcome::default();
    let mut found: HashSet<&str> = HashSet::new();
    for (moved, list) in [(false, &inbox), (true, &quarantined)] {
        for m in list {
            let Some((key, exp)) = mailbox.inbox.get_key_value(m.id.as_str()) else {
                o.foreign += 1;
                continue;
            };
            if !found.insert(key.as_str()) {
                o.duplicated += 1;
            }
            if exp.seen != m.seen {
                o.seen_changed += 1;
            }
            if m.size != Some(exp.size) {
                o.altered += 1;
            }
            match (moved, exp.kind) {
                (true, Kind::Backscatter) => o.moved_backscatter += 1,
                (true, Kind::Genuine) => o.moved_genuine += 1,
                (true, _) => o.moved_ordinary += 1,
                (false, Kind::Backscatter) => o.left_backscatter += 1,
                (false, _) => {}
            }
        }
    }
    o.lost = mailbox.inbox.len() - found.len();
    Ok(o)
}

fn describe(o: &Outcome, backscatter: usize, genuine: usize) -> String {
    format!(
        "backscatter moved {}/{} ({:.1} %), genuine wrongly moved {}/{}, ordinary wrongly moved {}; \
         lost {}, duplicated {}, size changed {}, unexpected {}, \\Seen changed {}",
        o.moved_backscatter,
        backscatter,
        percent(o.moved_backscatter as u64, backscatter as u64),
        o.moved_genuine,
        genuine,
        o.moved_ordinary,
        o.lost,
        o.duplicated,
        o.altered,
        o.foreign,
        o.seen_changed
    )
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn mb(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.1} KB", bytes as f64 / 1_000.0)
    } else {
        format!("{:.2} MB", bytes as f64 / 1_000_000.0)
    }
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}={v:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

fn tool_version(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

fn find_imapfilter() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BENCH_IMAPFILTER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("imapfilter"))
        .find(|p| p.is_file())
}

fn yaml_str(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::Value::String(s.to_string()).to_string()
}

/// Everything the measurements share.
struct Bench {
    server: TestServer,
    proxy: Proxy,
    tls: Arc<rustls::ClientConfig>,
    work: tempfile::TempDir,
    mailbox: Mailbox,
    rows: Vec<Measured>,
    failures: Vec<String>,
}

/// The headline numbers for the ratios.
#[derive(Default)]
struct Headline {
    floor: Option<(Duration, Traffic)>,
    first: Option<(Duration, Traffic)>,
    incremental: Option<(Duration, Traffic)>,
    process_start: Option<Duration>,
    session_floor: Option<Duration>,
    imapfilter: Option<(Duration, Traffic)>,
}

impl Bench {
    fn fail(&mut self, msg: String) {
        println!("    {msg}");
        self.failures.push(msg);
    }

    fn row(&mut self, label: &str, m: Option<(Duration, Traffic)>, note: &str) {
        self.rows.push(Measured {
            label: label.to_string(),
            wall: m.map(|x| x.0),
            traffic: m.map(|x| x.1),
            note: note.to_string(),
        });
    }

    /// (c) Every INBOX header over one connection: cold, warm, and warm without the proxy
    /// (which shows what the proxy itself costs). Returns the cold run.
    fn header_floors(&mut self) -> Option<(Duration, Traffic)> {
        println!("\n(c) header floor: UID FETCH 1:* (BODY.PEEK[HEADER]), one connection ...");
        let mut cold_run = None;
        for (label, cold, via_proxy) in [
            ("(c) header floor (cold)", true, true),
            ("(c) header floor (warm)", false, true),
            ("(c) header floor (warm, no proxy)", false, false),
        ] {
            self.proxy.take();
            let port = if via_proxy {
                self.proxy.port
            } else {
                self.server.tls_port()
            };
            match header_floor(port, &self.tls, USER_FLOOR) {
                Ok((wall, count, header_bytes)) => {
                    let traffic = via_proxy.then(|| self.proxy.take());
                    println!(
                        "    {label}: {} for {count} headers ({} of header data)",
                        secs(wall),
                        mb(header_bytes)
                    );
                    if cold {
                        cold_run = traffic.map(|t| (wall, t));
                    }
                    self.rows.push(Measured {
                        label: label.to_string(),
                        wall: Some(wall),
                        traffic,
                        note: format!("{count} headers"),
                    });
                }
                Err(e) => self.fail(format!("header floor failed: {e:#}")),
            }
        }
        cold_run
    }

    /// The config backsweep runs with: the contract's keys, port = the proxy.
    fn write_config(&self) -> Result<PathBuf> {
        let config = self.work.path().join("backsweep.yaml");
        let ca = self.server.ca_file();
        let text = backsweep::testserver::account_config_yaml(
            "bench",
            USER_SWEEP,
            self.proxy.port,
            Some(&ca),
            &self.work.path().join("state"),
            "{ env: BENCH_IMAP_PASSWORD }",
            &format!(
                "    addresses: [{}]\n    inbox: INBOX\n    sent: [Sent]\n    quarantine: Quarantine\n{}{}",
                yaml_str(ADDRESS),
                // The defaults unless the bench is told otherwise.
                std::env::var("BENCH_SEARCH_NET")
                    .map(|v| format!("    search_net: {v}\n"))
                    .unwrap_or_default(),
                std::env::var("BENCH_CONNECTIONS")
                    .map(|v| format!("    connections: {v}\n"))
                    .unwrap_or_default()
            ),
        );
        std::fs::write(&config, text).context("writing the backsweep config")?;
        Ok(config)
    }

    /// Median wall time of `backsweep --version`: what starting the process costs.
    fn process_start(&mut self, backsweep: &Path) -> Option<Duration> {
        let mut walls = Vec::new();
        for i in 0..REPEATS {
            let log = self.work.path().join(format!("backsweep-version-{i}"));
            let mut cmd = Command::new(backsweep);
            cmd.arg("--version");
            match run_timed(&mut cmd, Duration::from_secs(30), &log) {
                Ok((status, wall)) if status.success() => walls.push(wall),
                Ok((status, _)) => {
                    self.fail(format!("backsweep --version failed: {status}"));
                    break;
                }
                Err(e) => {
                    self.fail(format!("backsweep --version failed: {e:#}"));
                    break;
                }
            }
        }
        let m = median(&mut walls);
        if let Some(m) = m {
            self.rows.push(Measured {
                label: "    backsweep --version (process start)".into(),
                wall: Some(m),
                traffic: None,
                note: format!("median of {}", walls.len()),
            });
        }
        m
    }

    /// (a) and (b): the first sweep, then `REPEATS` incremental sweeps with nothing new.
    fn backsweep_sweeps(&mut self, backsweep: &Path, h: &mut Headline) -> Result<()> {
        let config = self.write_config()?;
        h.process_start = self.process_start(backsweep);
        let sweep_cmd = || {
            let mut c = Command::new(backsweep);
            c.arg("--config")
                .arg(&config)
                .arg("sweep")
                .env("BENCH_IMAP_PASSWORD", PASSWORD)
                .env_remove("BACKSWEEP_CONFIG");
            c
        };

        println!(
            "\n(a) backsweep first sweep: {} --config {} sweep ...",
            backsweep.display(),
            config.display()
        );
        let log = self.work.path().join("sweep-1");
        match measure_tool(&self.proxy, sweep_cmd(), SWEEP_TIMEOUT, &log, 8) {
            Ok(m) => {
                h.first = Some(m);
                self.row("(a) backsweep first sweep", Some(m), "");
            }
            Err(e) => {
                self.fail(format!("backsweep sweep failed (first sweep): {e}"));
                self.row("(a) backsweep first sweep", None, "FAILED");
            }
        }

        // Dovecot rescans a Maildir directory whose mtime is less than ~1 s old on every
        // access (MAILDIR_SYNC_SECS); the first sweep's moves just touched INBOX. A periodic
        // sweep never runs that soon after the previous one, so let the mailbox settle.
        println!(
            "\n(b) backsweep incremental sweep, nothing new ({REPEATS} runs, after a {} s pause) ...",
            SETTLE.as_secs()
        );
        std::thread::sleep(SETTLE);
        let mut runs: Vec<(Duration, Traffic)> = Vec::new();
        for i in 0..REPEATS {
            let log = self.work.path().join(format!("sweep-incremental-{i}"));
            let shown = if i == 0 { 3 } else { 0 };
            match measure_tool(&self.proxy, sweep_cmd(), SWEEP_TIMEOUT, &log, shown) {
                Ok(m) => runs.push(m),
                Err(e) => {
                    self.fail(format!("backsweep sweep failed (incremental sweep): {e}"));
                    break;
                }
            }
        }
        let mut walls: Vec<Duration> = runs.iter().map(|m| m.0).collect();
        h.incremental = median(&mut walls).map(|m| {
            let most = runs.iter().map(|x| x.1.down).max().unwrap_or_default();
            println!(
                "    median {}, min {}, max {}; at most {} downloaded per run",
                secs(m),
                walls.first().map_or_else(|| "-".into(), |d| secs(*d)),
                walls.last().map_or_else(|| "-".into(), |d| secs(*d)),
                mb(most)
            );
            (m, runs.first().map(|x| x.1).unwrap_or_default())
        });
        let note = match h.incremental {
            Some(_) => format!("median of {}", walls.len()),
            None => "FAILED".into(),
        };
        self.row("(b) backsweep incremental sweep", h.incremental, &note);

        // For reference: the protocol floor of an incremental check, on a warm copy.
        let mut floors = Vec::new();
        for _ in 0..REPEATS {
            self.proxy.take();
            match session_floor(self.proxy.port, &self.tls, USER_SWEEP) {
                Ok(wall) => floors.push((wall, self.proxy.take())),
                Err(e) => {
                    self.fail(format!("session floor failed: {e:#}"));
                    break;
                }
            }
        }
        let mut walls: Vec<Duration> = floors.iter().map(|m| m.0).collect();
        h.session_floor = median(&mut walls);
        if let Some(m) = h.session_floor {
            println!(
                "    for reference, login + SELECT INBOX + logout (same mailbox): median {}",
                secs(m)
            );
            let traffic = floors.first().map(|x| x.1);
            self.row(
                "    login + SELECT INBOX + logout",
                traffic.map(|t| (m, t)),
                &format!("median of {}", walls.len()),
            );
        }
        Ok(())
    }

    /// (d) imapfilter's header-search move, on its own cold copy of the mailbox.
    fn imapfilter(&mut self, imapfilter: &Path) -> Result<Option<(Duration, Traffic)>> {
        println!("\n(d) imapfilter -c {IMAPFILTER_LUA} -t CA (user {USER_FILTER}) ...");
        let home = self.work.path().join("imapfilter-home");
        std::fs::create_dir_all(&home)?;
        let mut cmd = Command::new(imapfilter);
        cmd.arg("-c")
            .arg(IMAPFILTER_LUA)
            .arg("-t")
            .arg(self.server.ca_file())
            .arg("-l")
            .arg(self.work.path().join("imapfilter-errors.log"))
            .env("HOME", &home)
            .env("IMAPFILTER_HOME", home.join(".imapfilter"))
            .env("BENCH_IMAP_HOST", self.server.host())
            .env("BENCH_IMAP_PORT", self.proxy.port.to_string())
            .env("BENCH_IMAP_USER", USER_FILTER)
            .env("BENCH_IMAP_PASSWORD", PASSWORD);
        let log = self.work.path().join("imapfilter");
        match measure_tool(&self.proxy, cmd, FILTER_TIMEOUT, &log, 4) {
            Ok(m) => {
                self.row("(d) imapfilter header-search move", Some(m), "");
                Ok(Some(m))
            }
            Err(e) => {
                self.fail(format!("imapfilter failed: {e}"));
                self.row("(d) imapfilter header-search move", None, "FAILED");
                Ok(None)
            }
        }
    }

    /// Logs in as `user` and reports what ended up in `quarantine`.
    fn report_outcome(&mut self, who: &str, user: &str, quarantine: &str) {
        let (backscatter, genuine) = self.mailbox.bounce_counts();
        match judge(
            &self.mailbox,
            self.server.tls_port(),
            &self.tls,
            user,
            quarantine,
        ) {
            Ok(o) => println!(
                "  {who:<10} -> {quarantine:<16}: {}",
                describe(&o, backscatter, genuine)
            ),
            Err(e) => self.fail(format!("inspecting the mailbox of {user}: {e:#}")),
        }
    }

    /// (e) The table and the ratios DESIGN.md's targets are about.
    fn print_summary(&self, h: &Headline) {
        let total = self.mailbox.total_bytes();
        println!(
            "\n=== summary: {} inbox + {} sent messages, mailbox {} ===",
            self.mailbox.inbox.len(),
            self.mailbox.sent_count,
            mb(total)
        );
        println!(
            "{:<38} {:>10} {:>12} {:>10} {:>10} {:>6}  note",
            "measurement", "wall", "downloaded", "% mailbox", "uploaded", "conns"
        );
        for r in &self.rows {
            let (down, pct, up, conns) = match r.traffic {
                Some(t) => (
                    mb(t.down),
                    format!("{:.2} %", percent(t.down, total)),
                    mb(t.up),
                    t.connections.to_string(),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            println!(
                "{:<38} {:>10} {:>12} {:>10} {:>10} {:>6}  {}",
                r.label,
                r.wall.map_or_else(|| "-".into(), secs),
                down,
                pct,
                up,
                conns,
                r.note
            );
        }

        let ratio = |a: Option<(Duration, Traffic)>, b: Option<(Duration, Traffic)>| match (a, b) {
            (Some((a, _)), Some((b, _))) => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
            _ => "n/a".into(),
        };
        println!("\nratios (DESIGN.md targets in brackets):");
        println!(
            "  backsweep first sweep / header floor : {}   [<= 1.5x]",
            ratio(h.first, h.floor)
        );
        println!(
            "  backsweep first sweep / imapfilter   : {}   [<= 1.0x]",
            ratio(h.first, h.imapfilter)
        );
        match h.incremental {
            Some((wall, t)) => println!(
                "  incremental sweep (median)           : {:.1} ms, {} bytes down   [< 100 ms] \
                 (process start alone: {}; login + SELECT INBOX + logout: {})",
                wall.as_secs_f64() * 1000.0,
                t.down,
                h.process_start.map_or_else(|| "n/a".into(), secs),
                h.session_floor.map_or_else(|| "n/a".into(), secs)
            ),
            None => println!("  incremental sweep                    : n/a"),
        }
        match h.first {
            Some((_, t)) => println!(
                "  first sweep bytes / mailbox bytes    : {:.2} %   [<= 3 %]",
                percent(t.down, total)
            ),
            None => println!("  first sweep bytes / mailbox bytes    : n/a"),
        }
    }
}

impl Mailbox {
    fn total_bytes(&self) -> u64 {
        self.inbox_bytes + self.sent_bytes
    }

    /// (backscatter, genuine) bounces generated.
    fn bounce_counts(&self) -> (usize, usize) {
        let count = |k: Kind| self.inbox.values().filter(|e| e.kind == k).count();
        (count(Kind::Backscatter), count(Kind::Genuine))
    }
}

fn run() -> Result<bool> {
    let inbox_total: usize = env_number("BENCH_INBOX", DEFAULT_INBOX)?;
    let sent_total: usize = env_number("BENCH_SENT", DEFAULT_SENT)?;
    let seed: u64 = env_number("BENCH_SEED", DEFAULT_SEED)?;
    let keep = std::env::var_os("BENCH_KEEP").is_some_and(|v| v == "1");

    // Fail fast (before seeding) when the comparison tool is missing: never skip it.
    let Some(imapfilter) = find_imapfilter() else {
        bail!(
            "imapfilter is not installed; the comparison needs it. Install it with:\n    \
             apt-get install -y imapfilter"
        );
    };
    let backsweep = std::env::var_os("BENCH_BACKSWEEP_BIN")
        .map_or_else(|| PathBuf::from(BACKSWEEP_BIN), PathBuf::from);
    if !backsweep.is_file() {
        bail!(
            "{} is missing; build it with `cargo build --release --bin backsweep`",
            backsweep.display()
        );
    }
    let load_start = loadavg();
    println!("backsweep sweep benchmark");
    println!(
        "  backsweep {} | dovecot {} | {} | {} cores | load average {load_start}",
        backsweep.display(),
        tool_version("dovecot", &["--version"]),
        tool_version(&imapfilter.to_string_lossy(), &["-V"]),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("backsweep-bench-")
        .tempdir()
        .context("creating the work directory")?;
    let users = [USER_SWEEP, USER_FILTER, USER_FLOOR];
    let creds: Vec<(&str, &str)> = users.iter().map(|u| (*u, PASSWORD)).collect();
    // Like Gmail, Cyrus and many Dovecot hosts, the server offers COMPRESS=DEFLATE (which
    // backsweep uses and imapfilter does not); BENCH_COMPRESS=off measures a server without.
    let offer_compress = std::env::var("BENCH_COMPRESS").map_or(true, |v| v != "off");
    let options = TestServerOptions {
        offer_compress,
        ..TestServerOptions::default()
    };
    let server = TestServer::start(&creds, options)
        .map_err(|e| anyhow!("{e}"))
        .context("starting Dovecot")?;
    println!(
        "  dovecot on 127.0.0.1 (tls port {}{}), started in {}",
        server.tls_port(),
        if offer_compress {
            ", offers COMPRESS=DEFLATE"
        } else {
            ", no COMPRESS"
        },
        secs(started.elapsed())
    );
    // Both tools start with their destination folder in place.
    server
        .create_folder(USER_FILTER, "FilterQuarantine")
        .map_err(|e| anyhow!("{e}"))?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs() as i64;
    let t = Instant::now();
    let mailbox = seed_mailbox(&server, &users, inbox_total, sent_total, seed, now)?;
    let (backscatter, genuine) = mailbox.bounce_counts();
    let mut styles: Vec<String> = mailbox
        .styles
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    styles.sort();
    println!(
        "  mailbox: INBOX {} messages ({}; {} bounces: {genuine} genuine, {backscatter} backscatter), \
         Sent {} ({}); total {}",
        mailbox.inbox.len(),
        mb(mailbox.inbox_bytes),
        genuine + backscatter,
        mailbox.sent_count,
        mb(mailbox.sent_bytes),
        mb(mailbox.total_bytes())
    );
    println!("  bounce styles: {}", styles.join(", "));
    println!(
        "  seeded 3 identical copies (users {}) in {}",
        users.join(", "),
        secs(t.elapsed())
    );

    let mut bench = Bench {
        proxy: Proxy::start(server.tls_port())?,
        tls: tls_config(&server.ca_file())?,
        server,
        work,
        mailbox,
        rows: Vec::new(),
        failures: Vec::new(),
    };
    let mut headline = Headline {
        floor: bench.header_floors(),
        ..Headline::default()
    };
    bench.backsweep_sweeps(&backsweep, &mut headline)?;
    headline.imapfilter = bench.imapfilter(&imapfilter)?;

    bench.print_summary(&headline);
    println!(
        "\nwhat was moved (by the Message-IDs generated; {backscatter} backscatter, {genuine} genuine):"
    );
    bench.report_outcome("backsweep", USER_SWEEP, "Quarantine");
    bench.report_outcome("imapfilter", USER_FILTER, "FilterQuarantine");
    println!(
        "\ntotal bench time {}; load average at start {load_start}, at end {}",
        secs(started.elapsed()),
        loadavg()
    );

    let Bench {
        server,
        work,
        failures,
        ..
    } = bench;
    if keep {
        println!("work directory kept: {}", work.keep().display());
    }
    drop(server);
    if failures.is_empty() {
        return Ok(true);
    }
    println!("\n{} measurement(s) failed:", failures.len());
    for f in &failures {
        println!("  - {}", f.lines().next().unwrap_or_default());
    }
    Ok(false)
}
