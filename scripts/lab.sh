# shellcheck shell=bash
# scripts/lab.sh — a network-namespace lab for promgate's end-to-end tests and
# benchmark. Source it; do not run it.
#
# Topology (one lab per run, every name carries a random 6-hex LAB_ID):
#
#   netns pglab-ID-server     br0 192.168.77.1/24  (+ lo; upstreams live here)
#        │ vcN (bridge port)
#   netns pglab-ID-NAME       eth0 192.168.77.N/24 (N = 2, 3, ...)
#
# All traffic stays inside namespaces this library created; nothing is routed
# to the root namespace or beyond.
#
# Functions:
#   lab_up                      create the server netns, register cleanup trap
#   lab_add_client NAME         client netns + veth on the server bridge
#   lab_ns NAME                 print the netns name of "server" or a client
#   lab_ip NAME                 print the veth address of "server" or a client
#   lab_ifname SUFFIX           print a globally unique (<=15 chars) ifname
#   lab_spawn NS LOG CMD...     start CMD in NS in its own session; sets LAB_LAST_PID
#   lab_start_prometheus NS [FLAGS...]
#                               Debian prometheus, temp storage, 1 s self-scrape,
#                               listen ${LAB_PROM_LISTEN:-127.0.0.1:9090}; waits /-/ready;
#                               $LAB_PROM_EXTRA_SCRAPE (YAML, items of scrape_configs
#                               indented by 2) is appended to its scrape_configs
#   lab_start_alertmanager NS LISTEN CONFIG [FLAGS...]
#                               Debian prometheus-alertmanager, temp storage, no
#                               cluster port; waits /-/ready; sets LAB_AM_PID
#   lab_start_nginx NS LISTEN ROOT
#                               static file server (nginx-light); waits for 200
#   lab_start_pyhttp NS LISTEN ROOT
#                               static file server (python3 -m http.server); waits for 200
#   lab_wg_iface NS IFNAME CONF ADDR [ROUTE...]
#                               wireguard-go -f IFNAME in NS, wg setconf CONF,
#                               address, MTU 1420, link up, routes
#   lab_wg_client NS IFNAME PRIVKEY ADDR GW_PUBKEY ENDPOINT ALLOWED
#                               client-side wrapper of lab_wg_iface (PRIVKEY is a
#                               base64 key or a file holding one)
#   lab_start_promgate NS CONFIG [ARGS...]
#                               promgate serve --config CONFIG in NS; waits for the
#                               UDP bind and admin /healthz; sets LAB_PROMGATE_PID
#   lab_wait_promgate NS CONFIG PID
#   lab_cleanup                 idempotent; kills every started process group,
#                               deletes namespaces, wireguard sockets, temp dirs
#
# Stale labs: every lab registers "OWNER_PID LAB_DIR" in /run/pglab/ID. lab_up
# reaps labs (namespaces named pglab-ID-*) whose owner process is gone, and
# pglab-* namespaces that have no registration at all. Live labs of concurrent
# runs are left alone.

LAB_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB_REGISTRY=/run/pglab
LAB_SUBNET=192.168.77

lab_log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
lab_die() { lab_log "FATAL: $*"; exit 1; }

# lab_require_tools TOOL... — die loudly if any tool is missing or not root.
lab_require_tools() {
    [ "$(id -u)" = 0 ] || lab_die "must run as root (network namespaces, wireguard-go on TUN)"
    local t missing=()
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] || lab_die "missing tools: ${missing[*]} (apt-get install -y --no-install-recommends wireguard-go wireguard-tools prometheus iproute2 curl wrk iputils-ping procps python3)"
}

# Kill every process in a namespace, then delete it.
lab__del_ns() {
    local ns=$1 pids
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null)
    if [ -n "$pids" ]; then
        kill -TERM $pids 2>/dev/null
        for _ in $(seq 1 20); do
            pids=$(ip netns pids "$ns" 2>/dev/null)
            [ -z "$pids" ] && break
            sleep 0.1
        done
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    fi
    ip netns del "$ns" 2>/dev/null || true
}

