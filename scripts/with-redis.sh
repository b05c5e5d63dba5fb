#!/usr/bin/env bash
# Run a command with REDIS_URL pointing at a Redis that answers: the machine's own on 6379 if it is
# up, else a private redis-server started here (no persistence) and stopped when the command ends.
set -euo pipefail
if [ -z "${REDIS_URL:-}" ]; then
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    export REDIS_URL="redis://127.0.0.1:6379/0"
  elif command -v redis-server >/dev/null; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
    for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    export REDIS_URL="redis://127.0.0.1:$port/0"
  else
    echo "with-redis: no Redis on 6379 and no redis-server installed; Redis tests will fail" >&2
  fi
fi
"$@"
