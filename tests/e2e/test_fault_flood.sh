#!/usr/bin/env bash
# Fault suite (issue 13): a handshake flood.
#
# A flooder sends 20,000 WireGuard initiations a second for 10 s, each with a
# valid MAC1 (it knows the gateway's public key) and a key the gateway does
# not know (examples/handshake_flood). Meanwhile a legitimate peer asks
# Prometheus every 0.25 s, and 3 s into the flood it drops its session and
# must handshake again while the gateway is under load (cookie reply, then a
# retry with MAC2). Proves: every request made during the flood succeeds;
# cookie replies are sent and counted; the gateway's CPU stays under one
# core on average and its RSS grows by less than 16 MiB.
#
#   vera (a) 10.13.13.2   legitimate viewer
#   flood (f)             no peer entry
set -u
. "$(dirname "$0")/faults_lib.sh"

FLOOD_BIN=${FLOOD_BIN:-$(dirname "$(lab_promgate_bin)")/examples/handshake_flood}
[ -x "$FLOOD_BIN" ] || lab_die "no $FLOOD_BIN (cargo build --release --example handshake_flood)"
RATE=${FLOOD_RATE:-20000}
SECS=${FLOOD_SECS:-10}

faults_setup a
lab_add_client f
lab_start_prometheus "$SRV"
lab_start_promgate "$SRV" "$D/gateway.toml"
PG=$LAB_PROMGATE_PID
faults_client a
check "vera reaches Prometheus" retry 15 expect_code a "http://$GW/-/ready" 200

ticks0=$(cpu_ticks "$PG")
rss0=$(rss_kib "$PG")
cookies0=$(metric promgate_handshake_cookie_replies_total)
t_log "flood: $RATE initiations/s for $SECS s"
on f "$FLOOD_BIN" "$GWPUB" "$EP" "$RATE" "$SECS" > "$D/flood.out" 2>&1 &
FLOOD=$!
sleep 0.5
ok=0 fail=0 worst=0 rekeyed=0 start=$SECONDS
: > "$D/requests.log"
while kill -0 "$FLOOD" 2>/dev/null; do
    if [ $rekeyed = 0 ] && [ $((SECONDS - start)) -ge 3 ]; then
        # Drop the session: the next request needs a new handshake, under load.
        IFN=$(lab_ifname a)
        on a wg set "$IFN" peer "$GWPUB" remove
        on a wg set "$IFN" peer "$GWPUB" endpoint "$EP" allowed-ips "$GW/32"
        ip -n "$(lab_ns a)" route replace "$GW/32" dev "$IFN"
        rekeyed=1
        t_log "vera dropped her session; the next request needs a handshake under load"
    fi
    out=$(on a curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 15 "http://$GW/api/v1/query?query=up")
    echo "$out" >> "$D/requests.log"
    set -- $out
    if [ "${1:-000}" = 200 ]; then ok=$((ok + 1)); else fail=$((fail + 1)); fi
    ms=$(awk -v t="${2:-0}" 'BEGIN { printf "%d", t * 1000 }')
    [ "$ms" -gt "$worst" ] && worst=$ms
    sleep 0.25
done
wait "$FLOOD"
ticks1=$(cpu_ticks "$PG")
rss1=$(rss_kib "$PG")
cookies1=$(metric promgate_handshake_cookie_replies_total)
t_log "flooder: $(cat "$D/flood.out")"
sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' "$D/flood.out")
check "the flooder sent at least 90% of $((RATE * SECS)) initiations (${sent:-0})" test "${sent:-0}" -ge $((RATE * SECS * 9 / 10))
check "vera's $((ok + fail)) requests during the flood all succeeded ($fail failed; slowest ${worst} ms)" test "$fail" = 0 -a "$ok" -gt 5
check "vera re-handshook during the flood" test "$rekeyed" = 1
check "cookie replies were sent and counted ($cookies0 -> $cookies1)" test "${cookies1:-0}" -gt "${cookies0:-0}"
got=$(sed -n 's/.*cookie_replies=\([0-9]*\).*/\1/p' "$D/flood.out")
check "the flooder received cookie replies (${got:-0})" test "${got:-0}" -gt 0
hz=$(getconf CLK_TCK)
cpu_pct=$(( (ticks1 - ticks0) * 100 / hz * 100 / (SECS * 100) ))
check "gateway CPU during the flood under one core on average (${cpu_pct}% of a core)" test "$cpu_pct" -lt 100
check "gateway RSS grew by less than 16 MiB (${rss0} -> ${rss1} KiB)" test $((rss1 - rss0)) -lt 16384
check "the gateway still serves after the flood" expect_code a "http://$GW/-/ready" 200
t_log "figures: sent ${sent}; cookie replies ${cookies0} -> ${cookies1}; CPU ${cpu_pct}%; RSS ${rss0} -> ${rss1} KiB; requests ok ${ok} failed ${fail}, slowest ${worst} ms"
t_finish