# Reap labs of this prefix whose owner is dead, and unregistered pglab-* netns.
lab_reap_stale() {
    local f id owner dir ns
    mkdir -p "$LAB_REGISTRY"
    for f in "$LAB_REGISTRY"/*; do
        [ -f "$f" ] || continue
        id=$(basename "$f")
        read -r owner dir < "$f" || true
        if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then continue; fi
        lab_log "reaping stale lab $id (owner ${owner:-?} gone)"
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^pglab-$id-"); do
            lab__del_ns "$ns"
        done
        rm -f /var/run/wireguard/wg"$id"*.sock
        case "$dir" in /tmp/pglab-"$id".*) rm -rf "$dir" ;; esac
        rm -f "$f"
    done
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^pglab-'); do
        id=${ns#pglab-}; id=${id%%-*}
        [ -f "$LAB_REGISTRY/$id" ] && continue
        lab_log "reaping unregistered namespace $ns"
        lab__del_ns "$ns"
    done
}

lab_up() {
    lab_require_tools ip wg wireguard-go curl ss setsid timeout
    [ -z "${LAB_ID:-}" ] || lab_die "lab_up called twice"
    mkdir -p "$LAB_REGISTRY"
    LAB_ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    LAB_DIR=$(mktemp -d "/tmp/pglab-$LAB_ID.XXXX")
    chmod 755 "$LAB_DIR"
    echo "$$ $LAB_DIR" > "$LAB_REGISTRY/$LAB_ID"
    LAB_CLEANED=0
    LAB_PIDS=()
    LAB_NSES=()
    LAB_IFNAMES=()
    declare -gA LAB_NS=() LAB_IP=()
    LAB_NEXT_HOST=2
    trap 'lab_cleanup' EXIT
    trap 'lab_cleanup; exit 130' INT
    trap 'lab_cleanup; exit 143' TERM
    lab_reap_stale

    local ns="pglab-$LAB_ID-server"
    ip netns add "$ns" || lab_die "ip netns add $ns"
    LAB_NSES+=("$ns")
    LAB_NS[server]=$ns
    LAB_IP[server]=$LAB_SUBNET.1
    ip -n "$ns" link set lo up
    ip -n "$ns" link add br0 type bridge
    ip -n "$ns" addr add "$LAB_SUBNET.1/24" dev br0
    ip -n "$ns" link set br0 up
    lab_log "lab $LAB_ID up (server netns $ns, dir $LAB_DIR)"
}

lab_ns() { [ -n "${LAB_NS[$1]:-}" ] || lab_die "no lab node '$1'"; echo "${LAB_NS[$1]}"; }
lab_ip() { [ -n "${LAB_IP[$1]:-}" ] || lab_die "no lab node '$1'"; echo "${LAB_IP[$1]}"; }

lab_add_client() {
    local name=$1 srv ns host
    [[ $name =~ ^[a-z0-9]{1,20}$ ]] || lab_die "client name must be [a-z0-9]{1,20}: '$name'"
    [ -z "${LAB_NS[$name]:-}" ] || lab_die "client $name exists"
    srv=${LAB_NS[server]}
    ns="pglab-$LAB_ID-$name"
    host=$LAB_NEXT_HOST
    LAB_NEXT_HOST=$((host + 1))
    [ "$host" -lt 250 ] || lab_die "too many clients"
    ip netns add "$ns" || lab_die "ip netns add $ns"
    LAB_NSES+=("$ns")
    LAB_NS[$name]=$ns
    LAB_IP[$name]=$LAB_SUBNET.$host
    ip -n "$ns" link set lo up
    ip -n "$srv" link add "vc$host" type veth peer name eth0 netns "$ns" || lab_die "veth for $name"
    ip -n "$srv" link set "vc$host" master br0 up
    ip -n "$ns" addr add "$LAB_SUBNET.$host/24" dev eth0
    ip -n "$ns" link set eth0 up
    lab_log "client $name: netns $ns, $LAB_SUBNET.$host"
}

# lab_ifname SUFFIX: wg<LAB_ID><SUFFIX>, at most 15 characters. wireguard-go's
# control socket /var/run/wireguard/IFNAME.sock is shared by all namespaces.
lab_ifname() {
    local n="wg$LAB_ID$1"
    [ ${#n} -le 15 ] || lab_die "interface name too long: $n"
    echo "$n"
}

# lab_spawn NS LOGNAME CMD... — run CMD in NS as the leader of a new session
# (so lab_cleanup can kill its whole process group). Sets LAB_LAST_PID.
lab_spawn() {
    local ns=$1 log=$2; shift 2
    setsid ip netns exec "$ns" "$@" > "$LAB_DIR/$log.log" 2>&1 < /dev/null &
    LAB_LAST_PID=$!
    LAB_PIDS+=("$LAB_LAST_PID")
}

# lab_wait_http NS URL SECONDS [CODES] — poll until URL answers with a status
# matching the regex CODES (default 200).
lab_wait_http() {
    local ns=$1 url=$2 secs=$3 want=${4:-200} code deadline
    deadline=$((SECONDS + secs))
    while [ $SECONDS -lt $deadline ]; do
        code=$(ip netns exec "$ns" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)
        [[ $code =~ ^($want)$ ]] && return 0
        sleep 0.3
    done
    return 1
}

lab_pid_alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

lab_start_prometheus() {
    local ns=$1; shift
    command -v prometheus >/dev/null || lab_die "prometheus not installed"
    local listen=${LAB_PROM_LISTEN:-127.0.0.1:9090}
    local port=${listen##*:} host=${listen%:*}
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    local d="$LAB_DIR/prom-$port"
    mkdir -p "$d/data"
    cat > "$d/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['$host:$port']
${LAB_PROM_EXTRA_SCRAPE:-}
EOF
    lab_spawn "$ns" "prometheus-$port" prometheus \
        --config.file="$d/prometheus.yml" \
        --storage.tsdb.path="$d/data" \
        --web.listen-address="$listen" "$@"
    LAB_PROM_PID=$LAB_LAST_PID
    lab_wait_http "$ns" "http://$host:$port/-/ready" 60 ||
        { tail -20 "$LAB_DIR/prometheus-$port.log" >&2; lab_die "prometheus not ready on $listen"; }
    lab_log "prometheus ready on $listen in $ns (pid $LAB_PROM_PID)"
}

# lab_start_alertmanager NS LISTEN CONFIG [FLAGS...] — Debian's
# prometheus-alertmanager with CONFIG, its silences and notification log in
# the lab's directory, and no cluster listener (an empty
# --cluster.listen-address: one instance gossips with nobody). Waits for
# /-/ready. Sets LAB_AM_PID.
lab_start_alertmanager() {
    local ns=$1 listen=$2 cfg=$3; shift 3
    command -v prometheus-alertmanager >/dev/null ||
        lab_die "prometheus-alertmanager not installed (apt-get install -y --no-install-recommends prometheus-alertmanager)"
    local port=${listen##*:} host=${listen%:*}
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    local d="$LAB_DIR/alertmanager-$port"
    mkdir -p "$d"
    lab_spawn "$ns" "alertmanager-$port" prometheus-alertmanager \
        --config.file="$cfg" \
        --storage.path="$d" \
        --web.listen-address="$listen" \
        --cluster.listen-address= "$@"
    LAB_AM_PID=$LAB_LAST_PID
    lab_wait_http "$ns" "http://$host:$port/-/ready" 30 ||
        { tail -20 "$LAB_DIR/alertmanager-$port.log" >&2; lab_die "alertmanager not ready on $listen"; }
    lab_log "alertmanager ready on $listen in $ns (pid $LAB_AM_PID)"
}

# lab_start_nginx NS LISTEN ROOT — nginx-light serving ROOT, sendfile on.
lab_start_nginx() {
    local ns=$1 listen=$2 root=$3
    command -v nginx >/dev/null || lab_die "nginx not installed (apt-get install -y --no-install-recommends nginx-light)"
    local d="$LAB_DIR/nginx-${listen##*:}"
    mkdir -p "$d/tmp"
    cat > "$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $d/tmp;
    proxy_temp_path $d/tmp;
    fastcgi_temp_path $d/tmp;
    uwsgi_temp_path $d/tmp;
    scgi_temp_path $d/tmp;
    types { application/octet-stream bin; }
    server {
        listen $listen;
        root $root;
    }
}
EOF
    lab_spawn "$ns" "nginx-${listen##*:}" nginx -c "$d/nginx.conf" -e "$d/error.log"
    local host=${listen%:*}; [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    lab_wait_http "$ns" "http://$host:${listen##*:}/" 20 '200|403|404' ||
        lab_die "nginx not answering on $listen"
    lab_log "nginx on $listen in $ns (pid $LAB_LAST_PID)"
}

# lab_start_pyhttp NS LISTEN ROOT — python3 -m http.server (threaded) serving
# ROOT; for the e2e tests, which do not need nginx. Sets LAB_LAST_PID.
lab_start_pyhttp() {
    local ns=$1 listen=$2 root=$3
    local host=${listen%:*} port=${listen##*:}
    lab_spawn "$ns" "pyhttp-$port" python3 -m http.server --bind "$host" --directory "$root" "$port"
    local pid=$LAB_LAST_PID
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    lab_wait_http "$ns" "http://$host:$port/" 20 '200|403|404' ||
        { tail -5 "$LAB_DIR/pyhttp-$port.log" >&2; lab_die "python3 http.server not answering on $listen"; }
    LAB_LAST_PID=$pid
    lab_log "python3 http.server on $listen in $ns (pid $pid)"
}

# lab_wg_iface NS IFNAME CONF ADDR [ROUTE...]
lab_wg_iface() {
    local ns=$1 ifname=$2 conf=$3 addr=$4; shift 4
    local sock="/var/run/wireguard/$ifname.sock" r
    [ ${#ifname} -le 15 ] || lab_die "ifname too long: $ifname"
    [ -e "$sock" ] && lab_die "wireguard socket $sock already exists (name collision)"
    LAB_IFNAMES+=("$ifname")
    lab_spawn "$ns" "wg-$ifname" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
        LOG_LEVEL="${LAB_WG_LOG_LEVEL:-error}" wireguard-go -f "$ifname"
    for _ in $(seq 1 100); do
        [ -S "$sock" ] && break
        lab_pid_alive "$LAB_LAST_PID" || { cat "$LAB_DIR/wg-$ifname.log" >&2; lab_die "wireguard-go $ifname exited"; }
        sleep 0.1
    done
    [ -S "$sock" ] || lab_die "wireguard-go $ifname: no control socket after 10 s"
    ip netns exec "$ns" wg setconf "$ifname" "$conf" || lab_die "wg setconf $ifname"
    ip -n "$ns" addr add "$addr" dev "$ifname" || lab_die "addr $addr on $ifname"
    ip -n "$ns" link set "$ifname" mtu 1420 up
    for r in "$@"; do ip -n "$ns" route replace "$r" dev "$ifname" || lab_die "route $r"; done
    lab_log "wireguard-go $ifname in $ns: $addr (pid $LAB_LAST_PID)"
}

lab_wg_client() {
    local ns=$1 ifname=$2 priv=$3 addr=$4 gwpub=$5 endpoint=$6 allowed=$7
    [ -f "$priv" ] && priv=$(cat "$priv")
    local conf="$LAB_DIR/$ifname.conf" r routes=()
    umask 077
    cat > "$conf" <<EOF
[Interface]
PrivateKey = $priv

[Peer]
PublicKey = $gwpub
Endpoint = $endpoint
AllowedIPs = $allowed
EOF
    umask 022
    IFS=', ' read -r -a routes <<< "$allowed"
    lab_wg_iface "$ns" "$ifname" "$conf" "$addr" "${routes[@]}"
}

# lab_keypair DIR NAME — writes DIR/NAME.key (0600) and DIR/NAME.pub with wg.
lab_keypair() {
    (umask 077; wg genkey > "$1/$2.key")
    wg pubkey < "$1/$2.key" > "$1/$2.pub"
}

lab_promgate_bin() {
    local b=${PROMGATE_BIN:-$LAB_REPO_ROOT/target/release/promgate}
    [ -x "$b" ] || lab_die "promgate binary not found at $b (build it, or set PROMGATE_BIN)"
    echo "$b"
}

# Values from the promgate TOML config (simple key = value lines).
lab__toml_get() { # FILE SECTION KEY
    awk -v s="[$2]" -v k="$3" '
        /^\[/ { cur = $0; sub(/[ \t]+$/, "", cur) }
        cur == s && $1 == k { sub(/^[^=]*=[ \t]*/, ""); gsub(/"/, ""); sub(/[ \t]*#.*/, ""); print; exit }
    ' "$1"
}

