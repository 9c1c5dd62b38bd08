#!/usr/bin/env bash
# S3 repositories: lifeboat's backups and restores into a local (file://) repository and
# into an S3 repository served by s3s-fs on 127.0.0.1, side by side in one run, on one
# throwaway PostgreSQL 15 cluster holding a pgbench database; the same S3 backups with
# added latency on every request (examples/faultproxy); and `wal-push` of 16 MiB
# segments: synchronous (file://, S3, S3 with latency) against asynchronous
# (archive_async = true, S3 with latency), with the time the background uploader then
# takes to empty the spool. lifeboat's peak memory is reported for every row.
# Writes its results into docs/BENCHMARKS.md between the lines
#     <!-- bench/s3.sh: begin -->
#     <!-- bench/s3.sh: end -->
# replacing that section, or inserting it before the "## Notes" heading (at the end if
# there is none); the rest of the file is left alone (but bench/logical.sh, which
# rewrites the whole file, keeps only bench/prune.sh's and bench/physical.sh's sections
# and the notes: run it before this one). Prints a short summary.
#
#   bash bench/s3.sh                         # the full run (about 8 minutes on 2 cores, plus the build)
#   bash bench/s3.sh --scale 2 --repeat 1 --quiet-wait 0 --out /tmp/s3-smoke.md   # a quick smoke run
#
# Options:
#   --scale N        pgbench scale of the database (default 100, about 1.5 GB)
#   --repeat N       rounds: runs of each backup and restore timing, median reported (default 3)
#   --segments N     16 MiB WAL segments pushed per round by each wal-push mode (default 8)
#   --latency-ms N   latency the proxy adds to every S3 request (default 20)
#   --port N         port of the throwaway cluster (default 54335; it listens on a Unix
#                    socket in its temp dir only); s3s-fs listens on 127.0.0.1:N+1, the
#                    proxy on a free port of 127.0.0.1
#   --out FILE       the markdown file to update (default docs/BENCHMARKS.md)
#   --tmp DIR        parent of the temp dir (default /var/tmp; must be on the disk you want
#                    to measure: the cluster, the local repositories, s3s-fs's objects, the
#                    WAL spool and the restores live there)
#   --quiet-wait S   before each timed run, wait up to S seconds (default 90) for the
#                    machine to be idle (other processes < 0.15 cores)
#   --retries N      a run disturbed by other processes (they used > 0.15 cores during it)
#                    is measured again, up to N times (default 2)
#   --rev REV        benchmark git revision REV (built from `git archive REV` in
#                    target/bench-rev, lifeboat and examples/faultproxy) instead of the
#                    working tree
#
# Run as root on Debian 12: the cluster and every `wal-push` (the archiver's and the timed
# ones) run as the `postgres` OS user; lifeboat backup and restore, pgbench, s3s-fs and
# the proxy run as root. How, and why so:
#
# - S3 is s3s-fs (scripts/install-prereqs.sh installs the pinned version; it checks SigV4
#   signatures), started as src/testkit/s3.rs starts it: `s3s-fs --host 127.0.0.1 --port P
#   --access-key AK --secret-key SK ROOT` with RUST_LOG=error and a random key. Its objects
#   are plain files under ROOT, on the same disk as the local repositories. A bucket is a
#   directory made with `mkdir ROOT/BUCKET` (s3s-fs takes it as a bucket), so lifeboat needs
#   no bucket rights. Repository sections: url = "s3://BUCKET/lifeboat", endpoint, region =
#   "us-east-1", path_style = true, credentials_file (mode 0644, readable by postgres),
#   passphrase_file; everything else at lifeboat's defaults (concurrency, timeout, attempts).
# - Latency: examples/faultproxy (`--latency-ms N`) between lifeboat and s3s-fs holds
#   every request N ms before it forwards it. It also answers `Connection: close`, so
#   every request through it opens a new TCP connection (on 127.0.0.1: cheap, but no
#   keep-alive); both are part of the "with latency" rows.
# - Every backup goes into a new, empty repository (a new bucket for S3), so nothing is
#   deduplicated against an earlier run; restores read the backup of the same round.
# - Physical backups need their WAL in their repository before they are listed (and
#   `lifeboat backup` waits for it). While each physical backup runs, archive_command pushes
#   into the repository of that backup only: '<lifeboat> --config <cfg> --quiet wal-push
#   --target physical_<mode> %p' (three targets on the same data_directory, so --target
#   says which), switched with a reload, and one segment switched and archived through it,
#   before the backup starts. Why not chain the pushes (as bench/physical.sh chains
#   lifeboat and pgBackRest)? The backup whose repository comes second in the chain would
#   also wait for the push into the first; why not one target with repositories = [...]?
#   Its backups would be copied to the other repositories after they are stored, inside
#   the timing. The S3-with-latency backup's WAL goes through the proxy too: a distant
#   bucket is distant for the archiver as well. Logical backups and all restores run with
#   archive_command = '/bin/true': the WAL of the restores would otherwise be pushed
#   meanwhile, loading the machine differently in different rows.
# - wal-push: real 16 MiB segments of this cluster, made by pgbench (synchronous_commit=off,
#   a CHECKPOINT before each pgbench run so that pages are logged in full as after any
#   checkpoint) on a database of their own (`pgbench -i -s 10`, dropped afterwards: the
#   backups see the bench database as `pgbench -i` made it, and no autovacuum of it runs
#   during the timings) while archive_command = 'cp %p DIR/%f': the archiver hands over
#   each segment once it is complete (none is cut short by a switch), and cp keeps it. They are pushed from the pg_wal of a
#   stand-in data directory (the cluster's global/pg_control, which wal-push reads for the
#   system identifier, and pg_wal/), owned by postgres, as `lifeboat wal-push pg_wal/SEG`
#   run as postgres with that directory as working directory, as the archiver runs it
#   (setpriv and `env -C`: no PAM session, a few ms; timed alone in its own row). Not in the
#   cluster's own pg_wal: PostgreSQL removes and recycles files there, and its archiver must
#   not push them meanwhile. Every push is of a segment its repository has never seen (a
#   retry takes a spare segment), into repositories used for nothing else. Synchronous
#   pushes: one at a time, each after `sync` and an idle machine. Asynchronous: per round,
#   the segments are pushed back to back after one `sync` and idle wait (a burst, as the
#   archiver calls archive_command again at once when WAL piled up), into the spool
#   (pg_wal/lifeboat-spool of the stand-in directory, the default place); the uploader
#   that the first push starts sends them to S3 through the proxy meanwhile and after. Its
#   CPU counts as S3-side work during each push, not as a disturbance; the script then
#   polls (every 50 ms) until the spool is empty and the uploader has exited, sampling the
#   uploader's peak RSS (VmHWM) and CPU.
# - Page cache warm for every command alike (not dropped: the comparison is of the tools, not of the disk): the database and
#   the data directory are read once before anything is timed.
set -euo pipefail

