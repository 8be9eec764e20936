#!/usr/bin/env bash
# Fault suite (issue 13): a handshake flood.
#
# A flooder sends 20,000 WireGuard initiations a second for 10 s, each with a
# valid MAC1 (it knows the gateway's public key) and a key the gateway does
# not know (tools/handshake_flood.rs). Meanwhile a legitimate peer asks
# Prometheus every 0.25 s, and 3 s into the flood it drops its session and
# must handshake again while the gateway is under load (cookie reply, then a
# retry with MAC2). Proves: every request made during the flood succeeds;
# cookie replies are sent and counted; the gateway's CPU stays under one
# core on average and its RSS grows by less than 16 MiB.
#
# Then the same again from a flooder that holds a cookie (`--cookie`): it
# replays one initiation with a valid MAC2 at 20,000/s, which without the
# per-source token bucket would reach the Diffie-Hellman every time (issue
# 23, item 2). It must be dropped as `handshake_rate_limited`.
#
#   vera (a) 10.13.13.2   legitimate viewer
#   flood (f)             no peer entry
set -u
. "$(dirname "$0")/faults_lib.sh"

FLOOD_BIN=${FLOOD_BIN:-$(dirname "$(lab_promgate_bin)")/handshake_flood}
[ -x "$FLOOD_BIN" ] || lab_die "no $FLOOD_BIN (cargo build --release -p promgate-tools)"
RATE=${FLOOD_RATE:-20000}
SECS=${FLOOD_SECS:-10}
# The gateway's default gateway.handshake_rate_limit (src/config/defaults.rs).
HS_LIMIT=1000

faults_setup a
lab_add_client f
lab_start_prometheus "$SRV"
lab_start_promgate "$SRV" "$D/gateway.toml"
PG=$LAB_PROMGATE_PID
faults_client a
check "vera reaches Prometheus" retry 15 expect_code a "http://$GW/-/ready" 200

flood_phase() { # MODE ("" or --cookie)
    local mode=$1 label=${1:-plain}
    ticks0=$(cpu_ticks "$PG")
    rss0=$(rss_kib "$PG")
    cookies0=$(metric promgate_handshake_cookie_replies_total)
    limited0=$(metric promgate_packets_dropped_total handshake_rate_limited)
    unknown0=$(metric promgate_packets_dropped_total unknown_peer)
    t_log "$label flood: $RATE initiations/s for $SECS s"
    on f "$FLOOD_BIN" "$GWPUB" "$EP" "$RATE" "$SECS" $mode > "$D/flood.out" 2>&1 &
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
    limited1=$(metric promgate_packets_dropped_total handshake_rate_limited)
    unknown1=$(metric promgate_packets_dropped_total unknown_peer)
    t_log "flooder: $(cat "$D/flood.out")"
    sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' "$D/flood.out")
    check "$label: the flooder sent at least 90% of $((RATE * SECS)) initiations (${sent:-0})" test "${sent:-0}" -ge $((RATE * SECS * 9 / 10))
    check "$label: vera's $((ok + fail)) requests during the flood all succeeded ($fail failed; slowest ${worst} ms)" test "$fail" = 0 -a "$ok" -gt 5
    check "$label: vera re-handshook during the flood" test "$rekeyed" = 1
    check "$label: cookie replies were sent and counted ($cookies0 -> $cookies1)" test "${cookies1:-0}" -gt "${cookies0:-0}"
    if [ -z "$mode" ]; then
        got=$(sed -n 's/.*cookie_replies=\([0-9]*\).*/\1/p' "$D/flood.out")
        check "$label: the flooder received cookie replies (${got:-0})" test "${got:-0}" -gt 0
    else
        # The bucket lets 20/s plus a burst of 5 reach the Diffie-Hellman,
        # and the limiter its own threshold each second before load starts.
        dh=$(( ${unknown1:-0} - ${unknown0:-0} ))
        cap=$(( (20 + HS_LIMIT) * (SECS + 2) + 5 ))
        check "$label: the cookie holder's initiations were rate limited ($limited0 -> $limited1)" test "${limited1:-0}" -gt $(( ${limited0:-0} + RATE * SECS / 2 ))
        check "$label: at most $cap of them reached the Diffie-Hellman ($dh)" test "$dh" -le "$cap"
    fi
    hz=$(getconf CLK_TCK)
    cpu_pct=$(( (ticks1 - ticks0) * 100 / hz * 100 / (SECS * 100) ))
    check "$label: gateway CPU during the flood under one core on average (${cpu_pct}% of a core)" test "$cpu_pct" -lt 100
    check "$label: gateway RSS grew by less than 16 MiB (${rss0} -> ${rss1} KiB)" test $((rss1 - rss0)) -lt 16384
    check "$label: the gateway still serves after the flood" expect_code a "http://$GW/-/ready" 200
    t_log "figures ($label): sent ${sent}; cookie replies ${cookies0} -> ${cookies1}; rate limited ${limited0} -> ${limited1}; unknown-peer DH ${unknown0} -> ${unknown1}; CPU ${cpu_pct}%; RSS ${rss0} -> ${rss1} KiB; requests ok ${ok} failed ${fail}, slowest ${worst} ms"
}

flood_phase ""
flood_phase --cookie
t_finish
