#!/usr/bin/env bash
# Restore speed of a pgbench cluster (issue 16 item 3): wall, CPU seconds (user+sys of the process
# tree), CPU s per GB restored, peak RSS, the time spent writing and verifying and the time of the
# final fsync pass, next to the disk's floor (`dd … conv=fdatasync`, 2 GiB, in the same directory
# as the restores) measured in the same run. Cold page cache before every restore when run as root.
#   [RADD_BIN=radd] [RADD_BEFORE=other-radd] [RUNS=1] [RESTORE_DIR=dir] bench/restore-speed.sh [scale ...]
# Defaults: scale 60 (≈ 1.3 GB). Several scales run one after the other, each on a new cluster.
# RADD_BIN skips the release build; RADD_BEFORE restores the same snapshot with another build too
# (e.g. main's) for a before/after figure. Each build also restores once per writeback mode
# (RADD_RESTORE_WRITEBACK: dontneed, the default, none and fsync; see src/restore/content.rs) when
# MODES=1. RESTORE_DIR puts the restores (and dd) elsewhere, e.g. /dev/shm to take the disk out
# and see what the CPU stages alone deliver. As root or postgres. Not part of the test suite: speed is measured, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALES=("${@:-60}")
RUNS=${RUNS:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ -z "${RADD_BIN:-}" ]; then cargo build --release -q; RADD_BIN=$PWD/target/release/radd; fi
W=$(mktemp -d /tmp/radd-restore-speed-XXXXXX); chmod 755 "$W"
cleanup() {
  [ -f "$W/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
R=$(mktemp -d "${RESTORE_DIR:-$W}/radd-restore-speed-XXXXXX"); trap 'cleanup; rm -rf "$R"' EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
cp "$RADD_BIN" "$W/radd"
[ -n "${RADD_BEFORE:-}" ] && cp "$RADD_BEFORE" "$W/radd-before"

dd_floor() {
  cold
  local out
  out=$(dd if=/dev/zero of="$R/dd.out" bs=1M count=2048 conv=fdatasync 2>&1 | tail -1)
  rm -f "$R/dd.out"
  echo "dd 2 GiB conv=fdatasync: $out"
}

measure() { # label, binary, snapshot, [writeback mode]: one table row
  local label=$1 bin=$2 snapshot=$3 mode=${4:-} target="$R/restored"
  cold
  RADD_RESTORE_WRITEBACK=$mode RUST_LOG=radd::restore=debug /usr/bin/time -f "%e %U %S %M" -o "$W/time" \
    "$bin" --config "$W/radd.toml" --json restore "$snapshot" --target "$target" --no-archive > "$W/out.json" 2> "$W/err.log"
  read -r wall user sys rss < "$W/time"
  python3 - "$W/out.json" "$W/err.log" "$label" "$wall" "$user" "$sys" "$rss" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1])); log = open(sys.argv[2]).read()
label, wall, user, sys_, rss = sys.argv[3:]
def at(message):
    m = [l for l in log.splitlines() if message in l]
    s = re.search(r"seconds=([0-9.]+)", m[-1]) if m else None
    return float(s.group(1)) if s else float("nan")
loaded, written, synced = at("index and manifest loaded"), at("files written and verified"), at("fsync'd")
def field(message, name):
    m = [l for l in log.splitlines() if message in l]
    s = re.search(name + r"=([0-9.]+)", m[-1]) if m else None
    return float(s.group(1)) if s else float("nan")
wait, busy = field("writer done", "waited_s"), field("writer done", "writing_s")
gb = r["bytes"] / 1e9
cpu = float(user) + float(sys_)
print(f"{label:<28} {wall:>7} {cpu:>7.2f} {cpu / gb:>8.2f} {int(rss) // 1024:>8} {written - loaded:>8.2f} {synced - written:>7.2f} {gb / float(wall) * 1000:>9.0f} {wait:>7.2f} {busy:>7.2f}")
PY
  rm -rf "$target"
}

for SCALE in "${SCALES[@]}"; do
  rm -rf "$W/repo" "$W/events" "$W/state" "$W/data"
  RECIPIENT=$("$W/radd" keygen --identity "$W/identity-$SCALE.key" 2>/dev/null)
  PORT=$(freeport)
  cat > "$W/radd.toml" <<TOML
[repository]
path = "$W/repo"
[events]
dir = "$W/events"
[backup]
state_dir = "$W/state"
compression_level = 1
[keys]
recipients = ["$RECIPIENT"]
id_key_file = "$W/id-$SCALE.key"
identity_file = "$W/identity-$SCALE.key"
[postgres]
host = "127.0.0.1"
port = $PORT
TOML
  "$W/radd" --config "$W/radd.toml" repo init >/dev/null
  [ "$(id -u)" = 0 ] && chown -R postgres: "$W"
  as_pg "$PG_BIN/initdb" -D "$W/data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w -o "-c listen_addresses=127.0.0.1 -p $PORT -k $W -c wal_level=replica -c archive_mode=on -c archive_command='$W/radd --config $W/radd.toml wal-push %p' -c max_wal_size=4GB" start >/dev/null
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >/dev/null 2>&1
  snapshot=$("$W/radd" --config "$W/radd.toml" --json backup pg | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m fast -w stop >/dev/null
  size=$(du -sm "$W/data" | cut -f1)
  echo "pgbench scale $SCALE: $size MiB on disk; $(nproc) cores"
  dd_floor
  printf '%-28s %7s %7s %8s %8s %8s %7s %9s %7s %7s\n' restore wall_s cpu_s cpu_s/GB rss_MiB write_s sync_s MB/s_wall wr_wait wr_busy
  for run in $(seq "$RUNS"); do
    [ -n "${RADD_BEFORE:-}" ] && measure "before (RADD_BEFORE) #$run" "$W/radd-before" "$snapshot"
    measure "after #$run" "$W/radd" "$snapshot"
  done
  if [ -n "${MODES:-}" ]; then
    for mode in dontneed none fsync; do measure "after, writeback=$mode" "$W/radd" "$snapshot" "$mode"; done
  fi
  dd_floor
done
echo "write_s: loading done to every file written and verified; sync_s: the final fsync pass (sync_tree);"
echo "wr_wait / wr_busy: the writer thread waiting for decrypted packs / writing them (builds that log it)"
