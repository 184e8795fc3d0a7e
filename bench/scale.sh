#!/usr/bin/env bash
# Does radd's memory stay flat as the cluster grows? Builds a throwaway PostgreSQL 15 cluster of
# each size in SIZES (GB, 1e9 bytes of table data) and reports wall time, CPU seconds (user+sys of
# the whole process tree, bench/treetime.py), CPU s per GB and peak RSS of
#   full backup, incremental (after updating 0.1 % of the rows, spread over every table),
#   restore of that incremental, verify --read-data, forget --keep-last 1 + prune.
#   [SIZES="4 40"] bench/scale.sh [GB]     (SIZES defaults to "4 GB", GB to 40; run as root)
# The data: tables of (counter, two 64-bit hashes of it, padding text), fillfactor 80, so every
# page is unique but zstd-1 shrinks it ~10x (the repository stays small). It is generated
# server-side (generate_series, two sessions) under wal_level=minimal in the transaction that
# creates each table, so no WAL is written for it; the cluster then restarts archiving to radd.
# Refuses (exit 2) when the free space cannot hold the largest size's cluster + restore +
# repository. RADD_BIN=/path/to/radd skips `cargo build --release`; KEEP=1 keeps the last temp dir.
# Prints one table. Not part of the test suite: speed is measured here, never asserted in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
GB_ARG=${1:-40}
SIZES=${SIZES:-"4 $GB_ARG"}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ROW_BYTES=248   # on-disk bytes per row of the generated tables (measured: 1e6 rows = 248 MB)
TABLE_ROWS=4000000  # rows per table (~1 GB): two sessions fill tables side by side
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL runs as postgres; page cache is dropped)" >&2; exit 2; }
test -x "$PG_BIN/initdb" || { echo "no PostgreSQL 15 in $PG_BIN (apt-get install postgresql-15)" >&2; exit 2; }

# Free space: per size the cluster (removed once the incremental is taken, so the restore reuses
# its room), the repository (~1/10 of the data, counted as 1/4) and up to 3 GB of WAL; sizes run
# one after the other, each temp dir removed before the next.
TMP=${TMPDIR:-/tmp}
largest=$(printf '%s\n' $SIZES | sort -g | tail -1)
need=$(python3 -c "print(int($largest * 1e9 * (1 + 0.25) + 3e9))")
avail=$(df -B1 --output=avail "$TMP" | tail -1 | tr -d ' ')
if [ "$avail" -lt "$need" ]; then
  echo "refusing: size $largest GB needs about $((need / 1000000000)) GB free in $TMP (cluster or its restore + repository + WAL), only $((avail / 1000000000)) GB are; pick smaller SIZES or set TMPDIR" >&2
  exit 2
fi

