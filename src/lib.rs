//! backsweep keeps backscatter — bounces, auto-replies and challenges caused by
//! spammers forging your address — out of an IMAP inbox, while genuine bounces
//! for mail you really sent stay where you will see them.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Its modules, one
//! concern each:
//!
//! - [`analysis`] — pure: raw message bytes in, an [`analysis::Analysis`] out
//!   (what kind of message it is, which original it refers to, who failed).
//!   Knows nothing of IMAP, files or configuration.
//! - [`config`] — the YAML configuration, validated into typed settings.
//! - [`secrets`] — passwords and tokens from the keyring, env, a command or a file.
//! - [`imap`] — one authenticated IMAP session: TLS, timeouts, fetch and safe moves.
//! - [`oauth`] — OAuth2 sign-in (`backsweep login`), provider presets, token refresh.
//! - [`store`] — the SQLite state: watermarks, the sent index, the audit log.
//! - [`verdict`] — analysis + sent index → genuine / backscatter / unknown, with reasons.
//! - [`evidence`] — signed tags, BATV, learned fingerprints, the recipient window.
//! - [`sweeper`] — one pass over one account: index Sent, judge new inbox mail, move.
//! - [`daemon`] — every account watched at once (IDLE), reconnecting after faults.
//! - [`testserver`] — a private Dovecot on loopback for the demo and the tests.
//! - [`demo`] — the built-in demo: a private Dovecot seeded with sample mail, one sweep.
//! - [`ordered`] — work on several threads, results in order (`inspect`).
//! - [`jsonl`] — the JSON Lines `inspect --json` prints, written by hand for speed.
//! - [`cli`] — the command-line contract (`inspect`, `sweep`, ...), human and
//!   JSON output, exit codes.

pub mod analysis;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod evidence;
pub mod imap;
pub mod jsonl;
pub mod oauth;
pub mod ordered;
pub mod prefetch;
pub mod search_net;
pub mod secrets;
pub mod store;
pub mod sweeper;
pub mod testserver;
pub mod verdict;
