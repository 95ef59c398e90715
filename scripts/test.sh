#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (a private
# Dovecot is started by the tests themselves), then unit, corpus, robustness
# and IMAP tests, then formatting and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
# --show-output: the measured numbers (corpus accuracy, sweeps, the daemon's
# fault test: cuts and restarts survived) are part of the result.
cargo test -- --show-output
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
