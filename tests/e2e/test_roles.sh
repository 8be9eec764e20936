#!/usr/bin/env bash
# Issue 5: roles, audit log, telemetry and readiness, end to end.
#
# Prometheus runs with --web.enable-admin-api --web.enable-lifecycle, so every
# admin endpoint really works when it is reached: a viewer that got through
# would leave a snapshot on disk or stop Prometheus.
#
#   vera (a) 10.13.13.2  viewer (role left at its default)
#   adam (b) 10.13.13.3  admin
#
# Phase 1: text logs. Roles, path tricks, audit lines, /metrics + promtool.
# Phase 2: restart with --log-format json (after the subcommand), inline key,
#          upstream_unready_after = "2s"; JSON audit lines, no key in the log;
#          adam stops Prometheus with POST /-/quit; /readyz goes 503.
# Phase 3: --log-format json (before the subcommand), upstream_unready_after =
#          "off"; Prometheus still down; /readyz stays 200.
set -u
. "$(dirname "$0")/lib.sh"

t_lab a b
ADMIN=127.0.0.1:9586
PROMDATA=$D/prom-9090/data

# Prometheus also scrapes promgate's /metrics: a real OpenMetrics parser.
# shellcheck disable=SC2034 # read by lab_start_prometheus
LAB_PROM_EXTRA_SCRAPE="  - job_name: promgate
    static_configs:
      - targets: ['$ADMIN']"
lab_start_prometheus "$SRV" --web.enable-admin-api --web.enable-lifecycle
PROM_PID=$LAB_PROM_PID

t_gateway_key
EP=$(lab_ip server):51820
lab_keypair "$D" a
lab_keypair "$D" b

# gateway_config FILE KEYLINE [ADMIN LINE]
gateway_config() {
    {
        gateway_toml --key "$2" --admin "$ADMIN" ${3:+--admin-line "$3"}
        peer_toml vera "$(cat "$D/a.pub")" 10.13.13.2
        peer_toml adam "$(cat "$D/b.pub")" 10.13.13.3 'role = "admin"'
    } > "$1"
}

gateway_config "$D/gw-text.toml" "private_key_file = \"$D/gw.key\""
check "promgate check accepts the phase 1 config" quiet "$BIN" check --config "$D/gw-text.toml"
lab_start_promgate "$SRV" "$D/gw-text.toml"
PG=$LAB_PROMGATE_PID
LOG1=$D/promgate-gw-text.log

lab_wg_client "$(lab_ns a)" "$(lab_ifname a)" "$D/a.key" 10.13.13.2/32 "$GWPUB" "$EP" "$GW/32"
lab_wg_client "$(lab_ns b)" "$(lab_ifname b)" "$D/b.key" 10.13.13.3/32 "$GWPUB" "$EP" "$GW/32"


# req NODE METHOD PATH [CURL ARGS...] — prints the status code; body in $D/body
req() {
    local n=$1 m=$2 p=$3; shift 3
    on "$n" curl -s --path-as-is -X "$m" -o "$D/body" -w '%{http_code}' --max-time "${T_CURL_MAX:-10}" "$@" "http://$GW$p" 2>/dev/null
}
# expect NODE METHOD PATH CODE [CURL ARGS...]
expect() {
    local n=$1 m=$2 p=$3 want=$4 got; shift 4
    got=$(req "$n" "$m" "$p" "$@")
    [ "$got" = "$want" ] && return 0
    echo "        $m $p from $n: got HTTP $got, want $want; body: $(head -c 200 "$D/body" | tr '\n' ' ')"
    return 1
}
snapshots() { find "$PROMDATA/snapshots" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l; }
prom_alive() { lab_pid_alive "$PROM_PID" && [ "$(http_code server http://127.0.0.1:9090/-/ready)" = 200 ]; }

