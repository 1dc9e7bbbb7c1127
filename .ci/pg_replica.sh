#!/usr/bin/env bash
# A throwaway PostgreSQL primary + streaming replica on loopback, for the scale-out tests.
#   .ci/pg_replica.sh start DIR     -> primary and replica (pg_basebackup -R) under DIR; prints
#                                      "PRIMARY_URL REPLICA_URL" on the last line (also DIR/urls)
#   .ci/pg_replica.sh promote DIR   -> promote the replica (after stopping the primary: failover)
#   .ci/pg_replica.sh stop-primary DIR | stop DIR
# Runs the server binaries as the postgres user (they refuse root); trust auth on 127.0.0.1 only.
# PG_REPLICA_SYNCHRONOUS=1: synchronous replication (synchronous_standby_names = '*', set once
# the replica streams): a commit is acknowledged only once the replica has flushed it.
set -euo pipefail
cmd=${1:?usage: pg_replica.sh start|promote|stop-primary|stop DIR}
dir=${2:?usage: pg_replica.sh start|promote|stop-primary|stop DIR}
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ctl() { as_pg "$bin/pg_ctl" -D "$dir/$1" -l "$dir/$1.log" -w -t 60 "${@:2}"; }

start() {
  if [ -e "$dir/primary" ]; then
    echo "$dir already holds a cluster: give start a new directory (mktemp -d)" >&2; exit 1
  fi
  mkdir -p "$dir"; chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  local pport rport
  pport=$(free_port); rport=$(free_port)
  echo "$pport" >"$dir/primary.port"; echo "$rport" >"$dir/replica.port"
  as_pg "$bin/initdb" -D "$dir/primary" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  cat >>"$dir/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pport
unix_socket_directories = '$dir'
wal_level = replica
max_wal_senders = 10
hot_standby = on
fsync = off
synchronous_commit = ${PG_REPLICA_SYNCHRONOUS_COMMIT:-on}
CONF
  echo "host replication postgres 127.0.0.1/32 trust" >>"$dir/primary/pg_hba.conf"
  ctl primary start >/dev/null
  as_pg "$bin/psql" -h 127.0.0.1 -p "$pport" -U postgres -qc "CREATE DATABASE agent_session_store_test"
  as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$dir/replica" -R -X stream --checkpoint=fast \
    >"$dir/basebackup.log" 2>&1
  cat >>"$dir/replica/postgresql.conf" <<CONF
port = $rport
CONF
  ctl replica start >/dev/null
  for _ in $(seq 1 120); do
    as_pg "$bin/psql" -h 127.0.0.1 -p "$rport" -U postgres -tAc "SELECT pg_is_in_recovery()" 2>/dev/null \
      | grep -q t && break
    sleep 0.25
  done
  if [ "${PG_REPLICA_SYNCHRONOUS:-0}" = 1 ]; then
    as_pg "$bin/psql" -h 127.0.0.1 -p "$pport" -U postgres -qc "ALTER SYSTEM SET synchronous_standby_names = '*'"
    as_pg "$bin/psql" -h 127.0.0.1 -p "$pport" -U postgres -qtAc "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 1 120); do
      as_pg "$bin/psql" -h 127.0.0.1 -p "$pport" -U postgres -tAc \
        "SELECT sync_state FROM pg_stat_replication" 2>/dev/null | grep -qx sync && break
      sleep 0.25
    done
  fi
  local base=postgresql+asyncpg://postgres@127.0.0.1
  echo "$base:$pport/agent_session_store_test $base:$rport/agent_session_store_test" | tee "$dir/urls"
}

case "$cmd" in
  start) start ;;
  promote) ctl replica promote >/dev/null ;;
  stop-primary) ctl primary stop -m immediate >/dev/null || true ;;
  stop)
    for node in replica primary; do
      [ -f "$dir/$node/postmaster.pid" ] && { ctl "$node" stop -m fast >/dev/null || true; }
    done ;;
  *) echo "usage: pg_replica.sh start|promote|stop-primary|stop DIR" >&2; exit 2 ;;
esac
