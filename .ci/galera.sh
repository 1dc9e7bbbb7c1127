#!/usr/bin/env bash
# A throwaway 3-node MariaDB Galera Cluster on loopback, for the scale-out tests.
#   .ci/galera.sh start DIR   -> starts the nodes under DIR, prints the nodes' SQLAlchemy URLs
#                                (comma-separated) on the last line and writes them to DIR/urls
#   .ci/galera.sh stop DIR    -> stops every node started under DIR
#   .ci/galera.sh kill DIR N  -> kill -9 node N (1-3), as a crash would
#   .ci/galera.sh rejoin DIR N -> starts node N again; it rejoins the cluster (IST or rsync
#                                SST) and the command returns once the node is Synced
# Each node gets free loopback ports (SQL, group communication, IST, SST); the first node
# bootstraps the cluster, the others join it with rsync SST. Nothing outside DIR is touched.
set -euo pipefail
cmd=${1:?usage: galera.sh start|stop|kill|rejoin DIR [N]}
dir=${2:?usage: galera.sh start|stop|kill|rejoin DIR [N]}
provider=${GALERA_PROVIDER:-/usr/lib/galera/libgalera_smm.so}
nodes=3

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

sql() { # node, statement
  mariadb --no-defaults -uroot -h127.0.0.1 -P"$(cat "$dir/n$1/port")" -N -B -e "$2"
}

wait_ready() { # node, seconds
  for _ in $(seq 1 $(( $2 * 4 ))); do
    if sql "$1" "SELECT 1" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$(cat "$dir/n$1/pid" 2>/dev/null || echo 0)" 2>/dev/null && [ -s "$dir/n$1/pid" ]; then
      break
    fi
    sleep 0.25
  done
  echo "galera node $1 did not start; its log:" >&2
  tail -n 40 "$dir/n$1/error.log" >&2 || true
  return 1
}

start() {
  [ -x "$(command -v mariadbd)" ] || { echo "mariadbd is not installed" >&2; exit 1; }
  [ -f "$provider" ] || { echo "the Galera provider $provider is missing (apt-get install galera-4)" >&2; exit 1; }
  command -v rsync >/dev/null || { echo "rsync is needed for Galera SST (apt-get install rsync)" >&2; exit 1; }
  if [ -e "$dir/n1" ]; then
    echo "$dir already holds a cluster: give start a new directory (mktemp -d)" >&2; exit 1
  fi
  mkdir -p "$dir"
  chmod 755 "$dir"
  local gports=() i
  for i in $(seq 1 $nodes); do
    mkdir -p "$dir/n$i"
    free_port >"$dir/n$i/port"
    gports+=("$(free_port)")
    echo "${gports[$((i-1))]}" >"$dir/n$i/gport"
  done
  local members
  members=$(printf '127.0.0.1:%s,' "${gports[@]}"); members=${members%,}
  for i in $(seq 1 $nodes); do
    local n="$dir/n$i" ist sst
    ist=$(free_port); sst=$(free_port)
    cat >"$n/my.cnf" <<CNF
[mysqld]
datadir=$n/data
socket=$n/mysqld.sock
pid-file=$n/mysqld.pid
log-error=$n/error.log
port=$(cat "$n/port")
bind-address=127.0.0.1
user=mysql
skip-name-resolve
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_flush_log_at_trx_commit=2
max_connections=300
wsrep_on=ON
wsrep_provider=$provider
wsrep_cluster_name=ass_test_cluster
wsrep_cluster_address=gcomm://$members
wsrep_node_name=node$i
wsrep_node_address=127.0.0.1:${gports[$((i-1))]}
wsrep_node_incoming_address=127.0.0.1:$(cat "$n/port")
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:$sst
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:${gports[$((i-1))]};ist.recv_addr=127.0.0.1:$ist;gcache.size=32M"
[client]
socket=$n/mysqld.sock
CNF
    if [ "$i" -eq 1 ]; then
      mariadb-install-db --defaults-file="$n/my.cnf" --user=mysql --auth-root-authentication-method=normal \
        --skip-test-db >"$n/install.log" 2>&1 || { cat "$n/install.log" >&2; exit 1; }
    else
      mkdir -p "$n/data"
    fi
    chown -R mysql:mysql "$n"
  done
  # First node bootstraps the cluster; the others join it one at a time (each takes an SST).
  for i in $(seq 1 $nodes); do
    local extra=()
    [ "$i" -eq 1 ] && extra=(--wsrep-new-cluster)
    setsid mariadbd --defaults-file="$dir/n$i/my.cnf" "${extra[@]}" >>"$dir/n$i/stdout.log" 2>&1 &
    echo $! >"$dir/n$i/pid"
    wait_ready "$i" 90
    if [ "$i" -eq 1 ]; then
      sql 1 "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION" >/dev/null 2>&1 || true
    fi
  done
  for _ in $(seq 1 120); do
    size=$(sql 1 "SHOW STATUS LIKE 'wsrep_cluster_size'" | awk '{print $2}')
    [ "$size" = "$nodes" ] && break
    sleep 0.25
  done
  [ "$size" = "$nodes" ] || { echo "the Galera cluster has $size nodes, not $nodes" >&2; exit 1; }
  sql 1 "CREATE DATABASE IF NOT EXISTS agent_session_store_test CHARACTER SET utf8mb4"
  local urls=()
  for i in $(seq 1 $nodes); do
    urls+=("mysql+aiomysql://root@127.0.0.1:$(cat "$dir/n$i/port")/agent_session_store_test?charset=utf8mb4")
  done
  (IFS=,; echo "${urls[*]}") | tee "$dir/urls"
}

stop() {
  local i pid
  for i in $(seq $nodes -1 1); do
    [ -f "$dir/n$i/pid" ] || continue
    pid=$(cat "$dir/n$i/pid")
    kill "$pid" 2>/dev/null || true
  done
  for i in $(seq 1 $nodes); do
    [ -f "$dir/n$i/pid" ] || continue
    pid=$(cat "$dir/n$i/pid")
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

kill_node() { # node
  local pid
  pid=$(cat "$dir/n$1/pid")
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
}

rejoin() { # node
  local i=$1 state
  if kill -0 "$(cat "$dir/n$i/pid")" 2>/dev/null; then
    echo "galera node $i is still running" >&2; exit 1
  fi
  setsid mariadbd --defaults-file="$dir/n$i/my.cnf" >>"$dir/n$i/stdout.log" 2>&1 &
  echo $! >"$dir/n$i/pid"
  wait_ready "$i" 90
  for _ in $(seq 1 240); do
    state=$(sql "$i" "SHOW STATUS LIKE 'wsrep_local_state_comment'" 2>/dev/null | awk '{print $2}')
    size=$(sql "$i" "SHOW STATUS LIKE 'wsrep_cluster_size'" 2>/dev/null | awk '{print $2}')
    [ "$state" = "Synced" ] && [ "$size" = "$nodes" ] && return 0
    sleep 0.25
  done
  echo "galera node $i did not get back to Synced in a cluster of $nodes (state $state)" >&2
  exit 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  kill) kill_node "${3:?usage: galera.sh kill DIR N}" ;;
  rejoin) rejoin "${3:?usage: galera.sh rejoin DIR N}" ;;
  *) echo "usage: galera.sh start|stop|kill|rejoin DIR [N]" >&2; exit 2 ;;
esac