# answers_success NODE OUT PATH [CURL ARGS...] — 200, and a JSON body (kept
# in OUT) whose status is success
answers_success() {
    local n=$1 out=$2 p=$3; shift 3
    [ "$(on "$n" curl -s --max-time 10 -o "$out" -w '%{http_code}' "$@" "http://$GW$p")" = 200 ] &&
        jsonq status-success "$out"
}

t_log "phase 1: both peers reach Prometheus"
check "vera: GET /-/ready 200 within 15 s (handshake)" retry 15 expect a GET /-/ready 200
check "adam: GET /-/ready 200 within 15 s (handshake)" retry 15 expect b GET /-/ready 200
for n in a b; do
    who=$([ $n = a ] && echo vera || echo adam)
    check "$who: GET /api/v1/query?query=up is 200 + success" \
        answers_success "$n" "$D/q-$n.json" '/api/v1/query?query=up'
    check "$who: POST /api/v1/query (form body) is 200 + success" \
        answers_success "$n" "$D/qp-$n.json" /api/v1/query --data-urlencode query=up
    check "$who: GET /classic/graph is 200" expect $n GET /classic/graph 200
done

t_log "phase 1: the viewer is refused the admin API and the lifecycle endpoints"
snap0=$(snapshots)
check "vera: POST /api/v1/admin/tsdb/snapshot is 403" expect a POST /api/v1/admin/tsdb/snapshot 403
cp "$D/body" "$D/403.html"
body_names() { # FILE WORD...
    local f=$1 w rc=0; shift
    for w in "$@"; do grep -qi -- "$w" "$f" || { echo "        403 body lacks '$w': $(head -c 300 "$f" | tr '\n' ' ')"; rc=1; }; done
    return $rc
}
check "vera: the 403 page names the peer (vera) and the role (viewer)" body_names "$D/403.html" vera viewer
check "vera: the 403 page names the rule (mentions /api/v1/admin)" body_names "$D/403.html" /api/v1/admin
check "vera: the 403 page is HTML" grep -qi '<html\|<!doctype' "$D/403.html"
check "vera: POST /-/quit is 403" expect a POST /-/quit 403
check "vera: PUT /-/quit is 403" expect a PUT /-/quit 403
check "vera: POST /-/reload is 403" expect a POST /-/reload 403
check "vera: POST /api/v1/admin/tsdb/delete_series?match[]=up is 403" \
    expect a POST '/api/v1/admin/tsdb/delete_series?match%5B%5D=up' 403
sleep 1
check "Prometheus still alive and ready after vera's /-/quit" prom_alive

tricks=(
    //api/v1/admin/tsdb/snapshot
    /api//v1/admin/tsdb/snapshot
    /api/v1/%61dmin/tsdb/snapshot
    /API/V1/ADMIN/tsdb/snapshot
    /Api/v1/Admin/tsdb/snapshot
    /api/v1/./admin/tsdb/snapshot
    /api/v1/query/../admin/tsdb/snapshot
    /api/v1/query/%2e%2e/admin/tsdb/snapshot
    /api/v1/query%2f..%2fadmin/tsdb/snapshot
    /api/v1/admin%2ftsdb%2fsnapshot
    '/api/v1/query\..\admin/tsdb/snapshot'
    /api/v1/admin/tsdb/snapshot/
    /api/v1/admin/tsdb/snapshot%00
    //-/quit
    /-/QUIT
    /-/qu%69t
    /%2d/quit
    /./-/quit
    /x/../-/quit
    /-/quit/
    //-/reload
    /-/RELOAD
)
trick_codes() {
    local p code rc=0 seen=""
    for p in "${tricks[@]}"; do
        code=$(req a POST "$p")
        seen+=" $code"
        case $code in
            2*) echo "        POST $p from vera: HTTP $code (succeeded!)"; rc=1 ;;
            *) echo "        POST $p -> $code" ;;
        esac
    done
    return $rc
}
check "vera: ${#tricks[@]} path tricks on admin/lifecycle paths never get a 2xx" trick_codes
sleep 1
check "no snapshot was taken by vera (snapshots dir entries: $snap0 -> $(snapshots))" test "$(snapshots)" = "$snap0"
check "Prometheus still alive and ready after vera's tricks" prom_alive

