#!/usr/bin/env bash
# Prune and verify: `lifeboat prune` (and `prune --dry-run`) and `lifeboat verify`
# (without --read-data, with it, and with --decompress) on a repository holding many backups of a pgbench
# database, and `verify --read-data` on a repository of incompressible data, each
# against reading the repository's stored bytes once with `cat`. Writes its results
# into docs/BENCHMARKS.md between the lines
#     <!-- bench/prune.sh: begin -->
#     <!-- bench/prune.sh: end -->
# replacing that section, or inserting it before the "## Notes" heading (at the end
# if there is none); the rest of the file is left alone, and bench/logical.sh keeps
# this section when it rewrites the file. Prints a short summary.
#
#   bash bench/prune.sh                      # the full run (about 5 minutes on 2 cores)
#   bash bench/prune.sh --scale 2 --backups 5 --bytea-mb 20 --out /tmp/smoke.md   # a quick smoke run
#
# Options:
#   --scale N       pgbench scale of repository A's database (default 100, about 1.5 GB)
#   --backups N     backups in repository A (default 30); before each one, `pgbench -T 2 -c 2`
#                   changes the data, so that every backup stores new data
#   --keep N        retention of repository A's target: keep_last = N (default 7)
#   --bytea-mb N    size of repository B's database, random bytea, in MiB (default 1024)
#   --repeat N      runs of each timing, median reported (default 3)
#   --port N        port of the throwaway cluster (default 54331; it listens on a Unix
#                   socket in its temp dir only)
#   --out FILE      the markdown file to update (default docs/BENCHMARKS.md)
#   --tmp DIR       parent of the temp dir (default /var/tmp; must be on the disk you want
#                   to measure: the cluster and the repositories live there)
#   --quiet-wait S  before each timed run, wait up to S seconds (default 90) for the
#                   machine to be idle (other processes < 0.15 cores)
#   --retries N     a run disturbed by other processes (they used > 0.15 cores during
#                   it) is measured again, up to N times (default 2)
#   --rev REV       benchmark git revision REV (built from `git archive REV` in
#                   target/bench-rev) instead of the working tree
#
# Run as root on Debian 12: the cluster runs as the `postgres` OS user; pgbench and
# lifeboat run as root over the Unix socket. The cluster is only needed to make the
# backups: it is stopped before anything is timed, so its background work (autovacuum
# after the pgbench runs, checkpoints) cannot disturb the timings. `cat` and
# `verify --read-data` are timed twice: with the repository's files in the page cache
# (each repository is read once first) and with them dropped from it (`dd iflag=nocache`
# per file, checked with `fincore`), which is what reading the stored bytes once costs.
set -euo pipefail

SCALE=100
BACKUPS=30
KEEP=7
BYTEA_MB=1024
REPEAT=3
PORT=54331
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
    --backups) BACKUPS=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --bytea-mb) BYTEA_MB=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --tmp) TMP_PARENT=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --retries) RETRIES=$2; shift 2 ;;
    --rev) REV=$2; shift 2 ;;
    -h | --help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac
PGBIN=/usr/lib/postgresql/15/bin
export PATH=$PGBIN:$PATH
DISTURBED_COL=8 # the column of $RESULTS that marks a disturbed run
# shellcheck source=bench/lib.sh
source bench/lib.sh
BEGIN_MARK='<!-- bench/prune.sh: begin -->'
END_MARK='<!-- bench/prune.sh: end -->'

((KEEP < BACKUPS)) || die "--keep ($KEEP) must be below --backups ($BACKUPS), or prune has nothing to do"
if [[ -f $OUT ]] && grep -qxF "$BEGIN_MARK" "$OUT" && ! grep -qxF "$END_MARK" "$OUT"; then
    die "$OUT has the line '$BEGIN_MARK' but not '$END_MARK': fix it by hand first"
fi

# ------------------------------------------------------------ set-up (bench/lib.sh)
bench_setup prune-bench
start_cluster

# before each timed run: nothing left to write back from the previous one, an idle machine
prep() {
    sync
    wait_quiet
}

