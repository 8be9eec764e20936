#!/usr/bin/env bash
# promgate in the server netns in front of a real Prometheus; real wireguard-go
# clients in their own netns browse it through the tunnel.
#
#   alice (a) 10.13.13.2  known peer
#   bob   (b) 10.13.13.3  known peer
#   carol (c) 10.13.13.4  key unknown to the gateway
set -u
. "$(dirname "$0")/lib.sh"

t_lab a b c

lab_start_prometheus "$SRV"

t_log "keys"
t_gateway_key
for n in a b c; do lab_keypair "$D" "$n"; done
check "promgate genkey prints a 32-byte base64 key" \
    python3 -c 'import base64,sys; sys.exit(0 if len(base64.b64decode(open(sys.argv[1]).read().strip(), validate=True))==32 else 1)' "$D/gw.key"
check "promgate pubkey agrees with wg pubkey" \
    test "$(cat "$D/gw.pub")" = "$(wg pubkey < "$D/gw.key")"

{
    gateway_toml
    peer_toml alice "$(cat "$D/a.pub")" 10.13.13.2
    peer_toml bob "$(cat "$D/b.pub")" 10.13.13.3
} > "$D/gateway.toml"

lab_start_promgate "$SRV" "$D/gateway.toml"
PG_PID=$LAB_PROMGATE_PID
EP=$(lab_ip server):51820
lab_wg_client "$(lab_ns a)" "$(lab_ifname a)" "$D/a.key" 10.13.13.2/32 "$GWPUB" "$EP" 10.13.13.0/24
lab_wg_client "$(lab_ns b)" "$(lab_ifname b)" "$D/b.key" 10.13.13.3/32 "$GWPUB" "$EP" 10.13.13.0/24
lab_wg_client "$(lab_ns c)" "$(lab_ifname c)" "$D/c.key" 10.13.13.4/32 "$GWPUB" "$EP" 10.13.13.0/24

t_log "admin endpoints (server netns)"
check "admin /healthz 200" expect_code server http://127.0.0.1:9586/healthz 200
check "admin /readyz 200" expect_code server http://127.0.0.1:9586/readyz 200
check "admin /metrics 200" expect_code server http://127.0.0.1:9586/metrics 200

