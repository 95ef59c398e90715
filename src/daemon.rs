//! `backsweep daemon`: every account in one process, each watched by its own task,
//! woken by IMAP IDLE (or NOOP polling where the server has no IDLE).
//!
//! Each wake-up runs the one-pass sweeper ([`crate::sweeper::sweep_account`]), so the
//! daemon moves mail exactly the way `backsweep sweep` does, with the same crash safety.
//! What this module adds is the watching and the staying alive:
//!
//! - **No missed mail.** The watching connection selects the inbox *before* each sweep
//!   starts. Mail that arrives after that is announced to it (as `EXISTS`), either while
//!   a later command runs or as soon as IDLE begins; [`ImapSession::idle`] returns at once
//!   for mail announced before it was called. Mail that arrived earlier is seen by the
//!   sweep itself. A full sweep also runs every `sent_refresh` (it refreshes the Sent
//!   index), as a safety net.
//! - **IDLE is re-issued** every `idle_renew` (default 15 minutes, well within the 29
//!   minutes after which servers may drop it); leaving and entering IDLE run under the
//!   account's timeout, so a dead connection is noticed then at the latest.
//! - **Faults.** Any error (connection cut, `BYE`, timeout, server down, bad password)
//!   ends that account's connection; it reconnects after an exponential backoff with
//!   jitter (`retry_min` doubling up to `retry_max`), reset by a successful sweep. A
//!   UIDVALIDITY change and a deleted quarantine folder are handled by the sweeper (the
//!   inbox is judged again; the folder is created again). One account failing never
//!   stops the others.
//! - **Signals.** SIGTERM and SIGINT stop the watching; a sweep in progress (and so any
//!   move in flight) is finished and its state committed, then the process exits 0.
//!   SIGHUP reloads the configuration and the rules (a broken new configuration is
//!   logged and the old one kept).
//! - **systemd.** With `$NOTIFY_SOCKET` set (`Type=notify`), readiness, reloading and
//!   stopping are reported, and `WATCHDOG=1` is sent at half of `$WATCHDOG_USEC`.
//!
//! Sweeps of different accounts take turns on the one state store; the watching and the
//! waiting run concurrently.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use crate::analysis::Analyzer;
use crate::config::{Account, Config};
use crate::imap::IdleEnd;
use crate::store::{Store, StoreError};
use crate::sweeper::{self, SweepError, SweepOptions};

/// Timings of the daemon (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonOptions {
    /// How long one IDLE command may last before it is re-issued.
    pub idle_renew: Duration,
    /// The longest time between two sweeps, even without new mail (refreshes the Sent
    /// index, which IDLE on the inbox does not watch).
    pub sent_refresh: Duration,
    /// How often a server without IDLE is polled with NOOP.
    pub poll_interval: Duration,
    /// The first reconnection delay after a failure (doubles with each failure in a row).
    pub retry_min: Duration,
    /// The longest reconnection delay.
    pub retry_max: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            idle_renew: Duration::from_secs(15 * 60),
            sent_refresh: Duration::from_secs(15 * 60),
            poll_interval: Duration::from_secs(60),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(5 * 60),
        }
    }
}

/// Errors that stop the whole daemon (anything account-specific is retried instead).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state store cannot be opened.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Signal handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Loads a fresh configuration and rule set (SIGHUP).
pub type Reload<'a> = dyn FnMut() -> Result<(Config, Analyzer), String> + 'a;

/// Runs the daemon until SIGTERM or SIGINT. `reload` is called on SIGHUP.
pub async fn run(
    config: Config,
    analyzer: Analyzer,
    reload: &mut Reload<'_>,
    options: DaemonOptions,
) -> Result<(), DaemonError> {
    // The account tasks share the (single-threaded) store: they run on this thread.
    tokio::task::LocalSet::new()
        .run_until(run_local(config, analyzer, reload, options))
        .await
}