# Drop every file below $1 from the page cache (after prep's sync, so none is dirty),
# and check that none of it is left there.
evict() {
    find "$1" -type f -exec dd if={} iflag=nocache count=0 status=none \;
    local left
    left=$(find "$1" -type f -print0 | xargs -0 fincore --bytes --noheadings --output RES | awk '{ s += $1 } END { print s + 0 }')
    ((left < 1048576)) || die "could not drop $1 from the page cache ($left bytes still cached)"
}

# measure LABEL CMD...: run CMD under /usr/bin/time and append a line to $RESULTS
# (for $DS $STEP $RUN):
#   ds step run wall_s max_rss_kB cpu_s other_cores disturbed
# wall_s is taken with a nanosecond clock around /usr/bin/time (whose %e has only
# 10 ms steps, too coarse for cat from the page cache); it includes a fork and exec.
# max_rss_kB is /usr/bin/time's %M (the commands timed here run no children, except
# the cat pipeline); cpu_s is user + sys of the process tree; other_cores is what the
# rest of the machine used on average (other users, kernel threads). Output goes to
# $WORK/logs/LABEL.log. A failure stops the benchmark.
measure() {
    local label=$1
    shift
    local tf=$WORK/logs/$label.time rc=0 m0 m1 t0 t1 u sy
    m0=$(machine_busy)
    t0=$(date +%s%N)
    /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >"$WORK/logs/$label.log" 2>&1 || rc=$?
    t1=$(date +%s%N)
    m1=$(machine_busy)
    if ((rc)); then
        log "FAILED (exit $rc): $label: $*"
        tail -n 30 "$WORK/logs/$label.log" >&2
        exit 1
    fi
    read -r _ M_RSS u sy <"$tf"
    M_TIME=$(awk -v n=$((t1 - t0)) 'BEGIN { printf "%.3f", n / 1e9 }')
    M_CPU=$(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", u + s }')
    M_OTHER=$(awk -v m=$((m1 - m0)) -v hz="$HZ" -v c="$M_CPU" -v w="$M_TIME" \
        'BEGIN { o = (m / hz - c) / (w > 0.5 ? w : 0.5); printf "%.2f", (o < 0 ? 0 : o) }')
    M_DISTURBED=$(awk -v o="$M_OTHER" -v lim="$OTHER_LIMIT" 'BEGIN { print (o > lim ? 1 : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$DS" "$STEP" "$RUN" "$M_TIME" "$M_RSS" "$M_CPU" "$M_OTHER" "$M_DISTURBED" >>"$RESULTS"
    log "  $label: ${M_TIME} s, CPU ${M_CPU} s, max RSS $((M_RSS / 1024)) MiB, others ${M_OTHER} cores"
}

# ------------------------------------------------------------ aggregating
max_rss() { # DS STEP -> kB, max over all runs
    awk -F'\t' -v ds="$1" -v st="$2" '$1 == ds && $2 == st && $5 > m { m = $5 } END { print m + 0 }' "$RESULTS"
}
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? b / s / 1e6 : 0) }'; } # BYTES SECONDS -> MB/s

