#!/usr/bin/env bash
# File-tree snapshot of many small files: wall time and peak RSS of the first `radd backup fs`,
# and of a second run with nothing changed (which must not re-read anything).
#   bench/fs-many-files.sh [files]     (default 1000000; files of 0-2 KiB in 1000 directories)
# Not part of the test suite. Run as any user; RADD_BIN=/path/to/radd skips the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-1000000}
if [ -z "${RADD_BIN:-}" ]; then cargo build --release -q; RADD_BIN=$PWD/target/release/radd; fi
W=$(mktemp -d /tmp/radd-fsbench-XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 - "$W/tree" "$FILES" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
for d in range(1000):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
for i in range(n):
    with open(f"{root}/d{i % 1000:03}/f{i}", "wb") as f:
        f.write(os.urandom(random.randint(0, 2048)))
PY
RECIPIENT=$("$RADD_BIN" keygen --identity "$W/identity.key" 2>/dev/null)
cat > "$W/radd.toml" <<TOML
[repository]
path = "$W/repo"
[keys]
recipients = ["$RECIPIENT"]
id_key_file = "$W/id.key"
identity_file = "$W/identity.key"
[events]
dir = "$W/events"
[backup]
state_dir = "$W/state"
TOML
"$RADD_BIN" --config "$W/radd.toml" repo init >/dev/null
sleep 1.1   # files must be older than the first snapshot's start by a second to be trusted unchanged
run() {
  /usr/bin/time -f "%e %M" -o "$W/time" "$RADD_BIN" --config "$W/radd.toml" --json backup fs "$W/tree" > "$W/out.json" 2> "$W/err.log" || { cat "$W/err.log"; exit 1; }
  read -r wall rss < "$W/time"
  python3 - "$1" "$wall" "$rss" "$W/out.json" <<'PY'
import json, sys
label, wall, rss, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = json.load(open(path))
print(f"{label:<8} {wall:>8.1f} s {rss / 1024:>8.0f} MiB  files {r['files']:>8}  read {r['read_bytes'] / 1e6:>8.1f} MB  "
      f"unchanged {r['files_unchanged']:>8}  uploaded {r['uploaded_bytes'] / 1e6:>8.1f} MB")
PY
}
echo "radd backup fs of $FILES small files"
run first
run second
