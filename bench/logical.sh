#!/usr/bin/env bash
# Logical backup and restore: lifeboat side by side with pg_dump / pg_restore,
# in one run, on one throwaway PostgreSQL 15 cluster. Writes docs/BENCHMARKS.md
# (rewritten on every run, except bench/prune.sh's section and a hand-written notes
# section at its end) and prints a short summary.
#
#   bash bench/logical.sh                      # the full run (15-20 minutes on 2 cores)
#   bash bench/logical.sh --scale 2 --bytea-mb 20 --out /tmp/smoke.md    # a quick smoke run
#
# Options:
#   --scale N          pgbench scale of data set A (default 100, about 1.5 GB)
#   --bytea-mb N       size of data set B, random bytea, in MiB (default 1024)
#   --repeat N         runs of each backup-side timing, median reported (default 5)
#   --fc-repeat N      runs of `pg_dump -Fc -f FILE` (gzip; a minute on data set B) (default 3)
#   --restore-repeat N runs of each parallel restore timing (default 3)
#   --port N           port of the throwaway cluster (default 54329; it listens on
#                      a Unix socket in its temp dir only, so any port will do)
#   --datasets "A B"   which data sets to run
#   --out FILE         where the markdown goes (default docs/BENCHMARKS.md)
#   --tmp DIR          parent of the temp dir (default /var/tmp; must be on the
#                      disk you want to measure: the cluster, dumps and repositories
#                      all live there)
#   --quiet-wait S     before each timed run, wait up to S seconds (default 90) for
#                      the machine to be idle (other processes < 0.15 cores)
#   --retries N        a run disturbed by other processes (they used > 0.15 cores
#                      during it) is measured again, up to N times (default 2)
#   --rev REV          benchmark git revision REV (built from `git archive REV` in
#                      target/bench-rev) instead of the working tree
#
# Run as root on Debian 12: the cluster runs as the `postgres` OS user; the
# client programs (pg_dump, pg_restore, lifeboat) run as root and connect as the
# PostgreSQL user postgres over the Unix socket. Caches are warm for every tool
# alike (dropping the page cache is not possible here): the database fits in RAM
# and each data set is read once before anything is timed.
set -euo pipefail

SCALE=100
BYTEA_MB=1024
REPEAT=5
FC_REPEAT=3
RESTORE_REPEAT=3
PORT=54329
DATASETS="A B"
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
    --bytea-mb) BYTEA_MB=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --fc-repeat) FC_REPEAT=$2; shift 2 ;;
    --restore-repeat) RESTORE_REPEAT=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --datasets) DATASETS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --tmp) TMP_PARENT=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --retries) RETRIES=$2; shift 2 ;;
    --rev) REV=$2; shift 2 ;;
    -h | --help) sed -n '2,35p' "$0"; exit 0 ;;
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

# ------------------------------------------------------------ set-up (bench/lib.sh)
bench_setup bench
mkdir -p "$WORK/tmp"

start_cluster
export TMPDIR=$WORK/tmp # lifeboat restore --jobs puts its temporary dump copy here

# ------------------------------------------------------------ CPU accounting
# jiffies the cluster spent: the postmaster with its reaped children, plus the live children
server_cpu() {
    local -a f kids=()
    local total c
    read -r -a f </proc/"$POSTMASTER"/stat
    total=$((f[13] + f[14] + f[15] + f[16]))
    { read -r -a kids </proc/"$POSTMASTER"/task/"$POSTMASTER"/children; } 2>/dev/null || true
    for c in "${kids[@]}"; do
        { read -r -a f </proc/"$c"/stat; } 2>/dev/null || continue
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}
# before each timed run: no dirty buffers or pages left by the previous one, an idle machine
prep() {
    sql -d postgres -c CHECKPOINT
    sync
    wait_quiet
}