# ------------------------------------------------------------ lifeboat helpers
lb() { "$LB" --quiet --config "$@"; }
# a lifeboat config in DIR/NAME.toml: repository DIR/REPODIR, target TARGET on
# database DB with the retention RULES (a TOML inline table, or "" for none)
lb_config() { # DIR NAME REPODIR TARGET DB RULES
    printf '%s\n' "$LIFEBOAT_PASSPHRASE" >"$1/passphrase"
    chmod 600 "$1/passphrase"
    # passphrase_file: as a scheduled verify finds it, the keys come from the
    # unlock cache (/dev/shm) that the setup's commands filled, not Argon2id
    cat >"$1/$2.toml" <<EOF
[repository.main]
url = "file://$1/$3"
passphrase_file = "$1/passphrase"

[target.$4]
database = "$(url "$5")"
method = "logical"
globals = false
${6:+retention = $6}
EOF
}
# sum of a field of every backup in list --json
lb_sum() { # CONFIG FIELD
    lb "$1" list --json | jq "if type == \"array\" then . else .backups end | map(.$2) | add // 0"
}
lb_count() { lb "$1" list --json | jq 'if type == "array" then . else .backups end | length'; }
# what `verify --json` says about the (only) repository
lb_verify_field() { # CONFIG FIELD
    lb "$1" verify --json | jq -r ".[0].$2"
}
stored_files_bytes() { find "$1/data" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
stored_files_count() { find "$1/data" -type f | wc -l; }

# ------------------------------------------------------------ repository A: many backups of pgbench
A=$WORK/A
mkdir -p "$A"
RULES_A="{ keep_last = $KEEP }"
lb_config "$A" lifeboat repo a bench_a "$RULES_A"      # the repository with every backup
lb_config "$A" prune-copy copy a bench_a "$RULES_A"    # a fresh copy of it for each prune
log "data set A: pgbench -i -s $SCALE"
sql -d postgres -c "CREATE DATABASE bench_a"
pgbench -i -q -s "$SCALE" bench_a >"$WORK/logs/pgbench-init.log" 2>&1
sql -d bench_a -c "VACUUM ANALYZE"
DB_SIZE_A=$(sql -d bench_a -c "SELECT pg_database_size(current_database())")
log "  bench_a: $(mib "$DB_SIZE_A")"
lb "$A/lifeboat.toml" init >"$WORK/logs/init-a.log"
TXNS=0
for ((i = 1; i <= BACKUPS; i++)); do
    pgbench -n -T 2 -c 2 bench_a >"$WORK/logs/pgbench-$i.log" 2>&1
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/logs/pgbench-$i.log")
    TXNS=$((TXNS + ${n:-0}))
    lb "$A/lifeboat.toml" backup a >"$WORK/logs/backup-a-$i.log" 2>&1
    ((i % 5 && i != BACKUPS)) || log "  backup $i/$BACKUPS done ($TXNS pgbench transactions so far)"
done
BACKUP_SECS_A=$(lb "$A/lifeboat.toml" list --json | jq -r 'if type == "array" then . else .backups end | map(.duration_seconds) | sort | .[length / 2 | floor]')
DUMP_A=$(lb "$A/lifeboat.toml" list --json | jq -r 'if type == "array" then . else .backups end | sort_by(.started) | last | .dump_size')
NEW_A=$(lb_sum "$A/lifeboat.toml" new_bytes)      # plaintext of every blob stored: what verify --read-data decrypts and re-hashes
TOTAL_A=$(lb_sum "$A/lifeboat.toml" total_size)   # plaintext the 30 backups stand for
STORED_EACH_A=$(lb "$A/lifeboat.toml" list --json | jq -r 'if type == "array" then . else .backups end | sort_by(.started) | map(.stored_bytes) | .[1:] | sort |
    "\(.[0] / 1048576 * 10 | round / 10) / \(.[length / 2 | floor] / 1048576 * 10 | round / 10) / \(.[-1] / 1048576 * 10 | round / 10)"')
sql -d postgres -c "DROP DATABASE bench_a"
sql -d postgres -c CHECKPOINT

# ------------------------------------------------------------ repository B: random bytea, one backup
B=$WORK/B
mkdir -p "$B"
lb_config "$B" lifeboat repo b bench_b ""
ROWS_B=$((BYTEA_MB * 1048576 / 1000))
log "data set B: $ROWS_B rows of 1000 random bytes"
sql -d postgres -c "CREATE DATABASE bench_b"
sql -d bench_b <<EOF
CREATE EXTENSION pgcrypto;
CREATE TABLE blobs (id int NOT NULL, payload bytea NOT NULL);
INSERT INTO blobs SELECT g, gen_random_bytes(1000) FROM generate_series(1, $ROWS_B) g;
ALTER TABLE blobs ADD PRIMARY KEY (id);
EOF
sql -d bench_b -c "VACUUM ANALYZE"
DB_SIZE_B=$(sql -d bench_b -c "SELECT pg_database_size(current_database())")
log "  bench_b: $(mib "$DB_SIZE_B")"
lb "$B/lifeboat.toml" init >"$WORK/logs/init-b.log"
lb "$B/lifeboat.toml" backup b >"$WORK/logs/backup-b.log" 2>&1
NEW_B=$(lb_sum "$B/lifeboat.toml" new_bytes)

log "stopping the cluster: nothing timed below needs it"
runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null

machine_facts

# what the repositories hold (verify --json also checks that they are sound before anything is timed)
for ds in A B; do
    dir=$WORK/$ds
    [[ $(lb_verify_field "$dir/lifeboat.toml" 'problems | length') == 0 ]] || die "repository $ds: verify reports problems"
    put "PACKS_$ds" "$(stored_files_count "$dir/repo")"
    put "STORED_$ds" "$(stored_files_bytes "$dir/repo")"
    put "REPO_DU_$ds" "$(du -sb "$dir/repo" | cut -f1)"
    log "  repository $ds: $(lb_count "$dir/lifeboat.toml") backups, $(get "PACKS_$ds") packs, $(mib "$(get "STORED_$ds")") under data/"
done

# ------------------------------------------------------------ the steps
# Each prepares its own state, so that attempt can run it again.
READ_ALL='find "$1" -type f -print0 | xargs -0 cat >/dev/null' # every file below $1, once
read_all() { sh -c "$READ_ALL" sh "$1"; }
step_cat() {
    prep
    measure "$DS-cat-$RUN" sh -c "$READ_ALL" sh "$WORK/$DS/repo/data"
}
step_verify() {
    prep
    measure "$DS-verify-$RUN" "$LB" --quiet --config "$WORK/$DS/lifeboat.toml" verify
}
step_verify_read() {
    prep
    measure "$DS-verify-read-$RUN" "$LB" --quiet --config "$WORK/$DS/lifeboat.toml" verify --read-data
}
step_verify_decompress() {
    prep
    measure "$DS-verify-decompress-$RUN" "$LB" --quiet --config "$WORK/$DS/lifeboat.toml" verify --read-data --decompress
}
step_cat_cold() {
    prep
    evict "$WORK/$DS/repo"
    measure "$DS-cat-cold-$RUN" sh -c "$READ_ALL" sh "$WORK/$DS/repo/data"
}
step_verify_read_cold() {
    prep
    evict "$WORK/$DS/repo"
    measure "$DS-verify-read-cold-$RUN" "$LB" --quiet --config "$WORK/$DS/lifeboat.toml" verify --read-data
}
step_prune_dry() {
    prep
    measure "$DS-prune-dry-$RUN" "$LB" --quiet --config "$WORK/$DS/lifeboat.toml" prune --dry-run
}
step_prune() {
    rm -rf "$A/copy"
    cp -a "$A/repo" "$A/copy" # (just written, so in the page cache like the other repositories)
    prep
    measure "$DS-prune-$RUN" "$LB" --quiet --config "$A/prune-copy.toml" prune
    [[ $(lb_count "$A/prune-copy.toml") == "$KEEP" ]] || die "after prune, the copy of repository A does not hold $KEEP backups"
}

: >"$RESULTS"
log "warm-up: every repository read once, one verify of each (not timed)"
read_all "$A/repo"
read_all "$B/repo"
lb "$A/lifeboat.toml" verify >/dev/null
lb "$B/lifeboat.toml" verify >/dev/null

# interleaved rounds, so that a slow phase of the machine hits every command alike
for ((RUN = 1; RUN <= REPEAT; RUN++)); do
    log "round $RUN/$REPEAT"
    DS=A
    STEP=prune_dry attempt step_prune_dry
    STEP=prune attempt step_prune
    STEP=verify attempt step_verify
    STEP=verify_read attempt step_verify_read
    STEP=verify_decompress attempt step_verify_decompress
    STEP=cat attempt step_cat
    STEP=verify_read_cold attempt step_verify_read_cold
    STEP=cat_cold attempt step_cat_cold
    DS=B
    STEP=verify attempt step_verify
    STEP=verify_read attempt step_verify_read
    STEP=verify_decompress attempt step_verify_decompress
    STEP=cat attempt step_cat
    STEP=verify_read_cold attempt step_verify_read_cold
    STEP=cat_cold attempt step_cat_cold
    read_all "$A/repo" # back into the page cache for the next round's warm runs
    read_all "$B/repo"
done

# the last pruned copy: what prune said and left, and whether it is sound
PRUNE_SAID=$(sed -n 's/^ *\(deleted .*\)/\1/p' "$WORK/logs/A-prune-$REPEAT.log" | tail -n1)
PRUNE_PLAN=$(sed -n 's/^ *data: \(.*\)/\1/p' "$WORK/logs/A-prune-$REPEAT.log" | tail -n1)
PACKS_PRUNED=$(stored_files_count "$A/copy")
STORED_PRUNED=$(stored_files_bytes "$A/copy")
[[ $(lb_verify_field "$A/prune-copy.toml" 'problems | length') == 0 ]] || die "the pruned copy of repository A: verify reports problems"
BENCH_SECS=$(($(date +%s) - BENCH_START))

# ------------------------------------------------------------ report
row() { # DS STEP TITLE VOLUME
    printf '| %s | %s | %s | %s | %s | %s |\n' "$3" "$(median_time "$1" "$2")" "$(all_times "$1" "$2")" \
        "$(median_col "$1" "$2" 6)" "$(kmib "$(max_rss "$1" "$2")")" "$4"
}
# "X MB/s stored" (and plaintext) for a step that reads a whole repository
speed() { # DS STEP STORED [PLAINTEXT]
    local t
    t=$(median_time "$1" "$2")
    printf '%s MB/s of stored bytes' "$(mbps "$3" "$t")"
    [[ -z ${4:-} ]] || printf ', %s MB/s of plaintext' "$(mbps "$4" "$t")"
}
DISTURBED=$(awk -F'\t' '$8 == 1' "$RESULTS" | wc -l)

PRUNE_T=$(median_time A prune)
PRUNE_RSS=$(max_rss A prune)
VERIFY_T=$(median_time A verify)
VR_A=$(median_time A verify_read)
CAT_A=$(median_time A cat)
VR_B=$(median_time B verify_read)
CAT_B=$(median_time B cat)
VRC_A=$(median_time A verify_read_cold)
CATC_A=$(median_time A cat_cold)
VRC_B=$(median_time B verify_read_cold)
CATC_B=$(median_time B cat_cold)
# throughput of verify --read-data relative to cat = cat's time / verify's time;
# the target is judged from disk (page cache dropped): reading the stored bytes once
REL_A=$(ratio "$CATC_A" "$VRC_A")
REL_B=$(ratio "$CATC_B" "$VRC_B")
WREL_A=$(ratio "$CAT_A" "$VR_A")
WREL_B=$(ratio "$CAT_B" "$VR_B")
V1=$(verdict lt "$PRUNE_T" 5)
V2=$(verdict test "$PRUNE_RSS" -lt 131072)
V3=$(verdict lt "$VERIFY_T" 2)
V4=$(verdict at_least "$CATC_A" "$VRC_A" 0.8)
V5=$(verdict at_least "$CATC_B" "$VRC_B" 0.8)

section() {
    cat <<EOF
$BEGIN_MARK
## Prune and verify

Generated by \`bench/prune.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); the whole run took $((BENCH_SECS / 60)) min $((BENCH_SECS % 60)) s.
Rerunning it replaces this section only (\`bench/logical.sh\` keeps it when it rewrites the rest of the file).

Reproduce (as root on Debian 12, from the repository root):

\`\`\`sh
bash bench/prune.sh${ARGS_GIVEN:+ $ARGS_GIVEN}
\`\`\`

| | |
| --- | --- |
| machine | $(nproc) cores ($CPU), $MEM_GIB GiB RAM, Linux $(uname -r) |
| disk | $DISK_DEV ($DISK_FS), 1 GiB sequential write with fsync: $DISK_WRITE |
| PostgreSQL | $PG_VERSION (only to make the backups; stopped before anything is timed) |
| lifeboat | $LB_VERSION, git $GIT_REV$([[ -n $REV ]] && echo " (built from \`git archive\` of that commit)")$([[ $GIT_DIRTY == yes ]] && echo " plus uncommitted changes in src/ or Cargo.* (the working tree)"), \`cargo build --release\`; repository defaults of that version, passphrase mode with \`passphrase_file\`, its keys in the unlock cache (as a scheduled verify or prune finds them; without that each command pays Argon2id once, about 0.25 s before anything else starts) |
| runs | $REPEAT runs of each command, interleaved round by round; the median is reported |

The repositories (\`file://\`, on the disk above):

- **A: $BACKUPS backups of a pgbench database.** \`pgbench -i -s $SCALE\` ($(mib "$DB_SIZE_A"), dumps of $(mib "$DUMP_A")), then
  $BACKUPS times \`pgbench -n -T 2 -c 2\` and \`lifeboat backup\` ($TXNS pgbench transactions in all; a backup took
  $BACKUP_SECS_A s, median). Each backup after the first stored $STORED_EACH_A MiB of new data (min / median / max):
  the updated rows move in the heap, so most of the dump's chunks change. In all $(mib "$STORED_A") in $PACKS_A packs
  under \`data/\` ($(mib "$REPO_DU_A") \`du -sb\` of the repository); that is $(mib "$NEW_A") of plaintext (the sum of the
  backups' \`new_bytes\`), standing for $(mib "$TOTAL_A") of dumps.
- **B: one backup of incompressible data:** a table of $ROWS_B rows of 1000 random bytes (pgcrypto's
  \`gen_random_bytes\`), $(mib "$DB_SIZE_B"); $(mib "$STORED_B") in $PACKS_B packs, $(mib "$NEW_B") of plaintext (the dump
  hex-escapes the bytea, which zstd undoes; the random bytes themselves do not compress).

Retention of A's target: \`keep_last = $KEEP\`. All $BACKUPS backups were made within minutes of each other, on the same
day, so the day-based rules (\`keep_days\`, \`keep_daily\`/\`weekly\`/\`monthly\`/\`yearly\`) would keep one or all of
them and cannot stand in for "$BACKUPS daily backups, most of them forgotten"; \`keep_last\` forgets the same number of
backups and packs. Prune, per run: $PRUNE_PLAN; $PRUNE_SAID; it left $PACKS_PRUNED packs, $(mib "$STORED_PRUNED"), and
\`verify\` of the pruned repository finds no problems.

| command | wall s (median) | runs in order (s; \`*\` disturbed, redone) | CPU s, user + sys (median) | peak RSS | throughput (median) |
| --- | ---: | --- | ---: | ---: | --- |
$(row A prune_dry "A: \`lifeboat prune --dry-run\`" "-")
$(row A prune "A: \`lifeboat prune\` (a fresh copy of the repository each run)" "-")
$(row A verify "A: \`lifeboat verify\`" "-")
$(row A verify_read "A: \`lifeboat verify --read-data\`" "$(speed A verify_read "$STORED_A")")
$(row A verify_decompress "A: \`lifeboat verify --read-data --decompress\`" "$(speed A verify_decompress "$STORED_A" "$NEW_A")")
$(row A cat "A: \`cat\` of every file under \`data/\` > /dev/null" "$(speed A cat "$STORED_A")")
$(row A verify_read_cold "A: \`lifeboat verify --read-data\`, from disk" "$(speed A verify_read_cold "$STORED_A")")
$(row A cat_cold "A: \`cat\` of every file under \`data/\`, from disk" "$(speed A cat_cold "$STORED_A")")
$(row B verify "B: \`lifeboat verify\`" "-")
$(row B verify_read "B: \`lifeboat verify --read-data\`" "$(speed B verify_read "$STORED_B")")
$(row B verify_decompress "B: \`lifeboat verify --read-data --decompress\`" "$(speed B verify_decompress "$STORED_B" "$NEW_B")")
$(row B cat "B: \`cat\` of every file under \`data/\` > /dev/null" "$(speed B cat "$STORED_B")")
$(row B verify_read_cold "B: \`lifeboat verify --read-data\`, from disk" "$(speed B verify_read_cold "$STORED_B")")
$(row B cat_cold "B: \`cat\` of every file under \`data/\`, from disk" "$(speed B cat_cold "$STORED_B")")

| target | measured | result |
| --- | --- | --- |
| A: \`prune\` of $BACKUPS backups (keep $KEEP) under 5 s | $PRUNE_T s | $V1 |
| A: \`prune\` peak memory under 128 MiB | $(kmib "$PRUNE_RSS") | $V2 |
| A: \`verify\` (without --read-data) under 2 s | $VERIFY_T s | $V3 |
| A (pgbench, compresses about $(awk -v a="$NEW_A" -v b="$STORED_A" 'BEGIN { printf "%.0f", a / b }') x): \`verify --read-data\` at least 0.8 x the throughput of \`cat\`, from disk | $(mbps "$STORED_A" "$VRC_A") vs $(mbps "$STORED_A" "$CATC_A") MB/s = $REL_A x | $V4 |
| B (random bytea): \`verify --read-data\` at least 0.8 x the throughput of \`cat\`, from disk | $(mbps "$STORED_B" "$VRC_B") vs $(mbps "$STORED_B" "$CATC_B") MB/s = $REL_B x | $V5 |
| the same from the page cache (recorded; no target) | A: $WREL_A x, B: $WREL_B x | - |
| \`verify --read-data\` peak memory (recorded; no target) | A: $(kmib "$(max_rss A verify_read)"), B: $(kmib "$(max_rss B verify_read)") | - |
| \`verify --read-data --decompress\`, from the page cache (recorded; no target) | A: $(median_time A verify_decompress) s, $(mbps "$NEW_A" "$(median_time A verify_decompress)") MB/s of plaintext; B: $(median_time B verify_decompress) s | - |

How it is measured:

- CPU (user + sys) and peak RSS come from \`/usr/bin/time -f '%e %M %U %S'\`, wall time from a nanosecond clock
  around it (\`%e\` has 10 ms steps); lifeboat runs no child processes here, so \`%M\` is lifeboat's own peak.
- MB/s is 10^6 bytes per second: stored bytes (the pack files under \`data/\`), or plaintext (what
  \`verify --read-data --decompress\` decompresses and re-hashes), over the median wall time. \`verify --read-data\`
  hashes every pack and authenticates every blob (XChaCha20-Poly1305) without decompressing it.
- "From disk": the repository's files are dropped from the page cache first (\`dd iflag=nocache count=0\` per
  file, checked with \`fincore\`), so \`cat\` measures reading the stored bytes once from the disk, which is what the
  target compares with. The other rows run with the repository in the page cache (each repository is read once,
  and verified once, before anything is timed, and read again after each round's runs from disk).
  Before each timed run: \`sync\`, and a wait (up to ${QUIET_WAIT} s) for the machine to be idle.
- \`prune\` runs on a fresh copy (\`cp -a\`, outside the timing) of repository A each time; the copy is then checked
  to hold $KEEP backups. \`prune --dry-run\` and the verify runs use repository A itself, with all $BACKUPS backups.
- The machine may be shared (builds, test suites): the CPU the rest of the machine used is measured during every run.
  A run during which it exceeded $OTHER_LIMIT cores is marked \`*\`, measured again (up to $RETRIES times) and left out
  of the median (unless every run of the step was disturbed). This run: $DISTURBED disturbed run(s).
$END_MARK
EOF
}

section >"$WORK/section.md"
write_section "$WORK/section.md"

log "done in $((BENCH_SECS / 60)) min $((BENCH_SECS % 60)) s; wrote $OUT"
echo "== lifeboat prune/verify benchmark: $LB_VERSION, git $GIT_REV, $DISTURBED disturbed run(s) =="
echo "  prune ($BACKUPS backups, keep $KEEP)  $PRUNE_T s (< 5 s)  $V1; peak RSS $(kmib "$PRUNE_RSS") (< 128 MiB)  $V2"
echo "  prune --dry-run                $(median_time A prune_dry) s"
echo "  verify                         $VERIFY_T s (< 2 s)  $V3"
echo "  verify --read-data from disk, A (pgbench) $VRC_A s = $(mbps "$STORED_A" "$VRC_A") MB/s stored; cat $CATC_A s = $(mbps "$STORED_A" "$CATC_A") MB/s: $REL_A x (>= 0.8)  $V4"
echo "  verify --read-data from disk, B (bytea)   $VRC_B s = $(mbps "$STORED_B" "$VRC_B") MB/s stored; cat $CATC_B s = $(mbps "$STORED_B" "$CATC_B") MB/s: $REL_B x (>= 0.8)  $V5"
echo "  from the page cache: verify --read-data / cat  A $WREL_A x, B $WREL_B x"
echo "  verify --read-data peak RSS    A $(kmib "$(max_rss A verify_read)"), B $(kmib "$(max_rss B verify_read)")"
echo "  verify --read-data --decompress (page cache)  A $(median_time A verify_decompress) s, B $(median_time B verify_decompress) s"