t_log "phase 1: the admin may use the admin API"
check "adam: POST /api/v1/admin/tsdb/snapshot is 200" expect b POST /api/v1/admin/tsdb/snapshot 200
cp "$D/body" "$D/snap.json"
check "adam: the snapshot answer says success" json_status_success "$D/snap.json"
SNAP=$(jsonq get "$D/snap.json" data.name 2>/dev/null)
check "adam: snapshot dir '$SNAP' appears in Prometheus' storage" \
    test -n "$SNAP" -a -d "$PROMDATA/snapshots/$SNAP"
check "adam: POST /-/reload is 200" expect b POST /-/reload 200
check "adam: GET /api/v1/status/flags is 200" expect b GET /api/v1/status/flags 200

t_log "phase 1: audit log (text)"
sleep 0.5
if grep -q $'\e\[' "$LOG1"; then
    t_log "NOTE: the text log has ANSI colour escapes although stderr is a file; matching on a stripped copy"
fi
sed 's/\x1b\[[0-9;]*m//g' "$LOG1" > "$D/promgate-gw-text.stripped"
LOG1=$D/promgate-gw-text.stripped
audit_has() { # LOG PEER METHOD PATH STATUS — a promgate::audit line with all of them
    local log=$1 peer=$2 m=$3 p=$4 s=$5
    grep 'promgate::audit' "$log" | grep -F -- "$peer" | grep -F -- "$m" | grep -F -- "$p" | grep -Eq "status[=:\"]+$s\b" && return 0
    echo "        no audit line for $peer $m $p $s; audit lines: $(grep -c 'promgate::audit' "$log")"
    return 1
}
check "audit: vera POST /api/v1/admin/tsdb/snapshot 403" audit_has "$LOG1" vera POST /api/v1/admin/tsdb/snapshot 403
check "audit: vera POST /-/quit 403" audit_has "$LOG1" vera POST /-/quit 403
check "audit: vera GET /-/ready 200" audit_has "$LOG1" vera GET /-/ready 200
check "audit: vera GET /classic/graph 200" audit_has "$LOG1" vera GET /classic/graph 200
check "audit: adam POST /api/v1/admin/tsdb/snapshot 200" audit_has "$LOG1" adam POST /api/v1/admin/tsdb/snapshot 200
check "audit: adam POST /api/v1/query 200" audit_has "$LOG1" adam POST /api/v1/query 200
audit_fields() {
    local line f rc=0
    line=$(grep 'promgate::audit' "$LOG1" | grep -F 'adam' | grep -F '/api/v1/admin/tsdb/snapshot' | head -1)
    for f in peer addr method path status bytes duration_ms upstream_ms; do
        grep -q "\b$f=" <<< "$line" || { echo "        field $f missing in: $line"; rc=1; }
    done
    grep -q 'addr=10\.13\.13\.3\b' <<< "$line" || { echo "        addr is not adam's tunnel address: $line"; rc=1; }
    return $rc
}
check "audit: adam's snapshot line has peer addr method path status bytes duration_ms upstream_ms" audit_fields
check_not "log: the gateway private key never appears" grep -qF -- "$GWKEY" "$LOG1"

t_log "phase 1: admin endpoints"
check "/healthz 200" expect_code server "http://$ADMIN/healthz" 200
check "/readyz 200" expect_code server "http://$ADMIN/readyz" 200
on server curl -s --max-time 5 -o "$D/metrics.txt" "http://$ADMIN/metrics"
promtool_ok() {
    local rc
    promtool check metrics < "$D/metrics.txt" > "$D/promtool.out" 2>&1
    rc=$?
    [ -s "$D/promtool.out" ] && sed 's/^/        promtool: /' "$D/promtool.out" | head -30
    # promtool: 0 clean, 3 lint warnings, anything else a parse error.
    # A plain GET gets text format 0.0.4, which must lint clean.
    [ $rc = 0 ]
}
check "/metrics passes promtool check metrics with no warnings" promtool_ok
metric_has() {
    grep -Eq "$1" "$D/metrics.txt" && return 0
    echo "        /metrics has no line matching $1"; return 1
}
check "/metrics has process_cpu_seconds_total" metric_has '^process_cpu_seconds_total '
check "/metrics has process_resident_memory_bytes" metric_has '^process_resident_memory_bytes '
check "/metrics has promgate_http_request_duration_seconds_count{...status=\"200\"...}" \
    metric_has '^promgate_http_request_duration_seconds_count\{[^}]*status="200"'
