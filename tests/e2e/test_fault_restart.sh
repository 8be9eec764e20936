#!/usr/bin/env bash
# Fault suite (issue 13): the gateway restarts under a running client.
#
# vera's client asks every 0.5 s and nobody touches it. promgate is stopped
# and started again with the same key: its sessions are gone, so vera's
# packets are dropped until her wireguard-go gives up on the session and
# handshakes again (WireGuard's own bound: keepalive timeout 10 s + rekey
# timeout 5 s, about 15 s). Proves vera is served again within 18 s of the
# new gateway being ready, with no client action.
#
# The same test runs against the baseline of scripts/bench, a plain
# wireguard-go server on TUN in the server netns (the kernel has no
# WireGuard module here) in front of the same Prometheus, and both figures
# are printed side by side.
#
#   vera (a) 10.13.13.2 -> promgate
#   kim  (k) 10.14.14.2 -> wireguard-go baseline 10.14.14.1:51822
set -u
. "$(dirname "$0")/faults_lib.sh"

BOUND_MS=${RESTART_BOUND_MS:-18000}
faults_setup a
lab_add_client k
LAB_PROM_LISTEN=0.0.0.0:9090 lab_start_prometheus "$SRV"
lab_start_promgate "$SRV" "$D/gateway.toml"
PG=$LAB_PROMGATE_PID
faults_client a

# The baseline server and its client.
lab_keypair "$D" base
lab_keypair "$D" k
SIF=$(lab_ifname s)
cat > "$D/base.conf" <<EOF
[Interface]
PrivateKey = $(cat "$D/base.key")
ListenPort = 51822

[Peer]
PublicKey = $(cat "$D/k.pub")
AllowedIPs = 10.14.14.2/32
EOF
lab_wg_iface "$SRV" "$SIF" "$D/base.conf" 10.14.14.1/24
BASE_PID=$LAB_LAST_PID
lab_wg_client "$(lab_ns k)" "$(lab_ifname k)" "$D/k.key" 10.14.14.2/32 "$(cat "$D/base.pub")" "$(lab_ip server):51822" 10.14.14.1/32

check "vera reaches Prometheus through promgate" retry 15 expect_code a "http://$GW/-/ready" 200
check "kim reaches Prometheus through the baseline" retry 15 expect_code k "http://10.14.14.1:9090/-/ready" 200

# poll NODE URL OUT — a client loop: one request every 0.5 s, each line
# "EPOCH_MS CODE" appended to OUT, until OUT.stop exists.
poll() {
    local c
    while [ ! -e "$3.stop" ]; do
        c=$(on "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$2")
        echo "$(date +%s%3N) $c" >> "$3"
        sleep 0.5
    done
}
# first_ok_after OUT T_MS — ms from T_MS to the first 200 logged after it.
first_ok_after() {
    awk -v t="$2" '$1 >= t && $2 == 200 { print $1 - t; found = 1; exit } END { if (!found) print -1 }' "$1"
}

# measure NAME NODE URL RESTART-FUNCTION — sets MEASURED_MS.
measure() {
    local out="$D/poll-$1.log" pid t_ready
    : > "$out"
    poll "$2" "$3" "$out" &
    pid=$!
    sleep 2
    "$4"
    t_ready=$(date +%s%3N)
    sleep $((BOUND_MS / 1000 + 4))
    touch "$out.stop"
    wait "$pid"
    MEASURED_MS=$(first_ok_after "$out" "$t_ready")
}

restart_promgate() {
    lab_stop_pid "$PG"
    sleep 1
    lab_start_promgate "$SRV" "$D/gateway.toml"
    PG=$LAB_PROMGATE_PID
}
restart_baseline() {
    lab_stop_pid "$BASE_PID"
    rm -f "/var/run/wireguard/$SIF.sock"
    sleep 1
    lab_wg_iface "$SRV" "$SIF" "$D/base.conf" 10.14.14.1/24
    BASE_PID=$LAB_LAST_PID
}

t_log "restarting promgate under vera's running client"
measure promgate a "http://$GW/-/ready" restart_promgate
pg_ms=$MEASURED_MS
check "vera served again within ${BOUND_MS} ms of the new gateway being ready, no client action (${pg_ms} ms)" \
    test "$pg_ms" -ge 0 -a "$pg_ms" -le "$BOUND_MS"
t_log "restarting the wireguard-go baseline under kim's running client"
measure baseline k "http://10.14.14.1:9090/-/ready" restart_baseline
base_ms=$MEASURED_MS
check "baseline: kim served again within ${BOUND_MS} ms (${base_ms} ms)" \
    test "$base_ms" -ge 0 -a "$base_ms" -le "$BOUND_MS"
t_log "figures: served again after restart: promgate ${pg_ms} ms, wireguard-go baseline ${base_ms} ms"
t_finish