t_log "alice: handshake and ping"
ping1() { on "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; }
check "alice: first ping to $GW within 15 s (handshake)" retry 15 ping1 a "$GW"
check "alice: ping -c 3 $GW" quiet on a ping -c 3 -W 2 "$GW"
check "alice: wireguard-go reports a handshake" test "$(wg_handshake a)" -gt 0

t_log "alice: HTTP through the tunnel"
check "alice: GET /-/ready is 200" retry 10 expect_code a "http://$GW/-/ready" 200
on a curl -s --max-time 5 -o "$D/q.json" "http://$GW/api/v1/query?query=up"
check "alice: /api/v1/query?query=up parses as JSON with status success" json_status_success "$D/q.json"
# The first self-scrape can take a few seconds; wait for it directly first.
wait_up_direct() { on server curl -s --max-time 2 -o "$D/qd.json" "http://127.0.0.1:9090/api/v1/query?query=up" && query_up_is_one "$D/qd.json"; }
retry 20 wait_up_direct
query_up_through_tunnel() {
    on a curl -s --max-time 5 -o "$D/q2.json" "http://$GW/api/v1/query?query=up" && jsonq up-is-one "$D/q2.json"
}
check "alice: query up returns a sample with value 1" query_up_through_tunnel
post_query_through_tunnel() {
    on a curl -s --max-time 5 -o "$D/qp.json" --data-urlencode 'query=up' "http://$GW/api/v1/query" &&
        jsonq status-success "$D/qp.json"
}
check "alice: POST /api/v1/query (form body) is 200 with status success" post_query_through_tunnel

t_log "alice: the UI"
hdr() { # NODE URL -> "CODE LOCATION" (Location exactly as sent)
    on "$1" curl -s -o /dev/null --max-time 5 -w '%{http_code} %header{location}' "$2" 2>/dev/null
}
for p in /graph /graph/ /; do
    direct=$(hdr server "http://127.0.0.1:9090$p")
    tunnel=$(hdr a "http://$GW$p")
    check "alice: GET $p status and Location unchanged (direct: '$direct', tunnel: '$tunnel')" \
        test "$direct" = "$tunnel" -a "${direct%% *}" -ge 300 -a "${direct%% *}" -lt 400
done
final=$(on a curl -s -L --max-redirs 5 --max-time 10 -o "$D/ui.html" -w '%{http_code} %{content_type} %{url_effective}' "http://$GW/graph")
ends_in_html_on_gateway() { [[ $final =~ ^200\ text/html.*\ http://$GW/ ]]; }
check "alice: following /graph's redirects ends in 200 text/html on $GW ($final)" ends_in_html_on_gateway
classic_page_is_html() {
    on a curl -s --max-time 10 -o "$D/classic.html" -w '%{http_code} %{content_type}' "http://$GW/classic/graph" |
        grep -q '^200 text/html' && grep -qi '<html' "$D/classic.html"
}
check "alice: /classic/graph is 200 HTML" classic_page_is_html
# Every script the classic page references must arrive byte-identical through
# the tunnel (the largest are hundreds of KB: many TCP windows).
mapfile -t assets < <(grep -o 'src="/classic/static/[^"]*\.js[^"]*"' "$D/classic.html" 2>/dev/null | sed 's/^src="//; s/"$//')
assets_identical() {
    local u st sd bytes=0 rc=0
    [ ${#assets[@]} -gt 0 ] || { echo "        no script assets found in /classic/graph"; return 1; }
    for u in "${assets[@]}"; do
        st=$(on a curl -s --max-time 15 "http://$GW$u" | sha256sum)
        sd=$(on server curl -s --max-time 15 "http://127.0.0.1:9090$u" | sha256sum)
        bytes=$((bytes + $(on server curl -s --max-time 15 -o /dev/null -w '%{size_download}' "http://127.0.0.1:9090$u")))
        [ "$st" = "$sd" ] || { echo "        $u differs through the tunnel"; rc=1; }
    done
    echo "        ${#assets[@]} assets, $bytes bytes"
    return $rc
}
check "alice: all UI scripts of /classic/graph identical through the tunnel" assets_identical

t_log "alice and bob at once"
check "bob: first ping to $GW within 15 s" retry 15 ping1 b "$GW"
concurrent() {
    local n i rc=0 pids=()
    for n in a b; do
        for i in $(seq 1 10); do
            on "$n" curl -s --max-time 10 -o "$D/cc-$n-$i.json" -w '%{http_code}\n' \
                "http://$GW/api/v1/query?query=up" > "$D/cc-$n-$i.code" &
            pids+=($!)
        done
    done
    wait "${pids[@]}"   # not a bare wait: the lab's daemons are our children too
    for n in a b; do
        for i in $(seq 1 10); do
            [ "$(cat "$D/cc-$n-$i.code")" = 200 ] && json_status_success "$D/cc-$n-$i.json" >/dev/null ||
                { echo "        $n request $i: HTTP $(cat "$D/cc-$n-$i.code")"; rc=1; }
        done
    done
    return $rc
}
check "alice and bob: 2 x 10 concurrent queries all 200 + success" concurrent
check "bob: GET /-/ready is 200" expect_code b "http://$GW/-/ready" 200

t_log "connection slots are freed"
# 200 requests, each on a new TCP connection (more than the default 128 per
# peer): all must succeed, so closed connections give their slots back.
many_sequential() {
    local ok
    ok=$(on a curl -s --max-time 60 -H 'Connection: close' -o /dev/null -w '%{http_code}\n' \
        "http://$GW/-/ready?n=[1-200]" | grep -c '^200$')
    echo "        $ok of 200 answered 200"
    [ "$ok" = 200 ]
}
check "alice: 200 sequential connections (Connection: close) all 200" many_sequential
gauge_zero() { [ "$(metric promgate_tunnel_tcp_connections)" = 0 ]; }
retry 15 gauge_zero
check "promgate_tunnel_tcp_connections back to 0 within 15 s (now: $(metric promgate_tunnel_tcp_connections))" gauge_zero

t_log "carol: unknown key"
check_not "carol: ping $GW fails" quiet on c ping -c 2 -W 2 "$GW"
T_CURL_MAX=5 check "carol: curl http://$GW/-/ready gets nothing (000)" expect_code c "http://$GW/-/ready" 000
check "carol: wireguard-go reports no handshake" test "$(wg_handshake c)" = 0

t_log "alice: nothing else is reachable"
# The contract is "everything else is dropped": no RST, so curl times out
# (exit 28) rather than being refused (exit 7). The drop counters say why.
dropped() { metric "promgate_packets_dropped_total{reason=\"$1\"}"; } # REASON
curl_times_out() { # NODE URL
    local rc
    on "$1" curl -s -o /dev/null --max-time 3 "$2"
    rc=$?
    [ $rc = 28 ] || { echo "        curl $2: exit $rc, want 28 (timeout: silently dropped)"; return 1; }
}
fp0=$(dropped forbidden_port)
check "alice: http://$GW:9090/ (upstream port) is dropped" curl_times_out a "http://$GW:9090/"
check "alice: http://$GW:9586/healthz (admin port) is dropped" curl_times_out a "http://$GW:9586/healthz"
check "alice: http://$GW:8080/ is dropped" curl_times_out a "http://$GW:8080/"
fp1=$(dropped forbidden_port)
check "drop counter forbidden_port rose ($fp0 -> $fp1)" test "${fp1:-0}" -gt "${fp0:-0}"
wd0=$(dropped wrong_destination)
check_not "alice: ping 10.13.13.3 (bob, via the gateway) fails" quiet on a ping -c 2 -W 2 10.13.13.3
check_not "alice: ping 10.13.13.99 fails" quiet on a ping -c 2 -W 2 10.13.13.99
wd1=$(dropped wrong_destination)
check "drop counter wrong_destination rose by >= 4 ($wd0 -> $wd1)" test "${wd1:-0}" -ge $((${wd0:-0} + 4))
export T_CURL_MAX=4
check "alice: http://10.13.13.3/ (bob) fails" expect_code a "http://10.13.13.3/" 000
check "alice: no OS port answers on the veth address (http://$(lab_ip server):9586)" \
    expect_code a "http://$(lab_ip server):9586/healthz" 000
check "alice: no OS port answers on the veth address (http://$(lab_ip server):80)" \
    expect_code a "http://$(lab_ip server):80/" 000
unset T_CURL_MAX

t_log "alice spoofs bob's source address"
# wireguard-go on the client only filters what it receives, so alice can send
# packets with source 10.13.13.3. The gateway's AllowedIPs check must drop
# them; if it did not, its replies would go to bob, whose receive counter moves.
on a ip addr add 10.13.13.3/32 dev "$(lab_ifname a)"
bob_rx() { on b wg show "$(lab_ifname b)" transfer | awk '{print $2}'; }
sleep 1
rx0=$(bob_rx)
sp0=$(dropped spoofed_source)
on a ping -c 3 -W 1 -I 10.13.13.3 "$GW" >/dev/null 2>&1
on a curl -s -o /dev/null --max-time 3 --interface 10.13.13.3 "http://$GW/-/ready"
sleep 1
rx1=$(bob_rx)
# A forwarded data packet is >= 96 bytes on the wire; a 32-byte keepalive from
# the gateway's own timers may land in the window and is not a leak.
check "gateway drops alice's packets with bob's source (bob rx bytes $rx0 -> $rx1)" test $((rx1 - rx0)) -lt 96
sp1=$(dropped spoofed_source)
check "drop counter spoofed_source rose by >= 3 ($sp0 -> $sp1)" test "${sp1:-0}" -ge $((${sp0:-0} + 3))
on a ip addr del 10.13.13.3/32 dev "$(lab_ifname a)"
check "alice: still served after the spoofing attempt" expect_code a "http://$GW/-/ready" 200

t_log "shutdown"
kill -TERM "$PG_PID"
stopped() { ! lab_pid_alive "$PG_PID"; }
check "promgate exits within 10 s of SIGTERM" retry 10 stopped

t_finish