# lab_wait_promgate NS CONFIG PID — UDP port bound and admin /healthz == 200.
lab_wait_promgate() {
    local ns=$1 cfg=$2 pid=$3 port admin deadline
    port=$(lab__toml_get "$cfg" gateway listen_port)
    admin=$(lab__toml_get "$cfg" admin listen)
    deadline=$((SECONDS + 20))
    while [ $SECONDS -lt $deadline ]; do
        lab_pid_alive "$pid" || { tail -30 "$LAB_DIR/promgate"*.log >&2; lab_die "promgate (pid $pid) exited during startup"; }
        if ip netns exec "$ns" ss -Hlun "sport = :$port" | grep -q . &&
            { [ -z "$admin" ] || [ "$(ip netns exec "$ns" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$admin/healthz")" = 200 ]; }; then
            lab_log "promgate ready in $ns (pid $pid, udp $port, admin ${admin:-none})"
            return 0
        fi
        sleep 0.2
    done
    tail -30 "$LAB_DIR/promgate"*.log >&2
    lab_die "promgate not ready after 20 s (udp :$port bound? admin http://$admin/healthz?)"
}

lab_start_promgate() {
    local ns=$1 cfg=$2; shift 2
    local bin; bin=$(lab_promgate_bin)
    lab_spawn "$ns" "promgate-$(basename "$cfg" .toml)" "$bin" serve --config "$cfg" "$@"
    LAB_PROMGATE_PID=$LAB_LAST_PID
    lab_wait_promgate "$ns" "$cfg" "$LAB_PROMGATE_PID"
}

# lab_stop_pid PID — TERM the process group, wait up to 5 s, then KILL.
lab_stop_pid() {
    local pid=$1
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

lab_cleanup() {
    [ "${LAB_CLEANED:-1}" = 0 ] || return 0
    LAB_CLEANED=1
    trap - INT TERM
    local pid ns ifn
    for pid in "${LAB_PIDS[@]}"; do lab_stop_pid "$pid"; done
    for ns in "${LAB_NSES[@]}"; do lab__del_ns "$ns"; done
    for ifn in "${LAB_IFNAMES[@]}"; do rm -f "/var/run/wireguard/$ifn.sock"; done
    if [ -n "${LAB_KEEP_DIR:-}" ]; then
        lab_log "keeping $LAB_DIR (LAB_KEEP_DIR set)"
    else
        case "${LAB_DIR:-}" in /tmp/pglab-*) rm -rf "$LAB_DIR" ;; esac
    fi
    rm -f "$LAB_REGISTRY/${LAB_ID:-none}"
    lab_log "lab ${LAB_ID:-?} cleaned up"
}

# lab_dump_logs [LINES] — print the tail of every process log of this lab.
lab_dump_logs() {
    local f
    for f in "$LAB_DIR"/*.log; do
        [ -f "$f" ] || continue
        echo "----- $(basename "$f") (last ${1:-20} lines) -----" >&2
        tail -n "${1:-20}" "$f" >&2
    done
}
