#!/usr/bin/env bash
# Physical backups: lifeboat side by side with pgBackRest and pg_basebackup, in one
# run, on one throwaway PostgreSQL 15 cluster holding a pgbench database, archiving
# its WAL into lifeboat and pgBackRest at once. Measures base backups (full, and
# after `pgbench -T 10 -c 2`), restores, wal-push / wal-fetch of 16 MiB segments,
# archiving under load, WAL replay through wal-fetch, and lifeboat's peak memory.
# Writes its results into docs/BENCHMARKS.md between the lines
#     <!-- bench/physical.sh: begin -->
#     <!-- bench/physical.sh: end -->
# replacing that section, or inserting it before the "## Notes" heading (at the end
# if there is none); the rest of the file is left alone (bench/logical.sh, which
# rewrites the whole file, keeps this section, bench/prune.sh's and bench/s3.sh's, and
# the notes). Prints a short summary.
#
#   bash bench/physical.sh                   # the full run (about 25 minutes on 2 cores)
#   bash bench/physical.sh --scale 2 --repeat 1 --out /tmp/smoke.md --quiet-wait 0   # a quick smoke run
#
# Options:
#   --scale N         pgbench scale of the database (default 100, about 1.5 GB)
#   --repeat N        runs of each timing, median reported (default 3)
#   --change-secs S   `pgbench -T S -c 2` between the full and the incremental backups (default 10)
#   --archive-secs S  `pgbench -T S -c 2` per run of the sustained-archiving test (default 30)
#   --segments N      16 MiB segments pushed (and fetched) by each tool per round (default 4)
#   --replay-mb N     WAL generated after the base backup for the replay test, in MiB
#                     (default 1024 at scale 100, proportional below it, at least 64)
#   --port N          port of the throwaway cluster (default 54333; restored servers use
#                     N+1; everything listens on a Unix socket in the temp dir only)
#   --out FILE        the markdown file to update (default docs/BENCHMARKS.md)
#   --tmp DIR         parent of the temp dir (default /var/tmp; must be on the disk you want
#                     to measure: the cluster, the repositories and the restores live there)
#   --quiet-wait S    before each timed run, wait up to S seconds (default 90) for the
#                     machine to be idle (other processes < 0.15 cores)
#   --retries N       a run disturbed by other processes (they used > 0.15 cores during
#                     it) is measured again, up to N times (default 2)
#   --rev REV         benchmark git revision REV (built from `git archive REV` in
#                     target/bench-rev) instead of the working tree
#
# Run as root on Debian 12 (installs pgbackrest if it is missing): the clusters and
# pgBackRest run as the `postgres` OS user; lifeboat (backup, restore, the timed
# wal-push / wal-fetch), pg_basebackup and pgbench run as root over the Unix socket.
# The archiver runs `lifeboat wal-push %p && pgbackrest archive-push %p`, so both
# tools have every segment their backups need. Page cache warm for every tool alike.
set -euo pipefail

SCALE=100
REPEAT=3
CHANGE_SECS=10
ARCHIVE_SECS=30
SEGMENTS=4
REPLAY_MB=""
PORT=54333
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
    --change-secs) CHANGE_SECS=$2; shift 2 ;;
    --archive-secs) ARCHIVE_SECS=$2; shift 2 ;;
    --segments) SEGMENTS=$2; shift 2 ;;
    --replay-mb) REPLAY_MB=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --tmp) TMP_PARENT=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --retries) RETRIES=$2; shift 2 ;;
    --rev) REV=$2; shift 2 ;;
    -h | --help) sed -n '2,42p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac
PGBIN=/usr/lib/postgresql/15/bin
export PATH=$PGBIN:$PATH
DISTURBED_COL=9 # the column of $RESULTS that marks a disturbed run
# shellcheck source=bench/lib.sh
source bench/lib.sh
BEGIN_MARK='<!-- bench/physical.sh: begin -->'
END_MARK='<!-- bench/physical.sh: end -->'

if [[ -z $REPLAY_MB ]]; then
    REPLAY_MB=$((SCALE * 1024 / 100))
    ((REPLAY_MB >= 64)) || REPLAY_MB=64
fi
((REPEAT >= 1 && SEGMENTS >= 1)) || die "--repeat and --segments must be at least 1"
RPORT=$((PORT + 1)) # restored servers
if [[ -f $OUT ]] && grep -qxF "$BEGIN_MARK" "$OUT" && ! grep -qxF "$END_MARK" "$OUT"; then
    die "$OUT has the line '$BEGIN_MARK' but not '$END_MARK': fix it by hand first"
fi

# ------------------------------------------------------------ set-up (bench/lib.sh)
bench_setup physical-bench
if ! command -v pgbackrest >/dev/null; then
    log "installing pgbackrest"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null
fi
PGBR_VERSION=$(pgbackrest version | awk '{ print $2 }')
# block incremental (repo-bundle + repo-block) came with pgBackRest 2.46
if [[ $(printf '%s\n' 2.46 "$PGBR_VERSION" | sort -V | head -n1) == 2.46 ]]; then PGBR_BLOCK=1; else PGBR_BLOCK=0; fi
PGBB_VERSION=$(pg_basebackup --version)

RESTORES=$WORK/restore # restored data directories, one at a time (a restored server may run there)
mkdir -p "$RESTORES"
# the lib's cleanup stops the main cluster only: stop the restored servers first
stop_restored() {
    local f
    for f in "$RESTORES"/*/postmaster.pid; do
        [[ -f $f ]] || continue
        runuser -u postgres -- pg_ctl -D "$(dirname "$f")" -m immediate -w stop >/dev/null 2>&1 || true
    done
}
on_exit() {
    local rc=$?
    set +e
    stop_restored
    cg_sweep
    (exit "$rc") # cleanup exits with $?
    cleanup
}
trap on_exit EXIT

start_cluster
restart_cluster() {
    runuser -u postgres -- pg_ctl -D "$PGDATA" -l "$SOCK/postgres.log" -w restart >/dev/null
    read -r POSTMASTER <"$PGDATA/postmaster.pid"
}
[[ $(sql -d postgres -c "SHOW wal_segment_size") == 16MB ]] || die "this script assumes 16 MiB WAL segments"

# ------------------------------------------------------------ measuring
# before each timed run: nothing left to write back from the previous one, an idle machine
prep() {
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
# Each timed command runs in a cgroup of its own, whose CPU counter includes the
# processes it starts that outlive it or detach from it (a restored server,
# lifeboat's background wal-prefetch): cgroup v2, or v1's cpuacct. Without one,
# only the command's process tree and the servers' are known.
CG_KIND=""
CG_BASE=""
CG_N=0
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    CG_KIND=v2 CG_BASE=/sys/fs/cgroup
elif [[ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]]; then
    CG_KIND=v1 CG_BASE=/sys/fs/cgroup/cpuacct
elif [[ -f /sys/fs/cgroup/unified/cpu.stat ]]; then
    CG_KIND=v2 CG_BASE=/sys/fs/cgroup/unified
fi
if [[ -n $CG_KIND ]] && ! { mkdir "$CG_BASE/lifeboat-bench-$$-0" && rmdir "$CG_BASE/lifeboat-bench-$$-0"; } 2>/dev/null; then
    CG_KIND=""
fi
cg_seconds() { # DIR: CPU seconds of everything that ran in it
    if [[ $CG_KIND == v1 ]]; then
        awk '{ printf "%.2f", $1 / 1e9 }' "$1/cpuacct.usage"
    else
        awk '$1 == "usage_usec" { printf "%.2f", $2 / 1e6 }' "$1/cpu.stat"
    fi
}
cg_sweep() { # remove the empty cgroups of this run
    [[ -z $CG_KIND ]] || rmdir "$CG_BASE/lifeboat-bench-$$-"* 2>/dev/null || true
}
# the PostgreSQL servers not in a command's cgroup: the cluster (and without
# cgroups, a restored server if one runs)
server_pids() {
    local f p
    echo "$POSTMASTER"
    [[ -z $CG_KIND ]] || return 0
    for f in "$RESTORES"/*/postmaster.pid; do
        [[ -f $f ]] && read -r p <"$f" && echo "$p"
    done
    return 0
}

