# Shared by the benchmarks in bench/: sourced, not run. The calling script sets
# ROOT, PGBIN, PORT, TMP_PARENT, REV, QUIET_WAIT, RETRIES, OTHER_LIMIT and
# DISTURBED_COL (the column of $RESULTS that marks a disturbed run), then calls
# bench_setup NAME and start_cluster.
# shellcheck shell=bash

BENCH_START=$(date +%s)
HZ=$(getconf CLK_TCK)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# bench_setup NAME: prerequisites, a temp dir ($T, $WORK, $SOCK, $PGDATA,
# $RESULTS) removed on exit with the cluster, and a private lifeboat binary ($LB)
bench_setup() {
    [[ $(id -u) == 0 ]] || die "run as root (the cluster runs as the postgres OS user)"
    # prerequisites
    if [[ -f scripts/install-prereqs.sh ]]; then
        bash scripts/install-prereqs.sh
    fi
    local missing=()
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v jq >/dev/null || missing+=(jq)
    [[ -x $PGBIN/pgbench ]] || missing+=(postgresql-15)
    [[ -f /usr/share/postgresql/15/extension/pgcrypto.control ]] || missing+=(postgresql-contrib)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi

    # temp dir, build
    T=$(mktemp -d "$TMP_PARENT/lifeboat-$1.XXXXXX")
    chmod 755 "$T"
    WORK=$T/work
    mkdir -p "$WORK/logs" "$T/sock" "$T/pgdata"
    chown postgres: "$T/sock" "$T/pgdata"
    SOCK=$T/sock
    PGDATA=$T/pgdata
    RESULTS=$WORK/results.tsv
    VALUES=$WORK/values.tsv
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    if [[ -n $REV ]]; then
        GIT_REV=$(git rev-parse --short "$REV^{commit}")
        GIT_DIRTY=no
        log "building lifeboat $GIT_REV (release, from git archive)"
        mkdir -p "$T/src"
        git archive "$GIT_REV" | tar -x -C "$T/src"
        CARGO_TARGET_DIR=$ROOT/target/bench-rev cargo build --release --quiet --bin lifeboat --manifest-path "$T/src/Cargo.toml"
        BUILT=$ROOT/target/bench-rev/release/lifeboat
    else
        log "building lifeboat (release, working tree)"
        GIT_REV=$(git rev-parse --short HEAD)
        GIT_DIRTY=$(git status --porcelain -- src Cargo.toml Cargo.lock | grep -q . && echo yes || echo no)
        cargo build --release --quiet --bin lifeboat
        BUILT=target/release/lifeboat
    fi
    # A private copy: target/ is shared, and a rebuild by someone else must not swap
    # the binary in the middle of the run.
    cp "$BUILT" "$T/lifeboat"
    LB=$T/lifeboat
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -f $PGDATA/postmaster.pid ]]; then
        runuser -u postgres -- pg_ctl -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$T"
    exit "$rc"
}

# start_cluster: a throwaway PostgreSQL 15 on a Unix socket only, as the postgres
# OS user; $POSTMASTER is its pid; client programs find it through PG* variables
start_cluster() {
    log "starting a throwaway cluster in $T (port $PORT, socket only)"
    runuser -u postgres -- initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C >"$WORK/logs/initdb.log"
    cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PORT
shared_buffers = 1GB
fsync = on
max_wal_size = 4GB
checkpoint_timeout = 30min
EOF
    runuser -u postgres -- pg_ctl -D "$PGDATA" -l "$SOCK/postgres.log" -w start >/dev/null
    read -r POSTMASTER <"$PGDATA/postmaster.pid"

    export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres
    export LIFEBOAT_PASSPHRASE='benchmark passphrase, not a secret'
}

sql() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
url() { echo "postgres://postgres@/$1?host=$SOCK&port=$PORT"; }

# jiffies the whole machine spent busy
machine_busy() {
    local _cpu u n s i w irq sirq st _rest
    read -r _cpu u n s i w irq sirq st _rest </proc/stat
    echo $((u + n + s + irq + sirq + st))
}
# wait until the machine is idle: other users of this machine (builds, test
# suites) would make any timing meaningless
wait_quiet() {
    local start=$SECONDS a b said=0
    while :; do
        a=$(machine_busy)
        sleep 1
        b=$(machine_busy)
        if awk -v d=$((b - a)) -v hz="$HZ" -v lim="$OTHER_LIMIT" 'BEGIN { exit !(d / hz < lim) }'; then
            return
        fi
        if ((SECONDS - start >= QUIET_WAIT)); then
            log "  the machine is still busy after ${QUIET_WAIT} s; measuring anyway"
            return
        fi
        if ((!said)); then
            log "  waiting for the machine to be idle (other processes use $(awk -v d=$((b - a)) -v hz="$HZ" 'BEGIN { printf "%.1f", d / hz }') cores)"
            said=1
        fi
        sleep 4
    done
}
# attempt FN: run the step function FN (which prepares and calls measure once);
# measure again while other processes disturbed it, at most RETRIES more times.
attempt() {
    local i
    for ((i = 0; i <= RETRIES; i++)); do
        "$@"
        ((M_DISTURBED)) || return 0
        log "  disturbed: other processes used $M_OTHER cores during the run"
    done
}

