#!/usr/bin/env bash
# radd and pgBackRest side by side on one throwaway PostgreSQL 15 cluster, same data, interleaved
# (radd first, then pgBackRest, for every step), both encrypted and zstd level 1:
#   full backup, incremental after 1000 pgbench transactions (wall time and repository bytes added),
#   restore, WAL push latency (p50/p95 of 40 pushes), a 200-segment backlog drain, peak RSS.
#   bench/compare-pgbackrest.sh [pgbench-scale]    (default 60 ≈ 1 GB of pgbench data; run as root)
# The cluster holds pgbench data plus a less compressible table `noise` (md5 text and random bytes)
# of at least a third of the pgbench size. PostgreSQL and both tools run as the postgres user; root
# is needed for that and to drop the page cache before every timed backup/restore step.
# Installs pgBackRest from Debian when missing. RADD_BIN=/path/to/radd skips `cargo build --release`;
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
else
  cargo build --release -q
  RADD_SRC=$PWD/target/release/radd
fi

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
# PostgreSQL archives every WAL file to both tools, one after the other (not timed), so both hold the
# complete WAL; a failure of either fails the command and PostgreSQL retries. Timed steps first wait
# until archiving is idle. (The script name contains "pgbackrest": pgBackRest's backup refuses an archive_command without it.)
cat > "$W/archive-to-radd-and-pgbackrest.sh" <<SH
#!/bin/sh
$PGBR archive-push "\$1" || exit 1
exec $RADD wal-push "\$1"
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
# they are pushed under fake names on timelines 10 and 11 so they never collide with real WAL.
mkdir "$W/pool"
mapfile -t SEGS < <(ls "$W/data/pg_wal/archive_status" | sed -n 's/^\([0-9A-F]\{24\}\)\.done$/\1/p' | sort | tail -n "$PUSH_SAMPLES")
[ "${#SEGS[@]}" -gt 0 ] || { echo "no archived WAL segment found in pg_wal" >&2; exit 1; }
for i in "${!SEGS[@]}"; do cp "$W/data/pg_wal/${SEGS[$i]}" "$W/pool/$i"; done
chown -R postgres: "$W/pool"
segname() { printf '%08X%08X%08X' "$1" 0 "$2"; }

