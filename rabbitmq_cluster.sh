#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster, to try the service's cluster mode on one machine:
#   ./rabbitmq_cluster.sh start              starts the nodes, joins them, prints the BROKER_URL
#   ./rabbitmq_cluster.sh stop               stops the nodes and deletes their data
#   ./rabbitmq_cluster.sh ctl a stop_app     rabbitmqctl against node a, b or c, with the cluster's cookie
#   ./rabbitmq_cluster.sh url                the BROKER_URL again
# The nodes are $CLUSTER_NAME-a@localhost, -b and -c (default notif-*), listening for AMQP on
# 127.0.0.1 at $CLUSTER_PORT, +1 and +2 (default 5681-5683), for Erlang distribution at those
# +20000, with their data, logs and Erlang cookie under $CLUSTER_DIR (default var/cluster) and the
# management plugin off. They share nothing with a RabbitMQ already running on the machine (its
# node name, ports, data, cookie and configuration files are all left alone) but epmd, which every
# Erlang node on a machine registers with.
set -euo pipefail
cd "$(dirname "$0")"

name=${CLUSTER_NAME:-notif}
port=${CLUSTER_PORT:-5681}
mkdir -p "${CLUSTER_DIR:-var/cluster}"
dir=$(cd "${CLUSTER_DIR:-var/cluster}" && pwd)
nodes=(a b c)
# The package's scripts, not the /usr/sbin wrappers: those switch to the rabbitmq user, and with it
# to that user's HOME and the system node's cookie.
bin=${RABBITMQ_BIN:-}
if [ -z "$bin" ] && [ -d /usr/lib/rabbitmq/bin ]; then bin=/usr/lib/rabbitmq/bin; fi
server=${bin:+$bin/}rabbitmq-server
rabbitmqctl=${bin:+$bin/}rabbitmqctl

index() { case "$1" in a) echo 0 ;; b) echo 1 ;; c) echo 2 ;; *) echo "no node $1 (a, b or c)" >&2; exit 2 ;; esac; }
node_name() { echo "$name-$1@localhost"; }

# What every rabbitmq-server and rabbitmqctl run here sees: the cluster's own HOME (for its
# .erlang.cookie) and environment file (instead of /etc/rabbitmq/rabbitmq-env.conf, which names the
# system node), distribution on the loopback interface only, CLI ports apart from the system's.
common_env() {
  export HOME="$dir/home"
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export ERL_CRASH_DUMP="$dir/erl_crash.dump"
  export RABBITMQ_CTL_DIST_PORT_MIN=$((port + 30000)) RABBITMQ_CTL_DIST_PORT_MAX=$((port + 30010))
}

ctl() {
  local node=$1
  shift
  index "$node" >/dev/null
  (common_env && "$rabbitmqctl" -n "$(node_name "$node")" "$@")
}

# Whether any of the nodes' processes is alive, from the pid files the nodes write.
running() {
  local node pid
  for node in "${nodes[@]}"; do
    pid=$(cat "$dir/$node/pid" 2>/dev/null) || continue
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

url() {
  local urls=() node
  for node in "${nodes[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$((port + $(index "$node")))/%2F"); done
  (IFS=,; echo "${urls[*]}")
}

start_node() {
  local node=$1 base="$dir/$1"
  mkdir -p "$base/log"
  echo "listeners.tcp.1 = 127.0.0.1:$((port + $(index "$node")))" >"$base/rabbitmq.conf"
  echo "[]." >"$base/enabled_plugins"
  (
    common_env
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(node_name "$node")
    export RABBITMQ_DIST_PORT=$((port + 20000 + $(index "$node")))
    export RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$base/mnesia"
    export RABBITMQ_LOG_BASE="$base/log"
    export RABBITMQ_PID_FILE="$base/pid"
    "$server" -detached
  )
}

start() {
  if running; then
    echo "The cluster is already running (./rabbitmq_cluster.sh stop stops it)." >&2
  else
    # A cluster left from an earlier run is started afresh: it only ever held test messages.
    rm -rf "${dir:?}"/{a,b,c,home}
    mkdir -p "$dir/home"
    : >"$dir/rabbitmq-env.conf"
    # One cookie for the three nodes and the CLI: it is what lets them talk to each other.
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/home/.erlang.cookie")
    chmod 400 "$dir/home/.erlang.cookie"
    for node in "${nodes[@]}"; do start_node "$node"; done
    # `wait` waits for the node's pid file, then for the node to boot (await_startup fails on a node
    # that has not registered yet).
    for node in "${nodes[@]}"; do ctl "$node" wait "$dir/$node/pid" --timeout 120 >/dev/null; done
    for node in b c; do
      ctl "$node" stop_app >/dev/null
      ctl "$node" join_cluster "$(node_name a)" >/dev/null
      ctl "$node" start_app >/dev/null
      ctl "$node" await_startup --timeout 120 >/dev/null
    done
    echo "Started $(node_name a), $(node_name b) and $(node_name c); data in $dir" >&2
  fi
  echo "BROKER_URL=$(url)"
  echo "(with RABBITMQ_QUEUE_TYPE=quorum for replicated queues)" >&2
}

stop() {
  local node
  for node in "${nodes[@]}"; do
    # shutdown waits for the node's VM to exit; a node that is not running is no error here.
    ctl "$node" shutdown >/dev/null 2>&1 || true
  done
  rm -rf "${dir:?}"/{a,b,c,home,rabbitmq-env.conf}
  echo "Stopped the cluster's nodes and deleted their data in $dir" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "BROKER_URL=$(url)" ;;
  ctl) shift; [ $# -ge 2 ] || { echo "usage: $0 ctl <a|b|c> <rabbitmqctl command>" >&2; exit 2; }; ctl "$@" ;;
  *) echo "usage: $0 start | stop | url | ctl <a|b|c> <rabbitmqctl command>" >&2; exit 2 ;;
esac
