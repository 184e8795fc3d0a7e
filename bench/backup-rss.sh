#!/usr/bin/env bash
# Backup/restore figures on a throwaway cluster: wall time, throughput and peak RSS of
# `radd backup pg` (first and unchanged second backup) and `radd restore`.
#   [LEVEL=zstd-level] bench/backup-rss.sh [pgbench-scale]   (default 70 ≈ 1 GB, level 3; as root or postgres)
# Prints one table. Not part of the test suite: speed is measured here, never asserted in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-70}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cargo build --release -q
W=$(mktemp -d /tmp/radd-bench-XXXXXX); chmod 755 "$W"
cleanup() {
  for d in "$W/data" "$W/restored"; do
    [ -f "$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cp target/release/radd "$W/radd"
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

measure() { # label, command...: prints "label wall_s rss_mib" and keeps stdout in $W/out.json
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" > "$W/out.json"
  read -r wall rss < "$W/time"
  echo "$label $wall $((rss / 1024))"
}
R="$W/radd --config $W/radd.toml --json"
m1=$(measure backup1 $R backup pg); b1=$(cat "$W/out.json")
m2=$(measure backup2 $R backup pg); b2=$(cat "$W/out.json")
psql -qAt -h 127.0.0.1 -p "$PORT" -U postgres -c "SELECT pg_switch_wal()" >/dev/null; sleep 2
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
m3=$(measure restore $R restore latest --target "$W/restored" --no-archive)
calc() { python3 -c "print($1)"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
total=$(field "$b1" total_bytes)
printf '%-22s %10s %12s %10s %14s\n' step wall_s MB/s rss_MiB uploaded_MiB
for m in "$m1|$b1" "$m2|$b2"; do
  read -r label wall rss <<< "${m%%|*}"; json=${m#*|}
  printf '%-22s %10s %12.0f %10s %14.1f\n' "$label" "$wall" "$(calc "$total / 1048576 / $wall")" "$rss" "$(calc "$(field "$json" uploaded_bytes) / 1048576")"
done
read -r label wall rss <<< "$m3"
printf '%-22s %10s %12.0f %10s %14s\n' restore "$wall" "$(calc "$total / 1048576 / $wall")" "$rss" -
echo "cluster: $((total / 1048576)) MiB (pgbench scale $SCALE); second backup new bytes: $(field "$b2" new_bytes)"