# --- timing ---------------------------------------------------------------------------------------
# timed TOOL KEY OUT cmd...: cold page cache, wall seconds -> results, peak RSS (KiB, largest process
# of the tree: /usr/bin/time's wait4 covers waited-for children such as pgBackRest's workers)
timed() {
  local tool=$1 key=$2 out=$3 wall rss rc warn; shift 3
  drop_caches
  if as_pg /usr/bin/time -f "%e %M" -o "$W/time" "$@" > "$out" 2> "$W/stderr"; then
    read -r wall rss < "$W/time"
    result "$key" "$wall"; result "${tool}_rss:${key#*_}" "$rss"
    warn=$(sed 's/\x1b\[[0-9;]*m//g' "$W/stderr" | grep -E '\b(WARN|ERROR)' || true)
    [ -z "$warn" ] || printf '== %s: %s\n%s\n' "$key" "$*" "$warn" >> "$W/warnings"
  else
    rc=$?
    result "$key" ERR
    { echo "== $tool failed (exit $rc): $*"; cat "$W/stderr" "$W/time"; } | tee -a "$W/errors" >&2
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
import os, re, sys, threading, time

def run(argv, errfile):
    """Runs argv; returns (microseconds, peak RSS KiB, exit status) and leaves stderr in errfile."""
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
    return us, ru.ru_maxrss, rc

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
            us, rss, rc = run(cmd + [f], f"{w}/push.err")
            if rc != 0:
                fail(tool, cmd + [f], rc, f"{w}/push.err")
            print(tool, us, rss, flush=True)

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
        _, r, rc = run(argv + [f"{pg_wal}/{name}"], f"{w}/drain.err")
        rss = max(rss, r)
        if rc != 0:  # PostgreSQL would retry; a benchmark reports it
            fail(tool, argv + [f"{pg_wal}/{name}"], rc, f"{w}/drain.err")
        os.rename(f"{status}/{name}.ready", f"{status}/{name}.done")
    us = int((time.perf_counter() - t0) * 1e6)
    stop.set(); sampler.join()
    print(us, max(rss, peak["radd" if tool == "radd" else "pgbackrest"]))
PY
chown postgres: "$W/push.py"

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
cat "$W"/pool/* > /dev/null
as_pg mkdir "$W/push"
files=()
for i in $(seq "$PUSH_SAMPLES"); do
  f="$W/push/$(segname 10 "$i")"; ln "$W/pool/$(( (i - 1) % ${#SEGS[@]} ))" "$f"; files+=("$f")
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
    ln "$W/pool/$(( (i - 1) % ${#SEGS[@]} ))" "$dir/$(segname 11 "$i")"
    : > "$dir/archive_status/$(segname 11 "$i").ready"
  done
  chown -R postgres: "$W/drain-$tool"
  for i in $(seq "$DRAIN_SEGMENTS"); do segname 11 "$i"; echo; done > "$W/drain-names"
  if as_pg python3 "$W/push.py" drain "$W" "$tool" "$dir" "$W/drain-names" -- "$@" > "$W/drain.out" 2> "$W/stderr"; then
    read -r us rss < "$W/drain.out"
    result "${tool}_drain_s" "$(python3 -c "print($us / 1e6)")"; result "${tool}_rss:drain_s" "$rss"
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
python3 - "$W/results" "$W/latency" <<'PY'
import math, sys
r = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    r.setdefault(k, []).append(v)
one = lambda k: (lambda v: None if v == "ERR" else float(v))(r[k][-1]) if k in r else None
lat = {"radd": [], "pgbr": []}
try:
    for line in open(sys.argv[2]):
        tool, us, rss = line.split()
        lat[tool].append(int(us) / 1000)
        r.setdefault(tool + "_rss:push", []).append(rss)
except FileNotFoundError:
    pass
def pct(xs, p):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] if xs else None
mib = 1 << 20
cluster = one("cluster_bytes")
def val(tool, what):
    k = f"{tool}_{what}"
    if what == "full_mbs":
        s = one(f"{tool}_full_s")
        return cluster / mib / s if s else None
    if what == "incr_mib":
        b = one(f"{tool}_incr_bytes")
        return b / mib if b is not None else None
    if what == "p50": return pct(lat[tool], 50)
    if what == "p95": return pct(lat[tool], 95)
    if what == "rss":
        xs = [int(x) for key, vs in r.items() if key.startswith(k + ":") for x in vs]
        return max(xs) / 1024 if xs else None
    return one(k)
# (label, key, higher is better, acceptance on the ratio, where the ratio is "radd's cost over
# pgBackRest's": below 1 radd is better on every row)
rows = [
    ("full backup s",               "full_s",    False, 0.40,  "<=0.40 (>=2.5x throughput)"),
    ("full backup MiB/s",           "full_mbs",  True,  0.40,  "<=0.40 (>=2.5x)"),
    ("incremental s",               "incr_s",    False, 0.60,  "<=0.60"),
    ("incremental repo MiB added",  "incr_mib",  False, 0.10,  "<=0.10"),
    ("restore s",                   "restore_s", False, 1/1.8, "<=0.56 (>=1.8x throughput)"),
    ("WAL push p50 ms",             "p50",       False, 0.60,  "<=0.60"),
    ("WAL push p95 ms",             "p95",       False, None,  ""),
    ("200-segment drain s",         "drain_s",   False, 1/3,   "<=0.33 (>=3x faster)"),
    ("peak RSS MiB",                "rss",       False, None,  "radd <= 128 MiB"),
]
fmt = lambda x: "ERR/n.a." if x is None else (f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}")
print(f"\n{'metric':<28} {'radd':>9} {'pgBackRest':>11} {'ratio':>7}  {'ratio is':<22} {'acceptance':<27} ok")
for label, key, higher, target, text in rows:
    a, b = val("radd", key), val("pgbr", key)
    ratio = None
    if a is not None and b is not None and a > 0 and b > 0:
        ratio = b / a if higher else a / b
    how = "pgBR/radd (<1: radd)" if higher else "radd/pgBR (<1: radd)"
    if key == "rss":
        ok = "-" if a is None else ("yes" if a <= 128 else "NO")
    elif target is None or ratio is None:
        ok = "-"
    else:
        ok = "yes" if ratio <= target else "NO"
    print(f"{label:<28} {fmt(a):>9} {fmt(b):>11} {fmt(ratio):>7}  {how:<22} {text:<27} {ok}")
print(f"\npgbench scale {int(one('scale'))}: cluster {cluster / mib:.0f} MiB without pg_wal "
      f"(pgbench tables {one('pgbench_bytes') / mib:.0f} MiB, noise table {one('noise_bytes') / mib:.0f} MiB); "
      f"WAL push samples: radd {len(lat['radd'])}, pgBackRest {len(lat['pgbr'])}")
for tool, name in (("radd", "radd"), ("pgbr", "pgBackRest")):
    steps = [(key.split(":")[1], max(int(x) for x in vs)) for key, vs in r.items() if key.startswith(tool + "_rss:")]
    print(f"peak RSS MiB by step, {name}: " + ", ".join(f"{s.removesuffix('_s')} {v / 1024:.0f}" for s, v in steps))
PY
echo "page cache dropped before each backup/restore step: $COLD; incremental bytes exclude the WAL archives"
echo "drain, radd: $RADD_DRAIN"
echo "drain, pgBackRest: archive-push --archive-async --process-max=$PARALLEL once per segment, as PostgreSQL calls it"
echo "segments durable after the drain: radd $stored_radd/$DRAIN_SEGMENTS, pgBackRest $stored_pgbr/$DRAIN_SEGMENTS"
[ -z "$RADD_PUSH_HELP" ] || echo "radd wal-push --help mentions: $RADD_PUSH_HELP"
echo "$(pgbackrest version); radd $("$W/radd" --version 2>/dev/null | awk '{print $NF}'); total runtime $((SECONDS - START)) s"
if [ -s "$W/warnings" ]; then echo; echo "WARNINGS from commands that succeeded:"; cat "$W/warnings"; fi
if [ -s "$W/errors" ]; then echo; echo "ERRORS:"; cat "$W/errors"; exit 1; fi
