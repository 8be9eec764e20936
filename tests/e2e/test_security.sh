#!/usr/bin/env bash
# Issue 10, items 2 to 5, against real wireguard-go clients and a real
# Prometheus:
#
#   2. readiness follows the upstream by itself: Prometheus stops, /readyz
#      goes 503; Prometheus comes back, /readyz returns to 200 with no
#      tunnel traffic at all.
#   3. a reader that never reads (tiny receive window, large answer) is
#      reset after tcp_idle_timeout; the open-connection gauge returns to 0.
#   4. the admin server closes a connection that never finishes its
#      request head within 15 s.
#   5. an admin demoted by a hot reload is refused on its already open
#      keep-alive connection.
#
# Issue 23, item 3: a request for another Host (DNS rebinding) gets 421, a
# name in gateway.allowed_hosts and the tunnel address pass; an admin's
# cross-site POST to the admin API gets 403, the same POST from curl (no
# Origin, no Sec-Fetch-Site) or from the gateway's own page passes.
#
#   vera (a) 10.13.13.2  viewer
#   adam (b) 10.13.13.3  admin, demoted to viewer mid-test
set -u
. "$(dirname "$0")/lib.sh"

t_lab a b
ADMIN=127.0.0.1:9586
CLIENT="python3 $(cd "$(dirname "$0")" && pwd)/tcp_client.py"
IDLE=3

lab_start_prometheus "$SRV" --web.enable-admin-api
PROM_PID=$LAB_PROM_PID

t_gateway_key
EP=$(lab_ip server):51820
lab_keypair "$D" a
lab_keypair "$D" b

mkdir -p "$D/peers.d"
gateway_toml --admin "$ADMIN" \
    --gateway 'peers_dir = "peers.d"' --gateway "tcp_idle_timeout = \"${IDLE}s\"" \
    --gateway 'allowed_hosts = ["prom.e2e.example"]' \
    --admin-line 'upstream_unready_after = "3s"' > "$D/gateway.toml"
# peer_file NAME KEYNAME IP ROLE — written atomically, as an operator would.
peer_file() {
    peer_toml "$1" "$(cat "$D/$2.pub")" "$3" "role = \"$4\"" > "$D/peers.d/.$1.tmp"
    mv "$D/peers.d/.$1.tmp" "$D/peers.d/$1.toml"
}
peer_file vera a 10.13.13.2 viewer
peer_file adam b 10.13.13.3 admin

lab_start_promgate "$SRV" "$D/gateway.toml"
LOG=$D/promgate-gateway.log
lab_wg_client "$(lab_ns a)" "$(lab_ifname a)" "$D/a.key" 10.13.13.2/32 "$GWPUB" "$EP" "$GW/32"
lab_wg_client "$(lab_ns b)" "$(lab_ifname b)" "$D/b.key" 10.13.13.3/32 "$GWPUB" "$EP" "$GW/32"

