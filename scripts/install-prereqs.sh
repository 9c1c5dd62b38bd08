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
#     the tests start their own throw-away clusters (src/testkit/);
#   * checks that the `postgres` OS user exists (tests run the server as
#     that user when they run as root) and that cargo is installed;
#   * installs the S3 servers the tests start: moto (pip, into python3) and
#     s3s-fs (cargo install), each at a pinned version.
#
# Later additions (pgbackrest, ...) go in the PACKAGES list or in a section
# of their own below.
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

# ---------------------------------------------------------------- S3 test servers

# The S3 tests start real servers (src/testkit/s3.rs) and never skip: moto
# (storage classes, restores; does not check signatures) and s3s-fs (checks
# SigV4 signatures). Both go to the user running the tests: moto into the
# default python3 (the one on PATH), s3s-fs into cargo's bin directory.
MOTO_VERSION=5.2.5
S3S_FS_VERSION=0.14.1   # 0.15 and later need rustc 1.96

command -v python3 >/dev/null 2>&1 || die "python3 not found; apt-get install python3 python3-pip (moto, the S3 test server, is a Python package)"
have_moto=$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || true)
if [[ $have_moto != "$MOTO_VERSION" ]]; then
    say "installing moto[server] $MOTO_VERSION into $(command -v python3)${have_moto:+ (found $have_moto)}"
    python3 -m pip --version >/dev/null 2>&1 \
        || die "pip is not available for $(command -v python3); apt-get install python3-pip"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
        || die "could not install moto[server]==$MOTO_VERSION with $(command -v python3) -m pip"
    python3 -c 'import moto.server' 2>/dev/null || die "moto installed, but python3 cannot import moto.server"
fi

cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
s3s_fs=$(command -v s3s-fs 2>/dev/null || true)
[[ -n $s3s_fs || ! -x $cargo_bin/s3s-fs ]] || s3s_fs=$cargo_bin/s3s-fs
have_s3s_fs=""
[[ -z $s3s_fs ]] || have_s3s_fs=$("$s3s_fs" --version 2>/dev/null | awk '{print $NF}' || true)
if [[ $have_s3s_fs != "$S3S_FS_VERSION" ]]; then
    say "installing s3s-fs $S3S_FS_VERSION with cargo (a few minutes)${have_s3s_fs:+ (found $have_s3s_fs)}"
    cargo=$(command -v cargo 2>/dev/null || echo "$cargo_bin/cargo")
    "$cargo" install --quiet --locked s3s-fs --version "$S3S_FS_VERSION" --features binary \
        || die "could not build s3s-fs $S3S_FS_VERSION (cargo install s3s-fs --version $S3S_FS_VERSION --features binary --locked)"
fi
