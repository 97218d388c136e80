#!/usr/bin/env bash
# kvcache-replay --engines 4 --redis URL against a redis-server this script
# starts on a free loopback port (and stops): the engines share the trace's
# blocks through Redis, hitting exactly what they hit sharing an in-process
# tier that keeps everything (the replay lets each request's writes land
# before the next request), and far more than alone; nothing is dropped.
#
#   bash replay_redis_test.sh path/to/kvcache-replay path/to/redis-server
set -euo pipefail
replay=$1
server=$2
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$server" --port "$port" --bind 127.0.0.1 --dir "$work" --save "" --appendonly no \
  --logfile "$work/redis.log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done

rate() { grep -o 'prefix hit rate   [0-9.]*' "$1" | grep -o '[0-9.]*$'; }
"$replay" --engines 4 --capacity 287 --decode-ms 0 > "$work/alone.txt"
"$replay" --engines 4 --capacity 287 --decode-ms 0 --shared-tier-blocks 100000 > "$work/shared.txt"
"$replay" --engines 4 --capacity 287 --decode-ms 0 --redis "redis://127.0.0.1:$port/0" \
  | tee "$work/redis.txt"
grep -q "redis             redis://127.0.0.1:$port/0" "$work/redis.txt"
grep -q " 0 dropped (queue full), 0 errors" "$work/redis.txt"
alone=$(rate "$work/alone.txt"); shared=$(rate "$work/shared.txt"); redis=$(rate "$work/redis.txt")
echo "4 engines: alone $alone%, in-process shared tier $shared%, Redis $redis%"
python3 - "$alone" "$shared" "$redis" <<'PY'
import sys
alone, shared, redis = map(float, sys.argv[1:])
assert redis > alone + 10, f"Redis sharing {redis}% is not above the engines alone ({alone}%)"
assert redis == shared, f"Redis sharing {redis}% differs from in-process sharing {shared}%"
PY

if "$replay" --redis "redis://127.0.0.1:1/0" --engines 2 --decode-ms 0 > "$work/down.txt"; then
  grep -q "errors" "$work/down.txt"  # no server: misses, counted; the replay still runs
else
  echo "a replay against an absent server must run on its own pools"; exit 1
fi
echo "replay over Redis: ok"
