#!/usr/bin/env bash
# Debian packages the tests drive, installed only when missing:
#   chromium   - the Prefect UI test (Playwright drives it; it never downloads a browser)
#   postgresql - the SQL sink and resume tests against a real server (.ci/postgres.sh starts one)
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
echo "installing Debian packages: ${missing[*]}" >&2
"${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2 || { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2; }