async fn run_local(
    mut config: Config,
    analyzer: Analyzer,
    reload: &mut Reload<'_>,
    options: DaemonOptions,
) -> Result<(), DaemonError> {
    let mut store = Rc::new(Mutex::new(Store::open(&config.state_dir)?));
    let mut analyzer = Rc::new(analyzer);
    let mut signals = Signals::install()?;
    let watchdog = systemd::watchdog_interval();
    loop {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for (index, account) in config.accounts.iter().enumerate() {
            let watcher = Watcher {
                account: account.clone(),
                store: Rc::clone(&store),
                analyzer: Rc::clone(&analyzer),
                options,
                stop: stop_rx.clone(),
                rng: jitter_seed(index),
            };
            tasks.spawn_local(watcher.run());
        }
        tracing::info!(
            accounts = config.accounts.len(),
            config = %config.path.display(),
            "daemon running"
        );
        systemd::notify("READY=1\nSTATUS=watching the accounts");
        let signal = signals.next(watchdog).await;
        systemd::notify(match signal {
            Signal::Stop => "STOPPING=1\nSTATUS=finishing the sweeps in progress",
            Signal::Reload => "RELOADING=1\nSTATUS=reloading the configuration",
        });
        let _ = stop_tx.send(true);
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "an account task ended abnormally");
            }
        }
        match signal {
            Signal::Stop => {
                tracing::info!("daemon stopped");
                return Ok(());
            }
            Signal::Reload => match reload() {
                Ok((new_config, new_analyzer)) => {
                    if new_config.state_dir != config.state_dir {
                        match Store::open(&new_config.state_dir) {
                            Ok(s) => store = Rc::new(Mutex::new(s)),
                            Err(e) => {
                                tracing::error!(error = %e, "reload: keeping the old state directory");
                            }
                        }
                    }
                    tracing::info!(config = %new_config.path.display(), "configuration reloaded");
                    config = new_config;
                    analyzer = Rc::new(new_analyzer);
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the old configuration");
                }
            },
        }
    }
}

/// What the main loop was woken by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