# measure LABEL CMD...: run CMD under /usr/bin/time and append a line to $RESULTS
# (for $DS $STEP $RUN):
#   ds step run wall_s max_rss_kB cpu_s server_cpu_s other_cores disturbed
# wall_s is taken with a nanosecond clock around /usr/bin/time; max_rss_kB is its %M
# (the largest process of CMD's tree that CMD waited for); cpu_s is user + sys of
# CMD and all it started (its cgroup); server_cpu_s what the cluster used meanwhile
# (checkpoints, walsenders, the archiver running wal-push and archive-push): work
# done for the command, so not a disturbance; other_cores is what the rest of the
# machine used on average. Output goes to $WORK/logs/LABEL.log. A failure stops
# the benchmark.
measure() {
    local label=$1
    shift
    local tf=$WORK/logs/$label.time rc=0 m0 m1 s0 s1 t0 t1 u sy cg="" wrap=()
    if [[ -n $CG_KIND ]]; then
        CG_N=$((CG_N + 1))
        cg=$CG_BASE/lifeboat-bench-$$-$CG_N
        mkdir "$cg"
        # shellcheck disable=SC2016 # $$ and $0 are the inner shell's
        wrap=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg")
    fi
    s0=$(tree_jiffies "$(server_pids | tr '\n' ' ')")
    m0=$(machine_busy)
    t0=$(date +%s%N)
    /usr/bin/time -f '%e %M %U %S' -o "$tf" "${wrap[@]}" "$@" >"$WORK/logs/$label.log" 2>&1 || rc=$?
    t1=$(date +%s%N)
    m1=$(machine_busy)
    s1=$(tree_jiffies "$(server_pids | tr '\n' ' ')")
    if ((rc)); then
        log "FAILED (exit $rc): $label: $*"
        tail -n 30 "$WORK/logs/$label.log" >&2
        exit 1
    fi
    read -r _ M_RSS u sy <"$tf"
    M_TIME=$(awk -v n=$((t1 - t0)) 'BEGIN { printf "%.3f", n / 1e9 }')
    M_CG=$cg
    if [[ -n $cg ]]; then
        M_CPU=$(cg_seconds "$cg")
        rmdir "$cg" 2>/dev/null || true # not while a restored server runs in it
    else
        M_CPU=$(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", u + s }')
    fi
    M_SERVER=$(awk -v j=$((s1 - s0)) -v hz="$HZ" 'BEGIN { printf "%.2f", (j > 0 ? j / hz : 0) }')
    M_OTHER=$(awk -v m=$((m1 - m0)) -v hz="$HZ" -v c="$M_CPU" -v s="$M_SERVER" -v w="$M_TIME" \
        'BEGIN { o = (m / hz - c - s) / (w > 0.5 ? w : 0.5); printf "%.2f", (o < 0 ? 0 : o) }')
    M_DISTURBED=$(awk -v o="$M_OTHER" -v lim="$OTHER_LIMIT" 'BEGIN { print (o > lim ? 1 : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$DS" "$STEP" "$RUN" "$M_TIME" "$M_RSS" "$M_CPU" "$M_SERVER" "$M_OTHER" "$M_DISTURBED" >>"$RESULTS"
    log "  $label: ${M_TIME} s, CPU ${M_CPU} s (+ cluster ${M_SERVER} s), max RSS $((M_RSS / 1024)) MiB, others ${M_OTHER} cores"
}

: >"$VALUES"

# ------------------------------------------------------------ aggregating (more in lib.sh)
vmax() { # DS STEP KEY
    awk -F'\t' -v ds="$1" -v st="$2" -v k="$3" '$1 == ds && $2 == st && $4 == k && (n++ == 0 || $5 > m) { m = $5 } END { print m + 0 }' "$VALUES"
}
max_rss() { # DS STEP... -> kB, max over all runs of those steps
    local ds=$1
    shift
    awk -F'\t' -v ds="$ds" -v steps=" $* " '$1 == ds && index(steps, " " $2 " ") && $5 > m { m = $5 } END { print m + 0 }' "$RESULTS"
}
ms() { awk -v s="$1" 'BEGIN { printf "%.0f", s * 1000 }'; }
per_s() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.2f", (s > 0 ? n / s : 0) }'; }

# ------------------------------------------------------------ WAL helpers
# a segment name's number (16 MiB segments: 256 per "log" file number)
segno() { echo $((16#${1:8:8} * 256 + 16#${1:16:8})); }
segname() { printf '%s%08X%08X' "$1" $(($2 / 256)) $(($2 % 256)); } # TLI_HEX NUMBER
# the segment being written (pg_walfile_name(lsn) names the one before at a boundary)
cur_seg() { sql -d postgres -c "SELECT pg_walfile_name(pg_current_wal_lsn() + 1)"; }
# wait_archived: switch to a new segment and wait until the archiver stored the one
# just finished and every file before it; prints its name. (Not from
# pg_stat_archiver.last_archived_wal: after a backup, the archiver may store the
# next segment before the older NAME.backup file, and report that file last.)
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
set_archive() { # COMMAND: the archive_command from now on (reloaded, no restart)
    [[ -n $1 ]] || die "set_archive: empty archive_command"
    sql -d postgres -v cmd="$1" <<<"ALTER SYSTEM SET archive_command = :'cmd';"
    sql -d postgres -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1 # the archiver rereads its configuration between two files
}

# ------------------------------------------------------------ lifeboat
LBD=$WORK/lb # configuration, passphrase and repository
mkdir -p "$LBD"
printf '%s\n' "$LIFEBOAT_PASSPHRASE" >"$LBD/passphrase"
chmod 600 "$LBD/passphrase"
lb_config() { # FILE REPODIR
    cat >"$1" <<EOF
[repository.main]
url = "file://$2"
passphrase_file = "$LBD/passphrase"

[target.production]
database = "$(url postgres)"
method = "physical"
data_directory = "$PGDATA"
checkpoint = "fast"
EOF
}
LBC=$LBD/lifeboat.toml
lb_config "$LBC" "$LBD/repo"
lb() { "$LB" --quiet --config "$LBC" "$@"; }
lb_last() { # FIELD of the newest backup in the main repository
    lb list production --json | jq -r "if type == \"array\" then . else .backups end | sort_by(.started) | last | .$1"
}
# a new, empty repository in place of the old one (the archiver pushes into it from then on)
lb_fresh_repo() {
    wait_archived >/dev/null
    rm -rf "$LBD/repo"
    lb init >"$WORK/logs/lb-init.log" # also puts the keys in root's unlock cache
    chown -R postgres: "$LBD"
    # The archiver's first push into a new repository would pay Argon2id inside
    # the backup's wait for its last segment; in a repository in service the
    # archiver's pushes keep the keys in postgres's unlock cache.
    runuser -u postgres -- "$LB" --quiet --config "$LBC" list >/dev/null
}
# repositories' state before the incremental backups, put back before a retry
snap_repo() { rm -rf "$1.snap"; cp -a "$1" "$1.snap"; }
back_to_snap() {
    wait_archived >/dev/null
    rm -rf "$1.tmp"
    cp -a "$1.snap" "$1.tmp"
    rm -rf "$1"
    mv "$1.tmp" "$1"
}

# ------------------------------------------------------------ pgBackRest
PGBR=$WORK/pgbr
mkdir -p "$PGBR"/{repo,log,lock,spool}
pgbr_config() { # DIR REPODIR [block]: DIR/pgbackrest.conf, logs and locks in DIR
    cat >"$1/pgbackrest.conf" <<EOF
[global]
repo1-path=$2
repo1-retention-full=9999
$([[ ${3:-} == block ]] && printf 'repo2-path=%s-block\nrepo2-retention-full=9999\nrepo2-bundle=y\nrepo2-block=y\n' "$2")
process-max=2
compress-type=zst
start-fast=y
log-level-console=warn
log-path=$1/log
lock-path=$1/lock
spool-path=$1/spool

[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-port=$PORT
EOF
}
PGBRC=$PGBR/pgbackrest.conf
pgbr_config "$PGBR" "$PGBR/repo" "$( ((PGBR_BLOCK)) && echo block)"
chown -R postgres: "$PGBR"
PGBR_CMD=(runuser -u postgres -- pgbackrest "--config=$PGBRC" --stanza=bench)
pgbr() { "${PGBR_CMD[@]}" "$@"; }
pgbr_last_label() { # REPO
    pgbr --repo="$1" info --output=json | jq -r '.[0].backup | last | .label'
}
du_b() { du -sb "$1" | cut -f1; }

# ------------------------------------------------------------ the data, archiving on
log "pgbench -i -s $SCALE (before archiving is on)"
sql -d postgres -c "CREATE DATABASE bench"
pgbench -i -q -s "$SCALE" bench >"$WORK/logs/pgbench-init.log" 2>&1
sql -d bench -c "VACUUM ANALYZE"
sql -d postgres -c CHECKPOINT
DB_SIZE=$(sql -d bench -c "SELECT pg_database_size(current_database())")
PGDATA_SIZE=$(du -sb --exclude=pg_wal "$PGDATA" | cut -f1)
log "  bench: $(mib "$DB_SIZE"); data directory without pg_wal: $(mib "$PGDATA_SIZE")"

lb init >"$WORK/logs/lb-init.log"
chown -R postgres: "$LBD"
pgbr stanza-create >"$WORK/logs/pgbr-stanza-create.log" 2>&1
ARCHIVE_LB="$LB --config $LBC --quiet wal-push %p"
ARCHIVE_PGBR="pgbackrest --config=$PGBRC --stanza=bench archive-push %p"
ARCHIVE_BOTH="$ARCHIVE_LB && $ARCHIVE_PGBR"
log "archiving on: archive_command = '$ARCHIVE_BOTH'"
sql -d postgres -c "ALTER SYSTEM SET wal_level = replica"
sql -d postgres -c "ALTER SYSTEM SET archive_mode = on"
sql -d postgres -v cmd="$ARCHIVE_BOTH" <<<"ALTER SYSTEM SET archive_command = :'cmd';"
restart_cluster
pgbr check >"$WORK/logs/pgbr-check.log" 2>&1 || { cat "$WORK/logs/pgbr-check.log" >&2; die "pgbackrest check failed"; }
wait_archived >/dev/null

machine_facts
log "pgBackRest $PGBR_VERSION (block incremental: $( ((PGBR_BLOCK)) && echo yes || echo "no, needs 2.46+")), $PGBB_VERSION"

# ------------------------------------------------------------ 1-3: backups and restores
step_lb_full() {
    lb_fresh_repo
    prep
    measure "lb-full-$RUN" "$LB" --quiet --config "$LBC" backup production
    LB_FULL_ID=$(lb_last id)
    value stored "$(lb_last stored_bytes)"
    value total "$(lb_last total_size)"
}
step_pgbr_full() {
    local b0
    wait_archived >/dev/null
    b0=$(du_b "$PGBR/repo/backup")
    prep
    measure "pgbr-full-$RUN" "${PGBR_CMD[@]}" --repo=1 --type=full backup
    value stored $(($(du_b "$PGBR/repo/backup") - b0))
    PGBR_FULL=$(pgbr_last_label 1)
}
pgbr_block_full() { # not timed: the base of the block incremental
    pgbr --repo=2 --type=full backup >"$WORK/logs/pgbr-block-full-$RUN.log" 2>&1
}
step_pgbb() {
    rm -rf "$WORK/pgbb"
    prep
    measure "pgbb-full-$RUN" pg_basebackup -D "$WORK/pgbb" -Ft --compress=server-zstd:workers=2 -X none --checkpoint=fast
    value stored "$(du_b "$WORK/pgbb")"
    rm -rf "$WORK/pgbb"
}
empty_dir() { rm -rf "$1"; mkdir -m 700 "$1"; chown postgres: "$1"; }
# This VM backs guest memory lazily: writing into page cache that the guest never
# used before costs several times a copy into recycled memory (measured: 0.3-0.6
# GB/s against 1.1 GB/s with dd), and whichever restore ran first in a round paid
# it. So before each restore, write (and sync, and delete) a file as large as a
# restore, untimed, so that both tools write into memory used before.
prefault() {
    dd if=/dev/zero of="$WORK/prefault" bs=1M count=$(((PGDATA_SIZE >> 20) + 64)) conv=fsync status=none
    rm -f "$WORK/prefault"
}
step_lb_restore() { # [ARGS...]: more restore options (DS=lbd: --direct-io always)
    local d=$RESTORES/lb
    empty_dir "$d"
    prefault
    prep
    measure "$DS-restore-$RUN" "$LB" --quiet --config "$LBC" restore production --backup "$LB_FULL_ID" --data-dir "$d" "$@"
    value restored "$(du_b "$d")"
    rm -rf "$d"
}
step_pgbr_restore() {
    local d=$RESTORES/pgbr
    empty_dir "$d"
    prefault
    prep
    measure "pgbr-restore-$RUN" "${PGBR_CMD[@]}" --repo=1 --set="$PGBR_FULL" "--pg1-path=$d" restore
    value restored "$(du_b "$d")"
    rm -rf "$d"
}
step_lb_incr() {
    if ((TRIED)); then back_to_snap "$LBD/repo"; fi
    TRIED=1
    prep
    measure "lb-incr-$RUN" "$LB" --quiet --config "$LBC" backup production
    value stored "$(lb_last stored_bytes)"
    value new "$(lb_last new_bytes)"
}
step_pgbr_incr() { # REPO (1: plain, 2: block incremental)
    local repo=$1 dir=$PGBR/repo b0
    ((repo == 1)) || dir=$PGBR/repo-block
    if ((TRIED)); then back_to_snap "$dir"; fi
    TRIED=1
    wait_archived >/dev/null
    b0=$(du_b "$dir/backup")
    prep
    measure "$DS-incr-$RUN" "${PGBR_CMD[@]}" --repo="$repo" --type=incr backup
    value stored $(($(du_b "$dir/backup") - b0))
}

: >"$RESULTS"
TXNS_CHANGE=""
for ((RUN = 1; RUN <= REPEAT; RUN++)); do
    log "round $RUN/$REPEAT: full backups, restores, incremental backups"
    STEP=full
    DS=lb attempt step_lb_full
    DS=pgbr attempt step_pgbr_full
    ((PGBR_BLOCK)) && pgbr_block_full
    DS=pgbb attempt step_pgbb
    STEP=restore # the tools take turns going first
    if ((RUN % 2)); then
        DS=lb attempt step_lb_restore
        DS=pgbr attempt step_pgbr_restore
    else
        DS=pgbr attempt step_pgbr_restore
        DS=lb attempt step_lb_restore
    fi
    DS=lbd attempt step_lb_restore --direct-io always

    log "  pgbench -n -T $CHANGE_SECS -c 2"
    pgbench -n -T "$CHANGE_SECS" -c 2 bench >"$WORK/logs/pgbench-change-$RUN.log" 2>&1
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/logs/pgbench-change-$RUN.log")
    TXNS_CHANGE+="${TXNS_CHANGE:+ / }${n:-?}"
    # autovacuum's run after pgbench, if any, and writing pgbench's pages back, are
    # not part of what the incremental backups are timed on
    wait_quiet
    sql -d postgres -c CHECKPOINT
    wait_archived >/dev/null
    snap_repo "$LBD/repo"
    snap_repo "$PGBR/repo"
    ((PGBR_BLOCK)) && snap_repo "$PGBR/repo-block"
    STEP=incr
    TRIED=0 DS=lb attempt step_lb_incr
    TRIED=0 DS=pgbr attempt step_pgbr_incr 1
    ((PGBR_BLOCK)) && TRIED=0 DS=pgbrb attempt step_pgbr_incr 2
    rm -rf "$LBD/repo.snap" "$PGBR/repo.snap" "$PGBR/repo-block.snap"
done

# ------------------------------------------------------------ 4a: archiving under load
# One tool at a time in archive_command (the other's archive gets a gap, which no
# later step needs), pgbench for ARCHIVE_SECS: how many segments were made and
# archived, how far behind the archiver was at the end, how long it then took to catch up.
step_sustain() {
    local c0 f0 s0 c1 f1 cur last backlog d0
    wait_archived >/dev/null
    set_archive "$(get "ARCHIVE_${DS^^}")"
    wait_archived >/dev/null # one segment through the new command
    IFS='|' read -r c0 f0 < <(sql -d postgres -c "SELECT archived_count, failed_count FROM pg_stat_archiver")
    s0=$(cur_seg)
    prep
    measure "$DS-sustain-$RUN" pgbench -n -T "$ARCHIVE_SECS" -c 2 bench
    IFS='|' read -r c1 f1 cur last < <(sql -d postgres -c "SELECT archived_count, failed_count, pg_walfile_name(pg_current_wal_lsn() + 1), last_archived_wal FROM pg_stat_archiver")
    backlog=$(($(segno "$cur") - $(segno "$last") - 1))
    ((backlog >= 0)) || backlog=0
    d0=$(date +%s%N)
    wait_archived >/dev/null
    value made $(($(segno "$cur") - $(segno "$s0")))
    value archived $((c1 - c0))
    value failed $((f1 - f0))
    value backlog "$backlog"
    value drain "$(awk -v n=$(($(date +%s%N) - d0)) 'BEGIN { printf "%.2f", n / 1e9 }')"
    value tps "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/logs/$DS-sustain-$RUN.log" | head -n1)"
    set_archive "$ARCHIVE_BOTH"
}
for ((RUN = 1; RUN <= REPEAT; RUN++)); do
    log "round $RUN/$REPEAT: archiving under pgbench -T $ARCHIVE_SECS -c 2, one tool at a time"
    STEP=sustain
    DS=lb attempt step_sustain
    DS=pgbr attempt step_sustain
done
wait_archived >/dev/null

# ------------------------------------------------------------ 4b: wal-fetch and wal-push of single segments
# Real, distinct segments, archived by both tools: each fetched from the main
# repositories (lifeboat wal-fetch / pgbackrest archive-get, compared byte for byte),
# then pushed into a second, scratch repository of each tool, every name once
# (a retry first deletes what the disturbed push stored).
NSEG=$((REPEAT * SEGMENTS))
log "making $NSEG WAL segments with pgbench for the single-segment timings"
WB=$WORK/walbench
mkdir -p "$WB"/{lb-segs,pgbr-segs,log,lock,spool,pgdata/global}
# lifeboat's --pgdata for these: the cluster's pg_control (which cluster it is) and no
# pg_wal, so that wal-fetch starts no background prefetch of the next segments
cp "$PGDATA/global/pg_control" "$WB/pgdata/global/"
lb_config "$WB/lifeboat.toml" "$WB/lbrepo"
"$LB" --quiet --config "$WB/lifeboat.toml" init >"$WORK/logs/wb-init.log"
# a third scratch repository for the pushes without lifeboat's unlock cache
lb_config "$WB/lifeboat-cold.toml" "$WB/lbrepo-cold"
sed -i 's/^passphrase_file = .*/&\nunlock_cache = false/' "$WB/lifeboat-cold.toml"
"$LB" --quiet --config "$WB/lifeboat-cold.toml" init >"$WORK/logs/wb-init-cold.log"
pgbr_config "$WB" "$WB/pgbrrepo"
chown -R postgres: "$WB"
WB_PGBR=(runuser -u postgres -- pgbackrest "--config=$WB/pgbackrest.conf" --stanza=bench)
"${WB_PGBR[@]}" stanza-create >"$WORK/logs/wb-stanza-create.log" 2>&1
first=$(cur_seg)
TLI_HEX=${first:0:8}
FIRST_NO=$(($(segno "$first") + 1))
while (($(segno "$(cur_seg)") < FIRST_NO + NSEG)); do
    PGOPTIONS='-c synchronous_commit=off' pgbench -n -T 3 -c 2 bench >>"$WORK/logs/pgbench-segments.log" 2>&1
done
wait_archived >/dev/null

step_fetch() { # SEGMENT
    local dest
    if [[ $DS == lb ]]; then
        dest=$WB/lb-segs/$1
        rm -f "$dest"
        prep
        measure "lb-fetch-$1" "$LB" --quiet --config "$LBC" wal-fetch --pgdata "$WB/pgdata" "$1" "$dest"
    else
        dest=$WB/pgbr-segs/$1
        rm -f "$dest"
        prep
        measure "pgbr-fetch-$1" "${PGBR_CMD[@]}" --repo=1 archive-get "$1" "$dest"
    fi
}
step_push() { # SEGMENT
    if [[ $DS == lb ]]; then
        find "$WB/lbrepo/wal" -name "$1" -delete 2>/dev/null || true
        prep
        measure "lb-push-$1" "$LB" --quiet --config "$WB/lifeboat.toml" wal-push --pgdata "$WB/pgdata" "$WB/lb-segs/$1"
    else
        find "$WB/pgbrrepo/archive" -name "$1-*" -delete 2>/dev/null || true
        prep
        measure "pgbr-push-$1" "${WB_PGBR[@]}" archive-push "$WB/pgbr-segs/$1"
    fi
}
# As the first wal-push after a boot: no unlocked keys in /dev/shm, so it pays Argon2id.
step_push_cold() { # SEGMENT
    find "$WB/lbrepo-cold/wal" -name "$1" -delete 2>/dev/null || true
    prep
    measure "lb-pushcold-$1" "$LB" --quiet --config "$WB/lifeboat-cold.toml" wal-push --pgdata "$WB/pgdata" "$WB/lb-segs/$1"
}
for ((RUN = 1; RUN <= REPEAT; RUN++)); do
    log "round $RUN/$REPEAT: wal-fetch / archive-get, then wal-push / archive-push, of $SEGMENTS segments"
    for ((i = 0; i < SEGMENTS; i++)); do
        seg=$(segname "$TLI_HEX" $((FIRST_NO + (RUN - 1) * SEGMENTS + i)))
        STEP=wal_fetch
        DS=lb attempt step_fetch "$seg"
        DS=pgbr attempt step_fetch "$seg"
        [[ $(stat -c %s "$WB/lb-segs/$seg") == 16777216 ]] || die "wal-fetch of $seg did not give 16 MiB"
        cmp -s "$WB/lb-segs/$seg" "$WB/pgbr-segs/$seg" || die "$seg: lifeboat wal-fetch and pgbackrest archive-get differ"
        STEP=wal_push
        DS=lb attempt step_push "$seg"
        DS=pgbr attempt step_push "$seg"
        STEP=wal_push_cold
        DS=lb attempt step_push_cold "$seg"
    done
done
WB_LB_STORED=$(du_b "$WB/lbrepo/wal")
WB_PGBR_STORED=$(du_b "$WB/pgbrrepo/archive")
rm -rf "$WB/lb-segs" "$WB/pgbr-segs"

# ------------------------------------------------------------ 5: WAL replay through wal-fetch
log "replay: a base backup, then $REPLAY_MB MiB of WAL with pgbench"
wait_archived >/dev/null
REPLAY_FROM=$(cur_seg)
lb backup production >"$WORK/logs/replay-base-backup.log" 2>&1
REPLAY_ID=$(lb_last id)
lsn0=$(sql -d postgres -c "SELECT pg_current_wal_lsn()")
while (($(sql -d postgres -c "SELECT (pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') / 1048576)::bigint") < REPLAY_MB)); do
    PGOPTIONS='-c synchronous_commit=off' pgbench -n -T 5 -c 2 bench >>"$WORK/logs/pgbench-replay.log" 2>&1
done
REPLAY_TO=$(wait_archived)
REPLAY_SEGS=$(($(segno "$REPLAY_TO") - $(segno "$REPLAY_FROM") + 1))
REPLAY_WAL_MB=$(sql -d postgres -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') / 1048576)")
# what a complete replay must show
EXPECT=$(sql -d bench -c "SELECT count(*), coalesce(sum(delta), 0) FROM pgbench_history")
# the segments for the local replay: from pg_wal, or (if a checkpoint recycled them) fetched
LOCALWAL=$WORK/replay-wal
mkdir -p "$LOCALWAL"
for ((n = $(segno "$REPLAY_FROM"); n <= $(segno "$REPLAY_TO"); n++)); do
    seg=$(segname "$TLI_HEX" "$n")
    if [[ -f $PGDATA/pg_wal/$seg ]]; then
        cp "$PGDATA/pg_wal/$seg" "$LOCALWAL/"
    else
        lb wal-fetch --pgdata "$WB/pgdata" "$seg" "$LOCALWAL/$seg"
    fi
done
chown -R postgres: "$LOCALWAL"
log "  $REPLAY_SEGS segments ($REPLAY_FROM .. $REPLAY_TO), $REPLAY_WAL_MB MiB of WAL since the backup"

# start-and-wait DIR PORT SOCKDIR: start a restored server, return once recovery is
# over and it promoted (the same wait as `lifeboat restore --start`: pg_ctl -w, then
# pg_is_in_recovery() until false)
cat >"$WORK/start-and-wait" <<'EOF'
#!/bin/bash
set -euo pipefail
d=$1 p=$2 s=$3
runuser -u postgres -- pg_ctl -D "$d" -l "$d/server.log" -w -t 3600 -o "-p $p" start >/dev/null
gone() { [[ -f $d/postmaster.pid ]] || { echo "the server stopped; its log ends with:" >&2; tail -n 30 "$d/server.log" >&2; exit 1; }; }
# recovery removes recovery.signal when it ends: wait for that with stat alone (a psql
# every 50 ms, each one a new backend, took CPU from the replay being timed), then ask
while [[ -f $d/recovery.signal ]]; do gone; sleep 0.02; done
until [[ $(psql -X -At -h "$s" -p "$p" -U postgres -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null) == f ]]; do
    gone
    sleep 0.02
done
EOF
chmod 755 "$WORK/start-and-wait"

# after a replay: the restored server has every pgbench transaction; then stop it and
# remove it, once nothing the timed command started runs any more (a wal-prefetch
# may still be writing into its pg_wal)
check_replayed() { # DIR
    local got i
    got=$(psql -X -At -h "$SOCK" -p "$RPORT" -U postgres -d bench -c "SELECT count(*), coalesce(sum(delta), 0) FROM pgbench_history")
    runuser -u postgres -- pg_ctl -D "$1" -m immediate -w stop >/dev/null
    [[ $got == "$EXPECT" ]] || die "replay in $1 incomplete: pgbench_history has $got, the cluster $EXPECT"
    if [[ -n ${M_CG:-} && -d $M_CG ]]; then
        for ((i = 0; i < 300; i++)); do
            [[ -n $(cat "$M_CG/cgroup.procs" 2>/dev/null) ]] || break # (pseudo-files: -s does not tell)
            sleep 0.1
        done
    else
        sleep 1
    fi
    cg_sweep
    rm -rf "$1" || { sleep 2; rm -rf "$1"; }
}
step_replay_fetch() { # recovery with restore_command = lifeboat wal-fetch (as restore wrote it)
    local d=$RESTORES/replay-fetch
    rm -rf "$d"
    lb restore production --backup "$REPLAY_ID" --data-dir "$d" >"$WORK/logs/replay-fetch-restore-$RUN.log" 2>&1
    prefault # wal-fetch writes every segment into the page cache: into memory used before
    prep
    measure "replay-fetch-$RUN" "$WORK/start-and-wait" "$d" "$RPORT" "$SOCK"
    check_replayed "$d"
}
step_replay_local() { # the same with the segments already in pg_wal, restore_command = /bin/false
    local d=$RESTORES/replay-local dist
    rm -rf "$d"
    prefault
    prep
    STEP=replay_restore measure "replay-restore-$RUN" "$LB" --quiet --config "$LBC" restore production --backup "$REPLAY_ID" --data-dir "$d"
    dist=$M_DISTURBED
    cp -p "$LOCALWAL"/* "$d/pg_wal/"
    echo "restore_command = '/bin/false'" >>"$d/postgresql.auto.conf"
    prefault
    prep
    measure "replay-local-$RUN" "$WORK/start-and-wait" "$d" "$RPORT" "$SOCK"
    M_DISTURBED=$((M_DISTURBED || dist))
    check_replayed "$d"
}
# The same recovery with other restore_commands, for comparison (the base backup is
# lifeboat's, restored untimed; only where the WAL comes from differs):
# pgBackRest's archive-get with its asynchronous prefetch (archive-async=y, its queue
# at the default archive-get-queue-max), from pgBackRest's repository, which holds
# every segment too (the archiver pushes into both); and `cp` from a local directory
# of plain segments, the floor of any restore_command: PostgreSQL's own cost of
# recovering from an archive (a shell and a command per file, each restored
# segment written and fsynced into pg_wal before it is replayed).
REPLAY_PGBR_DIR=$WORK/replay-pgbr # its logs, lock and spool; pg1-path and archive-async on its command line
mkdir -p "$REPLAY_PGBR_DIR"/{log,lock}
pgbr_config "$REPLAY_PGBR_DIR" "$PGBR/repo"
chown -R postgres: "$REPLAY_PGBR_DIR"
step_replay_other() { # pgbr|cp
    local d=$RESTORES/replay-other cmd
    rm -rf "$d" "$REPLAY_PGBR_DIR/spool" && install -d -o postgres -g postgres "$REPLAY_PGBR_DIR/spool"
    lb restore production --backup "$REPLAY_ID" --data-dir "$d" >"$WORK/logs/replay-$1-restore-$RUN.log" 2>&1
    case $1 in
    pgbr) cmd="pgbackrest --config=$REPLAY_PGBR_DIR/pgbackrest.conf --stanza=bench --pg1-path=$d --archive-async archive-get %f \"%p\"" ;;
    cp) cmd="cp $LOCALWAL/%f \"%p\"" ;;
    esac
    echo "restore_command = '$cmd'" >>"$d/postgresql.auto.conf"
    prefault
    prep
    measure "replay-$1-$RUN" "$WORK/start-and-wait" "$d" "$RPORT" "$SOCK"
    check_replayed "$d"
    [[ $1 != pgbr || -s $REPLAY_PGBR_DIR/log/bench-archive-get-async.log ]] ||
        die "pgBackRest's archive-get did not run asynchronously (no bench-archive-get-async.log)"
}
step_restore_start() { # [ARGS...]: the whole of `lifeboat restore --start`: files, then recovery through wal-fetch
    local d=$RESTORES/restore-start
    rm -rf "$d"
    prefault
    prep
    measure "$DS-restore-start-$RUN" "$LB" --quiet --config "$LBC" restore production --backup "$REPLAY_ID" --data-dir "$d" --start --port "$RPORT" "$@"
    check_replayed "$d"
}
for ((RUN = 1; RUN <= REPEAT; RUN++)); do
    log "round $RUN/$REPEAT: recovery of $REPLAY_WAL_MB MiB of WAL"
    DS=lb STEP=replay attempt step_replay_fetch
    DS=pg STEP=replay attempt step_replay_local
    DS=pgbr STEP=replay attempt step_replay_other pgbr
    DS=cp STEP=replay attempt step_replay_other cp
    DS=lb STEP=restore_start attempt step_restore_start
    DS=lbd STEP=restore_start attempt step_restore_start --direct-io always
done
BENCH_SECS=$(($(date +%s) - BENCH_START))

# ------------------------------------------------------------ report
MEM_AVAILABLE=$(awk '/^MemAvailable:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
DISTURBED=$(awk -F'\t' -v d="$DISTURBED_COL" '$d == 1' "$RESULTS" | wc -l)
times() { # DS STEP [ms]: every run in order, * = disturbed (and redone)
    awk -F'\t' -v ds="$1" -v st="$2" -v d="$DISTURBED_COL" -v ms="${3:-}" '$1 == ds && $2 == st {
        s = s (s == "" ? "" : " / ") (ms ? sprintf("%.0f", $4 * 1000) : $4) ($d ? "*" : "") } END { print s }' "$RESULTS"
}
row() { # s|ms DS STEP TITLE EXTRA...: a table row
    local unit=$1 ds=$2 st=$3 title=$4 t x
    shift 4
    t=$(tmed "$ds" "$st")
    [[ $unit == s ]] || t=$(ms "$t")
    printf '| %s | %s | %s | %s / %s | %s |' "$title" "$t" "$(times "$ds" "$st" "${unit#s}")" \
        "$(tmed "$ds" "$st" 6)" "$(tmed "$ds" "$st" 7)" "$(kmib "$(max_rss "$ds" "$st")")"
    for x in "$@"; do printf ' %s |' "$x"; done
    echo
}

LB_FULL=$(tmed lb full)
PGBR_FULL_T=$(tmed pgbr full)
PGBB_FULL=$(tmed pgbb full)
LB_FULL_S=$(vmed lb full stored)
PGBR_FULL_S=$(vmed pgbr full stored)
PGBB_FULL_S=$(vmed pgbb full stored)
LB_INCR=$(tmed lb incr)
PGBR_INCR=$(tmed pgbr incr)
LB_INCR_S=$(vmed lb incr stored)
PGBR_INCR_S=$(vmed pgbr incr stored)
LB_RESTORE=$(tmed lb restore)
PGBR_RESTORE=$(tmed pgbr restore)
LB_PUSH=$(tmed lb wal_push)
PGBR_PUSH=$(tmed pgbr wal_push)
LB_FETCH=$(tmed lb wal_fetch)
PGBR_FETCH=$(tmed pgbr wal_fetch)
REPLAY_FETCH=$(tmed lb replay)
REPLAY_LOCAL=$(tmed pg replay)
REPLAY_PGBR=$(tmed pgbr replay)
REPLAY_CP=$(tmed cp replay)
REPLAY_RESTORE=$(tmed pg replay_restore)
RESTORE_START=$(tmed lb restore_start)
LOCAL_TOTAL=$(awk -v a="$REPLAY_RESTORE" -v b="$REPLAY_LOCAL" 'BEGIN { printf "%.3f", a + b }')

V_FULL_T=$(verdict within "$LB_FULL" "$PGBR_FULL_T" 0.5)
V_FULL_S=$(verdict le "$LB_FULL_S" "$PGBR_FULL_S")
V_INCR_T=$(verdict within "$LB_INCR" "$PGBR_INCR" 0.5)
if ((PGBR_BLOCK)); then
    PGBRB_INCR=$(tmed pgbrb incr)
    PGBRB_INCR_S=$(vmed pgbrb incr stored)
    V_INCR_S=$(verdict le "$LB_INCR_S" "$PGBRB_INCR_S")
    INCR_S_MEASURED="$(mib "$LB_INCR_S") vs $(mib "$PGBRB_INCR_S") = $(ratio "$LB_INCR_S" "$PGBRB_INCR_S") x"
else
    V_INCR_S="n/a"
    INCR_S_MEASURED="$(mib "$LB_INCR_S") vs - (pgBackRest $PGBR_VERSION has no block incremental: repo-block came with 2.46); vs its plain incremental $(mib "$PGBR_INCR_S"): $(ratio "$LB_INCR_S" "$PGBR_INCR_S") x"
fi
V_RESTORE=$(verdict within "$LB_RESTORE" "$PGBR_RESTORE" 0.8)
V_REPLAY=$(verdict within "$REPLAY_FETCH" "$REPLAY_LOCAL" 1.2)
RSS_BACKUP=$(max_rss lb full incr)
RSS_RESTORE=$(max_rss lb restore restore_start)
RSS_RESTORE=$((RSS_RESTORE > $(max_rss pg replay_restore) ? RSS_RESTORE : $(max_rss pg replay_restore)))
RSS_PUSH=$(max_rss lb wal_push)
RSS_FETCH=$(max_rss lb wal_fetch)
V_RSS_BACKUP=$(verdict test "$RSS_BACKUP" -lt 131072)
V_RSS_RESTORE=$(verdict test "$RSS_RESTORE" -lt 131072)
V_RSS_PUSH=$(verdict test "$RSS_PUSH" -lt 131072)
V_RSS_FETCH=$(verdict test "$RSS_FETCH" -lt 131072)

sustain_row() { # DS TITLE
    local made arch backlog
    made=$(vmed "$1" sustain made)
    arch=$(vmed "$1" sustain archived)
    backlog=$(vmax "$1" sustain backlog)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$(printf '%.0f' "$(vmed "$1" sustain tps)")" \
        "$made ($(per_s "$made" "$ARCHIVE_SECS")/s)" "$arch ($(per_s "$arch" "$ARCHIVE_SECS")/s)" \
        "$backlog" "$(vmed "$1" sustain drain)" "$(vmax "$1" sustain failed)" \
        "$(if ((backlog <= 1)); then echo yes; else echo "no ($backlog behind)"; fi)"
}
KEPT_UP_LB=$( (($(vmax lb sustain backlog) <= 1)) && echo yes || echo no)

section() {
    cat <<EOF
$BEGIN_MARK
## Physical backups: lifeboat, pgBackRest, pg_basebackup

Generated by \`bench/physical.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); the whole run took $((BENCH_SECS / 60)) min $((BENCH_SECS % 60)) s.
Rerunning it replaces this section only.

Reproduce (as root on Debian 12, from the repository root):

\`\`\`sh
bash bench/physical.sh${ARGS_GIVEN:+ $ARGS_GIVEN}
\`\`\`

| | |
| --- | --- |
| machine | $(nproc) cores ($CPU), $MEM_GIB GiB RAM, Linux $(uname -r) |
| disk | $DISK_DEV ($DISK_FS), 1 GiB sequential write with fsync: $DISK_WRITE |
| PostgreSQL | $PG_VERSION; throwaway cluster: shared_buffers=1GB, fsync=on, max_wal_size=4GB, checkpoint_timeout=30min, wal_level=replica, archive_mode=on, data checksums off |
| data | \`pgbench -i -s $SCALE\`: database $(mib "$DB_SIZE"), data directory $(mib "$PGDATA_SIZE") without pg_wal |
| lifeboat | $LB_VERSION, git $GIT_REV$([[ -n $REV ]] && echo " (built from \`git archive\` of that commit)")$([[ $GIT_DIRTY == yes ]] && echo " plus uncommitted changes in src/ or Cargo.* (the working tree)"), \`cargo build --release\`; \`file://\` repository, repository defaults, passphrase mode (\`passphrase_file\`; each new repository's keys in the unlock cache of root, who runs the backups, by \`init\`, and of postgres, whose archiver pushes the WAL, by a \`list\`, as in a repository in service); \`checkpoint = "fast"\`; restore with its default jobs (the CPU count) |
| pgBackRest | $PGBR_VERSION (Debian package): process-max=2, compress-type=zst (level 3), start-fast=y, repo on the same disk; block incremental (repo-bundle + repo-block): $( ((PGBR_BLOCK)) && echo "a second repository, repo2" || echo "not available, it came with 2.46") |
| pg_basebackup | $PGBB_VERSION: \`-Ft --compress=server-zstd:workers=2 -X none --checkpoint=fast\` |
| archiving | \`archive_command = '<lifeboat> --config <cfg> --quiet wal-push %p && pgbackrest --config=<cfg> --stanza=bench archive-push %p'\`, so that both tools' backups find their WAL; pgBackRest's WAL therefore lands after lifeboat's |
| runs | $REPEAT run(s) of each timing, interleaved round by round; the median is reported |

### Base backups

Each round: a full backup by each tool (lifeboat into a new, empty repository, so that nothing is deduplicated
against an earlier round), the restores below, then \`pgbench -n -T $CHANGE_SECS -c 2\` ($TXNS_CHANGE transactions in
the rounds), a \`CHECKPOINT\`, and a second backup by each tool (lifeboat: an ordinary \`backup\`, which stores what
the full one did not; pgBackRest: \`--type=incr\`). Stored: lifeboat's \`stored_bytes\` of the backup (\`list --json\`);
pgBackRest: the growth of \`du -sb\` of its repository's \`backup/\` directory (its WAL archive, like lifeboat's, is left
out); pg_basebackup: the size of its output directory. The time of a backup includes waiting for its WAL to be archived
(lifeboat and pgBackRest wait for it; pg_basebackup with \`-X none\` does not).

| backup | wall s (median) | runs in order (s; \`*\` disturbed, redone) | CPU s, command / cluster (median) | peak RSS | stored (median) |
| --- | ---: | --- | ---: | ---: | ---: |
$(row s lb full "lifeboat \`backup\`, full (empty repository)" "$(mib "$LB_FULL_S")")
$(row s pgbr full "pgBackRest \`--type=full\`" "$(mib "$PGBR_FULL_S")")
$(row s pgbb full "pg_basebackup, server-side zstd, 2 workers" "$(mib "$PGBB_FULL_S")")
$(row s lb incr "lifeboat \`backup\` after pgbench" "$(mib "$LB_INCR_S")")
$(row s pgbr incr "pgBackRest \`--type=incr\` after pgbench" "$(mib "$PGBR_INCR_S")")
$(if ((PGBR_BLOCK)); then row s pgbrb incr "pgBackRest \`--type=incr\`, block incremental" "$(mib "$PGBRB_INCR_S")"; else echo "| pgBackRest block incremental | n/a | pgBackRest $PGBR_VERSION has no repo-block (2.46+) | | | n/a |"; fi)

### Restore of the full backup

Into a new, empty directory on the same disk (removed after each run); the files only, recovery is not started.
The tools take turns going first, and before each restore a file as large as the data directory is written, synced
and deleted (untimed): on this VM, page cache in memory the guest never used before fills several times slower, and
the first restore of a round paid for it (lifeboat's restores took 5-7 s instead of 2-3 s before this was done).
Restored: lifeboat $(mib "$(vmed lb restore restored)"), pgBackRest $(mib "$(vmed pgbr restore restored)") (\`du -sb\`).
The last row, after the other two in every round, writes the data files with \`O_DIRECT\` (\`--direct-io always\`; by
default lifeboat does that only for a restore larger than half the memory available, $MEM_AVAILABLE here): recorded
to show what filling the page cache costs on this machine. The recovery then finds none of the files in the cache:
see the last two rows of "WAL replay".

| restore | wall s (median) | runs in order (s; \`*\` disturbed, redone) | CPU s, command / cluster (median) | peak RSS |
| --- | ---: | --- | ---: | ---: |
$(row s lb restore "lifeboat \`restore --data-dir\`")
$(row s pgbr restore "pgBackRest \`restore --pg1-path\`")
$(row s lbd restore "lifeboat \`restore --data-dir --direct-io always\` (recorded; no target)")

### WAL archiving

Single segments: $NSEG distinct real 16 MiB segments (from pgbench, run with synchronous_commit=off to make them sooner), each fetched from the main repositories
(\`lifeboat wal-fetch\`, \`pgbackrest archive-get\`; the two copies compared byte for byte) and pushed once into a second,
scratch repository of each tool (\`lifeboat wal-push\`, \`pgbackrest archive-push\`); lifeboat as root, pgBackRest as postgres.
lifeboat's \`--pgdata\` is a directory holding only a copy of the cluster's \`global/pg_control\`: without a \`pg_wal\`,
\`wal-fetch\` starts no background \`wal-prefetch\` of the following segments, so each fetch is a cold one (the replay
below is where prefetching counts). lifeboat's passphrase comes from \`passphrase_file\`, so after the first command
of a boot its keys come from the unlock cache in \`/dev/shm\` (FORMAT.md "Unlock cache"); the "first after a boot" row
pushes into a third repository configured with \`unlock_cache = false\`, so that every push pays Argon2id (64 MiB, 3 passes).
Stored per segment in the scratch repositories: lifeboat $(mib $((WB_LB_STORED / NSEG))), pgBackRest $(mib $((WB_PGBR_STORED / NSEG))).

| command, one 16 MiB segment | wall ms (median) | runs in order (ms; \`*\` disturbed, redone) | CPU s, command / cluster (median) | peak RSS |
| --- | ---: | --- | ---: | ---: |
$(row ms lb wal_push "lifeboat \`wal-push\`")
$(row ms lb wal_push_cold "lifeboat \`wal-push\`, the first after a boot (\`unlock_cache = false\`)")
$(row ms pgbr wal_push "pgBackRest \`archive-push\`")
$(row ms lb wal_fetch "lifeboat \`wal-fetch\`")
$(row ms pgbr wal_fetch "pgBackRest \`archive-get\`")

Under load: \`pgbench -n -T $ARCHIVE_SECS -c 2\` with only one tool in \`archive_command\` (switched with a reload between
runs). Made: segments the cluster finished during the run; archived: \`pg_stat_archiver.archived_count\` growth; behind:
finished segments not yet archived when pgbench ended (at most 1 in flight counts as keeping up); catch-up: from then
until the segment switched to right after was archived. Medians over the runs, "behind" and failures the maximum.

| archive_command | pgbench tps | segments made | segments archived | behind at the end | catch-up s | failed | kept up |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
$(sustain_row lb "lifeboat \`wal-push\`")
$(sustain_row pgbr "pgBackRest \`archive-push\`")

### WAL replay

One lifeboat base backup, then $REPLAY_WAL_MB MiB of WAL made by pgbench (synchronous_commit=off, to make it sooner;
$REPLAY_SEGS segments, all archived). Before each timed run the page cache is "prefaulted" as before the restores
(a file as large as the data directory written, synced, deleted): \`wal-fetch\` writes every segment during recovery. Each run restores
that backup with lifeboat (not timed here, except in the last row) and times the recovery: \`pg_ctl -w start\`, then
\`recovery.signal\` checked every 20 ms until recovery removed it, then \`pg_is_in_recovery()\` until the server promoted, as \`restore --start\` waits (until fafd107 the script asked psql every 50 ms: a new backend each time, taking CPU from the replay). Every replay is checked to end
with all of pgbench's transactions. Through \`wal-fetch\`, each call also starts (if none runs) a detached
\`lifeboat wal-prefetch\` that fetches the next segments into \`pg_wal/lifeboat-prefetch\`; its CPU is in the command's
column$([[ -n $CG_KIND ]] || echo " only if cgroups were available (they were not in this run: it counts as other processes, and the runs may show as disturbed)"). Peak RSS here is that of the waiting script, not of the server or \`wal-fetch\`.
The last two rows restore the same lifeboat backup and take the WAL elsewhere, for comparison: pgBackRest's
\`archive-get\` from its own repository (the archiver pushes every segment into both) with \`archive-async=y\`, its
prefetch into a spool (default \`archive-get-queue-max\`, process-max=2); and \`cp\` from a local directory of the plain
segments, the floor of any restore_command: a shell and a command per file, and each restored segment written and
fsynced into pg_wal by PostgreSQL before it replays it, which a replay from pg_wal does not do.

| recovery of $REPLAY_WAL_MB MiB of WAL | wall s (median) | runs in order (s; \`*\` disturbed, redone) | CPU s, command / cluster (median) | peak RSS |
| --- | ---: | --- | ---: | ---: |
$(row s lb replay "restore_command = lifeboat \`wal-fetch\` (as \`restore\` writes it)")
$(row s pg replay "segments already in pg_wal, restore_command = /bin/false")
$(row s pg replay_restore "(the lifeboat \`restore\` of the second row, files only)")
$(row s pgbr replay "restore_command = pgBackRest \`archive-get\` with archive-async=y (its prefetch)")
$(row s cp replay "restore_command = \`cp\` from a local directory of plain segments (the floor of any restore_command)")
$(row s lb restore_start "lifeboat \`restore --start\`, whole: files, then recovery through \`wal-fetch\`")
$(row s lbd restore_start "the same with \`--direct-io always\` (the files around the page cache)")

End to end: \`restore --start\` $RESTORE_START s vs restore plus local replay $LOCAL_TOTAL s = $(ratio "$RESTORE_START" "$LOCAL_TOTAL") x.
Against the other restore_commands: \`wal-fetch\` $REPLAY_FETCH s, pgBackRest's asynchronous \`archive-get\` $REPLAY_PGBR s
($(ratio "$REPLAY_FETCH" "$REPLAY_PGBR") x), \`cp\` of plain segments $REPLAY_CP s ($(ratio "$REPLAY_FETCH" "$REPLAY_CP") x); the \`cp\` floor itself is
$(ratio "$REPLAY_CP" "$REPLAY_LOCAL") x the replay from pg_wal.

### Targets

| target | measured | result |
| --- | --- | --- |
| full backup time at most 0.5 x pgBackRest full | $LB_FULL s vs $PGBR_FULL_T s = $(ratio "$LB_FULL" "$PGBR_FULL_T") x (pg_basebackup: $PGBB_FULL s) | $V_FULL_T |
| full backup stored at most pgBackRest's | $(mib "$LB_FULL_S") vs $(mib "$PGBR_FULL_S") = $(ratio "$LB_FULL_S" "$PGBR_FULL_S") x (pg_basebackup: $(mib "$PGBB_FULL_S")) | $V_FULL_S |
| backup after pgbench: time at most 0.5 x pgBackRest incremental | $LB_INCR s vs $PGBR_INCR s = $(ratio "$LB_INCR" "$PGBR_INCR") x | $V_INCR_T |
| backup after pgbench: stored at most pgBackRest's block incremental | $INCR_S_MEASURED | $V_INCR_S |
| restore at most 0.8 x pgBackRest restore | $LB_RESTORE s vs $PGBR_RESTORE s = $(ratio "$LB_RESTORE" "$PGBR_RESTORE") x | $V_RESTORE |
| wal-push of a 16 MiB segment (recorded; no target) | $(ms "$LB_PUSH") ms vs archive-push $(ms "$PGBR_PUSH") ms = $(ratio "$LB_PUSH" "$PGBR_PUSH") x | - |
| archiving keeps up with \`pgbench -c 2\` (recorded; no target) | $(vmed lb sustain archived) of $(vmed lb sustain made) segments archived during the run, at most $(vmax lb sustain backlog) behind | $KEPT_UP_LB |
| replay through wal-fetch at most 1.2 x replay from pg_wal | $REPLAY_FETCH s vs $REPLAY_LOCAL s = $(ratio "$REPLAY_FETCH" "$REPLAY_LOCAL") x | $V_REPLAY |
| peak memory under 128 MiB: \`backup\` | $(kmib "$RSS_BACKUP") | $V_RSS_BACKUP |
| peak memory under 128 MiB: \`restore\` (files; with --start) | $(kmib "$RSS_RESTORE") | $V_RSS_RESTORE |
| peak memory under 128 MiB: \`wal-push\` | $(kmib "$RSS_PUSH") | $V_RSS_PUSH |
| peak memory under 128 MiB: \`wal-fetch\` | $(kmib "$RSS_FETCH") | $V_RSS_FETCH |

How it is measured:

- Wall time from a nanosecond clock around \`/usr/bin/time -f '%e %M %U %S'\`; peak RSS is its \`%M\` (the largest
  single process of the command's tree: for pgBackRest, its biggest process; for pg_basebackup, the client only).
- CPU (user + sys): the command / the cluster. The command's is $([[ -n $CG_KIND ]] && echo "that of its cgroup ($CG_KIND), which also holds what it started in the background (restored servers, \`wal-prefetch\`)" || echo "that of its process tree (no cgroup was available), and restored servers are in the cluster's column"); the
  cluster's is that of its process tree during the run: checkpoints, walsenders (pg_basebackup compresses there), the
  archiver running both archive commands (the backups wait for their WAL).
- Page cache warm for every tool alike (not dropped: the comparison is of the tools, not of the disk). Before each timed run: \`sync\`, and a wait (up to
  ${QUIET_WAIT} s) for the machine to be idle.
- The machine may be shared (builds, test suites): the CPU the rest of the machine used (everything but the command and the
  PostgreSQL servers) is measured during every run. A run during which it exceeded $OTHER_LIMIT cores is marked \`*\`,
  measured again (up to $RETRIES times; a backup after pgbench on a copy of the repository as it was before the
  disturbed run) and left out of the median (unless every run of the step was disturbed). This run: $DISTURBED disturbed
  run(s).
$END_MARK
EOF
}

section >"$WORK/section.md"
write_section "$WORK/section.md"

log "done in $((BENCH_SECS / 60)) min $((BENCH_SECS % 60)) s; wrote $OUT"
echo "== lifeboat physical benchmark: $LB_VERSION, git $GIT_REV, pgBackRest $PGBR_VERSION, scale $SCALE, $DISTURBED disturbed run(s) =="
echo "  full backup   lifeboat $LB_FULL s, $(mib "$LB_FULL_S"); pgBackRest $PGBR_FULL_T s, $(mib "$PGBR_FULL_S"); pg_basebackup $PGBB_FULL s, $(mib "$PGBB_FULL_S")"
echo "                time $(ratio "$LB_FULL" "$PGBR_FULL_T") x (<= 0.5)  $V_FULL_T; stored $(ratio "$LB_FULL_S" "$PGBR_FULL_S") x (<= 1)  $V_FULL_S"
echo "  incremental   lifeboat $LB_INCR s, $(mib "$LB_INCR_S"); pgBackRest incr $PGBR_INCR s, $(mib "$PGBR_INCR_S")$( ((PGBR_BLOCK)) && echo "; block incr $PGBRB_INCR s, $(mib "$PGBRB_INCR_S")")"
echo "                time $(ratio "$LB_INCR" "$PGBR_INCR") x (<= 0.5)  $V_INCR_T; stored vs block incremental  $V_INCR_S"
echo "  restore       lifeboat $LB_RESTORE s, pgBackRest $PGBR_RESTORE s: $(ratio "$LB_RESTORE" "$PGBR_RESTORE") x (<= 0.8)  $V_RESTORE"
echo "  wal-push      $(ms "$LB_PUSH") ms vs archive-push $(ms "$PGBR_PUSH") ms; wal-fetch $(ms "$LB_FETCH") ms vs archive-get $(ms "$PGBR_FETCH") ms"
echo "  under load    lifeboat archived $(vmed lb sustain archived) of $(vmed lb sustain made) segments in $ARCHIVE_SECS s, at most $(vmax lb sustain backlog) behind: kept up $KEPT_UP_LB"
echo "  replay        $REPLAY_WAL_MB MiB: wal-fetch $REPLAY_FETCH s vs pg_wal $REPLAY_LOCAL s: $(ratio "$REPLAY_FETCH" "$REPLAY_LOCAL") x (<= 1.2)  $V_REPLAY"
echo "                pgBackRest archive-get (async) $REPLAY_PGBR s, cp of plain segments $REPLAY_CP s"
echo "  peak RSS      backup $(kmib "$RSS_BACKUP"), restore $(kmib "$RSS_RESTORE"), wal-push $(kmib "$RSS_PUSH"), wal-fetch $(kmib "$RSS_FETCH") (< 128 MiB)  $V_RSS_BACKUP $V_RSS_RESTORE $V_RSS_PUSH $V_RSS_FETCH"