check "/metrics has request duration samples with role=\"viewer\" and status=\"403\"" \
    metric_has '^promgate_http_request_duration_seconds_count\{([^}]*(status="403"|role="viewer")){2}'
check "/metrics has request duration samples with role=\"admin\"" \
    metric_has '^promgate_http_request_duration_seconds_count\{[^}]*role="admin"'
check "/metrics has promgate_peer_handshakes_total{peer=\"vera\"}" metric_has '^promgate_peer_handshakes_total\{[^}]*peer="vera"'
check "/metrics has promgate_peer_received_bytes_total{peer=\"adam\"}" metric_has '^promgate_peer_received_bytes_total\{[^}]*peer="adam"'
check "/metrics has promgate_peers_connected 2" metric_has '^promgate_peers_connected 2(\.0*)?$'
check "/metrics has promgate_config_reloads_refused_total" metric_has '^promgate_config_reloads_refused_total '
on server curl -s --max-time 5 -H 'Accept: application/openmetrics-text; version=1.0.0' -o "$D/metrics.om" "http://$ADMIN/metrics"
check "/metrics with Accept: application/openmetrics-text ends with # EOF" test "$(tail -n 1 "$D/metrics.om")" = "# EOF"
check_not "/metrics without it is text format 0.0.4 (no # EOF)" grep -q '^# EOF' "$D/metrics.txt"
scraped_by_prometheus() {
    on server curl -s --max-time 5 -o "$D/targets.json" http://127.0.0.1:9090/api/v1/targets &&
        python3 - "$D/targets.json" <<'PY'
import json, sys
ts = [t for t in json.load(open(sys.argv[1]))["data"]["activeTargets"] if t["labels"].get("job") == "promgate"]
ok = ts and all(t["health"] == "up" and not t["lastError"] for t in ts)
if not ok:
    print("        promgate target: " + "; ".join(f'{t["health"]} {t["lastError"]!r}' for t in ts))
sys.exit(0 if ok else 1)
PY
}
check "Prometheus scrapes /metrics without error (target up, no lastError)" retry 10 scraped_by_prometheus
scraped_series() {
    on server curl -s --max-time 5 -o "$D/hist.json" -G http://127.0.0.1:9090/api/v1/query \
        --data-urlencode 'query=promgate_http_request_duration_seconds_count{job="promgate",role="admin",status="200"}' &&
        jsonq has-result "$D/hist.json" 2>/dev/null
}
check "Prometheus has promgate_http_request_duration_seconds_count{role=\"admin\",status=\"200\"}" retry 5 scraped_series

lab_stop_pid "$PG"