/// The process signals the daemon reacts to.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let get = |k| signal(k).map_err(DaemonError::Signals);
            Ok(Signals {
                term: get(SignalKind::terminate())?,
                int: get(SignalKind::interrupt())?,
                hup: get(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal, pinging the systemd watchdog meanwhile.
    async fn next(&mut self, watchdog: Option<Duration>) -> Signal {
        let mut ping = watchdog.map(tokio::time::interval);
        loop {
            let tick = async {
                match ping.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(unix)]
            let signal = tokio::select! {
                _ = self.term.recv() => Some(Signal::Stop),
                _ = self.int.recv() => Some(Signal::Stop),
                _ = self.hup.recv() => Some(Signal::Reload),
                () = tick => None,
            };
            #[cfg(not(unix))]
            let signal = tokio::select! {
                _ = tokio::signal::ctrl_c() => Some(Signal::Stop),
                () = tick => None,
            };
            match signal {
                Some(s) => return s,
                None => systemd::notify("WATCHDOG=1"),
            }
        }
    }
}

/// One account's task: connect, sweep, wait for news, repeat; back off on failure.
struct Watcher {
    account: Account,
    store: Rc<Mutex<Store>>,
    analyzer: Rc<Analyzer>,
    options: DaemonOptions,
    stop: watch::Receiver<bool>,
    rng: u64,
}

impl Watcher {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            if self.stopping() {
                return;
            }
            // A panic is a bug, but it must not silence this account until the
            // next reload: abandon any half-written batch and start over, like
            // after a failure (the other accounts never notice either way).
            let watched = AssertUnwindSafe(self.watch(&mut failures))
                .catch_unwind()
                .await;
            let error = match watched {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(panic) => {
                    self.store.lock().await.rollback();
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    format!(
                        "account {}: panicked (a bug; please report it): {what}",
                        self.account.name
                    )
                }
            };
            failures = failures.saturating_add(1);
            let wait = self.backoff(failures);
            tracing::warn!(
                account = %self.account.name,
                error = %error,
                retry_in_ms = wait.as_millis() as u64,
                failures,
                "account failed; reconnecting after a pause"
            );
            if self.sleep_or_stop(wait).await {
                return;
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps; true if told to stop meanwhile.
    async fn sleep_or_stop(&mut self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => self.stopping(),
            _ = stop.wait_for(|s| *s) => true,
        }
    }

    /// The delay before reconnection attempt `failures`: exponential with jitter, so
    /// that many accounts on one failed server do not return in lockstep.
    fn backoff(&mut self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let base = self
            .options
            .retry_min
            .saturating_mul(1u32 << exp)
            .min(self.options.retry_max);
        // Uniform in [base/2, base].
        let r = next_random(&mut self.rng) % 1001;
        base / 2 + base / 2 * (r as u32) / 1000
    }

    fn imap_err(&self, source: crate::imap::ImapError) -> SweepError {
        SweepError::Imap {
            account: self.account.name.clone(),
            source,
        }
    }

    /// One connection's life: returns Ok when told to stop, Err on any failure.
    async fn watch(&mut self, failures: &mut u32) -> Result<(), SweepError> {
        let mut stop = self.stop.clone();
        let connected = tokio::select! {
            r = sweeper::connect(&self.account) => r?,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let mut session = connected;
        let status = session
            .examine(&self.account.inbox)
            .await
            .map_err(|e| self.imap_err(e))?;
        let use_idle = session.has_capability("IDLE");
        tracing::info!(
            account = %self.account.name,
            uidvalidity = status.uidvalidity,
            idle = use_idle,
            "watching the inbox"
        );
        loop {
            self.sweep().await?;
            *failures = 0;
            let swept_at = Instant::now();
            let end = loop {
                let until_refresh = self.options.sent_refresh.saturating_sub(swept_at.elapsed());
                if until_refresh.is_zero() {
                    break IdleEnd::Timeout;
                }
                let end = if use_idle {
                    let max = until_refresh.min(self.options.idle_renew);
                    let stopped = stop_signal(self.stop.clone());
                    let (s, end) = session
                        .idle(max, stopped)
                        .await
                        .map_err(|e| self.imap_err(e))?;
                    session = s;
                    end
                } else {
                    let wait = until_refresh.min(self.options.poll_interval);
                    if self.sleep_or_stop(wait).await {
                        IdleEnd::Stopped
                    } else {
                        session.noop().await.map_err(|e| self.imap_err(e))?;
                        if session.take_new_mail() {
                            IdleEnd::NewMail
                        } else {
                            IdleEnd::Timeout
                        }
                    }
                };
                if end != IdleEnd::Timeout {
                    break end;
                }
            };
            if end == IdleEnd::Stopped || self.stopping() {
                let _ = session.logout().await;
                return Ok(());
            }
            tracing::debug!(account = %self.account.name, reason = ?end, "woken");
        }
    }

    /// One sweep of this account (the store is shared: sweeps take turns). Never
    /// cancelled once started, so a move in flight is always completed and recorded.
    async fn sweep(&self) -> Result<(), SweepError> {
        let mut store = self.store.lock().await;
        let started = Instant::now();
        let report = sweeper::sweep_account(
            &self.account,
            &mut store,
            &self.analyzer,
            SweepOptions::default(),
        )
        .await?;
        if report.quarantined > 0 || report.sent_indexed > 0 {
            tracing::info!(
                account = %self.account.name,
                examined = report.examined,
                quarantined = report.quarantined,
                sent_indexed = report.sent_indexed,
                ms = started.elapsed().as_millis() as u64,
                "swept"
            );
        }
        Ok(())
    }
}

/// Completes when the daemon is told to stop (or its controller is gone).
async fn stop_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn jitter_seed(index: usize) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (now ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}

/// xorshift64: plenty for jitter, and no dependency.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// The systemd notification protocol (`sd_notify`), spoken directly: one datagram to
/// the Unix socket named by `$NOTIFY_SOCKET`. Without that variable nothing is sent.
mod systemd {
    use std::time::Duration;

    /// Sends `state` (e.g. `READY=1`) to systemd, if it is listening.
    pub fn notify(state: &str) {
        #[cfg(unix)]
        if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
            if let Err(e) = send(&path, state) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
        #[cfg(not(unix))]
        let _ = state;
    }

    #[cfg(unix)]
    fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::UnixDatagram;
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)?;
                return Ok(());
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                let _ = name;
                return Err(std::io::Error::other("abstract sockets need Linux"));
            }
        }
        socket.send_to(state.as_bytes(), path)?;
        Ok(())
    }

    /// Half the watchdog period systemd asks for (`WatchdogSec=`), if any and if it is
    /// meant for this process.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok()? != std::process::id() {
                return None;
            }
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stays_within_the_maximum() {
        let (_tx, rx) = watch::channel(false);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut w = Watcher {
            account: crate::config::Config::from_yaml(
                "state_dir: /tmp/x\naccounts:\n  - name: a\n    host: 127.0.0.1\n    tls: none\n    username: u@example.com\n    password: { env: X }\n",
                std::path::Path::new("t.yaml"),
            )
            .expect("config")
            .accounts[0]
                .clone(),
            store: Rc::new(Mutex::new(Store::open(dir.path()).expect("store"))),
            analyzer: Rc::new(Analyzer::builtin().expect("rules")),
            options: DaemonOptions {
                retry_min: Duration::from_secs(1),
                retry_max: Duration::from_secs(60),
                ..DaemonOptions::default()
            },
            stop: rx,
            rng: jitter_seed(3),
        };
        for (failures, base) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            let base = Duration::from_secs(base);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..50 {
                let d = w.backoff(failures);
                assert!(d >= base / 2 && d <= base, "{failures}: {d:?} vs {base:?}");
                seen.insert(d);
            }
            assert!(seen.len() > 5, "no jitter: {seen:?}");
        }
    }

    #[test]
    fn random_numbers_differ_per_account() {
        let (mut a, mut b) = (jitter_seed(0), jitter_seed(1));
        assert_ne!(next_random(&mut a), next_random(&mut b));
    }
}
