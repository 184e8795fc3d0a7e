#!/usr/bin/env bash
# Restore time after a chain of incrementals (issue 13 item 4: it must depend on the snapshot's
# size, not on the history behind it). A pgbench cluster is backed up once in full, then N times
# with pgbench transactions in between; the first and the last snapshot are restored (cold page
# cache when run as root) and wall time, CPU seconds (user+sys), peak RSS and the packs read
# are printed.
#   [RADD_BIN=radd] [RADD_BEFORE=other-radd] [TX=5000] bench/restore-incrementals.sh [scale] [N]
# Defaults: scale 30 (≈ 480 MiB), N 10, TX pgbench transactions between backups. RADD_BIN skips
# the release build; RADD_BEFORE also restores the last snapshot with another build (e.g. the
# previous commit's) for a before/after figure on the same repository. As root or postgres.
# Not part of the test suite: speed is measured here, never asserted in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-30}
N=${2:-10}
TX=${TX:-5000}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ -z "${RADD_BIN:-}" ]; then cargo build --release -q; RADD_BIN=$PWD/target/release/radd; fi
W=$(mktemp -d /tmp/radd-bench-XXXXXX); chmod 755 "$W"
cleanup() {
  [ -f "$W/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
cp "$RADD_BIN" "$W/radd"
[ -n "${RADD_BEFORE:-}" ] && cp "$RADD_BEFORE" "$W/radd-before"
RECIPIENT=$("$W/radd" keygen --identity "$W/identity.key" 2>/dev/null)
PORT=$(freeport)
cat > "$W/radd.toml" <<TOML
[repository]
path = "$W/repo"
[events]
dir = "$W/events"
[backup]
state_dir = "$W/state"
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
PGB=("$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres)
"${PGB[@]}" -i -q -s "$SCALE" postgres >/dev/null 2>&1
R="$W/radd --config $W/radd.toml --json"
first=$($R backup pg | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')
for _ in $(seq "$N"); do
  "${PGB[@]}" -n -c 2 -t "$((TX / 2))" postgres >/dev/null 2>&1
  last=$($R backup pg | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')
done
psql -qAt -h 127.0.0.1 -p "$PORT" -U postgres -c "SELECT pg_switch_wal()" >/dev/null; sleep 2
size=$(du -sm "$W/data" | cut -f1)

measure() { # label, binary, snapshot: one table row
  local label=$1 bin=$2 snapshot=$3 target="$W/restored-$1"
  cold
  /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$bin" --config "$W/radd.toml" --json restore "$snapshot" --target "$target" --no-archive > "$W/out.json"
  read -r wall user sys rss < "$W/time"
  python3 - "$W/out.json" "$label" "$wall" "$user" "$sys" "$rss" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); label, wall, user, sys_, rss = sys.argv[2:]
print(f"{label:<26} {wall:>8} {float(user) + float(sys_):>8.2f} {int(rss) // 1024:>8} {r.get('packs_read', '-'):>10} {r.get('packs_distinct', '-'):>14}")
PY
  rm -rf "$target"
}
printf '%-26s %8s %8s %8s %10s %14s\n' restore wall_s cpu_s rss_MiB packs_read packs_distinct
measure "full (first snapshot)" "$W/radd" "$first"
measure "after $N incrementals" "$W/radd" "$last"
if [ -n "${RADD_BEFORE:-}" ]; then
  measure "full, RADD_BEFORE" "$W/radd-before" "$first"
  measure "after $N, RADD_BEFORE" "$W/radd-before" "$last"
fi
echo "cluster: $size MiB on disk (pgbench scale $SCALE), $N incrementals of $TX transactions each"
