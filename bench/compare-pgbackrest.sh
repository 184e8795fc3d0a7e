#!/usr/bin/env bash
# radd and pgBackRest side by side on one throwaway PostgreSQL 15 cluster, same data, interleaved
# (radd first, then pgBackRest, for every step), both encrypted and zstd level 1:
#   full backup, incremental after 1000 pgbench transactions (wall time and repository bytes added),
#   restore, WAL push latency (p50/p95 of 40 pushes), a 200-segment backlog drain;
#   for every step wall time, CPU seconds (user+sys of the whole process tree, detached processes
#   included: bench/treetime.py), CPU seconds per GB of data handled, peak RSS;
#   and the machine's floor measured in the same run: single-core SHA-256 / keyed BLAKE3 / zstd-1 /
#   age (ChaCha20-Poly1305) rates on a sample of the cluster's pages (examples/throughput), a cold
#   read of the cluster with `cat`, and `dd if=/dev/zero bs=1M count=2048 conv=fdatasync`.
#   bench/compare-pgbackrest.sh [pgbench-scale]    (default 60 ≈ 1 GB of pgbench data; run as root)
# The cluster holds pgbench data plus a less compressible table `noise` (md5 text and random bytes)
# of at least a third of the pgbench size. PostgreSQL and both tools run as the postgres user; root
# is needed for that and to drop the page cache before every timed backup/restore step.
# Installs pgBackRest from Debian when missing. RADD_BIN=/path/to/radd skips `cargo build --release`
# (THROUGHPUT_BIN defaults to examples/throughput beside it);
# KEEP=1 keeps the (stopped) temp dir for inspection.
# Prints one table. Not part of the test suite: speed is measured here, never asserted in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-60}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PUSH_SAMPLES=40       # WAL push latency: segments pushed one by one by each tool
DRAIN_SEGMENTS=200    # backlog drain: .ready segments waiting for each tool
PARALLEL=${PARALLEL:-2} # pgBackRest process-max; radd archive.push_parallel (when radd has it)
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL runs as postgres; page cache is dropped)" >&2; exit 2; }

apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -q >/dev/null; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}
# Only PostgreSQL 15 exists here; a plain install would upgrade the preinstalled minor version.
test -x "$PG_BIN/initdb" || apt_install postgresql-15 postgresql-contrib
command -v pgbackrest >/dev/null || apt_install pgbackrest
test -x /usr/bin/time || apt_install time
if [ -n "${RADD_BIN:-}" ]; then
  RADD_SRC=$RADD_BIN
  THROUGHPUT_SRC=${THROUGHPUT_BIN:-$(dirname "$RADD_BIN")/examples/throughput}
else
  cargo build --release -q --bin radd --example throughput
  RADD_SRC=$PWD/target/release/radd
  THROUGHPUT_SRC=$PWD/target/release/examples/throughput
fi
test -x "$THROUGHPUT_SRC" || { echo "no $THROUGHPUT_SRC: cargo build --release --example throughput" >&2; exit 2; }
TREETIME_SRC=$PWD/bench/treetime.py

