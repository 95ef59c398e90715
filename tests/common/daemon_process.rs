// Every test crate (and the daemon benchmark) uses only part of this file.
#![allow(dead_code)]

//! `backsweep daemon` as a child process, for the daemon tests and the daemon
//! benchmark: start it, signal it, wait for it, read its memory and CPU use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `backsweep daemon` (killed on drop if still running).
pub struct DaemonProcess {
    child: Child,
    /// Its standard error (the log), for failure messages.
    pub log: PathBuf,
}

impl DaemonProcess {
    /// Starts `bin --config config daemon args...` with `BACKSWEEP_LOG=info`,
    /// logging to `log`.
    pub fn start(bin: &str, config: &Path, args: &[&str], log: &Path) -> DaemonProcess {
        DaemonProcess::start_with_env(bin, config, args, log, &[])
    }

    /// Like [`DaemonProcess::start`] with extra environment variables.
    pub fn start_with_env(
        bin: &str,
        config: &Path,
        args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> DaemonProcess {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log file");
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("daemon")
            .args(args)
            .env("BACKSWEEP_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start backsweep daemon");
        DaemonProcess {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A `/proc/PID/status` field in kB (e.g. `VmRSS`, `VmHWM`); Linux only.
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        text.lines()
            .find(|l| l.starts_with(&format!("{field}:")))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// User plus system CPU time so far, in clock ticks (`/proc/PID/stat`).
    pub fn cpu_ticks(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = &text[text.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