# ------------------------------------------------------------ measuring
# sample ROOTPID: until ROOTPID is gone, every 0.1 s read VmHWM (peak RSS) of every
# process below it; print "comm peak_kB" per program name.
sample() {
    local root=$1 p c k v hwm comm
    local -A peak=()
    local -a queue kids
    while [[ -e /proc/$root ]]; do
        # (a children file has no final newline: read then "fails" but has read it)
        kids=()
        { read -r -a kids </proc/"$root"/task/"$root"/children; } 2>/dev/null || true
        queue=("${kids[@]}")
        while ((${#queue[@]})); do
            p=${queue[0]}
            queue=("${queue[@]:1}")
            { read -r comm </proc/"$p"/comm; } 2>/dev/null || continue
            [[ $comm == time ]] && continue # a child of time before its exec
            hwm=0
            { while read -r k v _; do
                [[ $k == VmHWM: ]] && { hwm=$v; break; }
            done </proc/"$p"/status; } 2>/dev/null || continue
            ((hwm > ${peak[$comm]:-0})) && peak[$comm]=$hwm
            for c in /proc/"$p"/task/*/children; do
                kids=()
                { read -r -a kids <"$c"; } 2>/dev/null || true
                queue+=("${kids[@]}")
            done
        done
        sleep 0.1
    done
    for c in "${!peak[@]}"; do echo "$c ${peak[$c]}"; done
}

# measure LABEL CMD...: run CMD under /usr/bin/time with the sampler beside it, and
# append a line to $RESULTS (for $DS $STEP $RUN):
#   ds step run wall_s tree_rss_kB peaks client_cpu_s server_cpu_s other_cores disturbed
# tree_rss_kB is /usr/bin/time's %M: the largest of the process and its waited-for
# children; peaks is "prog kB, prog kB" sampled per program; client CPU is user+sys
# of the process tree; server CPU is what the cluster's backends used; other_cores
# is what the rest of the machine used on average (other users, kernel threads,
# the sampler). Output goes to $WORK/logs/LABEL.log. A failure stops the benchmark.
measure() {
    local label=$1
    shift
    local tf=$WORK/logs/$label.time sf=$WORK/logs/$label.rss rc=0 m0 s0 m1 s1 u sy
    m0=$(machine_busy)
    s0=$(server_cpu)
    /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >"$WORK/logs/$label.log" 2>&1 &
    local tpid=$!
    sample "$tpid" >"$sf" &
    local spid=$!
    wait "$tpid" || rc=$?
    m1=$(machine_busy)
    s1=$(server_cpu)
    wait "$spid" || true
    if ((rc)); then
        log "FAILED (exit $rc): $label: $*"
        tail -n 30 "$WORK/logs/$label.log" >&2
        exit 1
    fi
    read -r M_TIME M_RSS u sy <"$tf"
    M_CLIENT=$(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", u + s }')
    M_SERVER=$(awk -v d=$((s1 - s0)) -v hz="$HZ" 'BEGIN { printf "%.2f", d / hz }')
    M_OTHER=$(awk -v m=$((m1 - m0)) -v s=$((s1 - s0)) -v hz="$HZ" -v c="$M_CLIENT" -v w="$M_TIME" \
        'BEGIN { o = ((m - s) / hz - c) / (w > 0.5 ? w : 0.5); printf "%.2f", (o < 0 ? 0 : o) }')
    M_DISTURBED=$(awk -v o="$M_OTHER" -v lim="$OTHER_LIMIT" 'BEGIN { print (o > lim ? 1 : 0) }')
    M_PEAKS=$(sort -k2,2nr "$sf" | awk '{printf "%s%s %d", (NR>1?", ":""), $1, $2}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$DS" "$STEP" "$RUN" "$M_TIME" "$M_RSS" "$M_PEAKS" \
        "$M_CLIENT" "$M_SERVER" "$M_OTHER" "$M_DISTURBED" >>"$RESULTS"
    log "  $label: ${M_TIME} s, CPU client ${M_CLIENT} s + server ${M_SERVER} s, max RSS $((M_RSS / 1024)) MiB [$M_PEAKS kB], others ${M_OTHER} cores"
}

# ------------------------------------------------------------ aggregating
max_tree_rss() { # DS STEP -> kB
    awk -F'\t' -v ds="$1" -v st="$2" '$1 == ds && $2 == st && $5 > m { m = $5 } END { print m + 0 }' "$RESULTS"
}
peak_of() { # DS STEP PROG -> kB, max over the runs
    awk -F'\t' -v ds="$1" -v st="$2" -v prog="$3" '
        $1 == ds && $2 == st { n = split($6, a, ", "); for (i = 1; i <= n; i++) { split(a[i], b, " "); if (b[1] == prog && b[2] > m) m = b[2] } }
        END { print m + 0 }' "$RESULTS"
}
peak_others() { # DS STEP PROG -> "pg_dump 10 MiB, psql 8 MiB" or "-"
    awk -F'\t' -v ds="$1" -v st="$2" -v prog="$3" '
        $1 == ds && $2 == st { n = split($6, a, ", "); for (i = 1; i <= n; i++) { split(a[i], b, " "); if (b[1] != prog && b[2] > m[b[1]]) m[b[1]] = b[2] } }
        END { s = ""; for (k in m) s = s (s == "" ? "" : ", ") k " " int(m[k] / 1024 + 0.5) " MiB"; print (s == "" ? "-" : s) }' "$RESULTS"
}

# ------------------------------------------------------------ lifeboat helpers
# a lifeboat config with a new, empty repository in DIR, for database DB
lb_config() { # DIR DB
    rm -rf "$1"
    mkdir -p "$1"
    printf '%s\n' "$LIFEBOAT_PASSPHRASE" >"$1/passphrase"
    chmod 600 "$1/passphrase"
    cat >"$1/lifeboat.toml" <<EOF
[repository.main]
url = "file://$1/repo"
passphrase_file = "$1/passphrase"

[target.bench]
database = "$(url "$2")"
method = "logical"
globals = false
EOF
    "$LB" --quiet --config "$1/lifeboat.toml" init >"$1/init.log"
    # as a scheduled backup finds it: an earlier command since the boot left
    # the unlocked keys in the unlock cache (/dev/shm), so no Argon2id
    "$LB" --quiet --config "$1/lifeboat.toml" list >/dev/null
}
# a field of the newest backup in list --json
lb_field() { # DIR FIELD
    "$LB" --quiet --config "$1/lifeboat.toml" list bench --json |
        jq -r "if type == \"array\" then . else .backups end | sort_by(.started) | last | .$2"
}
table_rows() { sql -d "$1" -c "SELECT count(*) FROM $2"; }
check_restored() { # DB: same row count as the source, then drop it
    [[ $(table_rows "$1" "$MAIN") == "$DB_ROWS" ]] || die "restore into $1: row count of $MAIN differs from the source"
    sql -d postgres -c "DROP DATABASE $1"
}

# ------------------------------------------------------------ data sets
make_dataset() { # A|B
    case $1 in
    A)
        DB=bench_a MAIN=pgbench_accounts
        DESC="\`pgbench -i -s $SCALE\`"
        log "data set A: pgbench -i -s $SCALE"
        sql -d postgres -c "CREATE DATABASE $DB"
        pgbench -i -q -s "$SCALE" "$DB" >"$WORK/logs/pgbench.log" 2>&1
        ;;
    B)
        DB=bench_b MAIN=blobs
        local rows=$((BYTEA_MB * 1048576 / 1000))
        DESC="a table of $rows rows (id int primary key, payload bytea of 1000 random bytes from pgcrypto's gen_random_bytes)"
        log "data set B: $rows rows of 1000 random bytes"
        sql -d postgres -c "CREATE DATABASE $DB"
        sql -d "$DB" <<EOF
CREATE EXTENSION pgcrypto;
CREATE TABLE blobs (id int NOT NULL, payload bytea NOT NULL);
INSERT INTO blobs SELECT g, gen_random_bytes(1000) FROM generate_series(1, $rows) g;
ALTER TABLE blobs ADD PRIMARY KEY (id);
EOF
        ;;
    esac
    sql -d "$DB" -c "VACUUM ANALYZE"
    sql -d postgres -c CHECKPOINT
    DB_SIZE=$(sql -d "$DB" -c "SELECT pg_database_size(current_database())")
    DB_ROWS=$(table_rows "$DB" "$MAIN")
    log "  $DB: $(mib "$DB_SIZE"), $DB_ROWS rows in $MAIN"
}

# ------------------------------------------------------------ the steps
# Each prepares its own state, so that attempt can run it again.
step_pgdump_fc() {
    rm -f "$FC"
    prep
    measure "$DS-pgdump-fc-$RUN" pg_dump -Fc -d "$DB" -f "$FC"
    put "SIZE_${DS}_FC" "$(stat -c %s "$FC")"
}
step_pgdump_z0() {
    prep
    measure "$DS-pgdump-z0-$RUN" sh -c 'exec pg_dump -Fc -Z0 -d "$1" >/dev/null' sh "$DB"
}
step_pgdump_z0_pipe() {
    prep
    measure "$DS-pgdump-z0-pipe-$RUN" sh -c 'pg_dump -Fc -Z0 -d "$1" | cat >/dev/null' sh "$DB"
}
step_lb_first() {
    lb_config "$REPO" "$DB"
    prep
    measure "$DS-lb-first-$RUN" "$LB" --quiet --config "$REPO/lifeboat.toml" backup bench
    put "STORED_${DS}_FIRST" "$(lb_field "$REPO" stored_bytes)"
    put "DU_${DS}_FIRST" "$(du -sb "$REPO/repo" | cut -f1)"
    put "DUMP_${DS}" "$(lb_field "$REPO" dump_size)"
}
step_lb_second() {
    prep
    measure "$DS-lb-second-$RUN" "$LB" --quiet --config "$REPO/lifeboat.toml" backup bench
    put "STORED_${DS}_SECOND_$RUN" "$(lb_field "$REPO" stored_bytes)"
}
step_pg_restore_j2() {
    local db=${DB}_pgr
    sql -d postgres -c "DROP DATABASE IF EXISTS $db"
    createdb "$db"
    prep
    measure "$DS-pg_restore-j2-$RUN" pg_restore -j2 --exit-on-error -d "$db" "$FC"
    check_restored "$db"
}
step_lb_restore_j2() {
    local db=${DB}_lbj
    sql -d postgres -c "DROP DATABASE IF EXISTS $db"
    prep
    measure "$DS-lb-restore-j2-$RUN" "$LB" --quiet --config "$REPO/lifeboat.toml" restore bench --into "$(url "$db")" --jobs 2
    check_restored "$db"
}
step_lb_restore_stream() {
    local db=${DB}_lbs
    sql -d postgres -c "DROP DATABASE IF EXISTS $db"
    prep
    measure "$DS-lb-restore-stream-$RUN" "$LB" --quiet --config "$REPO/lifeboat.toml" restore bench --into "$(url "$db")"
    check_restored "$db"
}

run_dataset() {
    DS=$1
    make_dataset "$DS"
    mkdir -p "$WORK/$DS"
    FC=$WORK/$DS/pg_dump.dump
    REPO=$WORK/$DS/lb
    put "SIZE_${DS}_DB" "$DB_SIZE"
    put "ROWS_$DS" "$DB_ROWS"
    put "DESC_$DS" "$DESC"

    log "warm-up read (pg_dump -Z0 > /dev/null, not timed)"
    pg_dump -Fc -Z0 -d "$DB" >/dev/null

    # interleaved rounds, so that a slow phase of the machine hits every tool alike
    for ((RUN = 1; RUN <= REPEAT; RUN++)); do
        log "round $RUN/$REPEAT (backups)"
        STEP=pgdump_fc
        ((RUN > FC_REPEAT)) || attempt step_pgdump_fc
        STEP=pgdump_z0 attempt step_pgdump_z0
        STEP=pgdump_z0_pipe attempt step_pgdump_z0_pipe
        STEP=lb_first attempt step_lb_first
    done
    # the repository of the last first backup stays, for the second backups and the restores
    for ((RUN = 1; RUN <= REPEAT; RUN++)); do
        STEP=lb_second attempt step_lb_second
    done
    for ((RUN = 1; RUN <= RESTORE_REPEAT; RUN++)); do
        log "round $RUN/$RESTORE_REPEAT (restores)"
        STEP=pg_restore_j2 attempt step_pg_restore_j2
        STEP=lb_restore_j2 attempt step_lb_restore_j2
    done
    RUN=1 STEP=lb_restore_stream attempt step_lb_restore_stream

    rm -rf "${WORK:?}/$DS" # the dump and the repository: the next data set needs the space
    sql -d postgres -c "DROP DATABASE $DB"
    sql -d postgres -c CHECKPOINT
}

machine_facts

: >"$RESULTS"
for ds in $DATASETS; do
    run_dataset "$ds"
done
BENCH_SECS=$(($(date +%s) - BENCH_START))

# ------------------------------------------------------------ report
row() { # DS STEP TITLE SIZE [PROG]
    local ds=$1 st=$2 title=$3 size=$4 prog=${5:-} own="-" kids="-"
    if [[ -n $prog ]]; then
        own=$(kmib "$(peak_of "$ds" "$st" "$prog")")
        kids=$(peak_others "$ds" "$st" "$prog")
    else
        kids=$(peak_others "$ds" "$st" "-")
    fi
    printf '| %s | %s | %s | %s + %s | %s | %s | %s | %s |\n' "$title" "$(median_time "$ds" "$st")" "$(all_times "$ds" "$st")" \
        "$(median_col "$ds" "$st" 7)" "$(median_col "$ds" "$st" 8)" \
        "$(kmib "$(max_tree_rss "$ds" "$st")")" "$own" "$kids" "$size"
}

SUMMARY=""
report_dataset() {
    local ds=$1 z0 z0pipe first pgr lbj stored fcsize second_stored news="" pct r k maxown=0 st name
    z0=$(median_time "$ds" pgdump_z0)
    z0pipe=$(median_time "$ds" pgdump_z0_pipe)
    first=$(median_time "$ds" lb_first)
    pgr=$(median_time "$ds" pg_restore_j2)
    lbj=$(median_time "$ds" lb_restore_j2)
    stored=$(get "STORED_${ds}_FIRST")
    fcsize=$(get "SIZE_${ds}_FC")
    for ((r = 1; r <= REPEAT; r++)); do
        news+="${news:+ / }$(mib "$(get "STORED_${ds}_SECOND_$r")")"
    done
    second_stored=$(get "STORED_${ds}_SECOND_1")
    pct=$(awk -v a="$second_stored" -v b="$stored" 'BEGIN { printf "%.3f", (b > 0 ? 100 * a / b : 0) }')
    for st in lb_first lb_second lb_restore_j2 lb_restore_stream; do
        k=$(peak_of "$ds" "$st" lifeboat)
        ((k > maxown)) && maxown=$k
    done
    local v1 v2 v3 v4 v5
    v1=$(verdict le "$first" "$(awk -v z="$z0" 'BEGIN { print 1.1 * z }')")
    v2=$(verdict le "$stored" "$(awk -v z="$fcsize" 'BEGIN { print 0.5 * z }')")
    v3=$(verdict awk -v p="$pct" 'BEGIN { exit !(p < 1) }')
    v4=$(verdict le "$lbj" "$(awk -v z="$pgr" 'BEGIN { print 1.05 * z }')")
    v5=$(verdict test "$maxown" -lt 131072)
    case $ds in A) name="A: pgbench" ;; B) name="B: random bytea (compresses poorly)" ;; esac
    cat <<EOF

## Data set $name

Made with $(get "DESC_$ds"). Database $(mib "$(get "SIZE_${ds}_DB")") (\`pg_database_size\`), $(get "ROWS_$ds") rows in the main table;
the uncompressed custom-format dump (lifeboat's \`dump_size\`) is $(mib "$(get "DUMP_$ds")").

| step | wall s (median) | runs in order (s; \`*\` disturbed, redone) | CPU s, client + server (median) | peak RSS, /usr/bin/time | lifeboat process peak | other programs' peak | size |
| --- | ---: | --- | ---: | ---: | ---: | --- | ---: |
$(row "$ds" pgdump_fc "\`pg_dump -Fc -f FILE\`" "$(mib "$fcsize") file")
$(row "$ds" pgdump_z0 "\`pg_dump -Fc -Z0 > /dev/null\` (floor)" "-")
$(row "$ds" pgdump_z0_pipe "\`pg_dump -Fc -Z0 \| cat > /dev/null\` (the floor through a pipe)" "-")
$(row "$ds" lb_first "\`lifeboat backup\`, first, empty repository" "$(mib "$stored") stored ($(mib "$(get "DU_${ds}_FIRST")") \`du -sb\` repo)" lifeboat)
$(row "$ds" lb_second "\`lifeboat backup\`, again, database unchanged" "$news stored ($pct % of first)" lifeboat)
$(row "$ds" pg_restore_j2 "\`pg_restore -j2 -d NEWDB FILE\` (the -Fc file)" "-")
$(row "$ds" lb_restore_j2 "\`lifeboat restore --into NEWDB --jobs 2\`" "-" lifeboat)
$(row "$ds" lb_restore_stream "\`lifeboat restore --into NEWDB\` (streaming, 1 job)" "-" lifeboat)

| target | measured | result |
| --- | --- | --- |
| backup wall time <= 1.1 x \`pg_dump -Fc -Z0 > /dev/null\` | $first s vs $z0 s = $(ratio "$first" "$z0") x | $v1 |
| the same against \`pg_dump -Fc -Z0 \| cat > /dev/null\` (recorded; no target: what reading pg_dump's output through a pipe costs any tool) | $first s vs $z0pipe s = $(ratio "$first" "$z0pipe") x; the pipe alone $(ratio "$z0pipe" "$z0") x the floor | - |
| stored size <= 0.5 x the \`pg_dump -Fc\` file | $(mib "$stored") vs $(mib "$fcsize") = $(ratio "$stored" "$fcsize") x | $v2 |
| second backup of the unchanged database stores < 1 % of the first | $(mib "$second_stored") = $pct % | $v3 |
| \`restore --jobs 2\` <= 1.05 x \`pg_restore -j2\` from a local -Fc file | $lbj s vs $pgr s = $(ratio "$lbj" "$pgr") x | $v4 |
| lifeboat process peak RSS < 128 MiB in backup and restore | $(kmib "$maxown") | $v5 |
EOF
    SUMMARY+="data set $ds:"$'\n'
    SUMMARY+="  backup      $first s vs pg_dump -Z0 $z0 s = $(ratio "$first" "$z0") x (<= 1.1)  $v1"$'\n'
    SUMMARY+="  stored      $(mib "$stored") vs pg_dump -Fc $(mib "$fcsize") = $(ratio "$stored" "$fcsize") x (<= 0.5)  $v2"$'\n'
    SUMMARY+="  2nd backup  $(mib "$second_stored") stored = $pct % of the first (< 1 %)  $v3"$'\n'
    SUMMARY+="  restore -j2 $lbj s vs pg_restore -j2 $pgr s = $(ratio "$lbj" "$pgr") x (<= 1.05)  $v4"$'\n'
    SUMMARY+="  memory      lifeboat peak RSS $(kmib "$maxown") (< 128 MiB)  $v5"$'\n'
}

NOTES_HEADING='## Notes (hand-written; kept when the script rewrites this file)'
NOTES=""
if [[ -f $OUT ]] && grep -qxF "$NOTES_HEADING" "$OUT"; then
    NOTES=$(awk -v h="$NOTES_HEADING" '$0 == h { p = 1 } p' "$OUT")
fi
# bench/prune.sh's, bench/physical.sh's and bench/s3.sh's sections (between their begin and end
# lines) are kept as they are too
PRUNE_SECTION=""
if [[ -f $OUT ]]; then
    for s in prune physical s3; do
        SECTION=$(awk -v b="<!-- bench/$s.sh: begin -->" -v e="<!-- bench/$s.sh: end -->" '$0 == b { p = 1 } p { print } $0 == e { p = 0 }' "$OUT")
        if [[ -n $SECTION ]]; then
            PRUNE_SECTION=${PRUNE_SECTION:+$PRUNE_SECTION$'\n\n'}$SECTION
        fi
    done
fi
DISTURBED=$(awk -F'\t' '$10 == 1' "$RESULTS" | wc -l)

{
    cat <<EOF
# Benchmarks: logical backup and restore

Generated by \`bench/logical.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); the whole run took $((BENCH_SECS / 60)) min $((BENCH_SECS % 60)) s.
Rerunning the script rewrites this file (all but the \`bench/prune.sh\`, \`bench/physical.sh\` and \`bench/s3.sh\` sections and the notes at the end).

Reproduce (as root on Debian 12, from the repository root):

\`\`\`sh
bash bench/logical.sh${ARGS_GIVEN:+ $ARGS_GIVEN}
\`\`\`

| | |
| --- | --- |
| machine | $(nproc) cores ($CPU), $MEM_GIB GiB RAM, Linux $(uname -r) |
| disk | $DISK_DEV ($DISK_FS), 1 GiB sequential write with fsync: $DISK_WRITE |
| PostgreSQL | $PG_VERSION; throwaway cluster: shared_buffers=1GB, fsync=on, max_wal_size=4GB, checkpoint_timeout=30min, other settings default (wal_level=replica, maintenance_work_mem=64MB) |
| lifeboat | $LB_VERSION, git $GIT_REV$([[ -n $REV ]] && echo " (built from \`git archive\` of that commit)")$([[ $GIT_DIRTY == yes ]] && echo " plus uncommitted changes in src/ or Cargo.* (the working tree)"), \`cargo build --release\`; repository defaults of that version (compression level, chunk and pack sizes), passphrase mode with \`passphrase_file\`, its keys in the unlock cache (a \`lifeboat list\` after each \`init\`, as a scheduled backup finds them; without that a backup pays Argon2id once, about 0.15 s of CPU) |
| runs | backups: $REPEAT runs each ($FC_REPEAT of \`pg_dump -Fc -f FILE\`), interleaved round by round; restores: $RESTORE_REPEAT runs of each parallel restore, interleaved, and 1 streaming restore; the median is reported |

How it is measured:

- Everything runs on one disk: the cluster, the \`pg_dump -Fc\` file, the lifeboat repository (\`file://\`) and
  lifeboat's temporary dump copy for \`restore --jobs\` (TMPDIR).
- Caches are warm for all tools alike: the page cache is not dropped, every database fits in RAM, and
  each data set is read once (an untimed \`pg_dump\`) before anything is timed. Before each timed run:
  \`CHECKPOINT\`, \`sync\`, and a wait (up to ${QUIET_WAIT} s) for the machine to be idle.
- Wall time, "CPU client" (user + sys of the program and its children) and "peak RSS, /usr/bin/time" come from
  \`/usr/bin/time -f '%e %M %U %S'\`; "CPU server" is what the cluster's processes used meanwhile (from /proc).
  On Linux \`%M\` is the largest peak RSS of the process *and of the children it waited for* (pg_dump,
  pg_restore), not the sum and not the lifeboat process alone. So the script also samples \`VmHWM\` of every
  process in the tree every 0.1 s: "lifeboat process peak" is lifeboat alone (all its threads), "other
  programs' peak" the largest pg_dump / pg_restore / psql process (per program). Server memory is in neither.
- The machine may be shared (builds, test suites): the CPU the rest of the machine used is measured during
  every run. A run during which it exceeded $OTHER_LIMIT cores is marked \`*\`, measured again (up to $RETRIES
  times) and left out of the median (unless every run of the step was disturbed). This run: $DISTURBED disturbed run(s).
- Backups: \`pg_dump -Fc -d DB -f FILE\` (default compression: gzip level 6) and \`pg_dump -Fc -Z0 -d DB > /dev/null\`
  (what lifeboat runs, output thrown away: the floor), and the same into \`cat > /dev/null\` (what a pipe to any
  reader costs: pg_dump then writes into a 64 KiB pipe and waits for its reader, where \`> /dev/null\` never
  waits); \`lifeboat backup\` into a new, empty repository each
  run; then the same backup again, $REPEAT times, into the last repository with the database unchanged.
  "stored" is \`stored_bytes\` of \`lifeboat list --json\`: what the backup added to the repository (packs
  after compression and encryption).
- Restores go into a fresh database each time: for \`pg_restore -j2 --exit-on-error\` it is made with
  \`createdb\` before the clock starts; lifeboat creates its own (\`CREATE DATABASE\`) and, after pg_restore,
  checks that every table of the dump exists: both are inside its time. After each restore the main table's
  row count is compared with the source's; then the database is dropped.
EOF
    for ds in $DATASETS; do
        report_dataset "$ds"
    done
    if [[ -n $PRUNE_SECTION ]]; then
        printf '\n%s\n' "$PRUNE_SECTION"
    fi
    if [[ -n $NOTES ]]; then
        printf '\n%s\n' "$NOTES"
    fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"

log "done in $((BENCH_SECS / 60)) min $((BENCH_SECS % 60)) s; wrote $OUT"
echo "== lifeboat logical benchmark: $LB_VERSION, git $GIT_REV, $DISTURBED disturbed run(s) =="
printf '%s' "$SUMMARY"
