#!/usr/bin/env bash
# The demo: installs what is missing, builds lifeboat, starts a throwaway
# PostgreSQL with the plan's sample data, backs it up, restores it into a new
# database, runs the plan's restore checks and prints what happened.
# Usage: bash scripts/demo.sh      (as root on Debian 12; PostgreSQL runs as postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prereqs.sh
cargo build --release --quiet --bin lifeboat --example demo
exec target/release/examples/demo
