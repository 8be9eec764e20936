#!/usr/bin/env bash
# Fault suite (issue 13): connections past the limits.
#
# With max_connections_per_peer = 4 and max_connections = 6: vera holds 4
# open connections and her 5th gets no answer (its SYN is dropped, so the
# client's connect times out; a retry would succeed once a slot frees);
# sam holds 2 more, and then no peer gets a 7th, while the drop counter
# names the reason. Throughout, the gateway's RSS stays under a 64 MiB
# budget. When vera's held connections close, everyone is served again.
#
#   vera (a) 10.13.13.2, sam (b) 10.13.13.3, tom (c) 10.13.13.4
set -u
. "$(dirname "$0")/faults_lib.sh"

BUDGET_KIB=$((64 * 1024))
FAULTS_GATEWAY_EXTRA=$'max_connections_per_peer = 4\nmax_connections = 6'
faults_setup a b c
lab_start_prometheus "$SRV"
lab_start_promgate "$SRV" "$D/gateway.toml"
PG=$LAB_PROMGATE_PID
for n in a b c; do faults_client "$n"; done
for n in a b c; do check "$n reaches Prometheus" retry 15 expect_code "$n" "http://$GW/-/ready" 200; done

# hold NODE N SECS — opens N connections (each sends half a request head),
# prints how many connected within 2 s each, holds them SECS, then closes.
hold() {
    on "$1" python3 - "$GW" "$2" "$3" <<'PY'
import socket, sys, time
host, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
held = []
for _ in range(n):
    try:
        s = socket.create_connection((host, 80), timeout=2)
        s.sendall(b"GET /-/ready HTTP/1.1\r\nHost: x\r\n")
        held.append(s)
    except OSError:
        pass
print(len(held), flush=True)
time.sleep(secs)
PY
}
open_is() { [ "$(metric promgate_tunnel_tcp_connections)" = "$1" ]; }
limit_drops() { metric promgate_packets_dropped_total connection_limit; }

hold a 4 20 > "$D/hold-a.out" &
HA=$!
check "vera's 4 connections are open" retry 10 open_is 4
drops0=$(limit_drops)
set -- $(on a curl -s -o /dev/null -w '%{http_code} %{time_total}' --connect-timeout 2 --max-time 3 "http://$GW/-/ready")
check "vera's 5th connection is refused: no answer (got HTTP $1 after ${2}s)" test "$1" = 000
check "the drop counter names connection_limit ($drops0 -> $(limit_drops))" test "$(limit_drops)" -gt "${drops0:-0}"
check "sam, another peer, is unaffected" expect_code b "http://$GW/-/ready" 200
hold b 2 15 > "$D/hold-b.out" &
HB=$!
check "6 connections open in total" retry 10 open_is 6
check "tom gets nothing past max_connections" test "$(http_code c "http://$GW/-/ready" --connect-timeout 2)" = 000
check "sam gets nothing past max_connections either" test "$(http_code b "http://$GW/-/ready" --connect-timeout 2)" = 000
rss=$(rss_kib "$PG")
check "RSS under the ${BUDGET_KIB} KiB budget at the limit (${rss} KiB)" test "$rss" -lt "$BUDGET_KIB"
wait "$HA" "$HB"
check "vera held 4 (got $(cat "$D/hold-a.out")), sam held 2 (got $(cat "$D/hold-b.out"))" \
    test "$(cat "$D/hold-a.out") $(cat "$D/hold-b.out")" = "4 2"
check "the held connections are released" retry 10 open_is 0
for n in a b c; do check "$n is served again" retry 5 expect_code "$n" "http://$GW/-/ready" 200; done
t_log "figures: RSS at the limit ${rss} KiB"
t_finish