START=$SECONDS
W=$(mktemp -d /tmp/radd-vs-pgbackrest-XXXXXX); chmod 755 "$W"; chown postgres: "$W"
cleanup() {
  [ -f "$W/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop >/dev/null 2>&1 || true
  # pgBackRest's async archive-push detaches from its caller: end those of this run (their command
  # line names this run's temp dir) before removing it.
  local pid
  for pid in $(pgrep -f -- "$W/" || true); do kill "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$W"   # programs run as postgres need a readable working directory
as_pg() { runuser -u postgres -- "$@"; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
psql_c() { "$PG_BIN/psql" -qAtX -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "$1"; }
result() { echo "$1 $2" >> "$W/results"; }
COLD=yes
drop_caches() { sync; { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null || COLD=no; }
PORT=$(freeport)

# --- radd: keys, config, repository ---------------------------------------------------------------
install -o postgres -m 755 "$RADD_SRC" "$W/radd"
install -o postgres -m 755 "$THROUGHPUT_SRC" "$W/throughput"
install -o postgres -m 644 "$TREETIME_SRC" "$W/treetime.py"
RADD="$W/radd --config $W/radd.toml"
RECIPIENT=$(as_pg "$W/radd" keygen --identity "$W/identity.key" 2>/dev/null)
cat > "$W/radd.toml" <<TOML
[repository]
path = "$W/radd-repo"
[events]
dir = "$W/radd-events"
[keys]
recipients = ["$RECIPIENT"]
id_key_file = "$W/id.key"
identity_file = "$W/identity.key"
[postgres]
host = "127.0.0.1"
port = $PORT
bin_dir = "$PG_BIN"
[backup]
compression_level = 1
TOML
chown postgres: "$W/radd.toml"
as_pg $RADD repo init >/dev/null
radd_accepts() { as_pg "$W/radd" --config "$1" snapshots >/dev/null 2>&1; }  # unknown keys are errors
# The backup-host state (record of the last backup, so the next reads only changed files) must live
# in the temp dir too: its default is outside it and not writable by postgres.
cp "$W/radd.toml" "$W/radd-probe.toml"; echo "state_dir = \"$W/radd-state\"" >> "$W/radd-probe.toml"
chown postgres: "$W/radd-probe.toml"
if radd_accepts "$W/radd-probe.toml"; then cp "$W/radd-probe.toml" "$W/radd.toml"; fi
# Backlog drain: if this radd build has archive.push_parallel (wal-push also archives other .ready
# segments beside the requested one), give it the same parallelism as pgBackRest's process-max;
# otherwise PostgreSQL's one call per segment is all radd gets. (The archive_command and the latency
# step use radd's default.)
cp "$W/radd.toml" "$W/radd-drain.toml"; printf '[archive]\npush_parallel = %s\n' "$PARALLEL" >> "$W/radd-drain.toml"
chown postgres: "$W/radd-drain.toml"
if radd_accepts "$W/radd-drain.toml"; then
  RADD_DRAIN="radd wal-push per .ready segment, archive.push_parallel = $PARALLEL (drains other .ready files itself)"
  # Builds with archive.push_async (default true) drain in one detached process, like
  # pgBackRest's async archive-push: say so.
  cp "$W/radd-drain.toml" "$W/radd-probe.toml"; printf 'push_async = true\n' >> "$W/radd-probe.toml"
  chown postgres: "$W/radd-probe.toml"
  if radd_accepts "$W/radd-probe.toml"; then
    RADD_DRAIN="radd wal-push per .ready segment; the first starts one detached drainer (archive.push_async, push_parallel = $PARALLEL)"
  fi
else
  cp "$W/radd.toml" "$W/radd-drain.toml"
  RADD_DRAIN="radd wal-push once per segment, sequentially (this build has no archive.push_parallel)"
fi
RADD_PUSH_HELP=$(as_pg "$W/radd" wal-push --help 2>&1 | grep -iE 'parallel|ready|drain|spool' || true)

# --- pgBackRest: local encrypted repository ------------------------------------------------------
PGBR="pgbackrest --config=$W/pgbackrest.conf --stanza=bench"
cat > "$W/pgbackrest.conf" <<CONF
[global]
repo1-path=$W/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=radd-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
repo1-retention-full=2
compress-type=zst
compress-level=1
process-max=$PARALLEL
start-fast=y
archive-check=y
spool-path=$W/pgbr-spool
lock-path=$W/pgbr-lock
log-path=$W/pgbr-log
log-level-console=warn
log-level-file=off

[bench]
pg1-path=$W/data
pg1-port=$PORT
pg1-socket-path=$W
pg1-user=postgres
CONF
chown postgres: "$W/pgbackrest.conf"; chmod 600 "$W/pgbackrest.conf"

# --- the cluster ----------------------------------------------------------------------------------
# PostgreSQL archives every WAL file to both tools at once (not timed), so both hold the complete WAL
# and neither tool's backup, waiting for its last segment, also waits for the other tool's push; a
# failure of either fails the command and PostgreSQL retries. Timed steps first wait until archiving
# is idle. (The script name contains "pgbackrest": pgBackRest's backup refuses an archive_command without it.)
cat > "$W/archive-to-radd-and-pgbackrest.sh" <<SH
#!/bin/sh
$PGBR archive-push "\$1" & pgbr=\$!
$RADD wal-push "\$1"; radd=\$?
wait \$pgbr && exit \$radd
SH
chmod 755 "$W/archive-to-radd-and-pgbackrest.sh"; chown postgres: "$W/archive-to-radd-and-pgbackrest.sh"
as_pg "$PG_BIN/initdb" -D "$W/data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w -o "-c listen_addresses=127.0.0.1 -p $PORT -k $W \
  -c wal_level=replica -c archive_mode=on -c archive_command='$W/archive-to-radd-and-pgbackrest.sh %p' \
  -c max_wal_size=4GB -c wal_keep_size=1GB" start >/dev/null
as_pg $PGBR stanza-create >/dev/null
wait_archive_idle() {
  local i
  for i in $(seq 1200); do
    compgen -G "$W/data/pg_wal/archive_status/*.ready" >/dev/null || return 0
    sleep 0.25
  done
  echo "WAL archiving is stuck; end of the PostgreSQL log:" >&2; tail -30 "$W/pg.log" >&2; exit 1
}

"$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PORT" -U postgres postgres > "$W/pgbench.log" 2>&1 ||
  { cat "$W/pgbench.log" >&2; exit 1; }
PGBENCH_BYTES=$(psql_c "SELECT sum(pg_total_relation_size(oid)) FROM pg_class WHERE relkind = 'r' AND relname LIKE 'pgbench_%'")
# Less compressible data: 64 hex digits (md5 text, ~2x) and 64 random bytes (incompressible) a row,
# added until the table is at least a third of the pgbench tables (indexes included).
psql_c "CREATE TABLE noise (g bigint, a text, b bytea)"
rows=$((SCALE * 33000 + 1000)); n=0
while :; do
  psql_c "INSERT INTO noise SELECT g, md5(random()::text) || md5(random()::text),
    decode(md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex')
    FROM generate_series($((n + 1)), $((n + rows))) g"
  n=$((n + rows))
  NOISE_BYTES=$(psql_c "SELECT pg_total_relation_size('noise')")
  [ "$NOISE_BYTES" -ge $((PGBENCH_BYTES / 3)) ] && break
  rows=$(( (PGBENCH_BYTES / 3 - NOISE_BYTES) / (NOISE_BYTES / n) + 1000 ))
done
psql_c "VACUUM ANALYZE noise" ; psql_c "CHECKPOINT"; psql_c "SELECT pg_switch_wal()" >/dev/null
wait_archive_idle
CLUSTER_BYTES=$(du -sb --exclude=pg_wal "$W/data" | cut -f1)
result scale "$SCALE"; result cluster_bytes "$CLUSTER_BYTES"
result pgbench_bytes "$PGBENCH_BYTES"; result noise_bytes "$NOISE_BYTES"

# Real, already archived 16 MiB segments of this cluster (pgbench and noise data) for the WAL steps;
# they are pushed under other names on timelines 10 and 11 so they never collide with real WAL,
# each a copy whose page headers carry the WAL address of its new name (radd refuses a segment
# whose pages hold another position than its name says; the records are left as they are).
mkdir "$W/pool"
mapfile -t SEGS < <(ls "$W/data/pg_wal/archive_status" | sed -n 's/^\([0-9A-F]\{24\}\)\.done$/\1/p' | sort | tail -n "$PUSH_SAMPLES")
[ "${#SEGS[@]}" -gt 0 ] || { echo "no archived WAL segment found in pg_wal" >&2; exit 1; }
for i in "${!SEGS[@]}"; do cp "$W/data/pg_wal/${SEGS[$i]}" "$W/pool/$i"; done
SEG_BYTES=$(stat -c %s "$W/pool/0")
chown -R postgres: "$W/pool"
segname() { printf '%08X%08X%08X' "$1" 0 "$2"; }
mkdir "$W/named"
{ for i in $(seq "$PUSH_SAMPLES"); do echo "$W/pool/$(( (i - 1) % ${#SEGS[@]} )) $W/named/$(segname 10 "$i") $i"; done
  for i in $(seq "$DRAIN_SEGMENTS"); do echo "$W/pool/$(( (i - 1) % ${#SEGS[@]} )) $W/named/$(segname 11 "$i") $i"; done
} | python3 -c '
import struct, sys
for line in sys.stdin:
    src, dst, segno = line.split()
    data = bytearray(open(src, "rb").read())
    for at in range(0, len(data), 8192):  # xlp_pageaddr (offset 8) of every page with a header
        if data[at:at + 2] != b"\0\0":
            struct.pack_into("=Q", data, at + 8, int(segno) * len(data) + at)
    open(dst, "wb").write(data)
'
chown -R postgres: "$W/named"

# --- timing ---------------------------------------------------------------------------------------
# timed TOOL KEY OUT cmd...: cold page cache, wall seconds -> results, CPU seconds (user+sys of the
# whole tree, processes that detached included) and peak RSS (KiB, largest process of the tree)
timed() {
  local tool=$1 key=$2 out=$3 wall user sys rss linger rc warn; shift 3
  drop_caches
  if as_pg python3 "$W/treetime.py" "$W/time" -- "$@" > "$out" 2> "$W/stderr"; then
    read -r wall user sys rss linger < "$W/time"
    result "$key" "$wall"; result "${tool}_rss:${key#*_}" "$rss"
    result "${tool}_cpu:${key#*_}" "$(python3 -c "print($user + $sys)")"
    warn=$(sed 's/\x1b\[[0-9;]*m//g' "$W/stderr" | grep -E '\b(WARN|ERROR)' || true)
    [ -z "$warn" ] || printf '== %s: %s\n%s\n' "$key" "$*" "$warn" >> "$W/warnings"
  else
    rc=$?
    result "$key" ERR
    { echo "== $tool failed (exit $rc): $*"; cat "$W/stderr" "$W/time" 2>/dev/null; } | tee -a "$W/errors" >&2
  fi
}
repo_bytes() { # backup data only: the WAL archives (radd wal/, pgBackRest archive/) are left out
  case $1 in
    radd) du -sb --exclude=wal "$W/radd-repo" | cut -f1 ;;
    pgbr) du -sb "$W/pgbr-repo/backup" | cut -f1 ;;
  esac
}

# Push helper, run as postgres: spawns each command itself and gets its peak RSS from wait4.
cat > "$W/push.py" <<'PY'
import ctypes, os, re, resource, sys, threading, time

# A child subreaper: processes that detach (pgBackRest's async archiver) become our children, so
# their CPU time is counted once they are reaped (see bench/treetime.py).
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)

def reap_detached(limit=120):
    """Waits up to `limit` s for detached descendants; returns how long they outlived the drain."""
    t0 = time.perf_counter()
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                if time.perf_counter() - t0 > limit:
                    return -1
                time.sleep(0.05)
        except ChildProcessError:
            return time.perf_counter() - t0

def run(argv, errfile):
    """Runs argv; returns (microseconds, peak RSS KiB, exit status, CPU s) and leaves stderr in errfile."""
    fa = [(os.POSIX_SPAWN_OPEN, 2, errfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
          (os.POSIX_SPAWN_DUP2, 2, 1)]
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=fa)
    _, status, ru = os.wait4(pid, 0)
    us, rc = int((time.perf_counter() - t0) * 1e6), os.waitstatus_to_exitcode(status)
    out = "".join(l for l in open(errfile) if re.search(r"\b(WARN|ERROR)", re.sub(r"\x1b\[[0-9;]*m", "", l)))
    if rc == 0 and out and out not in seen:  # warnings of a successful run: reported once per message
        seen.add(out)
        sys.stderr.write(f"== {' '.join(argv)}\n{out}")
    return us, ru.ru_maxrss, rc, ru.ru_utime + ru.ru_stime

seen = set()

def fail(tool, argv, rc, errfile):
    sys.stderr.write(f"== {tool} failed (exit {rc}): {' '.join(argv)}\n{open(errfile).read()}")
    sys.exit(1)

mode, w = sys.argv[1], sys.argv[2]
radd = [f"{w}/radd", "--config", f"{w}/radd.toml", "wal-push"]
pgbr = ["pgbackrest", f"--config={w}/pgbackrest.conf", "--stanza=bench", "archive-push"]

if mode == "latency":  # push FILE... one at a time, radd then pgBackRest for each file
    for f in sys.argv[3:]:
        for tool, cmd in (("radd", radd), ("pgbr", pgbr)):
            us, rss, rc, cpu = run(cmd + [f], f"{w}/push.err")
            if rc != 0:
                fail(tool, cmd + [f], rc, f"{w}/push.err")
            print(tool, us, rss, cpu, flush=True)

elif mode == "drain":  # drain W TOOL PG_WAL NAMES_FILE -- ARGV...: PostgreSQL's archiver, one command
    # at a time, oldest .ready first, .ready renamed to .done once the command returned 0; a sampler
    # thread also records the peak RSS of any radd/pgbackrest process (pgBackRest's async archiver
    # runs detached).
    tool, pg_wal, names = sys.argv[3], sys.argv[4], open(sys.argv[5]).read().split()
    argv = sys.argv[sys.argv.index("--") + 1:]
    status = f"{pg_wal}/archive_status"
    peak, stop = {"radd": 0, "pgbackrest": 0}, threading.Event()
    def sample():
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/comm") as c:
                        comm = c.read().strip()
                    # Only this run's processes: other radd/pgbackrest processes on the machine
                    # (another benchmark, a test suite) have the same comm.
                    if comm in peak:
                        with open(f"/proc/{pid}/cmdline", "rb") as c:
                            if w.encode() not in c.read():
                                continue
                        with open(f"/proc/{pid}/status") as s:
                            for line in s:
                                if line.startswith("VmHWM:"):
                                    peak[comm] = max(peak[comm], int(line.split()[1]))
                except (OSError, ValueError):
                    pass
            stop.wait(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rss = 0
    t0 = time.perf_counter()
    for name in names:
        if not os.path.exists(f"{status}/{name}.ready"):
            continue
        _, r, rc, _ = run(argv + [f"{pg_wal}/{name}"], f"{w}/drain.err")
        rss = max(rss, r)
        if rc != 0:  # PostgreSQL would retry; a benchmark reports it
            fail(tool, argv + [f"{pg_wal}/{name}"], rc, f"{w}/drain.err")
        os.rename(f"{status}/{name}.ready", f"{status}/{name}.done")
    us = int((time.perf_counter() - t0) * 1e6)
    linger = reap_detached()  # CPU of the whole tree: wait for the detached archiver to end
    stop.set(); sampler.join()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(us, max(rss, ru.ru_maxrss, peak["radd" if tool == "radd" else "pgbackrest"]), ru.ru_utime + ru.ru_stime, f"{linger:.2f}")
PY
chown postgres: "$W/push.py"

# --- 0. the machine's floor, measured in this run ---------------------------------------------------
# Single-core rates of each stage on a 256 MiB sample of this cluster's own relation pages (its
# largest files), a cold read of the cluster (without pg_wal) with cat, and a 2 GiB fdatasync'd write.
{ find "$W/data/base" -type f -size +1M -printf '%s %p\n' | sort -rn | cut -d' ' -f2- | xargs cat | head -c $((256 << 20)) > "$W/sample"; } || true
as_pg "$W/throughput" "$W/sample" > "$W/throughput.out"
rm -f "$W/sample"
while read -r k v unit; do [ "$unit" = "MB/s" ] && result "floor_rate:$k" "$v"; done < "$W/throughput.out"
result floor_ratio "$(sed -n 's/^# ratio at level 1: \([0-9.]*\)x$/\1/p' "$W/throughput.out")"
floor() { # KEY cmd...: wall and CPU seconds of cmd (cold page cache)
  local key=$1 wall user sys rss linger; shift
  drop_caches
  as_pg python3 "$W/treetime.py" "$W/time" -- "$@"
  read -r wall user sys rss linger < "$W/time"
  result "floor_${key}_s" "$wall"; result "floor_cpu:$key" "$(python3 -c "print($user + $sys)")"
}
find "$W/data" -path "$W/data/pg_wal" -prune -o -type f -print0 > "$W/files0"
floor read sh -c "xargs -0 cat < '$W/files0' > /dev/null"
floor write dd if=/dev/zero of="$W/dd.out" bs=1M count=2048 conv=fdatasync status=none
rm -f "$W/dd.out" "$W/files0"
result write_bytes $((2048 << 20))
result load "$(cut -d' ' -f1-3 /proc/loadavg)"

# --- 1. full backup -------------------------------------------------------------------------------
wait_archive_idle
timed radd radd_full_s "$W/radd-full.json" $RADD --json backup pg
wait_archive_idle
timed pgbr pgbr_full_s "$W/pgbr-full.out" $PGBR --type=full backup

# --- 2. incremental after 1000 pgbench transactions -----------------------------------------------
"$PG_BIN/pgbench" -n -t 1000 -c 1 -h 127.0.0.1 -p "$PORT" -U postgres postgres > "$W/pgbench.log" 2>&1 ||
  { cat "$W/pgbench.log" >&2; exit 1; }
psql_c "CHECKPOINT"
wait_archive_idle
before=$(repo_bytes radd)
timed radd radd_incr_s "$W/radd-incr.json" $RADD --json backup pg
result radd_incr_bytes $(( $(repo_bytes radd) - before ))
wait_archive_idle
before=$(repo_bytes pgbr)
timed pgbr pgbr_incr_s "$W/pgbr-incr.out" $PGBR --type=incr backup
result pgbr_incr_bytes $(( $(repo_bytes pgbr) - before ))

# --- 3. restore of the latest (incremental) backup; the restored clusters are not started ----------
wait_archive_idle
timed radd radd_restore_s /dev/null $RADD restore latest --target "$W/restore-radd" --no-archive
rm -rf "$W/restore-radd"
as_pg mkdir -m 700 "$W/restore-pgbr"
timed pgbr pgbr_restore_s /dev/null $PGBR --pg1-path="$W/restore-pgbr" restore
rm -rf "$W/restore-pgbr"

# --- 4. WAL push latency: each tool pushes the same 40 segments one by one (synchronous
#        pgBackRest, as with archive_command = 'pgbackrest archive-push %p'); warm cache ----------
# Warm cache for real: the restore step above dropped the page cache, so without this the first
# tool to push each pool segment (radd) would read it from disk and the second (pgBackRest) from
# memory. PostgreSQL archives a segment it has just written, i.e. from the page cache.
cat "$W"/named/0000000A* > /dev/null
as_pg mkdir "$W/push"
files=()
for i in $(seq "$PUSH_SAMPLES"); do
  f="$W/push/$(segname 10 "$i")"; ln "$W/named/$(segname 10 "$i")" "$f"; files+=("$f")
done
if as_pg python3 "$W/push.py" latency "$W" "${files[@]}" > "$W/latency" 2> "$W/stderr"; then
  cat "$W/stderr" >> "$W/warnings"
else
  tee -a "$W/errors" < "$W/stderr" >&2
fi
rm -rf "$W/push"

# --- 5. backlog drain: 200 segments already .ready in a pg_wal directory (one copy per tool) -------
# Measured: wall time of a simulated PostgreSQL archiver that calls each tool's archive command for
# every .ready segment in order, until all 200 are acknowledged (= durable in that tool's repository).
# Each tool gets its own fake data directory (pg_wal/ with hard links to the segments and
# archive_status/*.ready, global/pg_control: pgBackRest wants pg_wal inside pg1-path and checks pg_control).
# pgBackRest: archive-async=y with process-max=$PARALLEL, its documented answer to backlogs (the
# first call starts a detached process that pushes every .ready segment in parallel, later calls
# return as soon as their segment is in the spool's done list). radd: see RADD_DRAIN.
drain() {
  local tool=$1; shift
  local dir="$W/drain-$tool/pg_wal" i
  mkdir -p "$dir/archive_status" "$W/drain-$tool/global"
  cp "$W/data/global/pg_control" "$W/drain-$tool/global/"
  for i in $(seq "$DRAIN_SEGMENTS"); do
    ln "$W/named/$(segname 11 "$i")" "$dir/$(segname 11 "$i")"
    : > "$dir/archive_status/$(segname 11 "$i").ready"
  done
  chown -R postgres: "$W/drain-$tool"
  for i in $(seq "$DRAIN_SEGMENTS"); do segname 11 "$i"; echo; done > "$W/drain-names"
  if as_pg python3 "$W/push.py" drain "$W" "$tool" "$dir" "$W/drain-names" -- "$@" > "$W/drain.out" 2> "$W/stderr"; then
    read -r us rss cpu linger < "$W/drain.out"
    result "${tool}_drain_s" "$(python3 -c "print($us / 1e6)")"; result "${tool}_rss:drain_s" "$rss"
    result "${tool}_cpu:drain_s" "$cpu"; result "${tool}_linger:drain" "$linger"
    cat "$W/stderr" >> "$W/warnings"
  else
    result "${tool}_drain_s" ERR; tee -a "$W/errors" < "$W/stderr" >&2
  fi
  rm -rf "$W/drain-$tool"
}
drain radd "$W/radd" --config "$W/radd-drain.toml" wal-push
drain pgbr pgbackrest --config="$W/pgbackrest.conf" --stanza=bench --pg1-path="$W/drain-pgbr" --archive-async --process-max="$PARALLEL" archive-push
stored_radd=$(find "$W/radd-repo/wal" -type f -name '0000000B*' | wc -l)
stored_pgbr=$(find "$W/pgbr-repo/archive" -type f -name '0000000B*' | wc -l)

# --- the table ------------------------------------------------------------------------------------
result load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$W/results" "$W/latency" "$SEG_BYTES" "$PUSH_SAMPLES" "$DRAIN_SEGMENTS" <<'PY'
import math, sys
r = {}
for line in open(sys.argv[1]):
    k, v = line.split(None, 1)
    r.setdefault(k, []).append(v.strip())
def one(k):
    v = r.get(k, [None])[-1]
    return None if v in (None, "ERR") else float(v)
lat = {"radd": [], "pgbr": []}
try:
    for line in open(sys.argv[2]):
        tool, us, rss, cpu = line.split()
        lat[tool].append(int(us) / 1000)
        r.setdefault(f"{tool}_rss:push", []).append(rss)
        r[f"{tool}_cpu:push"] = [str(float(r.get(f"{tool}_cpu:push", ["0"])[0]) + float(cpu))]
except FileNotFoundError:
    pass
for tool in lat:
    if lat[tool]:
        r[f"{tool}_push_s"] = [str(sum(lat[tool]) / 1000)]
def pct(xs, p):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] if xs else None
mib, gb = 1 << 20, 1e9
seg, pushes, drained = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cluster = one("cluster_bytes")
def rss(tool, step):
    xs = [int(x) for x in r.get(f"{tool}_rss:{step}_s", []) + r.get(f"{tool}_rss:{step}", [])]
    return max(xs) / 1024 if xs else None
def ratio(a, b):
    return a / b if a is not None and b is not None and a > 0 and b > 0 else None
fmt = lambda x: "-" if x is None else (f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}")
# (label, step, bytes the step handles, wall ratio target, CPU/GB ratio target): issue 16's
# acceptance; a ratio is radd's cost over pgBackRest's (below 1, radd is cheaper)
steps = [
    ("full backup",           "full",    cluster,          0.60, 0.80),
    ("incremental",           "incr",    cluster,          0.35, None),
    ("restore",               "restore", cluster,          0.75, 0.80),
    (f"WAL push, {pushes} one by one", "push", pushes * seg, None, None),
    (f"drain {drained} .ready",  "drain",   drained * seg,   0.50, None),
]
head = (f"{'step':<26} {'GB':>5} | {'wall s':>7} {'pgBR':>7} {'ratio':>5} | {'CPU s':>6} {'pgBR':>6} | "
        f"{'CPU s/GB':>8} {'pgBR':>6} {'ratio':>5} | {'RSS MiB':>7} {'pgBR':>5} | target wall; CPU/GB  ok")
print("\n" + head + "\n" + "-" * len(head))
for label, step, nbytes, twall, tcpu in steps:
    wa, wb = one(f"radd_{step}_s"), one(f"pgbr_{step}_s")
    ca, cb = one(f"radd_cpu:{step}_s") or one(f"radd_cpu:{step}"), one(f"pgbr_cpu:{step}_s") or one(f"pgbr_cpu:{step}")
    ga, gb_ = (ca / (nbytes / gb) if ca is not None and nbytes else None), (cb / (nbytes / gb) if cb is not None and nbytes else None)
    rw, rc = ratio(wa, wb), ratio(ga, gb_)
    checks = [(rw, twall), (rc, tcpu)]
    targeted = [(x, t) for x, t in checks if t is not None]
    ok = "-" if not targeted or any(x is None for x, _ in targeted) else ("yes" if all(x <= t for x, t in targeted) else "NO")
    target = f"{'≤' + format(twall, '.2f') if twall else '-'}; {'≤' + format(tcpu, '.2f') if tcpu else '-'}"
    print(f"{label:<26} {nbytes / gb:>5.2f} | {fmt(wa):>7} {fmt(wb):>7} {fmt(rw):>5} | {fmt(ca):>6} {fmt(cb):>6} | "
          f"{fmt(ga):>8} {fmt(gb_):>6} {fmt(rc):>5} | {fmt(rss('radd', step)):>7} {fmt(rss('pgbr', step)):>5} | {target:<20} {ok}")
extra = [
    ("incremental: MiB added",  one("radd_incr_bytes"), one("pgbr_incr_bytes"), mib, 0.10),
    ("WAL push p50 ms",         pct(lat["radd"], 50), pct(lat["pgbr"], 50), 1, 0.46),
    ("WAL push p95 ms",         pct(lat["radd"], 95), pct(lat["pgbr"], 95), 1, None),
]
for label, a, b, unit, t in extra:
    a, b = (None if a is None else a / unit), (None if b is None else b / unit)
    x = ratio(a, b)
    ok = "-" if t is None or x is None else ("yes" if x <= t else "NO")
    print(f"{label:<26} {'':>5} | {fmt(a):>7} {fmt(b):>7} {fmt(x):>5} | {'':>6} {'':>6} | {'':>8} {'':>6} {'':>5} | {'':>7} {'':>5} | {('≤' + format(t, '.2f')) if t else '-':<20} {ok}")
# The machine's floor, in the radd columns: measured commands, and single-core rates as CPU s per GB.
print(f"{'machine floor (this run)':<26} {'':>5} | {'':>7}")
def floor_row(label, nbytes, wall, cpu, note):
    per_gb = cpu / (nbytes / gb) if cpu is not None and nbytes else None
    print(f"{label:<26} {nbytes / gb:>5.2f} | {fmt(wall):>7} {'':>7} {'':>5} | {fmt(cpu):>6} {'':>6} | {fmt(per_gb):>8} {'':>6} {'':>5} | {'':>7} {'':>5} | {note}")
read_s, write_s = one("floor_read_s"), one("floor_write_s")
floor_row("  cold read, cat", cluster, read_s, one("floor_cpu:read"), f"{cluster / 1e6 / read_s:.0f} MB/s" if read_s else "")
wbytes = one("write_bytes")
floor_row("  dd 2 GiB fdatasync", wbytes, write_s, one("floor_cpu:write"), f"{wbytes / 1e6 / write_s:.0f} MB/s" if write_s else "")
rates = {k.split(":", 1)[1]: float(v[-1]) for k, v in r.items() if k.startswith("floor_rate:")}
zratio = one("floor_ratio") or 1.0
for k in ("sha256", "blake3-keyed", "zstd-1", "unzstd-1", "age"):
    if k in rates:
        floor_row(f"  1 core {k}", gb, None, 1e3 / rates[k], f"{rates[k]:.0f} MB/s on the cluster's pages" + (f" (zstd-1: {zratio:.2f}x)" if k == "zstd-1" else ""))
def pipeline(keys):  # CPU s per GB of cluster; the AEAD only sees what zstd left
    return sum(1e3 / rates[k] / (zratio if k == "age" else 1) for k in keys) if all(k in rates for k in keys) else None
b, rs = pipeline(("blake3-keyed", "zstd-1", "age")), pipeline(("age", "unzstd-1", "blake3-keyed"))
if b is not None and read_s:
    floor_row("  backup: b3+zstd+age+read", cluster, max(read_s, b * cluster / gb / 2), b * cluster / gb,
              "wall = max(cold read, CPU / 2 cores); age on the compressed bytes")
if rs is not None and write_s:
    floor_row("  restore: b3+unzstd+age+dd", cluster, max(cluster / (wbytes / write_s), rs * cluster / gb / 2), rs * cluster / gb,
              "wall = max(dd write, CPU / 2 cores)")
print(f"\npgbench scale {int(one('scale'))}: cluster {cluster / mib:.0f} MiB without pg_wal "
      f"(pgbench tables {one('pgbench_bytes') / mib:.0f} MiB, noise table {one('noise_bytes') / mib:.0f} MiB); "
      f"load average before the steps {r['load'][-1]}, after {r.get('load_end', ['?'])[-1]}")
print("GB = 1e9 bytes of what the step handles (backup/incremental/restore: the cluster; WAL steps: the segments); "
      "CPU s = user+sys of the whole process tree (PostgreSQL's own work not included)")
PY
echo "page cache dropped before each backup/restore step: $COLD; incremental bytes exclude the WAL archives"
echo "drain, radd: $RADD_DRAIN"
echo "drain, pgBackRest: archive-push --archive-async --process-max=$PARALLEL once per segment, as PostgreSQL calls it"
echo "drain CPU includes detached processes until they exit: they outlived the last acknowledgement by radd $(tail -1 <(grep '^radd_linger' "$W/results" | cut -d' ' -f2)) s, pgBackRest $(tail -1 <(grep '^pgbr_linger' "$W/results" | cut -d' ' -f2)) s"
echo "segments durable after the drain: radd $stored_radd/$DRAIN_SEGMENTS, pgBackRest $stored_pgbr/$DRAIN_SEGMENTS"
[ -z "$RADD_PUSH_HELP" ] || echo "radd wal-push --help mentions: $RADD_PUSH_HELP"
echo "$(pgbackrest version); radd $("$W/radd" --version 2>/dev/null | awk '{print $NF}'); total runtime $((SECONDS - START)) s"
if [ -s "$W/warnings" ]; then echo; echo "WARNINGS from commands that succeeded:"; cat "$W/warnings"; fi
if [ -s "$W/errors" ]; then echo; echo "ERRORS:"; cat "$W/errors"; exit 1; fi
