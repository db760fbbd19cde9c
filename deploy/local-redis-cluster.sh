#!/usr/bin/env bash
# A local Redis Cluster of three masters on free ports, for `just bench-cluster` and
# `just demo-cells` (the tests start their own from Rust).
#   local-redis-cluster.sh start <dir>   starts it (data and logs under <dir>), prints its nodes
#                                        as REDIS_CLUSTER_NODES wants them (host:port,...)
#   local-redis-cluster.sh stop <dir>    shuts its masters down
set -euo pipefail
action=${1:?start or stop}
dir=${2:?a directory for its masters}
case "$action" in
start)
    # Absolute: each master changes to its directory before it opens its log.
    dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
    read -r -a ports <<< "$(python3 -c 'import socket
ports = []
while len(ports) < 3:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p < 55000 and p not in ports: ports.append(p)
print(*ports)')"
    for port in "${ports[@]}"; do
        mkdir -p "$dir/$port"
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
            --save "" --appendonly no --dir "$dir/$port" --daemonize yes --logfile "$dir/$port/log"
    done
    for port in "${ports[@]}"; do
        until redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-yes >/dev/null
    until redis-cli -p "${ports[0]}" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
    nodes=$(printf '127.0.0.1:%s,' "${ports[@]}")
    echo "${nodes%,}"
    ;;
stop)
    for port_dir in "$dir"/*/; do
        port=$(basename "$port_dir")
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    ;;
*)
    echo "usage: $0 start|stop <dir>" >&2
    exit 2
    ;;
esac