SCALE=100
REPEAT=3
SEGMENTS=8
LATENCY_MS=20
PORT=54335
OUT=docs/BENCHMARKS.md
TMP_PARENT=/var/tmp
QUIET_WAIT=90
RETRIES=2
REV=""
OTHER_LIMIT=0.15 # cores used by other processes during a run above which it counts as disturbed
ARGS_GIVEN="$*"

while (($#)); do
    case $1 in
    --scale) SCALE=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --segments) SEGMENTS=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --tmp) TMP_PARENT=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --retries) RETRIES=$2; shift 2 ;;
    --rev) REV=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac
PGBIN=/usr/lib/postgresql/15/bin
export PATH=$PGBIN:$PATH
DISTURBED_COL=10 # the column of $RESULTS that marks a disturbed run
# shellcheck source=bench/lib.sh
source bench/lib.sh
BEGIN_MARK='<!-- bench/s3.sh: begin -->'
END_MARK='<!-- bench/s3.sh: end -->'

((REPEAT >= 1 && SEGMENTS >= 1)) || die "--repeat and --segments must be at least 1"
S3_PORT=$((PORT + 1))
if [[ -f $OUT ]] && grep -qxF "$BEGIN_MARK" "$OUT" && ! grep -qxF "$END_MARK" "$OUT"; then
    die "$OUT has the line '$BEGIN_MARK' but not '$END_MARK': fix it by hand first"
fi

