#!/usr/bin/env bash
# Issue 23, item 3, acceptance: Prometheus's own UI keeps working under the
# Host, Origin and Sec-Fetch-Site checks (src/host_check.rs), shown in a real
# browser through the tunnel.
#
# A headless Chromium (Debian's `chromium`, run as root with --no-sandbox
# under `timeout`) runs in client netns a, whose only route to the gateway
# is a wireguard-go tunnel, and dumps the DOM after its scripts ran:
#
#   1. /graph?g0.expr=up&g0.tab=1 by the tunnel address. Debian's prometheus
#      (2.42) ships only the classic UI: /graph -> 301 /graph/ -> 302
#      /classic/graph, the classic graph page, whose jQuery code queries
#      with GET (time(), /api/v1/label/__name__/values, /api/v1/query; no
#      POST, so no Origin header either). The DOM's
#      console table must hold the series up{instance=...,job="prometheus"}
#      with value 1, and the gateway's audit log must show those API
#      requests answered 200 and no refusal.
#   2. The same page by the name prom.e2e.example (in allowed_hosts,
#      resolved to the tunnel address by --host-resolver-rules): renders
#      the same result.
#   3. A same-origin POST from a real browser (the classic UI itself makes
#      none): a console template served by this Prometheus
#      (/consoles/post.html, through the gateway) whose script fetch()es
#      POST /api/v1/query. Chromium's net log shows it sent Origin:
#      http://10.13.13.1 and no Sec-Fetch-Site at all: Chromium 148 sends
#      Sec-Fetch-* only to potentially trustworthy (https or localhost)
#      origins, and http://10.13.13.1 is not one, so it is the Origin check
#      that lets this POST pass. The answer (200, status success, the up
#      series) is written into the DOM; the audit line shows POST
#      /api/v1/query 200.
#   4. The negative: the same load as 1 by http://prom.attacker.example/
#      (a DNS-rebinding name, not in allowed_hosts, mapped to the tunnel
#      address) must not render any query result: the gateway answers 421
#      and logs the refusal.
#   5. A cross-origin POST: the same page from another origin (python
#      http.server on 127.0.0.1:8000 in netns a) fetch()es POST
#      http://10.13.13.1/api/v1/query. Chromium sends Origin:
#      http://127.0.0.1:8000 (and, again, no Sec-Fetch-Site); the gateway
#      answers 403 (ForeignOrigin) and the page gets no result.
#
# Each Chromium run takes about 1.5 s; the whole test about 15 s.
#
#   alice (a) 10.13.13.2  viewer
set -u
. "$(dirname "$0")/lib.sh"

t_lab a
LOG=$D/promgate-gateway.log
ALLOWED=prom.e2e.example
EVIL=prom.attacker.example

# The console template of step 3: plain HTML and a script, no template
# actions. It reports what the browser got into the DOM.
mkdir -p "$D/consoles" "$D/evil"
cat > "$D/consoles/post.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>promgate e2e POST</title></head><body>
<pre id="out">pending</pre>
<script>
fetch('/api/v1/query', {
  method: 'POST',
  headers: {'Content-Type': 'application/x-www-form-urlencoded'},
  body: 'query=up'
}).then(function (r) {
  return r.text().then(function (t) {
    document.getElementById('out').textContent = 'HTTP ' + r.status + ' ' + t;
  });
}).catch(function (e) {
  document.getElementById('out').textContent = 'fetch failed: ' + e;
});
</script>
</body></html>
EOF

lab_start_prometheus "$SRV" --web.console.templates="$D/consoles"

t_gateway_key
lab_keypair "$D" a
{
    gateway_toml --gateway "allowed_hosts = [\"$ALLOWED\"]"
    peer_toml alice "$(cat "$D/a.pub")" 10.13.13.2
} > "$D/gateway.toml"
lab_start_promgate "$SRV" "$D/gateway.toml"
EP=$(lab_ip server):51820
# The client's only route to the gateway: the tunnel, for $GW/32.
lab_wg_client "$(lab_ns a)" "$(lab_ifname a)" "$D/a.key" 10.13.13.2/32 "$GWPUB" "$EP" "$GW/32"

check "alice reaches Prometheus through the tunnel" retry 15 expect_code a "http://$GW/-/ready" 200
route_is_tunnel() {
    local r; r=$(on a ip route get "$GW" | head -1)
    echo "        $r"
    [[ $r == *"dev $(lab_ifname a) "* ]]
}
check "netns a routes $GW through the wireguard-go interface only" route_is_tunnel
# The console table shows the instant value; wait for the first self-scrape.
up_direct() {
    on server curl -s --max-time 2 -o "$D/up.json" "http://127.0.0.1:9090/api/v1/query?query=up" &&
        jsonq up-is-one "$D/up.json" 2>/dev/null
}
check "Prometheus has scraped itself (up == 1)" retry 20 up_direct

