# shellcheck shell=bash
# tests/e2e/faults_lib.sh — shared by the fault tests (tests/e2e/test_fault_*.sh):
# a gateway config with peers in peers.d, wireguard-go clients, and the
# figures the tests read (metrics, RSS, CPU ticks, open descriptors).
#
#   faults_setup CLIENT...       lab, keys, gateway.toml, one peer file per
#                                client (the Nth is 10.13.13.(N+1), a viewer)
#   faults_gateway_conf [EXTRA]  (re)write gateway.toml; EXTRA goes in [gateway]
#   faults_client NAME           wireguard-go client for NAME
#   metric NAME [LABEL]          a value from /metrics (first match)
#   rss_kib PID, fds PID, cpu_ticks PID
#   ms_since T0                  milliseconds since T0 (date +%s%N)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GW=10.13.13.1
ADMIN=127.0.0.1:9586
CLIENT_PY="python3 $(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tcp_client.py"

faults_gateway_conf() {
    cat > "$D/gateway.toml.tmp" <<EOF
[gateway]
private_key_file = "$D/gw.key"
listen_port = 51820
address = "$GW/24"
upstream = "${FAULTS_UPSTREAM:-http://127.0.0.1:9090}"
http_ports = [80]
peers_dir = "peers.d"
${1:-}

[admin]
listen = "$ADMIN"
control_listen = "off"
upstream_unready_after = "2s"
EOF
    mv "$D/gateway.toml.tmp" "$D/gateway.toml"
}

# peer_file NAME IP — peers.d/NAME.toml for the client key NAME, written atomically.
peer_file() {
    printf '[[peer]]\nname = "%s"\npublic_key = "%s"\nallowed_ips = ["%s/32"]\n' \
        "$1" "$(cat "$D/$1.pub")" "$2" > "$D/peers.d/.$1.tmp"
    mv "$D/peers.d/.$1.tmp" "$D/peers.d/$1.toml"
}

faults_setup() {
    lab_up
    SRV=$(lab_ns server)
    D=$LAB_DIR
    BIN=$(lab_promgate_bin)
    (umask 077; "$BIN" genkey > "$D/gw.key")
    GWPUB=$("$BIN" pubkey < "$D/gw.key")
    EP=$(lab_ip server):51820
    mkdir -p "$D/peers.d"
    local n i=2
    for n in "$@"; do
        lab_add_client "$n"
        lab_keypair "$D" "$n"
        peer_file "$n" "10.13.13.$i"
        printf -v "IP_$n" '%s' "10.13.13.$i"
        i=$((i + 1))
    done
    faults_gateway_conf "${FAULTS_GATEWAY_EXTRA:-}"
}

faults_client() {
    local ip_var="IP_$1"
    lab_wg_client "$(lab_ns "$1")" "$(lab_ifname "$1")" "$D/$1.key" "${!ip_var}/32" "$GWPUB" "$EP" "$GW/32"
}

metric() { # NAME [LABEL-SUBSTRING] [ADMIN]
    on server curl -s --max-time 5 "http://${3:-$ADMIN}/metrics" |
        awk -v n="$1" -v l="${2:-}" '($1 == n || index($1, n "{") == 1) && index($1, l) { print $2 + 0; exit }'
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
readyz_is() { [ "$(http_code server "http://$ADMIN/readyz")" = "$1" ]; }