# ------------------------------------------------------------ set-up (bench/lib.sh)
bench_setup s3-bench
S3S_FS=$(command -v s3s-fs || true)
[[ -n $S3S_FS ]] || S3S_FS=${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs
[[ -x $S3S_FS ]] || die "s3s-fs not found on PATH or in ${CARGO_HOME:-$HOME/.cargo}/bin; hint: bash scripts/install-prereqs.sh"
S3S_FS_VERSION=$("$S3S_FS" --version | awk '{ print $NF }')
command -v setpriv >/dev/null || die "setpriv (util-linux) not found"

log "building examples/faultproxy (release)"
if [[ -n $REV ]]; then
    CARGO_TARGET_DIR=$ROOT/target/bench-rev cargo build --release --quiet --example faultproxy --manifest-path "$T/src/Cargo.toml"
    cp "$ROOT/target/bench-rev/release/examples/faultproxy" "$T/faultproxy"
else
    cargo build --release --quiet --example faultproxy
    cp target/release/examples/faultproxy "$T/faultproxy"
fi

LBD=$WORK/lb # configuration, passphrase, credentials, local repositories
RESTORES=$WORK/restore
WB=$WORK/wal # segments, and the stand-in data directory the timed wal-push runs in
WBD=$WB/pgdata
SPOOL=$WBD/pg_wal/lifeboat-spool
S3ROOT=$WORK/s3root
mkdir -p "$LBD" "$RESTORES" "$WB/segs" "$WBD/global" "$WBD/pg_wal" "$S3ROOT" "$WORK/tmp"
export TMPDIR=$WORK/tmp

S3_PID=""
PROXY_PID=""
# the processes this script started: the uploader (if one still runs), the proxy, s3s-fs
stop_ours() {
    local p
    p=$(cat "$SPOOL/uploader.pid" 2>/dev/null || true)
    if [[ -n $p && $(readlink "/proc/$p/exe" 2>/dev/null) == "$LB" ]]; then
        kill "$p" 2>/dev/null || true
    fi
    for p in "$PROXY_PID" "$S3_PID"; do
        [[ -n $p ]] || continue
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
on_exit() {
    local rc=$?
    set +e
    stop_ours
    (exit "$rc") # cleanup exits with $?
    cleanup
}
trap on_exit EXIT

# ------------------------------------------------------------ S3: s3s-fs and the latency proxy
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
S3_AK=AK$(hex 9 | tr a-f A-F)
S3_SK=$(hex 20)
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_open "$S3_PORT" && die "port $S3_PORT (for s3s-fs) is in use; hint: --port N uses N+1"
log "starting s3s-fs $S3S_FS_VERSION on 127.0.0.1:$S3_PORT (objects in $S3ROOT)"
RUST_LOG=error "$S3S_FS" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_AK" --secret-key "$S3_SK" "$S3ROOT" \
    </dev/null >"$WORK/logs/s3s-fs.log" 2>&1 &
S3_PID=$!
for ((i = 0; i < 200; i++)); do
    port_open "$S3_PORT" && break
    kill -0 "$S3_PID" 2>/dev/null || { cat "$WORK/logs/s3s-fs.log" >&2; die "s3s-fs exited at start"; }
    sleep 0.1
done
port_open "$S3_PORT" || die "s3s-fs does not answer on 127.0.0.1:$S3_PORT after 20 s"

"$T/faultproxy" --upstream "127.0.0.1:$S3_PORT" --latency-ms "$LATENCY_MS" </dev/null >"$WORK/logs/faultproxy.log" 2>&1 &
PROXY_PID=$!
PROXY_PORT=""
for ((i = 0; i < 200; i++)); do
    PROXY_PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/logs/faultproxy.log")
    [[ -z $PROXY_PORT ]] || break
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/logs/faultproxy.log" >&2; die "faultproxy exited at start"; }
    sleep 0.1
done
[[ -n $PROXY_PORT ]] || die "faultproxy did not say where it listens within 20 s"
log "faultproxy on 127.0.0.1:$PROXY_PORT: $LATENCY_MS ms before every request to s3s-fs"

# buckets: directories under s3s-fs's root; dropping one also removes s3s-fs's
# metadata files of its objects (.bucket-<base64url(bucket)>.*)
b64url() { printf %s "$1" | base64 -w0 | tr '+/' '-_' | tr -d '='; }
new_bucket() { mkdir "$S3ROOT/$1"; }
drop_bucket() {
    [[ -n $1 ]] || return 0
    rm -rf "${S3ROOT:?}/$1"
    rm -f "$S3ROOT/.bucket-$(b64url "$1")."*
}

# ------------------------------------------------------------ the cluster
start_cluster
restart_cluster() { # (without the passphrase in its environment: the archiver reads passphrase_file)
    env -u LIFEBOAT_PASSPHRASE runuser -u postgres -- pg_ctl -D "$PGDATA" -l "$SOCK/postgres.log" -w restart >/dev/null
    read -r POSTMASTER <"$PGDATA/postmaster.pid"
}
[[ $(sql -d postgres -c "SHOW wal_segment_size") == 16MB ]] || die "this script assumes 16 MiB WAL segments"

# ------------------------------------------------------------ measuring
# before each timed run: nothing left to write back, an idle machine
prep() {
    sql -d postgres -c CHECKPOINT
    sync
    wait_quiet
}

# tree_jiffies PID...: CPU (user + sys, in clock ticks) of these processes and all
# their descendants, including the children they already reaped
tree_jiffies() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v roots="$*" '
        { pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
          ppid[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15] }
        END { n = split(roots, r, " "); for (i = 1; i <= n; i++) root[r[i]] = 1
              for (p in t) { q = p; while (q != "" && q > 1 && !(q in root)) q = ppid[q]; if (q in root) s += t[p] }
              print s + 0 }'
}
uploader_pid() { # the running uploader of the asynchronous spool, if any
    local p st
    p=$(cat "$SPOOL/uploader.pid" 2>/dev/null || true)
    [[ -n $p ]] || return 0
    st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$p/stat" 2>/dev/null || true)
    [[ -n $st && $st != Z ]] && echo "$p"
    return 0
}
s3_pids() { echo "$S3_PID $PROXY_PID $(uploader_pid)"; } # the S3 side: server, proxy, uploader

# measure LABEL CMD...: run CMD under /usr/bin/time and append a line to $RESULTS
# (for $DS $STEP $RUN):
#   ds step run wall_s max_rss_kB cpu_s pg_cpu_s s3_cpu_s other_cores disturbed
# wall_s is taken with a nanosecond clock around /usr/bin/time; max_rss_kB is its %M
# (the largest process of CMD's tree that CMD waited for: lifeboat, or pg_dump /
# pg_restore for logical backups and restores); cpu_s is user + sys of CMD and the
# children it waited for; pg_cpu_s what the cluster used meanwhile (COPY for pg_dump
# and pg_restore, checkpoints, the archiver running wal-push); s3_cpu_s what s3s-fs,
# the proxy and a running WAL uploader used meanwhile: work done for the command, so
# not a disturbance; other_cores is what the rest of the machine used on average.
# Output goes to $WORK/logs/LABEL.log. A failure stops the benchmark.
measure() {
    local label=$1
    shift
    local tf=$WORK/logs/$label.time rc=0 m0 m1 p0 p1 s0 s1 t0 t1 u sy
    p0=$(tree_jiffies "$POSTMASTER")
    s0=$(tree_jiffies "$(s3_pids)")
    m0=$(machine_busy)
    t0=$(date +%s%N)
    /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >"$WORK/logs/$label.log" 2>&1 || rc=$?
    t1=$(date +%s%N)
    m1=$(machine_busy)
    s1=$(tree_jiffies "$(s3_pids)")
    p1=$(tree_jiffies "$POSTMASTER")
    if ((rc)); then
        log "FAILED (exit $rc): $label: $*"
        tail -n 30 "$WORK/logs/$label.log" >&2
        exit 1
    fi
    read -r _ M_RSS u sy <"$tf"
    M_TIME=$(awk -v n=$((t1 - t0)) 'BEGIN { printf "%.3f", n / 1e9 }')
    M_CPU=$(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", u + s }')
    M_PG=$(awk -v j=$((p1 - p0)) -v hz="$HZ" 'BEGIN { printf "%.2f", (j > 0 ? j / hz : 0) }')
    M_S3=$(awk -v j=$((s1 - s0)) -v hz="$HZ" 'BEGIN { printf "%.2f", (j > 0 ? j / hz : 0) }')
    M_OTHER=$(awk -v m=$((m1 - m0)) -v hz="$HZ" -v c="$M_CPU" -v p="$M_PG" -v s="$M_S3" -v w="$M_TIME" \
        'BEGIN { o = (m / hz - c - p - s) / (w > 0.5 ? w : 0.5); printf "%.2f", (o < 0 ? 0 : o) }')
    M_DISTURBED=$(awk -v o="$M_OTHER" -v lim="$OTHER_LIMIT" 'BEGIN { print (o > lim ? 1 : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$DS" "$STEP" "$RUN" "$M_TIME" "$M_RSS" "$M_CPU" "$M_PG" "$M_S3" "$M_OTHER" "$M_DISTURBED" >>"$RESULTS"
    log "  $label: ${M_TIME} s, CPU ${M_CPU} s (+ cluster ${M_PG} s, S3 side ${M_S3} s), max RSS $((M_RSS / 1024)) MiB, others ${M_OTHER} cores"
}

: >"$VALUES"

# ------------------------------------------------------------ aggregating (more in lib.sh)
vget() { # DS STEP RUN KEY -> that value of that run
    awk -F'\t' -v ds="$1" -v st="$2" -v r="$3" -v k="$4" '$1 == ds && $2 == st && $3 == r && $4 == k { v = $5 } END { print v }' "$VALUES"
}
max_rss() { # DS STEP -> kB, max over all runs
    awk -F'\t' -v ds="$1" -v st="$2" '$1 == ds && $2 == st && $5 > m { m = $5 } END { print m + 0 }' "$RESULTS"
}
nruns() { awk -F'\t' -v ds="$1" -v st="$2" '$1 == ds && $2 == st' "$RESULTS" | wc -l; }
ms() { awk -v s="$1" 'BEGIN { printf "%.0f", s * 1000 }'; }

# ------------------------------------------------------------ WAL helpers (as bench/physical.sh)
# wait_archived: switch to a new segment and wait until the archiver stored the one
# just finished and every file before it; prints its name
wait_archived() {
    local seg t0=$SECONDS
    seg=$(sql -d postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
    until [[ $(sql -d postgres -c "SELECT count(*) = 0 FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready' AND name <= '$seg.ready' COLLATE \"C\"") == t ]]; do
        if ((SECONDS - t0 > 300)); then
            sql -d postgres -c "SELECT * FROM pg_stat_archiver" >&2
            tail -n 30 "$SOCK/postgres.log" >&2
            die "WAL segment $seg not archived after 5 minutes"
        fi
        sleep 0.1
    done
    echo "$seg"
}
ARCHIVE_NOW=""
set_archive() { # COMMAND: the archive_command from now on (reloaded, no restart)
    [[ -n $1 ]] || die "set_archive: empty archive_command"
    [[ $1 != "$ARCHIVE_NOW" ]] || return 0
    sql -d postgres -v cmd="$1" <<<"ALTER SYSTEM SET archive_command = :'cmd';"
    sql -d postgres -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1 # the archiver rereads its configuration between two files
    ARCHIVE_NOW=$1
}

# ------------------------------------------------------------ lifeboat
printf '%s\n' "$LIFEBOAT_PASSPHRASE" >"$LBD/passphrase"
chmod 600 "$LBD/passphrase"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$S3_AK" "$S3_SK" >"$LBD/aws-credentials"
chmod 644 "$LBD/aws-credentials"
chown -R postgres: "$LBD"
LBC=$LBD/lifeboat.toml
# the buckets of the backup repositories (a new one for each backup) and of the wal-push ones
BUCKET_s3=""
BUCKET_lat=""
BUCKET_N=0
for b in wal-s3 wal-lat wal-async; do new_bucket "$b"; done

repo_toml() { # NAME URL [ENDPOINT]
    printf '[repository.%s]\nurl = "%s"\npassphrase_file = "%s"\n' "$1" "$2" "$LBD/passphrase"
    [[ -z ${3:-} ]] || printf 'endpoint = "%s"\nregion = "us-east-1"\npath_style = true\ncredentials_file = "%s"\n' "$3" "$LBD/aws-credentials"
    echo
}
target_toml() { # NAME METHOD REPOSITORY [EXTRA LINE]...
    local name=$1 method=$2 repo=$3
    shift 3
    printf '[target.%s]\nmethod = "%s"\nrepository = "%s"\n' "$name" "$method" "$repo"
    if [[ $method == logical ]]; then
        printf 'database = "%s"\nglobals = false\n' "$(url bench)"
    else
        printf 'database = "%s"\n' "$(url postgres)"
    fi
    (($# == 0)) || printf '%s\n' "$@"
    echo
}
# the whole configuration, written anew (atomically: the archiver may read it any time)
# whenever a backup repository moves to a new bucket
write_config() {
    local direct=http://127.0.0.1:$S3_PORT slow=http://127.0.0.1:$PROXY_PORT m
    {
        echo "# bench/s3.sh: local, S3 (s3s-fs) and S3 through faultproxy (+$LATENCY_MS ms per request)"
        repo_toml local "file://$LBD/local"
        repo_toml s3 "s3://${BUCKET_s3:-none}/lifeboat" "$direct"
        repo_toml lat "s3://${BUCKET_lat:-none}/lifeboat" "$slow"
        repo_toml wal_local "file://$LBD/wal-local"
        repo_toml wal_s3 "s3://wal-s3/lifeboat" "$direct"
        repo_toml wal_lat "s3://wal-lat/lifeboat" "$slow"
        repo_toml wal_async "s3://wal-async/lifeboat" "$slow"
        for m in local s3 lat; do
            target_toml "logical_$m" logical "$m"
            target_toml "physical_$m" physical "$m" "data_directory = \"$PGDATA\"" 'checkpoint = "fast"'
        done
        for m in local s3 lat; do
            target_toml "wal_$m" physical "wal_$m" "data_directory = \"$WBD\""
        done
        target_toml wal_async physical wal_async "data_directory = \"$WBD\"" "archive_async = true"
    } >"$LBC.tmp"
    chown postgres: "$LBC.tmp"
    mv "$LBC.tmp" "$LBC"
}
lb() { "$LB" --quiet --config "$LBC" "$@"; }
lb_last() { # TARGET FIELD: of the newest backup of TARGET
    lb list "$1" --json | jq -r "if type == \"array\" then . else .backups end | sort_by(.started) | last | .$2"
}
# a new, empty repository MODE (local: a new directory; s3, lat: a new bucket)
fresh_repo() {
    local mode=$1
    case $mode in
    local)
        rm -rf "$LBD/local"
        ;;
    *)
        BUCKET_N=$((BUCKET_N + 1))
        drop_bucket "$(get "BUCKET_$mode")"
        put "BUCKET_$mode" "bench-$mode-$BUCKET_N"
        new_bucket "$(get "BUCKET_$mode")"
        write_config
        ;;
    esac
    lb_init "$mode"
    [[ $mode != local ]] || chown -R postgres: "$LBD/local"
}
lb_init() { # REPOSITORY
    lb init --repository "$1" >"$WORK/logs/init-$1.log" 2>&1 ||
        { cat "$WORK/logs/init-$1.log" >&2; die "lifeboat init --repository $1 failed"; }
}
write_config

# ------------------------------------------------------------ the data, archiving on
log "pgbench -i -s $SCALE (before archiving is on)"
sql -d postgres -c "CREATE DATABASE bench"
pgbench -i -q -s "$SCALE" bench >"$WORK/logs/pgbench-init.log" 2>&1
sql -d bench -c "VACUUM ANALYZE"
sql -d postgres -c CHECKPOINT
DB_SIZE=$(sql -d bench -c "SELECT pg_database_size(current_database())")
ACCOUNTS=$(sql -d bench -c "SELECT count(*) FROM pgbench_accounts")
PGDATA_SIZE=$(du -sb --exclude=pg_wal "$PGDATA" | cut -f1)
log "  bench: $(mib "$DB_SIZE"); data directory without pg_wal: $(mib "$PGDATA_SIZE")"
sql -d postgres -c "ALTER SYSTEM SET wal_level = replica"
sql -d postgres -c "ALTER SYSTEM SET archive_mode = on"
sql -d postgres -c "ALTER SYSTEM SET archive_command = '/bin/true'"
ARCHIVE_NOW=/bin/true
restart_cluster
lb_init wal_local
chown -R postgres: "$LBD/wal-local"
for m in s3 lat async; do lb_init "wal_$m"; done

# ------------------------------------------------------------ WAL segments for wal-push
POOL_N=$((REPEAT * SEGMENTS + SEGMENTS)) # a spare round's worth for retries
WALGEN_SCALE=10
log "making $POOL_N WAL segments with pgbench (on a database of scale $WALGEN_SCALE of their own) for the wal-push timings"
sql -d postgres -c "CREATE DATABASE walgen"
pgbench -i -q -s "$WALGEN_SCALE" walgen >"$WORK/logs/pgbench-init-walgen.log" 2>&1
chown postgres: "$WB/segs"
set_archive "cp %p $WB/segs/%f"
wait_archived >/dev/null
rm -f "$WB/segs"/* # (that one was cut short by the switch; from here on, segments fill up)
seg_count() { find "$WB/segs" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' | wc -l; }
t0=$SECONDS
while (($(seg_count) < POOL_N)); do
    ((SECONDS - t0 < 1800)) || die "pgbench made only $(seg_count) of $POOL_N WAL segments in 30 minutes"
    sql -d postgres -c CHECKPOINT
    PGOPTIONS='-c synchronous_commit=off' pgbench -n -T 3 -c 2 walgen >>"$WORK/logs/pgbench-segments.log" 2>&1
    sleep 0.5 # (the archiver's cp of a segment just completed)
done
set_archive /bin/true
sql -d postgres -c "DROP DATABASE walgen"
sql -d postgres -c CHECKPOINT
mapfile -t POOL < <(find "$WB/segs" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' | sort | head -n "$POOL_N")
for s in "${POOL[@]}"; do
    [[ $(stat -c %s "$WB/segs/$s") == 16777216 ]] || die "segment $s is not 16 MiB"
done
cp "$PGDATA/global/pg_control" "$WBD/global/"
chown -R postgres: "$WB"
chmod 700 "$WBD"
log "  ${#POOL[@]} segments, ${POOL[0]} .. ${POOL[-1]}"

machine_facts
log "s3s-fs $S3S_FS_VERSION, faultproxy +$LATENCY_MS ms per request"

log "warm-up (not timed): pg_dump of the database, every file of the data directory read once"
pg_dump -Fc -Z0 bench >/dev/null
find "$PGDATA" -type f -print0 | xargs -0 cat >/dev/null 2>&1 || true

# ------------------------------------------------------------ 1-3: backups and restores
empty_dir() { rm -rf "$1"; mkdir -m 700 "$1"; chown postgres: "$1"; }
step_backup() { # METHOD MODE: a backup into a new, empty repository
    local method=$1 mode=$2
    # (nothing pushes into the repository while it is replaced)
    [[ $method != physical ]] || set_archive /bin/true
    fresh_repo "$mode"
    if [[ $method == physical ]]; then
        set_archive "$LB --config $LBC --quiet wal-push --target physical_$mode %p"
        wait_archived >/dev/null # one segment through the new command
    fi
    prep
    measure "$method-backup-$mode-$RUN" "$LB" --quiet --config "$LBC" backup "${method}_$mode"
    put "ID_${method}_$mode" "$(lb_last "${method}_$mode" id)"
    value stored "$(lb_last "${method}_$mode" stored_bytes)"
    value size "$(lb_last "${method}_$mode" total_size)"
}
step_restore_logical() { # MODE
    local got
    sql -d postgres -c "DROP DATABASE IF EXISTS restored"
    prep
    measure "logical-restore-$1-$RUN" "$LB" --quiet --config "$LBC" restore "logical_$1" \
        --backup "$(get "ID_logical_$1")" --into "$(url restored)" --jobs 2
    got=$(sql -d restored -c "SELECT count(*) FROM pgbench_accounts")
    [[ $got == "$ACCOUNTS" ]] || die "restore of logical_$1: pgbench_accounts has $got rows, the source $ACCOUNTS"
    sql -d postgres -c "DROP DATABASE restored"
}
step_restore_physical() { # MODE: the files only (no --start)
    local d=$RESTORES/$1
    empty_dir "$d"
    prep
    measure "physical-restore-$1-$RUN" "$LB" --quiet --config "$LBC" restore "physical_$1" \
        --backup "$(get "ID_physical_$1")" --data-dir "$d"
    value restored "$(du -sb "$d" | cut -f1)"
    rm -rf "$d"
}

# ------------------------------------------------------------ 4: wal-push
# as the archiver runs it: as postgres, in the (stand-in) data directory, without
# the passphrase in the environment (passphrase_file)
AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups env -u LIFEBOAT_PASSPHRASE -C "$WBD" HOME=/var/lib/postgresql)
declare -A CURSOR=([local]=0 [s3]=0 [lat]=0 [async]=0)
declare -A FIRSTS=([local]=0 [s3]=0 [lat]=0 [async]=0) # first (not retried) pushes so far
NO_SPARE=0
spare_left() { # MODE: is there a segment for a retry, beyond those the remaining first pushes need?
    ((${#POOL[@]} - CURSOR[$1] > REPEAT * SEGMENTS - FIRSTS[$1]))
}
next_seg() { # MODE -> SEG: the next segment the MODE repository has not seen, copied into pg_wal ("" if none is left)
    local i=${CURSOR[$1]}
    SEG=""
    ((i < ${#POOL[@]})) || return 0
    SEG=${POOL[i]}
    CURSOR[$1]=$((i + 1))
    cp "$WB/segs/$SEG" "$WBD/pg_wal/$SEG"
    chown postgres: "$WBD/pg_wal/$SEG"
}
step_wrapper() { # the wrapper alone: setpriv, env, exec of /bin/true
    prep
    measure "wal-wrapper-$RUN" "${AS_PG[@]}" /bin/true
}
FIRST_TRY=1
step_push() { # MODE: one synchronous push (attempt runs it again with FIRST_TRY=0)
    if ((FIRST_TRY)); then
        FIRSTS[$1]=$((FIRSTS[$1] + 1))
        FIRST_TRY=0
    elif ! spare_left "$1"; then
        log "  no spare segment left for $1: keeping the disturbed run"
        NO_SPARE=$((NO_SPARE + 1))
        M_DISTURBED=0
        return
    fi
    next_seg "$1"
    [[ -n $SEG ]] || die "no segment left for $1"
    prep
    measure "wal-push-$1-$SEG" "${AS_PG[@]}" "$LB" --config "$LBC" --quiet wal-push --target "wal_$1" "pg_wal/$SEG"
    rm -f "$WBD/pg_wal/$SEG"
}
# wait until the spool is empty and no uploader runs; sets DRAIN_S (the seconds
# that took), UP_RSS (kB) and UP_CPU (s): the uploader's (sampled) peak RSS, and its
# CPU summed over the uploader processes seen
wait_drained() {
    local t0 p j rest hwm key val f n start=$SECONDS
    declare -A jif=() peak=()
    t0=$(date +%s%N)
    while :; do
        p=$(uploader_pid)
        if [[ -n $p ]]; then
            if read -r rest 2>/dev/null <"/proc/$p/stat"; then
                rest=${rest##*) }
                read -ra f <<<"$rest"
                j=$((f[11] + f[12]))
                jif[$p]=$j
            fi
            hwm=0
            while read -r key val _unit; do
                [[ $key == VmHWM: ]] && hwm=$val
            done 2>/dev/null <"/proc/$p/status" || true
            ((hwm <= ${peak[$p]:-0})) || peak[$p]=$hwm
        fi
        n=$(find "$SPOOL" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' | wc -l)
        if ((n == 0)) && [[ -z $(uploader_pid) ]]; then
            break
        fi
        if ((SECONDS - start > 900)); then
            tail -n 20 "$SPOOL/uploader.log" >&2 || true
            die "the WAL spool still holds $n segment(s) after 15 minutes"
        fi
        sleep 0.05
    done
    UP_RSS=0
    UP_CPU=0
    for p in "${!peak[@]}"; do ((peak[$p] <= UP_RSS)) || UP_RSS=${peak[$p]}; done
    for p in "${!jif[@]}"; do UP_CPU=$((UP_CPU + jif[$p])); done
    UP_CPU=$(awk -v j="$UP_CPU" -v hz="$HZ" 'BEGIN { printf "%.2f", j / hz }')
    DRAIN_S=$(awk -v n=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.2f", n / 1e9 }')
}
log_lines() { if [[ -f $SPOOL/uploader.log ]]; then wc -l <"$SPOOL/uploader.log"; else echo 0; fi; }
# one burst of SEGMENTS asynchronous pushes, back to back; a disturbed push is
# pushed again at once with a spare segment (up to RETRIES times)
async_round() {
    local segs=() s i k t_first t_last lines0 lines1
    for ((i = 0; i < SEGMENTS; i++)); do
        next_seg async
        [[ -n $SEG ]] || die "no segment left for the asynchronous pushes"
        segs+=("$SEG")
    done
    FIRSTS[async]=$((FIRSTS[async] + SEGMENTS))
    lines0=$(log_lines)
    sync
    wait_quiet
    t_first=$(date +%s%N)
    for s in "${segs[@]}"; do
        SEG=$s
        for ((k = 0; k <= RETRIES; k++)); do
            measure "wal-push-async-$SEG" "${AS_PG[@]}" "$LB" --config "$LBC" --quiet wal-push --target wal_async "pg_wal/$SEG"
            rm -f "$WBD/pg_wal/$SEG"
            ((M_DISTURBED)) || break
            log "  disturbed: other processes used $M_OTHER cores during the run"
            ((k < RETRIES)) || break
            if ! spare_left async; then
                log "  no spare segment left for async: keeping the disturbed run"
                NO_SPARE=$((NO_SPARE + 1))
                break
            fi
            next_seg async
        done
    done
    t_last=$(date +%s%N)
    wait_drained
    lines1=$(log_lines)
    STEP=async value pushed "$(awk -F'\t' -v r="$RUN" '$1 == "wal" && $2 == "push_async" && $3 == r' "$RESULTS" | wc -l)"
    STEP=async value burst "$(awk -v n=$((t_last - t_first)) 'BEGIN { printf "%.2f", n / 1e9 }')"
    STEP=async value drain "$DRAIN_S"
    STEP=async value total "$(awk -v n=$((t_last - t_first)) -v d="$DRAIN_S" 'BEGIN { printf "%.2f", n / 1e9 + d }')"
    STEP=async value up_rss "$UP_RSS"
    STEP=async value up_cpu "$UP_CPU"
    STEP=async value log_lines $((lines1 - lines0))
    log "  async burst: $(vget wal async "$RUN" pushed) pushes in $(vget wal async "$RUN" burst) s; spool empty $DRAIN_S s after the last one (uploader peak RSS $((UP_RSS / 1024)) MiB, CPU $UP_CPU s, $((lines1 - lines0)) log lines)"
}

# ------------------------------------------------------------ the rounds
: >"$RESULTS"
for ((RUN = 1; RUN <= REPEAT; RUN++)); do
    log "round $RUN/$REPEAT: logical backups (local, S3, S3 +$LATENCY_MS ms) and restores"
    set_archive /bin/true
    DS=logical
    for m in local s3 lat; do STEP=backup_$m attempt step_backup logical "$m"; done
    for m in local s3; do STEP=restore_$m attempt step_restore_logical "$m"; done

    log "round $RUN/$REPEAT: physical backups (local, S3, S3 +$LATENCY_MS ms) and restores"
    DS=physical
    for m in local s3 lat; do STEP=backup_$m attempt step_backup physical "$m"; done
    wait_archived >/dev/null
    set_archive /bin/true
    for m in local s3; do STEP=restore_$m attempt step_restore_physical "$m"; done

    log "round $RUN/$REPEAT: wal-push of $SEGMENTS segments: synchronous (local, S3, S3 +$LATENCY_MS ms), then asynchronous"
    DS=wal
    for ((i = 0; i < 3; i++)); do STEP=wrapper attempt step_wrapper; done
    for ((i = 0; i < SEGMENTS; i++)); do
        for m in local s3 lat; do FIRST_TRY=1 STEP=push_$m attempt step_push "$m"; done
    done
    STEP=push_async
    async_round
done
drop_bucket "$BUCKET_s3"
drop_bucket "$BUCKET_lat"

# every push stored its segment
for m in local s3 lat async; do
    case $m in
    local) got=$(find "$LBD/wal-local/wal" -type f 2>/dev/null | wc -l) ;;
    *) got=$(find "$S3ROOT/wal-$m/lifeboat/wal" -type f 2>/dev/null | wc -l) ;;
    esac
    want=$(nruns wal "push_$m")
    ((got == want)) || die "repository wal_$m holds $got WAL objects after $want pushes"
done
kill -0 "$S3_PID" 2>/dev/null || die "s3s-fs died during the run"
kill -0 "$PROXY_PID" 2>/dev/null || die "faultproxy died during the run"
BENCH_SECS=$(($(date +%s) - BENCH_START))

# ------------------------------------------------------------ report
DISTURBED=$(awk -F'\t' -v d="$DISTURBED_COL" '$d == 1' "$RESULTS" | wc -l)
times() { # DS STEP [ms]: every run in order, * = disturbed (and redone)
    awk -F'\t' -v ds="$1" -v st="$2" -v d="$DISTURBED_COL" -v ms="${3:-}" '$1 == ds && $2 == st {
        s = s (s == "" ? "" : " / ") (ms ? sprintf("%.0f", $4 * 1000) : $4) ($d ? "*" : "") } END { print s }' "$RESULTS"
}
cpu3() { printf '%s / %s / %s' "$(tmed "$1" "$2" 6)" "$(tmed "$1" "$2" 7)" "$(tmed "$1" "$2" 8)"; }
row() { # DS STEP TITLE EXTRA...: a table row in seconds
    local ds=$1 st=$2 title=$3 x
    shift 3
    printf '| %s | %s | %s | %s | %s |' "$title" "$(tmed "$ds" "$st")" "$(times "$ds" "$st")" "$(cpu3 "$ds" "$st")" "$(kmib "$(max_rss "$ds" "$st")")"
    for x in "$@"; do printf ' %s |' "$x"; done
    echo
}
row_ms() { # STEP TITLE: a wal-push row in ms, with the maximum
    printf '| %s | %s | %s | %s | %s | %s |\n' "$2" "$(ms "$(tmed wal "$1")")" "$(ms "$(tmax wal "$1")")" \
        "$(times wal "$1" ms)" "$(cpu3 wal "$1")" "$(kmib "$(max_rss wal "$1")")"
}
async_rows() {
    local r
    for ((r = 1; r <= REPEAT; r++)); do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$r" "$(vget wal async "$r" pushed)" "$(vget wal async "$r" burst)" \
            "$(vget wal async "$r" drain)" "$(vget wal async "$r" total)" "$(kmib "$(vget wal async "$r" up_rss)")" \
            "$(vget wal async "$r" up_cpu)" "$(vget wal async "$r" log_lines)"
    done
}

B_logical_local=$(tmed logical backup_local)
B_logical_s3=$(tmed logical backup_s3)
B_logical_lat=$(tmed logical backup_lat)
B_physical_local=$(tmed physical backup_local)
B_physical_s3=$(tmed physical backup_s3)
B_physical_lat=$(tmed physical backup_lat)
R_logical_local=$(tmed logical restore_local)
R_logical_s3=$(tmed logical restore_s3)
R_physical_local=$(tmed physical restore_local)
R_physical_s3=$(tmed physical restore_s3)
VB_logical=$(verdict within "$B_logical_s3" "$B_logical_local" 1.3)
VB_physical=$(verdict within "$B_physical_s3" "$B_physical_local" 1.3)
VR_logical=$(verdict within "$R_logical_s3" "$R_logical_local" 1.3)
VR_physical=$(verdict within "$R_physical_s3" "$R_physical_local" 1.3)
VL_logical=$(verdict within "$B_logical_lat" "$B_logical_s3" 2)
VL_physical=$(verdict within "$B_physical_lat" "$B_physical_s3" 2)
P_ASYNC=$(tmed wal push_async)
P_ASYNC_MAX=$(tmax wal push_async)
P_LAT=$(tmed wal push_lat)
P_S3=$(tmed wal push_s3)
P_LOCAL=$(tmed wal push_local)
V_ASYNC=$(verdict lt "$P_ASYNC" 0.05)
V_ASYNC_MAX=$(verdict lt "$P_ASYNC_MAX" 0.05)
DRAIN=$(vmed wal async drain)
TOTAL=$(vmed wal async total)
PUSHED=$(vmed wal async pushed)
SYNC_EQUIV=$(awk -v n="$PUSHED" -v t="$P_LAT" 'BEGIN { printf "%.2f", n * t }')
UP_RSS_MAX=$(awk -F'\t' '$1 == "wal" && $2 == "async" && $4 == "up_rss" && $5 > m { m = $5 } END { print m + 0 }' "$VALUES")
UP_LOG=$(awk -F'\t' '$1 == "wal" && $2 == "async" && $4 == "log_lines" { s += $5 } END { print s + 0 }' "$VALUES")
stored() { mib "$(vmed "$1" "backup_$2" stored)"; }

section() {
    cat <<EOF
$BEGIN_MARK
## S3 repositories: local vs S3 (s3s-fs), added latency, asynchronous archiving

Generated by \`bench/s3.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); the whole run took $((BENCH_SECS / 60)) min $((BENCH_SECS % 60)) s.
Rerunning it replaces this section only (\`bench/logical.sh\`, which rewrites the whole file, keeps it).

Reproduce (as root on Debian 12, from the repository root):

\`\`\`sh
bash bench/s3.sh${ARGS_GIVEN:+ $ARGS_GIVEN}
\`\`\`

| | |
| --- | --- |
| machine | $(nproc) cores ($CPU), $MEM_GIB GiB RAM, Linux $(uname -r) |
| disk | $DISK_DEV ($DISK_FS), 1 GiB sequential write with fsync: $DISK_WRITE; the cluster, the local repositories, s3s-fs's objects, the WAL spool and the restores are all on it |
| PostgreSQL | $PG_VERSION; throwaway cluster: shared_buffers=1GB, fsync=on, max_wal_size=4GB, checkpoint_timeout=30min, wal_level=replica, archive_mode=on, data checksums off |
| data | \`pgbench -i -s $SCALE\`: database $(mib "$DB_SIZE"), data directory $(mib "$PGDATA_SIZE") without pg_wal |
| lifeboat | $LB_VERSION, git $GIT_REV$([[ -n $REV ]] && echo " (built from \`git archive\` of that commit)")$([[ $GIT_DIRTY == yes ]] && echo " plus uncommitted changes in src/ or Cargo.* (the working tree)"), \`cargo build --release\`; repository defaults (S3: concurrency, timeout, attempts), passphrase mode (\`passphrase_file\`); physical targets with \`checkpoint = "fast"\`; logical with \`globals = false\` |
| S3 | s3s-fs $S3S_FS_VERSION on 127.0.0.1 (SigV4 checked, objects as files on the disk above), path-style, region us-east-1, credentials from a \`credentials_file\`; "+$LATENCY_MS ms": through \`examples/faultproxy --latency-ms $LATENCY_MS\` (every request held $LATENCY_MS ms, then forwarded on a new connection: no keep-alive through it) |
| runs | $REPEAT round(s); in each, every timing once (wal-push: $SEGMENTS segments per mode), interleaved; the median is reported |

Every backup goes into a new, empty repository (S3: a new bucket), so nothing is deduplicated against an earlier
run; restores read the backup of their round. Physical backups include waiting for their WAL to reach their repository:
while each one runs, \`archive_command\` pushes into that repository only (\`wal-push --target physical_<mode>\`; for
"+$LATENCY_MS ms" through the proxy too). Logical backups and all restores run with \`archive_command = '/bin/true'\`.

CPU columns: lifeboat and the children it waited for (pg_dump, pg_restore) / the cluster (COPY, checkpoints, the archiver)
/ the S3 side (s3s-fs, the proxy, and during asynchronous pushes the uploader). Peak RSS: \`/usr/bin/time\`'s \`%M\`, the
largest process of the command's tree (for logical backups and restores that may be pg_dump or pg_restore).

### Backups and restores

| command | wall s (median) | runs in order (s; \`*\` disturbed, redone) | CPU s: command / cluster / S3 side (median) | peak RSS | stored (median) |
| --- | ---: | --- | ---: | ---: | ---: |
$(row logical backup_local "logical \`backup\`, local (file://)" "$(stored logical local)")
$(row logical backup_s3 "logical \`backup\`, S3" "$(stored logical s3)")
$(row logical backup_lat "logical \`backup\`, S3 +$LATENCY_MS ms" "$(stored logical lat)")
$(row physical backup_local "physical \`backup\`, local (file://)" "$(stored physical local)")
$(row physical backup_s3 "physical \`backup\`, S3" "$(stored physical s3)")
$(row physical backup_lat "physical \`backup\`, S3 +$LATENCY_MS ms" "$(stored physical lat)")
$(row logical restore_local "logical \`restore --into NEWDB --jobs 2\`, local" "-")
$(row logical restore_s3 "logical \`restore --into NEWDB --jobs 2\`, S3" "-")
$(row physical restore_local "physical \`restore --data-dir DIR\` (files only), local" "$(mib "$(vmed physical restore_local restored)") restored")
$(row physical restore_s3 "physical \`restore --data-dir DIR\` (files only), S3" "$(mib "$(vmed physical restore_s3 restored)") restored")

Logical restores go into a new database (created by lifeboat, inside its time), checked for all $ACCOUNTS rows of
pgbench_accounts, then dropped; physical ones into a new, empty directory, removed after.

### wal-push of one 16 MiB segment

Real segments of this cluster (pgbench), pushed as the archiver runs \`wal-push\`: as postgres, from the pg_wal of a
stand-in data directory (the cluster's pg_control and pg_wal/), each a segment its repository has not seen. Synchronous:
one at a time, each after \`sync\` and an idle machine. Asynchronous (\`archive_async = true\`, spool in
pg_wal/lifeboat-spool, repository S3 +$LATENCY_MS ms): $SEGMENTS per round back to back (a burst) while the uploader that the
first push starts sends them on.

| \`wal-push\`, one segment | ms (median) | ms (max) | runs in order (ms; \`*\` disturbed, redone) | CPU s: command / cluster / S3 side (median) | peak RSS |
| --- | ---: | ---: | --- | ---: | ---: |
$(row_ms wrapper "(setpriv + \`env -C\` running /bin/true: the wrapper's share of each row below)")
$(row_ms push_local "synchronous, local (file://)")
$(row_ms push_s3 "synchronous, S3")
$(row_ms push_lat "synchronous, S3 +$LATENCY_MS ms")
$(row_ms push_async "asynchronous (spool), uploader to S3 +$LATENCY_MS ms")

The uploader, per round: from the end of the last push until the spool was empty and the uploader had exited
("drain"), and from the start of the first push ("total"); peak RSS and CPU sampled every 50 ms from /proc (of the
uploader processes seen after the burst); "log lines": what it wrote to uploader.log (failures).

| round | pushes | burst s | drain s | total s | uploader peak RSS | uploader CPU s | log lines |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(async_rows)

For comparison: $PUSHED synchronous pushes to S3 +$LATENCY_MS ms one after another would take about $SYNC_EQUIV s
($PUSHED x $(ms "$P_LAT") ms); asynchronously the archiver was free after $(vmed wal async burst) s and the segments were in S3
after $TOTAL s (medians).

### Targets

| target | measured | result |
| --- | --- | --- |
| logical backup: S3 at most 1.3 x local | $B_logical_s3 s vs $B_logical_local s = $(ratio "$B_logical_s3" "$B_logical_local") x | $VB_logical |
| physical backup: S3 at most 1.3 x local | $B_physical_s3 s vs $B_physical_local s = $(ratio "$B_physical_s3" "$B_physical_local") x | $VB_physical |
| logical restore (\`--jobs 2\`): S3 at most 1.3 x local | $R_logical_s3 s vs $R_logical_local s = $(ratio "$R_logical_s3" "$R_logical_local") x | $VR_logical |
| physical restore: S3 at most 1.3 x local | $R_physical_s3 s vs $R_physical_local s = $(ratio "$R_physical_s3" "$R_physical_local") x | $VR_physical |
| logical backup: S3 +$LATENCY_MS ms at most 2 x S3 | $B_logical_lat s vs $B_logical_s3 s = $(ratio "$B_logical_lat" "$B_logical_s3") x | $VL_logical |
| physical backup: S3 +$LATENCY_MS ms at most 2 x S3 | $B_physical_lat s vs $B_physical_s3 s = $(ratio "$B_physical_lat" "$B_physical_s3") x | $VL_physical |
| asynchronous \`wal-push\` under 50 ms per segment (median) | $(ms "$P_ASYNC") ms (synchronous to S3 +$LATENCY_MS ms: $(ms "$P_LAT") ms, to S3: $(ms "$P_S3") ms, local: $(ms "$P_LOCAL") ms) | $V_ASYNC |
| asynchronous \`wal-push\` under 50 ms per segment (every push: max) | $(ms "$P_ASYNC_MAX") ms | $V_ASYNC_MAX |
| the uploader empties the spool after a burst of $SEGMENTS (recorded; no target) | $DRAIN s after the last push (median), $(kmib "$UP_RSS_MAX") peak, $UP_LOG failure line(s) in uploader.log | - |

How it is measured:

- Wall time from a nanosecond clock around \`/usr/bin/time -f '%e %M %U %S'\`; the cluster's and the S3 side's CPU from
  /proc (their process trees) before and after.
- Page cache warm for every command alike (not dropped: the comparison is of the tools, not of the disk): the database and the data directory are read
  once before anything is timed. Before each timed run: \`CHECKPOINT\`, \`sync\`, and a wait (up to ${QUIET_WAIT} s) for the
  machine to be idle (for the asynchronous pushes: once before each burst).
- s3s-fs writes its objects as files on the same disk as the local repository; it does not fsync them (lifeboat's local
  backend does), and a multipart upload is written twice (the parts, then the object). The network is 127.0.0.1.
- The machine may be shared (builds, test suites): the CPU the rest of the machine used (everything but the command, the
  cluster and the S3 side) is measured during every run. A run during which it exceeded $OTHER_LIMIT cores is marked \`*\`,
  measured again (up to $RETRIES times; a backup into a new, empty repository again; a wal-push with a spare segment) and
  left out of the median (unless every run of the step was disturbed). This run: $DISTURBED disturbed run(s)$( ((NO_SPARE)) && echo "; $NO_SPARE retry(ies) skipped for want of a spare segment").
$END_MARK
EOF
}

section >"$WORK/section.md"
write_section "$WORK/section.md"

log "done in $((BENCH_SECS / 60)) min $((BENCH_SECS % 60)) s; wrote $OUT"
echo "== lifeboat S3 benchmark: $LB_VERSION, git $GIT_REV, s3s-fs $S3S_FS_VERSION, scale $SCALE, +$LATENCY_MS ms, $DISTURBED disturbed run(s) =="
for d in logical physical; do
    printf '  %-8s backup   local %s s, S3 %s s (%s x, <= 1.3)  %s; S3 +%s ms %s s (%s x S3, <= 2)  %s\n' "$d" \
        "$(get "B_${d}_local")" "$(get "B_${d}_s3")" "$(ratio "$(get "B_${d}_s3")" "$(get "B_${d}_local")")" "$(get "VB_$d")" \
        "$LATENCY_MS" "$(get "B_${d}_lat")" "$(ratio "$(get "B_${d}_lat")" "$(get "B_${d}_s3")")" "$(get "VL_$d")"
    printf '  %-8s restore  local %s s, S3 %s s (%s x, <= 1.3)  %s\n' "$d" \
        "$(get "R_${d}_local")" "$(get "R_${d}_s3")" "$(ratio "$(get "R_${d}_s3")" "$(get "R_${d}_local")")" "$(get "VR_$d")"
done
echo "  wal-push  async $(ms "$P_ASYNC") ms median, $(ms "$P_ASYNC_MAX") ms max (< 50)  $V_ASYNC $V_ASYNC_MAX; sync: local $(ms "$P_LOCAL") ms, S3 $(ms "$P_S3") ms, S3 +$LATENCY_MS ms $(ms "$P_LAT") ms"
echo "  uploader  spool empty $DRAIN s after the last push (median; $TOTAL s from the first), peak RSS $(kmib "$UP_RSS_MAX"), $UP_LOG log line(s)"
echo "  peak RSS  backup logical $(kmib "$(max_rss logical backup_s3)") / physical $(kmib "$(max_rss physical backup_s3)") (S3), restore logical $(kmib "$(max_rss logical restore_s3)") / physical $(kmib "$(max_rss physical restore_s3)") (S3), wal-push async $(kmib "$(max_rss wal push_async)") / sync S3 $(kmib "$(max_rss wal push_s3)")"
