#!/usr/bin/env bash
# The whole test suite, as CI runs it: prerequisites, formatting, lints, tests.
# Usage: bash scripts/test.sh            (as root on Debian 12, or as a user with sudo-installed prereqs)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-prereqs.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo build --examples"
cargo build --examples --quiet
echo "== cargo test"
# Tests start real PostgreSQL clusters (as the postgres user when run as root).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --lib --bins --tests --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
