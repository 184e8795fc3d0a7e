#!/usr/bin/env bash
# Memory and CPU of the repository-wide steps on a throwaway cluster, at one or more sizes:
# wall time, CPU seconds (user+sys), peak RSS of `radd backup pg` (full), an incremental after
# pgbench traffic, `radd restore`, `radd verify --read-data` and `radd prune` (after forgetting the
# first snapshot). Peak RSS should not grow with the cluster (the blob index is on disk).
#   [LEVEL=zstd-level] [RADD_BIN=path] bench/backup-rss.sh [pgbench-scale ...]
#   (default: 60 200 ≈ 1.3 and 4.3 GB; level 3; as root or postgres; RADD_BIN skips the build)
# Prints one table per size. Not part of the test suite: speed is measured here, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALES=("$@"); [ ${#SCALES[@]} -eq 0 ] && SCALES=(60 200)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ -z "${RADD_BIN:-}" ]; then cargo build --release -q; RADD_BIN=target/release/radd; fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
calc() { python3 -c "print($1)"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], '-'))" "$1" "$2"; }

bench_scale() {
  local SCALE=$1
  W=$(mktemp -d /tmp/radd-bench-XXXXXX); chmod 755 "$W"
  cp "$RADD_BIN" "$W/radd"
  RECIPIENT=$("$W/radd" keygen --identity "$W/identity.key" 2>/dev/null)
  PORT=$(freeport)
  cat > "$W/radd.toml" <<TOML
[repository]
path = "$W/repo"
[events]
dir = "$W/events"
[backup]
state_dir = "$W/state"
compression_level = ${LEVEL:-3}
[keys]
recipients = ["$RECIPIENT"]
id_key_file = "$W/id.key"
identity_file = "$W/identity.key"
[postgres]
host = "127.0.0.1"
port = $PORT
TOML
  "$W/radd" --config "$W/radd.toml" repo init >/dev/null
  [ "$(id -u)" = 0 ] && chown -R postgres: "$W"
  as_pg "$PG_BIN/initdb" -D "$W/data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w -o "-c listen_addresses=127.0.0.1 -p $PORT -k $W -c wal_level=replica -c archive_mode=on -c archive_command='$W/radd --config $W/radd.toml wal-push %p' -c max_wal_size=4GB" start >/dev/null
  "$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1
  psql -qAt -h 127.0.0.1 -p "$PORT" -U postgres -c "CHECKPOINT" >/dev/null
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

  local R="$W/radd --config $W/radd.toml --json" rows=()
  measure() { # label, command...: appends "label wall cpu rss" to rows, keeps stdout in $W/out.json
    local label=$1; shift
    /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$@" > "$W/out.json"
    read -r wall user sys rss < "$W/time"
    rows+=("$label $wall $(calc "round($user + $sys, 2)") $((rss / 1024))")
  }
  measure backup $R backup pg; b1=$(cat "$W/out.json"); first=$(field "$b1" snapshot_id)
  "$PG_BIN/pgbench" -n -T 20 -c 2 -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1
  psql -qAt -h 127.0.0.1 -p "$PORT" -U postgres -c "CHECKPOINT" >/dev/null
  measure incremental $R backup pg; b2=$(cat "$W/out.json")
  psql -qAt -h 127.0.0.1 -p "$PORT" -U postgres -c "SELECT pg_switch_wal()" >/dev/null; sleep 2
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  measure restore $R restore latest --target "$W/restored" --no-archive
  rm -rf "$W/restored"
  measure verify-read-data $R verify --read-data
  "$W/radd" --config "$W/radd.toml" forget --keep-last 1 >/dev/null
  measure prune-condemn $R prune --grace 0s --force
  measure prune-delete $R prune --grace 0s --force
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop >/dev/null 2>&1 || true
  local total; total=$(field "$b1" total_bytes)
  echo "pgbench scale $SCALE: cluster $((total / 1048576)) MiB; incremental new bytes $(field "$b2" new_bytes); first snapshot $first"
  printf '%-18s %8s %8s %10s %10s\n' step wall_s cpu_s rss_MiB MB/s
  for row in "${rows[@]}"; do
    read -r label wall cpu rss <<< "$row"
    printf '%-18s %8s %8s %10s %10.0f\n' "$label" "$wall" "$cpu" "$rss" "$(calc "$total / 1048576 / max($wall, 0.01)")"
  done
  rm -rf "$W"
}
cleanup() {
  [ -n "${W:-}" ] && [ -d "$W" ] || return 0
  [ -f "$W/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
for s in "${SCALES[@]}"; do bench_scale "$s"; done
