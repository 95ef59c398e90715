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
//! - [`cli`] — the command-line contract (`inspect`, `sweep`, ...), human and
//!   JSON output, exit codes.

pub mod analysis;
pub mod cli;
