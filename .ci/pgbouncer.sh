#!/usr/bin/env bash
# PgBouncer in transaction pooling mode in front of the local PostgreSQL, for the tests.
#   .ci/pgbouncer.sh start DIR   -> config, logs and pid in DIR; prints the port it listens on
#   .ci/pgbouncer.sh stop DIR    -> stops the PgBouncer started with DIR
# It listens on a free loopback port only. Few server connections per database, so client
# connections share them as they would in production (what breaks named prepared statements).
set -euo pipefail
action=${1:?usage: pgbouncer.sh start|stop DIR}
dir=${2:?usage: pgbouncer.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

case "$action" in
start)
  if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    echo "pgbouncer is not installed: apt-get install -y pgbouncer" >&2
    exit 1
  fi
  bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '"postgres" ""\n' >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
  # PgBouncer refuses to run as root: as root, it drops to the postgres user.
  as_user=()
  if [ "$(id -u)" -eq 0 ]; then
    as_user=(-u postgres)
    chown -R postgres "$dir"
  fi
  "$bin" -d "${as_user[@]}" "$dir/pgbouncer.ini"
  for _ in $(seq 1 50); do
    if pg_isready -h 127.0.0.1 -p "$port" -q 2>/dev/null; then
      echo "$port"
      exit 0
    fi
    sleep 0.2
  done
  echo "pgbouncer did not start listening on 127.0.0.1:$port; see $dir/pgbouncer.log" >&2
  exit 1
  ;;
stop)
  if [ -f "$dir/pgbouncer.pid" ]; then
    kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    for _ in $(seq 1 25); do
      [ -f "$dir/pgbouncer.pid" ] || break
      sleep 0.2
    done
  fi
  ;;
*)
  echo "usage: pgbouncer.sh start|stop DIR" >&2
  exit 2
  ;;
esac