# browse NAME URL [CHROMIUM ARGS...] — Chromium in netns a dumps URL's DOM
# into $D/NAME.html (its stderr into $D/NAME.err). Sets FROM to the number
# of the log's first line written during this load.
browse() {
    local name=$1 url=$2 rc t0; shift 2
    FROM=$(($(wc -l < "$LOG") + 1))
    t0=$(now)
    on a timeout -k 5 30 chromium --headless=new --no-sandbox --disable-gpu \
        --no-first-run --user-data-dir="$D/chrome-$name" --virtual-time-budget=15000 \
        "$@" --dump-dom "$url" > "$D/$name.html" 2> "$D/$name.err"
    rc=$?
    # Audit lines are written when a body ends: give the last one a moment.
    sleep 0.5
    echo "        chromium: exit $rc in $(seconds_since "$t0") s, DOM $(wc -c < "$D/$name.html") bytes"
    [ $rc = 0 ]
}
# since — the log lines written since the last browse started.
since() { tail -n +"$FROM" "$LOG"; }
# audit_lines — "METHOD PATH STATUS" of each audit line since FROM.
audit_lines() {
    since | grep 'promgate::audit' |
        sed -n 's/.*method=\([^ ]*\) path=\([^ ]*\) status=\([0-9]*\).*/\1 \2 \3/p'
}
show_requests() {
    echo "        requests the browser made (method path status):"
    audit_lines | sort | uniq -c | sed 's/^/          /'
}
# has_request METHOD PATH STATUS
has_request() { audit_lines | grep -qx "$1 $2 $3"; }
no_refusal() {
    ! since | grep -q 'refused a request for another host or from another origin' ||
        { since | grep 'refused a request' | sed 's/^/        /'; return 1; }
}
# The console table's rows: "up{...} VALUE", one a line, from the dumped DOM.
console_rows() {
    python3 - "$1" <<'EOF'
import html, re, sys
dom = open(sys.argv[1], encoding="utf-8", errors="replace").read()
table = re.search(r'<table[^>]*console_table.*?</table>', dom, re.S)
if not table:
    sys.exit("no console table in the DOM")
for row in re.findall(r'<tr>(.*?)</tr>', table.group(0), re.S):
    cells = [html.unescape(re.sub(r'<[^>]+>', '', c)).strip()
             for c in re.findall(r'<td[^>]*>(.*?)</td>', row, re.S)]
    if len(cells) == 2:
        print(cells[0], cells[1])
EOF
}
# sent_headers NETLOG METHOD PATH — the request headers Chromium sent for
# METHOD PATH (from its --log-net-log file), one a line, lower-cased names.
sent_headers() {
    python3 - "$@" <<'EOF'
import json, sys
log = json.load(open(sys.argv[1]))
want = "%s %s" % (sys.argv[2], sys.argv[3])
types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
for e in log["events"]:
    if types.get(e.get("type")) != "HTTP_TRANSACTION_SEND_REQUEST_HEADERS":
        continue
    p = e.get("params", {})
    line = p.get("line", "")
    if line.startswith(want + "?") or line.startswith(want + " "):
        for h in p.get("headers", []):
            name, _, value = h.partition(": ")
            print("%s: %s" % (name.lower(), value))
        sys.exit(0)
sys.exit("no %s in %s" % (want, sys.argv[1]))
EOF
}
# sent_header NETLOG METHOD PATH NAME VALUE... — that request carried
# NAME with one of the VALUEs; the VALUE "(none)" stands for no NAME at all.
sent_header() {
    local nl=$1 m=$2 p=$3 name=$4 got v; shift 4
    got=$(sent_headers "$nl" "$m" "$p" | awk -v n="$name: " 'index($0, n) == 1 { print substr($0, length(n) + 1) }')
    echo "        $m $p was sent with $name: ${got:-(none)}"
    for v in "$@"; do [ "${got:-(none)}" = "$v" ] && return 0; done
    return 1
}
# ui_rendered FILE — the classic graph page rendered, and its console table
# holds the up series of this Prometheus with value 1.
ui_rendered() {
    local rows
    grep -q 'id="graph_container"' "$1" || { echo "        no graph page in $1"; return 1; }
    rows=$(console_rows "$1")
    echo "        console table: ${rows:-(nothing)}"
    grep -Eq '^up\{instance="127\.0\.0\.1:9090", ?job="prometheus"\} 1$' <<< "$rows"
}
no_series() {
    ! grep -q 'up{instance=' "$1" || { echo "        an up series is in $1"; return 1; }
}
expr_is_up() { grep -q '<textarea[^>]*id="expr0"[^>]*>up</textarea>' "$1"; }

