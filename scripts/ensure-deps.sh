#!/usr/bin/env bash
# Installs what backsweep's demo and tests need and the machine lacks:
# Dovecot's IMAP server (a private instance is started on 127.0.0.1 by the
# tests and the demo; the system service is never used) and openssl (for its
# throw-away certificates). Debian/Ubuntu only; elsewhere it says what to install.
#
# Usage: scripts/ensure-deps.sh [extra Debian packages...]
set -euo pipefail

need=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "backsweep needs: ${need[*]} (Dovecot's IMAP server and openssl). Install them with your package manager and run this again." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "backsweep needs: ${need[*]}. As root, run: apt-get update && apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
echo "Installing ${need[*]} (Debian packages; the system Dovecot service is not started or used)..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
