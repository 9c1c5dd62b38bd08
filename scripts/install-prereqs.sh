#!/usr/bin/env bash
# Makes a fresh Debian 12 (bookworm) machine ready to build and test
# lifeboat. Run as root. Idempotent, and quiet when everything is present.
#
#   sudo scripts/install-prereqs.sh
#
# What it does:
#   * installs the Debian packages below (apt-get update only if something
#     is missing);
#   * stops and disables the PostgreSQL cluster Debian starts on install:
#     the tests start their own throw-away clusters (src/testkit.rs);
#   * checks that the `postgres` OS user exists (tests run the server as
#     that user when they run as root) and that cargo is installed.
#
# Later additions (moto, pgbackrest, ...) go in the PACKAGES list or in a
# section of their own below.
set -euo pipefail

PACKAGES=(
    postgresql          # server + client; PostgreSQL 15 on bookworm
    postgresql-contrib
    build-essential
    pkg-config
    curl
    ca-certificates
    util-linux
    procps
    e2fsprogs
)

say() { printf 'install-prereqs: %s\n' "$*"; }
die() { printf 'install-prereqs: error: %s\n' "$*" >&2; exit 1; }

is_installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# ---------------------------------------------------------------- packages

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing packages: ${missing[*]}; run this script as root (or: sudo apt-get install ${missing[*]})"
    fi
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- PostgreSQL

# The tests never use the packaged cluster; stop it (best effort) so it does
# not hold port 5432 or memory, and keep it from starting at boot.
if command -v pg_lsclusters >/dev/null 2>&1; then
    # Columns: Ver Cluster Port Status Owner Data-directory Log-file
    while read -r ver cluster _port status _rest; do
        [[ $status == online* ]] || continue
        say "stopping packaged PostgreSQL cluster $ver/$cluster (tests start their own)"
        pg_ctlcluster "$ver" "$cluster" stop || say "warning: could not stop $ver/$cluster"
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
fi
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-enabled --quiet postgresql 2>/dev/null; then
        say "disabling postgresql.service"
        systemctl disable --now postgresql >/dev/null 2>&1 || say "warning: could not disable postgresql.service"
    fi
elif ! command -v pg_lsclusters >/dev/null 2>&1 && command -v service >/dev/null 2>&1 \
        && pgrep -u postgres -x postgres >/dev/null 2>&1; then
    # No postgresql-common tools and no systemd: fall back to the init script.
    service postgresql stop >/dev/null 2>&1 || true
fi

getent passwd postgres >/dev/null \
    || die "no 'postgres' OS user; the postgresql package normally creates it (tests run the server as that user when run as root)"

bindir=""
if command -v pg_config >/dev/null 2>&1; then
    bindir=$(pg_config --bindir 2>/dev/null || true)
fi
if [[ -z $bindir || ! -x $bindir/initdb ]]; then
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
[[ -n $bindir && -x $bindir/initdb && -x $bindir/pg_ctl ]] \
    || die "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"

# ---------------------------------------------------------------- Rust

if ! command -v cargo >/dev/null 2>&1 && [[ ! -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    cat >&2 <<'EOF'
install-prereqs: error: cargo not found. Install Rust with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"
EOF
    exit 1
fi