t_log "1. the UI by the tunnel address: http://$GW/graph?g0.expr=up&g0.tab=1"
check "chromium loaded the page" browse ui "http://$GW/graph?g0.expr=up&g0.tab=1"
show_requests
check "the page is the graph page with the expression 'up'" expr_is_up "$D/ui.html"
check "the DOM holds the query result: up{instance=\"127.0.0.1:9090\", job=\"prometheus\"} 1" ui_rendered "$D/ui.html"
check "audit: GET /graph 301 (to /graph/)" has_request GET /graph 301
check "audit: GET /graph/ 302 (to /classic/graph)" has_request GET /graph/ 302
check "audit: GET /classic/graph 200" has_request GET /classic/graph 200
check "audit: GET /api/v1/query 200 (the UI's queries)" has_request GET /api/v1/query 200
check "audit: GET /api/v1/label/__name__/values 200" has_request GET /api/v1/label/__name__/values 200
none_failed() {
    local bad; bad=$(audit_lines | awk '$3 >= 400')
    [ -z "$bad" ] || { sed 's/^/        answered: /' <<< "$bad"; return 1; }
}
check "no request of the page was answered 4xx or 5xx" none_failed
check "no refusal in the gateway's log" no_refusal

t_log "2. the UI by a name in allowed_hosts: http://$ALLOWED/graph"
check "chromium loaded the page" browse allowed "http://$ALLOWED/graph?g0.expr=up&g0.tab=1" \
    --host-resolver-rules="MAP $ALLOWED $GW"
show_requests
check "the DOM holds the query result" ui_rendered "$D/allowed.html"
check "audit: GET /api/v1/query 200" has_request GET /api/v1/query 200
check "no refusal in the gateway's log" no_refusal

t_log "3. a same-origin POST from the browser: http://$GW/consoles/post.html"
check "chromium loaded the page" browse post "http://$GW/consoles/post.html" --log-net-log="$D/post.netlog"
show_requests
post_answered() {
    local out
    out=$(python3 -c 'import html,re,sys; m=re.search(r"<pre id=\"out\">(.*?)</pre>", open(sys.argv[1]).read(), re.S); print(html.unescape(m.group(1)) if m else "(no #out)")' "$D/post.html")
    echo "        #out: $(head -c 300 <<< "$out")"
    [[ $out == 'HTTP 200 {"status":"success"'* ]] && [[ $out == *'"__name__":"up"'* ]] && [[ $out == *'"job":"prometheus"'* ]]
}
check "the page's fetch POST got 200, status success and the up series" post_answered
check "audit: POST /api/v1/query 200" has_request POST /api/v1/query 200
check "the POST carried Origin: http://$GW" sent_header "$D/post.netlog" POST /api/v1/query origin "http://$GW"
check "the POST carried Sec-Fetch-Site: same-origin, or none (not a secure origin)" \
    sent_header "$D/post.netlog" POST /api/v1/query sec-fetch-site same-origin '(none)'
check "no refusal in the gateway's log" no_refusal

t_log "4. DNS rebinding: http://$EVIL/graph (not in allowed_hosts) mapped to $GW"
check "chromium loaded the page" browse evil "http://$EVIL/graph?g0.expr=up&g0.tab=1" \
    --host-resolver-rules="MAP $EVIL $GW"
show_requests
check_not "the DOM holds no rendered query result" ui_rendered "$D/evil.html"
check "the DOM has no up series anywhere" no_series "$D/evil.html"
check "the DOM is the gateway's refusal, naming $EVIL and gateway.allowed_hosts" \
    sh -c "grep -q '$EVIL' '$D/evil.html' && grep -q 'gateway.allowed_hosts' '$D/evil.html'"
check "audit: GET /graph 421" has_request GET /graph 421
# every_status CODE — there were audit lines since FROM, all with status CODE.
every_status() { audit_lines | grep -q . && ! audit_lines | awk -v c="$1" '$3 != c' | grep .; }
check "audit: nothing reached Prometheus (every request 421)" every_status 421
refused_host() { since | grep 'refused a request for another host or from another origin' | grep -q "$EVIL"; }
check "the gateway logged the refusal naming $EVIL" refused_host

t_log "5. a cross-origin POST: a page on http://127.0.0.1:8000 (netns a) POSTs to http://$GW/api/v1/query"
sed "s|'/api/v1/query'|'http://$GW/api/v1/query'|" "$D/consoles/post.html" > "$D/evil/post.html"
lab_start_pyhttp "$(lab_ns a)" 127.0.0.1:8000 "$D/evil"
check "chromium loaded the page" browse cross "http://127.0.0.1:8000/post.html" --log-net-log="$D/cross.netlog"
show_requests
check "the POST carried Origin: http://127.0.0.1:8000" sent_header "$D/cross.netlog" POST /api/v1/query origin http://127.0.0.1:8000
check "the POST carried Sec-Fetch-Site: cross-site, or none (not a secure origin)" \
    sent_header "$D/cross.netlog" POST /api/v1/query sec-fetch-site cross-site '(none)'
check "audit: POST /api/v1/query 403" has_request POST /api/v1/query 403
refused_origin() { since | grep 'refused a request for another host or from another origin' | grep 'method=POST' | grep -q 'path=/api/v1/query'; }
check "the gateway logged the refusal of the POST" refused_origin
no_answer_in_dom() {
    echo "        #out: $(grep -o '<pre id="out">[^<]*' "$D/cross.html" | cut -c15- | head -c 200)"
    ! grep -q '"status":"success"' "$D/cross.html"
}
check "the page got no query result" no_answer_in_dom

t_finish