if [ -n "${RADD_BIN:-}" ]; then RADD_SRC=$RADD_BIN; else cargo build --release -q --bin radd; RADD_SRC=$PWD/target/release/radd; fi
TREETIME_SRC=$PWD/bench/treetime.py
START=$SECONDS
as_pg() { runuser -u postgres -- "$@"; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
COLD=yes
drop_caches() { sync; { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null || COLD=no; }
RESULTS=$(mktemp /tmp/radd-scale-results-XXXXXX)
W=
cleanup() {
  if [ -n "$W" ]; then
    [ -f "$W/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop >/dev/null 2>&1 || true
    if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
  fi
}
trap 'cleanup; rm -f "$RESULTS"' EXIT
trap 'exit 130' INT TERM

# timed SIZE STEP cmd...: cold page cache; one result line "SIZE STEP wall user sys rss_kib"
timed() {
  local size=$1 step=$2 wall user sys rss linger rc; shift 2
  drop_caches
  if as_pg python3 "$W/treetime.py" "$W/time" -- "$@" > "$W/$step.out" 2> "$W/stderr"; then
    read -r wall user sys rss linger < "$W/time"
    echo "$size $step $wall $user $sys $rss" >> "$RESULTS"
  else
    rc=$?
    echo "$size $step ERR" >> "$RESULTS"
    { echo "== $step at $size GB failed (exit $rc): $*"; cat "$W/stderr"; } >&2
  fi
}

run_size() {
  local size=$1 port rows tables t
  W=$(mktemp -d "$TMP/radd-scale-XXXXXX"); chmod 755 "$W"; chown postgres: "$W"
  cd "$W"
  port=$(freeport)
  install -o postgres -m 755 "$RADD_SRC" "$W/radd"
  install -o postgres -m 644 "$TREETIME_SRC" "$W/treetime.py"
  local radd="$W/radd --config $W/radd.toml"
  local recipient; recipient=$(as_pg "$W/radd" keygen --identity "$W/identity.key" 2>/dev/null)
  cat > "$W/radd.toml" <<TOML
[repository]
path = "$W/repo"
[events]
dir = "$W/events"
[keys]
recipients = ["$recipient"]
id_key_file = "$W/id.key"
identity_file = "$W/identity.key"
[postgres]
host = "127.0.0.1"
port = $port
bin_dir = "$PG_BIN"
[backup]
compression_level = 1
state_dir = "$W/state"
TOML
  chown postgres: "$W/radd.toml"
  as_pg $radd repo init >/dev/null
  psql_c() { "$PG_BIN/psql" -qAtX -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$1"; }
  pg_start() { as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w -o "-c listen_addresses=127.0.0.1 -p $port -k $W $1" start >/dev/null; }

  # The data, without WAL: wal_level=minimal skips WAL for a table filled in its creating transaction.
  as_pg "$PG_BIN/initdb" -D "$W/data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  pg_start "-c wal_level=minimal -c max_wal_senders=0 -c archive_mode=off -c max_wal_size=4GB"
  rows=$(python3 -c "print(int($size * 1e9 / $ROW_BYTES))")
  tables=$(( (rows + TABLE_ROWS - 1) / TABLE_ROWS ))
  local gen_start=$SECONDS
  fill() { # table number: rows (t-1)*TABLE_ROWS+1 .. min(t*TABLE_ROWS, rows)
    local t=$1 from=$(( ($1 - 1) * TABLE_ROWS + 1 )) to=$(( $1 * TABLE_ROWS < rows ? $1 * TABLE_ROWS : rows ))
    psql_c "BEGIN; CREATE TABLE scale_$t (id bigint, h1 bigint, h2 bigint, pad text) WITH (fillfactor = 80);
      INSERT INTO scale_$t SELECT g, hashint8extended(g, 1), hashint8extended(g, 2),
        lpad(g::text, 12, '0') || repeat(' radd scale bench padding', 5) FROM generate_series($from, $to) g;
      COMMIT;"
  }
  for t in $(seq 1 2 "$tables"); do
    fill "$t" & local p1=$!
    if [ $((t + 1)) -le "$tables" ]; then fill $((t + 1)); fi
    wait "$p1"
  done
  psql_c "CHECKPOINT"
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m fast -w stop >/dev/null
  local gen_s=$((SECONDS - gen_start))
  pg_start "-c wal_level=replica -c archive_mode=on -c archive_command='$radd wal-push %p' -c max_wal_size=4GB"
  local cluster_bytes; cluster_bytes=$(du -sb --exclude=pg_wal "$W/data" | cut -f1)
  echo "$size cluster $cluster_bytes $tables $gen_s" >> "$RESULTS"

  timed "$size" backup $radd --json backup pg
  # 0.1 % of the rows, spread over every table (about 3 % of the pages).
  for t in $(seq "$tables"); do psql_c "UPDATE scale_$t SET h1 = h1 + 1 WHERE id % 1000 = 0"; done
  psql_c "CHECKPOINT"
  timed "$size" incremental $radd --json backup pg
  psql_c "SELECT pg_switch_wal()" >/dev/null
  # The cluster is not needed any more: when the disk cannot hold a second copy, its room holds
  # the restore (40 GB then fits a 60 GB disk); otherwise it stays for KEEP=1.
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m fast -w stop >/dev/null
  if [ "$(df -B1 --output=avail "$TMP" | tail -1 | tr -d ' ')" -lt $((cluster_bytes + 4000000000)) ]; then rm -rf "$W/data"; fi
  timed "$size" restore $radd restore latest --target "$W/restored" --no-archive
  rm -rf "$W/restored"
  timed "$size" verify $radd verify --read-data
  as_pg $radd forget --keep-last 1 >/dev/null 2>&1
  timed "$size" prune $radd prune --grace 1s --force
  echo "$size repo $(du -sb "$W/repo" | cut -f1)" >> "$RESULTS"
  cleanup; W=
  cd /
}

for size in $SIZES; do run_size "$size"; done

python3 - "$RESULTS" <<'PY'
import sys
cluster, repo, rows = {}, {}, []
for line in open(sys.argv[1]):
    f = line.split()
    if f[1] == "cluster":
        cluster[f[0]] = (int(f[2]), int(f[3]), int(f[4]))
    elif f[1] == "repo":
        repo[f[0]] = int(f[2])
    else:
        rows.append(f)
fmt = lambda x: "-" if x is None else (f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}")
head = f"{'size':>6} {'cluster GB':>10} {'step':<12} {'wall s':>7} {'CPU s':>7} {'CPU s/GB':>8} {'MB/s':>6} {'peak RSS MiB':>12}"
print("\n" + head + "\n" + "-" * len(head))
rss = {}
for f in rows:
    size, step = f[0], f[1]
    nbytes = cluster[size][0]
    if f[2] == "ERR":
        print(f"{size:>6} {nbytes / 1e9:>10.2f} {step:<12} {'ERR':>7}")
        continue
    wall, cpu, kib = float(f[2]), float(f[3]) + float(f[4]), int(f[5])
    rss.setdefault(step, {})[size] = kib / 1024
    print(f"{size:>6} {nbytes / 1e9:>10.2f} {step:<12} {fmt(wall):>7} {fmt(cpu):>7} {fmt(cpu / (nbytes / 1e9)):>8} "
          f"{fmt(nbytes / 1e6 / wall):>6} {fmt(kib / 1024):>12}")
sizes = list(cluster)
if len(sizes) > 1:
    a, b = sizes[0], sizes[-1]
    print(f"\npeak RSS growth from {a} to {b} GB (MiB; target below 16, and every step at most 128 MiB): " +
          ", ".join(f"{s} {fmt(v[b] - v[a])}" for s, v in rss.items() if a in v and b in v))
for s in sizes:
    print(f"{s} GB: {cluster[s][1]} tables generated in {cluster[s][2]} s; repository {repo.get(s, 0) / 1e6:.0f} MB after prune")
print("GB = 1e9 bytes of the cluster without pg_wal; MB/s of the cluster; CPU s = user+sys of radd's process tree")
PY
echo "page cache dropped before each step: $COLD; load average now $(cut -d' ' -f1-3 /proc/loadavg); total runtime $((SECONDS - START)) s"