t_log "phase 2: --log-format json after the subcommand, inline key, upstream_unready_after = 2s"
gateway_config "$D/gw-json.toml" "private_key = \"$GWKEY\"" 'upstream_unready_after = "2s"'
lab_start_promgate "$SRV" "$D/gw-json.toml" --log-format json
PG=$LAB_PROMGATE_PID
LOG2=$D/promgate-gw-json.log
fresh_session a
fresh_session b
check "vera: GET /-/ready 200 within 15 s after the restart" retry 15 expect a GET /-/ready 200
check "adam: GET /-/ready 200 within 15 s after the restart" retry 15 expect b GET /-/ready 200
check "vera: POST /api/v1/admin/tsdb/snapshot is 403" expect a POST /api/v1/admin/tsdb/snapshot 403
check "vera: GET /api/v1/query?query=up is 200" expect a GET '/api/v1/query?query=up' 200
check "adam: POST /api/v1/admin/tsdb/snapshot is 200" expect b POST /api/v1/admin/tsdb/snapshot 200
sleep 0.5
json_audit() {
    python3 - "$LOG2" <<'PY'
import json, sys
bad, audit = [], []
for i, line in enumerate(open(sys.argv[1], errors="replace"), 1):
    if not line.strip():
        continue
    try:
        d = json.loads(line)
    except ValueError:
        bad.append(f"line {i} is not JSON: {line[:160]!r}")
        continue
    if d.get("target") == "promgate::audit":
        f = dict(d.get("fields", {}))
        f.update({k: v for k, v in d.items() if k != "fields"})
        audit.append(f)
need = {"peer", "addr", "method", "path", "status", "bytes", "duration_ms", "upstream_ms"}
for a in audit:
    # A request refused by promgate itself never reached the upstream.
    missing = need - a.keys() - ({"upstream_ms"} if str(a.get("status")) in ("400", "403") else set())
    if missing:
        bad.append(f"audit record lacks {sorted(missing)}: {a}")
def has(peer, method, path, status):
    return any(a.get("peer") == peer and a.get("method") == method and a.get("path") == path
               and str(a.get("status")) == status for a in audit)
for want in [("vera", "POST", "/api/v1/admin/tsdb/snapshot", "403"),
             ("vera", "GET", "/api/v1/query", "200"),
             ("adam", "POST", "/api/v1/admin/tsdb/snapshot", "200")]:
    if not has(*want):
        bad.append(f"no JSON audit record {want}")
print(f"        {len(audit)} JSON audit records")
for b in bad[:10]:
    print("        " + b)
sys.exit(1 if bad else 0)
PY
}
check "json: every log line is JSON; audit records carry all fields, for vera and adam" json_audit
check_not "json: the inline private key never appears in the log" grep -qF -- "$GWKEY" "$LOG2"
check_not "json: nor its base64 body without padding" grep -qF -- "${GWKEY%=}" "$LOG2"

t_log "phase 2: upstream down -> /readyz 503"
check "/readyz 200 while Prometheus is up" expect_code server "http://$ADMIN/readyz" 200
check "adam: POST /-/quit is 200 (lifecycle API through the tunnel)" expect b POST /-/quit 200
# Not `! lab_pid_alive`: between its kill -0 and its read of /proc/PID/stat
# the shell may reap the zombie, and an unreadable stat counts as alive there.
prom_gone() {
    local st
    [ "$(http_code server http://127.0.0.1:9090/-/ready)" = 000 ] || return 1
    kill -0 "$PROM_PID" 2>/dev/null || return 0
    st=$(awk '{print $3}' "/proc/$PROM_PID/stat" 2>/dev/null)
    [ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}
if ! retry 10 prom_gone; then
    t_log "Prometheus did not quit; stopping it"
    lab_stop_pid "$PROM_PID"
fi
check "Prometheus has exited" prom_gone
check "vera: a request now fails with 502" expect a GET /api/v1/query?query=up 502
t0=$(now)
readyz_503() { [ "$(http_code server "http://$ADMIN/readyz")" = 503 ]; }
if retry 6 readyz_503; then ok=0; else ok=1; fi
el=$(seconds_since "$t0")
check "/readyz 503 within ~5 s of the failed request (took ${el}s)" test $ok = 0
check "/healthz still 200" expect_code server "http://$ADMIN/healthz" 200
lab_stop_pid "$PG"

t_log "phase 3: --log-format json before the subcommand, upstream_unready_after = off"
gateway_config "$D/gw-off.toml" "private_key_file = \"$D/gw.key\"" 'upstream_unready_after = "off"'
lab_spawn "$SRV" promgate-gw-off "$BIN" --log-format json serve --config "$D/gw-off.toml"
PG=$LAB_LAST_PID
lab_wait_promgate "$SRV" "$D/gw-off.toml" "$PG"
fresh_session a
check "vera: request fails with 502 (Prometheus down) within 15 s" retry 15 expect a GET /api/v1/query?query=up 502
stays_200() {
    local i code
    for i in $(seq 1 12); do
        code=$(http_code server "http://$ADMIN/readyz")
        [ "$code" = 200 ] || { echo "        /readyz was $code after $((i / 2)) s"; return 1; }
        sleep 0.5
    done
}
check "/readyz stays 200 for 6 s after the failure" stays_200
check "json (flag before subcommand): every log line is JSON" jsonq json-lines "$D/promgate-gw-off.log"

t_finish
