#!/usr/bin/env bash
# Fault suite (issue 13): the upstream fails.
#
#   upstream down   Prometheus is stopped: a peer gets a 502 within 1 s, not
#                   a hang, and /readyz goes 503. Prometheus restarts:
#                   requests succeed within 3 s of it being ready and /readyz
#                   returns to 200 by itself.
#   slow upstream   a second gateway in front of an upstream that answers
#                   only after 6 s, with upstream_timeout = 2s: the peer gets
#                   a 504 at the timeout, and the tunnel connections and their
#                   buffers are released (open-connection gauge back to 0, RSS
#                   flat over 21 such requests). This upstream is a python3
#                   http.server that sleeps, because Prometheus cannot be
#                   made to answer slowly on demand.
#
#   vera (a) 10.13.13.2 -> gateway 1 (Prometheus)
#   sam  (b) 10.13.13.3 -> gateway 2 (slow upstream)
set -u
. "$(dirname "$0")/faults_lib.sh"

faults_setup a b
rm "$D/peers.d/b.toml"
lab_start_prometheus "$SRV"
PROM_PID=$LAB_PROM_PID
lab_start_promgate "$SRV" "$D/gateway.toml"
faults_client a
check "vera reaches Prometheus" retry 15 expect_code a "http://$GW/-/ready" 200

t_log "upstream down"
lab_stop_pid "$PROM_PID"
worst=0 codes=""
for i in 1 2 3 4 5; do
    set -- $(on a curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 10 "http://$GW/api/v1/query?query=up")
    codes="$codes $1"
    ms=$(awk -v t="$2" 'BEGIN { printf "%d", t * 1000 }')
    [ "$ms" -gt "$worst" ] && worst=$ms
done
check "5 requests with Prometheus down all get 502 (got:$codes)" test "$codes" = " 502 502 502 502 502"
check "each 502 came within 1 s (slowest ${worst} ms)" test "$worst" -lt 1000
check "/readyz goes 503 by itself" retry 10 readyz_is 503
lab_start_prometheus "$SRV"
t0=$(date +%s%N)
retry 3 expect_code a "http://$GW/api/v1/query?query=up" 200; rc=$?
back_ms=$(ms_since "$t0")
check "requests succeed again within 3 s of Prometheus being ready (${back_ms} ms)" test $rc = 0
t0=$(date +%s%N)
retry 10 readyz_is 200; rc=$?
ready_ms=$(ms_since "$t0")
check "/readyz back to 200 by itself (${ready_ms} ms)" test $rc = 0

t_log "slow upstream"
cat > "$D/slow.py" <<'PY'
import http.server
import time


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/-/ready":
            time.sleep(6)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:
            pass

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", 8081), H).serve_forever()
PY
lab_spawn "$SRV" slow python3 "$D/slow.py"
lab_wait_http "$SRV" http://127.0.0.1:8081/-/ready 10 || lab_die "slow upstream did not start"
mkdir -p "$D/slow"
cp "$D/gw.key" "$D/slow/gw.key"
cat > "$D/slow/gateway.toml" <<EOF
[gateway]
private_key_file = "$D/slow/gw.key"
listen_port = 51821
address = "$GW/24"
upstream = "http://127.0.0.1:8081"
http_ports = [80]
upstream_timeout = "2s"

[admin]
listen = "127.0.0.1:9588"
control_listen = "off"

[[peer]]
name = "sam"
public_key = "$(cat "$D/b.pub")"
allowed_ips = ["10.13.13.3/32"]
EOF
lab_start_promgate "$SRV" "$D/slow/gateway.toml"
SLOW_PID=$LAB_PROMGATE_PID
lab_wg_client "$(lab_ns b)" "$(lab_ifname b)" "$D/b.key" 10.13.13.3/32 "$GWPUB" "$(lab_ip server):51821" "$GW/32"
check "sam reaches the slow gateway" retry 15 expect_code b "http://$GW/-/ready" 200
rss0=$(rss_kib "$SLOW_PID")
set -- $(on b curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 10 "http://$GW/api/v1/query?query=slow")
check "a request the upstream answers after 6 s gets 504 (got $1)" test "$1" = 504
t504=$2
check "the 504 came at the 2 s timeout, not later (${t504} s)" awk -v t="$t504" 'BEGIN { exit !(t >= 1.9 && t < 3) }'
pids=()
for i in $(seq 1 20); do
    on b curl -s -o /dev/null --max-time 10 "http://$GW/api/v1/query?query=slow$i" &
    pids+=($!)
done
wait "${pids[@]}"
slow_open_is_0() { [ "$(metric promgate_tunnel_tcp_connections "" 127.0.0.1:9588)" = 0 ]; }
check "every timed-out connection is released (open-connection gauge back to 0)" retry 10 slow_open_is_0
rss1=$(rss_kib "$SLOW_PID")
check "RSS after 21 timed-out requests within 8 MiB of before (${rss0} -> ${rss1} KiB)" test $((rss1 - rss0)) -lt 8192
t_log "figures: 502 worst ${worst} ms; back ${back_ms} ms; readyz ${ready_ms} ms; 504 at ${t504} s; slow-gateway RSS ${rss0} -> ${rss1} KiB"
t_finish
