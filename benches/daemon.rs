//! Benchmark of `backsweep daemon` against a private Dovecot on loopback
//! (prints numbers; no pass/fail):
//!
//! 1. Latency: APPEND of a backscatter bounce to the inbox → the bounce is in
//!    Quarantine (seen by polling EXAMINE every 5 ms), median and p95 over 50.
//! 2. Memory: VmRSS and VmHWM of the daemon with 1 account and with 200
//!    accounts (200 users on the private Dovecot), after every account's first
//!    sweep.
//! 3. CPU while idle: utime+stime of the daemon over a quiet interval.
//!
//! Targets (DESIGN.md): latency median < 1 s; RSS < 30 MB with one account and
//! < 150 MB with 200; idle CPU near zero.
//!
//! Run: `cargo bench --bench daemon` (Linux: reads /proc).

#[path = "../tests/common/daemon_process.rs"]
mod daemon_process;
#[path = "../tests/common/messages.rs"]
mod messages;
#[path = "../tests/common/session.rs"]
mod session;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backsweep::imap::ImapSession;
use backsweep::testserver::{account_config_yaml, yaml_path, TestServer, TestServerOptions};
use daemon_process::DaemonProcess;

const PASS: &str = "bench daemon pw";
const BIN: &str = env!("CARGO_BIN_EXE_backsweep");
const ACCOUNTS: usize = 200;
const SAMPLES: usize = 50;
/// The quiet interval over which idle CPU is measured.
const QUIET: Duration = Duration::from_secs(10);

fn user(i: usize) -> String {
    format!("user{i:03}@example.com")
}

/// A config with accounts `0..n` on the server's plaintext loopback port.
fn write_config(server: &TestServer, dir: &Path, n: usize, name: &str) -> PathBuf {
    let pw = dir.join("password");
    if !pw.exists() {
        std::fs::write(&pw, PASS).expect("password file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut yaml = String::new();
    for i in 0..n {
        let one = account_config_yaml(
            &format!("a{i:03}"),
            &user(i),
            server.plain_port(),
            None,
            &dir.join(format!("state-{name}")),
            &format!("{{ file: {} }}", yaml_path(&pw)),
            "    sent: [Sent]\n",
        )
        .replace("tls: implicit", "tls: none");
        if i == 0 {
            yaml.push_str(&one);
        } else {
            let at = one.find("  - name:").expect("account entry");
            yaml.push_str(&one[at..]);
        }
    }
    let path = dir.join(format!("config-{name}.yaml"));
    std::fs::write(&path, yaml).expect("config");
    path
}

async fn session(server: &TestServer, user: &str) -> ImapSession {
    session::loopback_session(server.plain_port(), user, PASS).await
}

/// Waits until the daemon log shows `n` accounts watching and their first sweeps done.
fn wait_watching(d: &DaemonProcess, n: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        if log.matches("watching the inbox").count() >= n {
            // The first sweeps follow the watching connections; give them a moment.
            std::thread::sleep(Duration::from_millis(500));
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "only {} of {n} accounts watching after {limit:?}:\n{}",
            log.matches("watching the inbox").count(),
            d.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn memory(d: &DaemonProcess) -> (f64, f64) {
    let mb = |f| d.status_kb(f).unwrap_or(0) as f64 / 1024.0;
    (mb("VmRSS"), mb("VmHWM"))
}

/// CPU seconds used over [`QUIET`] with nothing happening (after the start-up
/// work — every account's first sweep — has settled: no CPU used for 2 s).
fn idle_cpu(d: &DaemonProcess) -> f64 {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let settle_limit = Instant::now() + Duration::from_secs(120);
    loop {
        let a = d.cpu_ticks().unwrap_or(0);
        std::thread::sleep(Duration::from_secs(2));
        if d.cpu_ticks().unwrap_or(0) == a || Instant::now() > settle_limit {
            break;
        }
    }
    let before = d.cpu_ticks().unwrap_or(0);
    std::thread::sleep(QUIET);
    let after = d.cpu_ticks().unwrap_or(0);
    (after - before) as f64 / ticks_per_sec
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let users: Vec<String> = (0..ACCOUNTS).map(user).collect();
    let pairs: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), PASS)).collect();
    let server = TestServer::start(&pairs, TestServerOptions::default())
        .unwrap_or_else(|e| panic!("cannot start the private Dovecot: {e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let old_sent = messages::sent_in_2000(&user(0));
    server
        .deliver(&user(0), "Sent", &old_sent, "S")
        .expect("seed Sent");

    // 1 account: latency, memory, idle CPU.
    let config = write_config(&server, dir.path(), 1, "one");
    let mut d = DaemonProcess::start(BIN, &config, &[], &dir.path().join("one.log"));
    wait_watching(&d, 1, Duration::from_secs(30));
    let mut appender = session(&server, &user(0)).await;
    let mut watcher = session(&server, &user(0)).await;
    let mut samples = Vec::new();
    for n in 0..SAMPLES as u32 {
        let before = watcher.examine("Quarantine").await.expect("examine").exists;
        let bounce = messages::dsn(
            &user(0),
            n,
            &format!("forged-{n}@spam.example.org"),
            &user(0),
            "Mon, 02 Mar 2026 09:00:00 +0000",
        );
        let started = Instant::now();
        appender.append("INBOX", &bounce).await.expect("append");
        loop {
            let now = watcher.examine("Quarantine").await.expect("examine").exists;
            if now > before {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "bounce {n} not quarantined within 30 s:\n{}",
                d.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "latency APPEND → Quarantine over {SAMPLES}: median {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms (target: median < 1000 ms)",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.95)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    );
    let _ = appender.logout().await;
    let _ = watcher.logout().await;
    let (rss, hwm) = memory(&d);
    println!("memory, 1 account: VmRSS {rss:.1} MB, VmHWM {hwm:.1} MB (target: < 30 MB)");
    let cpu = idle_cpu(&d);
    println!(
        "idle CPU, 1 account: {cpu:.2} s of CPU in {} s",
        QUIET.as_secs()
    );
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");

    // 200 accounts: memory, idle CPU.
    let config = write_config(&server, dir.path(), ACCOUNTS, "many");
    let mut d = DaemonProcess::start(BIN, &config, &[], &dir.path().join("many.log"));
    let took = wait_watching(&d, ACCOUNTS, Duration::from_secs(120));
    println!(
        "{ACCOUNTS} accounts watching after {:.1} s",
        took.as_secs_f64()
    );
    let (rss, hwm) = memory(&d);
    println!(
        "memory, {ACCOUNTS} accounts: VmRSS {rss:.1} MB, VmHWM {hwm:.1} MB (target: < 150 MB)"
    );
    let cpu = idle_cpu(&d);
    println!(
        "idle CPU, {ACCOUNTS} accounts: {cpu:.2} s of CPU in {} s",
        QUIET.as_secs()
    );
    let started = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
    println!(
        "SIGTERM with {ACCOUNTS} accounts: exit 0 after {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
