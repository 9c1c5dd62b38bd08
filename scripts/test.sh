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
echo "== cargo test"
# Tests start real PostgreSQL clusters (as the postgres user when run as root).
cargo test --all-targets --no-fail-fast 2>&1