# ------------------------------------------------------------ aggregating
# the runs of a step: the undisturbed ones, or all of them if every run was disturbed
rows() { # DS STEP
    awk -F'\t' -v ds="$1" -v st="$2" -v d="$DISTURBED_COL" '$1 == ds && $2 == st { all[++n] = $0; if ($d == 0) clean[++m] = $0 }
        END { if (m) for (i = 1; i <= m; i++) print clean[i]; else for (i = 1; i <= n; i++) print all[i] }' "$RESULTS"
}
median_col() { # DS STEP COLUMN
    rows "$1" "$2" | cut -f"$3" | sort -n |
        awk '{ a[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
median_time() { median_col "$1" "$2" 4; }
all_times() { # DS STEP -> "12.3 / 12.5* / 12.9" in run order, * = disturbed
    awk -F'\t' -v ds="$1" -v st="$2" -v d="$DISTURBED_COL" '$1 == ds && $2 == st { s = s (s == "" ? "" : " / ") $4 ($d ? "*" : "") } END { print s }' "$RESULTS"
}
median_stdin() {
    sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2];
        else { m = sprintf("%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2); sub(/\.?0+$/, "", m); print m } }'
}
tmed() { rows "$1" "$2" | cut -f"${3:-4}" | median_stdin; } # DS STEP [COLUMN]: median of the (undisturbed) runs
tmax() { rows "$1" "$2" | cut -f"${3:-4}" | sort -n | tail -n1; } # DS STEP [COLUMN]: maximum of the (undisturbed) runs

# other numbers of a run (sizes, counts, times) in $VALUES: "ds step run key value"
value() { printf '%s\t%s\t%s\t%s\t%s\n' "$DS" "$STEP" "$RUN" "$1" "$2" >>"$VALUES"; }
vmed() { # DS STEP KEY -> the median of that value over all runs
    awk -F'\t' -v ds="$1" -v st="$2" -v k="$3" '$1 == ds && $2 == st && $4 == k { print $5 }' "$VALUES" | median_stdin
}
mib() { awk -v b="$1" 'BEGIN { if (b < 1048576) printf "%.0f KiB", b / 1024; else printf "%.1f MiB", b / 1048576 }'; }
kmib() { awk -v k="$1" 'BEGIN { printf "%d MiB", k / 1024 + 0.5 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
verdict() { if "$@"; then echo PASS; else echo FAIL; fi; }
# comparisons for verdict; targets are judged on unrounded values (ratio rounds
# for display: 0.502 prints as 0.50, which is not <= 0.5)
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
within() { awk -v a="$1" -v b="$2" -v l="$3" 'BEGIN { exit !(b > 0 && a <= l * b) }'; }   # A / B <= L
at_least() { awk -v a="$1" -v b="$2" -v l="$3" 'BEGIN { exit !(b > 0 && a >= l * b) }'; } # A / B >= L
get() { eval "echo \"\${$1:-}\""; }
put() { printf -v "$1" '%s' "$2"; }

disk_speed() { # a 1 GiB sequential write with fsync at the end, on the bench disk
    dd if=/dev/zero of="$WORK/ddtest" bs=1M count=1024 conv=fsync 2>&1 | tail -n1 | awk -F', ' '{print $NF}'
    rm -f "$WORK/ddtest"
}
# machine_facts: $DISK_DEV $DISK_FS $DISK_WRITE $CPU $MEM_GIB $PG_VERSION $LB_VERSION
machine_facts() {
    DISK_DEV=$(findmnt -no SOURCE -T "$T")
    DISK_FS=$(findmnt -no FSTYPE -T "$T")
    DISK_WRITE=$(disk_speed)
    CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
    MEM_GIB=$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
    PG_VERSION=$(postgres --version)
    LB_VERSION=$("$LB" --version)
    log "machine: $(nproc) cores ($CPU), $MEM_GIB GiB, $DISK_DEV $DISK_FS ($DISK_WRITE sequential write), $PG_VERSION, $LB_VERSION $GIT_REV"
}

# write_section FILE: put FILE (a section between $BEGIN_MARK and $END_MARK) into
# $OUT: replace the old section, or insert it before "## Notes", or append it.
write_section() {
    local file=$1
    if [[ ! -f $OUT ]]; then
        cp "$file" "$OUT.tmp"
    elif grep -qxF "$BEGIN_MARK" "$OUT"; then
        awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v f="$file" '
            $0 == b { while ((getline l < f) > 0) print l; skip = 1; next }
            skip && $0 == e { skip = 0; next }
            !skip' "$OUT" >"$OUT.tmp"
    elif grep -q '^## Notes' "$OUT"; then
        awk -v f="$file" '
            /^## Notes/ && !done { while ((getline l < f) > 0) print l; print ""; done = 1 }
            { print }' "$OUT" >"$OUT.tmp"
    else
        { cat "$OUT"; echo; cat "$file"; } >"$OUT.tmp"
    fi
    mv "$OUT.tmp" "$OUT"
}