peer_rx_total() {
    on server curl -s --max-time 5 "http://$ADMIN/metrics" |
        awk '/^promgate_peer_received_bytes_total/ { s += $2 } END { print s + 0 }'
}
readyz_is() { [ "$(http_code server "http://$ADMIN/readyz")" = "$1" ]; }

check "vera reaches Prometheus through the tunnel" retry 15 expect_code a "http://$GW/-/ready" 200
check "adam reaches Prometheus through the tunnel" retry 15 expect_code b "http://$GW/-/ready" 200

t_log "issue 23 item 3: Host and Origin checks"
# code_with NODE URL CODE CURL_ARGS... — like expect_code, with curl arguments.
code_with() {
    local n=$1 url=$2 want=$3 got; shift 3
    got=$(http_code "$n" "$url" "$@")
    [ "$got" = "$want" ] && return 0
    echo "        $url from $n with $*: got HTTP $got, want $want"
    return 1
}
Q="http://$GW/api/v1/query?query=up"
check "DNS rebinding: Host attacker.example gets 421" \
    code_with a "$Q" 421 -H 'Host: attacker.example'
check "the 421 page names the host and gateway.allowed_hosts" \
    sh -c "ip netns exec $(lab_ns a) curl -s --max-time 5 -H 'Host: attacker.example' '$Q' | grep 'attacker.example' | grep -q 'gateway.allowed_hosts'"
check "Host $GW:80 passes" code_with a "$Q" 200 -H "Host: $GW:80"
check "Host prom.e2e.example (in allowed_hosts) passes" code_with a "$Q" 200 -H 'Host: PROM.e2e.example'
check "a read with a foreign Origin passes" \
    code_with a "$Q" 200 -H 'Origin: https://attacker.example' -H 'Sec-Fetch-Site: cross-site'
# Prometheus allows every origin by default; through the gateway, a
# foreign page must not get that permission.
acao() { on a curl -s -D - -o /dev/null --max-time 5 "$@" "$Q" | grep -i '^access-control-allow-origin'; }
check "Prometheus itself sends Access-Control-Allow-Origin (to its own origin, through the gateway)" \
    acao -H "Origin: http://$GW"
check_not "... but not to a foreign Origin" acao -H 'Origin: https://attacker.example'
DEL="http://$GW/api/v1/admin/tsdb/delete_series?match%5B%5D=promgate_e2e_no_such_series"
check "adam's cross-site POST to delete_series gets 403" \
    code_with b "$DEL" 403 -X POST -H 'Origin: https://attacker.example' -H 'Sec-Fetch-Site: cross-site'
check "adam's POST with only Origin: https://attacker.example gets 403" \
    code_with b "$DEL" 403 -X POST -H 'Origin: https://attacker.example'
refused_logged() { grep 'refused a request for another host or from another origin' "$LOG" | grep -q 'delete_series'; }
check "the gateway logged the refusal" retry 5 refused_logged
check "adam's POST from curl (no Origin) reaches Prometheus: 204" code_with b "$DEL" 204 -X POST
check "a POST from the gateway's own page passes" \
    code_with a "http://$GW/api/v1/query" 200 -X POST --data 'query=up' \
    -H "Origin: http://$GW" -H 'Sec-Fetch-Site: same-origin'

t_log "item 5: adam is demoted while his keep-alive connection is open"
rm -f "$D/go"
on b $CLIENT keepalive "$GW" 80 /api/v1/admin/tsdb/snapshot "$D/go" 20 > "$D/keepalive.out" 2>&1 &
KA=$!
sleep 2
peer_file adam b 10.13.13.3 viewer
reloaded() { grep 'peers reloaded' "$LOG" | grep -q 'adam'; }
check "the reload log names adam's changed rules" retry 5 reloaded
touch "$D/go"
wait "$KA"
check "one keep-alive connection: 200 as admin, then 403 once demoted ($(cat "$D/keepalive.out"))" \
    grep -qx '200 403 same-connection' "$D/keepalive.out"

t_log "item 3: a reader that never reads is reset after tcp_idle_timeout = ${IDLE}s"
# A large answer: every series over five minutes at a 1 s step (the
# lookback carries the latest samples forward). Prometheus discovers its
# scrape targets a few seconds after it starts, so wait for data.
big_query() {
    local now; now=$(date +%s)
    BIGQ="/api/v1/query_range?query=%7B__name__%3D~%22.%2B%22%7D&start=$((now - 10))&end=$((now + 280))&step=1"
    size=$(on a curl -s --max-time 60 -o /dev/null -w '%{size_download}' "http://$GW$BIGQ")
    [ "${size:-0}" -gt 1000000 ]
}
check "the answer is large enough to stall a small window" retry 30 big_query
on a $CLIENT stall "$GW" 80 "$BIGQ" $((IDLE + 10)) > "$D/stall.out" 2>&1 &
ST=$!
open_is() { [ "$(metric promgate_tunnel_tcp_connections)" = "$1" ]; }
check "the stalled connection is open" retry 5 open_is 1
t0=$(now)
retry $((IDLE + 7)) open_is 0; rc=$?
check "the open-connection gauge returns to 0 ($(seconds_since "$t0") s after it showed 1)" test $rc = 0
wait "$ST"
check "the stalled client saw its connection reset ($(cat "$D/stall.out"))" grep -q 'reset=True' "$D/stall.out"

t_log "item 4: the admin server closes a connection that never finishes its head"
on server $CLIENT slow-head 127.0.0.1 9586 20 > "$D/slowhead.out" 2>&1
secs=$(awk '/closed after/ { print int($3) }' "$D/slowhead.out")
check "closed within 15 s ($(cat "$D/slowhead.out"))" test "${secs:-99}" -le 15
check "/healthz still answers" expect_code server "http://$ADMIN/healthz" 200

t_log "item 2: readiness follows the upstream, with no tunnel traffic"
check "/readyz 200 while Prometheus is up" readyz_is 200
check "promgate_upstream_up is 1" test "$(metric 'promgate_upstream_up{upstream="prometheus"}')" = 1
rx_before=$(peer_rx_total)
lab_stop_pid "$PROM_PID"
t0=$(now)
retry 10 readyz_is 503; rc=$?
check "/readyz 503 after Prometheus stopped ($(seconds_since "$t0") s; limit 3 s + one probe)" test $rc = 0
check "promgate_upstream_up is 0" test "$(metric 'promgate_upstream_up{upstream="prometheus"}')" = 0
check "/healthz still 200" expect_code server "http://$ADMIN/healthz" 200
lab_start_prometheus "$SRV" --web.enable-admin-api
t0=$(now)
retry 10 readyz_is 200; rc=$?
check "/readyz back to 200 by itself ($(seconds_since "$t0") s after Prometheus was ready)" test $rc = 0
rx_after=$(peer_rx_total)
# The clients have no persistent keepalive: no datagram arrived meanwhile.
check "no tunnel traffic meanwhile (peer rx bytes $rx_before -> $rx_after)" test "$rx_before" = "$rx_after"

t_finish
