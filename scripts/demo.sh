#!/usr/bin/env bash
# The built-in demo: a private Dovecot on 127.0.0.1 seeded with sample mail,
# one sweep, and a before/after table. Touches no real mailbox.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
exec cargo run --release --quiet -- demo "$@"
