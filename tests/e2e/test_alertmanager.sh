#!/usr/bin/env bash
# Issue 28: Alertmanager behind the same tunnel, and the stock clients people
# point at Prometheus, with real parts only.
#
# Server netns: Debian's prometheus-alertmanager (127.0.0.1:9093, one `null`
# receiver, group_wait and group_interval 1s) and Debian's prometheus
# (127.0.0.1:9090, --rules.alert.resend-delay=1s: its first alerts are
# evaluated before it has found the Alertmanager and are dropped, and by
# default the next send comes a minute later) with two rules that fire at
# once: TeamADown {namespace="team-a"} and TeamBDown {namespace="team-b"}.
# promgate serves both as [[upstream]] tables: prometheus on tunnel port 80,
# alertmanager on 9093.
#
#   vera  (a) 10.13.13.2  viewer; also runs a second Prometheus (federate
#                         and remote_read through the tunnel) and Chromium
#   rita  (b) 10.13.13.3  $SILENCER (the role that may silence but not
#                         administer Prometheus)
#   alice (c) 10.13.13.4  $SILENCER, scope = { namespace = "team-a" }
#   adam  (d) 10.13.13.5  admin
#
# alice must both see through her scope and silence, so she has the
# silencing role with a scope: this test assumes that role may be scoped
# (admin may not: `check` refuses a scoped admin, as its endpoints act on all
# data). `promgate check` of the config is the first check that says so.
#
# Every Alertmanager client is amtool (shipped in the same package), run in
# the peer's netns: `alert query`, `silence query`, `silence add`, `silence
# expire`, `config show`. What a client did is always checked again directly
# against Alertmanager from the server netns (its API, never the gateway's
# word for it).
#
# Debian's prometheus-alertmanager ships no web UI (its Elm application is
# built from sources Debian does not package; `/` is a page saying so and
# naming generate-ui.sh, which downloads the Elm compiler). So the browser
# part is what a browser can do with Debian's Alertmanager: Chromium in netns
# a loads `/` through the tunnel and gets the same DOM as from the server
# netns directly, then opens /api/v2/alerts/groups and its DOM lists both
# teams' alerts. A screenshot of that page is taken; with E2E_SCREENSHOT_DIR
# set it is copied there as alertmanager-alerts.png.
set -u
. "$(dirname "$0")/lib.sh"

# The role that may create and expire silences without being admin. Issue 28
# leaves the name to the implementation; change it here if it differs.
SILENCER=responder

t_lab a b c d
ADMIN=127.0.0.1:9586
AM_DIRECT=http://127.0.0.1:9093
AM_TUNNEL=http://$GW:9093
mkdir -p "$D/am" "$D/r"

t_log "Alertmanager and the alert-generating Prometheus in the server netns"
cat > "$D/alertmanager.yml" <<'EOF'
route:
  receiver: "null"
  group_by: [alertname, namespace]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
EOF
check "amtool check-config accepts the Alertmanager config" quiet amtool check-config "$D/alertmanager.yml"
lab_start_alertmanager "$SRV" 127.0.0.1:9093 "$D/alertmanager.yml"
AM_PID=$LAB_AM_PID

cat > "$D/rules.yml" <<'EOF'
groups:
  - name: teams
    interval: 1s
    rules:
      - alert: TeamADown
        expr: vector(1)
        for: 0s
        labels:
          namespace: team-a
      - alert: TeamBDown
        expr: vector(1)
        for: 0s
        labels:
          namespace: team-b
EOF
# The lab's Prometheus config ends with this text; rule_files and alerting
# are top-level keys.
# shellcheck disable=SC2034 # read by lab_start_prometheus
LAB_PROM_EXTRA_SCRAPE="rule_files:
  - $D/rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:9093']"
lab_start_prometheus "$SRV" --rules.alert.resend-delay=1s
check "promtool check config accepts the server Prometheus's config (rules included)" \
    quiet promtool check config "$D/prom-9090/prometheus.yml"

# amt NODE NAME ARGS... — amtool in NODE's netns: through the tunnel from a
# client, directly from the server. Its stdout goes to $D/am/NAME.out, its
# stderr to $D/am/NAME.err; its exit code is amtool's.
amt() {
    local n=$1 name=$2 url=$AM_TUNNEL; shift 2
    [ "$n" = server ] && url=$AM_DIRECT
    on "$n" timeout -k 5 30 amtool --alertmanager.url="$url" --timeout=5s "$@" \
        > "$D/am/$name.out" 2> "$D/am/$name.err"
}
# shows FILE WORD... / lacks FILE WORD... — every WORD is (is not) in FILE;
# says what the file held when not.
shows() {
    local f=$1 w rc=0; shift
    for w in "$@"; do grep -qF -- "$w" "$f" || rc=1; done
    [ $rc = 0 ] || echo "        $(basename "$f"): $(head -c 400 "$f" | tr '\n' '|')"
    return $rc
}
lacks() {
    local f=$1 w rc=0; shift
    for w in "$@"; do grep -qF -- "$w" "$f" && { echo "        $(basename "$f") has '$w'"; rc=1; }; done
    return $rc
}
# alerts_query NODE NAME WORD... — `amtool alert query` from NODE succeeds
# and lists every WORD (an alert name).
alerts_query() { local n=$1 name=$2; shift 2; amt "$n" "$name" alert query && shows "$D/am/$name.out" "$@"; }

check "both teams' alerts reach Alertmanager within 30 s (amtool alert query, direct)" \
    retry 30 alerts_query server direct-alerts TeamADown TeamBDown

# silences_json — every silence Alertmanager holds, from its API directly,
# into $D/am/silences.json.
silences_json() { on server curl -s --max-time 5 -o "$D/am/silences.json" "$AM_DIRECT/api/v2/silences"; }
# silence_state ID STATE — Alertmanager (directly) holds silence ID in STATE.
silence_state() {
    silences_json && jsonq eval "$D/am/silences.json" \
        "any(s['id'] == '$1' and s['status']['state'] == '$2' for s in d)" 2>/dev/null ||
        { echo "        silence $1 is not $2"; return 1; }
}
# silence_pinned ID LABEL VALUE — silence ID has the matcher LABEL="VALUE"
# (equal, not regex).
silence_pinned() {
    silences_json && jsonq eval "$D/am/silences.json" \
        "any(s['id'] == '$1' and any(m['name'] == '$2' and m['value'] == '$3' and not m['isRegex'] and m.get('isEqual', True) for m in s['matchers']) for s in d)"
}
# no_silence_by AUTHOR COND — no silence created by AUTHOR for which the
# Python expression COND (over one silence, as s) holds.
no_silence_by() {
    silences_json && jsonq eval "$D/am/silences.json" \
        "not any(s['createdBy'] == '$1' and ($2) for s in d)"
}
PINNED_A="any(m['name'] == 'namespace' and m['value'] == 'team-a' and not m['isRegex'] and m.get('isEqual', True) for m in s['matchers'])"
# silence_id NAME — the ID `amtool silence add` printed into $D/am/NAME.out.
silence_id() { grep -Eo '^[0-9a-f-]{36}$' "$D/am/$1.out" | head -1; }
# add_silence NODE NAME AUTHOR MATCHER... — amtool silence add; sets SID.
add_silence() {
    local n=$1 name=$2 author=$3; shift 3
    SID=
    amt "$n" "$name" silence add --author="$author" --comment="promgate e2e $name" --duration=1h "$@" || {
        echo "        amtool silence add from $n: $(head -c 300 "$D/am/$name.err" | tr '\n' ' ')"; return 1; }
    SID=$(silence_id "$name")
    [ -n "$SID" ] || { echo "        no silence ID in: $(head -c 200 "$D/am/$name.out")"; return 1; }
}

# Silences made directly, for the scope checks: one pinned to each team and
# one pinned to none. Their alert names match nothing that fires, so no
# firing alert is hidden by them.
check "a silence pinned to team-a made directly" add_silence server s-a ops alertname=QuietA namespace=team-a
S_A=$SID
check "a silence pinned to team-b made directly" add_silence server s-b ops alertname=QuietB namespace=team-b
S_B=$SID
check "a silence pinned to no namespace made directly" add_silence server s-all ops alertname=QuietAll
S_ALL=$SID

# browse NODE NAME URL [CHROMIUM ARGS...] — headless Chromium in NODE's
# netns dumps URL's DOM, after its scripts ran, into $D/NAME.html.
browse() {
    local n=$1 name=$2 url=$3 rc; shift 3
    on "$n" timeout -k 5 30 chromium --headless=new --no-sandbox --disable-gpu \
        --no-first-run --user-data-dir="$D/chrome-$name" --virtual-time-budget=10000 \
        "$@" --dump-dom "$url" > "$D/$name.html" 2> "$D/$name.err"
    rc=$?
    echo "        chromium ($n): exit $rc, DOM $(wc -c < "$D/$name.html") bytes"
    [ $rc = 0 ]
}
# screenshot NODE NAME URL — a 1280x800 PNG of URL into $D/NAME.png.
screenshot() {
    local n=$1 name=$2 url=$3
    rm -f "$D/$name.png"
    on "$n" timeout -k 5 30 chromium --headless=new --no-sandbox --disable-gpu \
        --no-first-run --user-data-dir="$D/chrome-$name" --virtual-time-budget=10000 \
        --hide-scrollbars --window-size=1280,800 --screenshot="$D/$name.png" "$url" \
        > "$D/$name.err" 2>&1
    is_png "$D/$name.png"
}
is_png() {
    [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
        { echo "        $1 is not a PNG"; return 1; }
}
# groups_list_both FILE — a DOM (or JSON) of the alert groups holding both
# teams' firing alerts.
groups_list_both() { shows "$1" TeamADown TeamBDown '"namespace":"team-a"' '"namespace":"team-b"'; }

t_log "the browser, directly from the server netns (the baseline)"
check "chromium loads Alertmanager's / directly" browse server am-root-direct "$AM_DIRECT/"
check "the page is Alertmanager's (title Alertmanager)" shows "$D/am-root-direct.html" '<title>Alertmanager</title>'
check "chromium shows /api/v2/alerts/groups directly with both teams' alerts" \
    browse server am-groups-direct "$AM_DIRECT/api/v2/alerts/groups"
check "  ... the DOM lists TeamADown (team-a) and TeamBDown (team-b)" groups_list_both "$D/am-groups-direct.html"
check "chromium takes a screenshot of it directly (a PNG)" screenshot server am-groups-direct "$AM_DIRECT/api/v2/alerts/groups"

t_log "promgate with two [[upstream]] tables: prometheus on port 80, alertmanager on 9093"
t_gateway_key
EP=$(lab_ip server):51820
for n in a b c d; do lab_keypair "$D" $n; done
CFG=$D/gw.toml
{
    gateway_toml --upstream none --admin "$ADMIN" --admin-line 'upstream_unready_after = "2s"'
    upstream_toml prometheus http://127.0.0.1:9090 80 prometheus
    upstream_toml alertmanager "$AM_DIRECT" 9093 alertmanager
    peer_toml vera "$(cat "$D/a.pub")" 10.13.13.2
    peer_toml rita "$(cat "$D/b.pub")" 10.13.13.3 "role = \"$SILENCER\""
    peer_toml alice "$(cat "$D/c.pub")" 10.13.13.4 "role = \"$SILENCER\"" 'scope = { namespace = "team-a" }'
    peer_toml adam "$(cat "$D/d.pub")" 10.13.13.5 'role = "admin"'
} > "$CFG"
check "promgate check accepts the config (two [[upstream]], a scoped $SILENCER)" \
    "$BIN" check --config "$CFG"
lab_start_promgate "$SRV" "$CFG"
LOG=$D/promgate-gw.log
i=2
for n in a b c d; do
    lab_wg_client "$(lab_ns $n)" "$(lab_ifname $n)" "$D/$n.key" 10.13.13.$i/32 "$GWPUB" "$EP" "$GW/32"
    i=$((i + 1))
done

check "vera reaches Prometheus on port 80 within 15 s (handshake)" retry 15 expect_code a "http://$GW/-/ready" 200
check "vera reaches Alertmanager on port 9093 (/-/ready)" retry 10 expect_code a "$AM_TUNNEL/-/ready" 200
for n in b c d; do
    check "peer $n reaches Alertmanager on port 9093 within 15 s (handshake)" \
        retry 15 expect_code $n "$AM_TUNNEL/-/ready" 200
done

t_log "a viewer reads Alertmanager with amtool"
check "vera: amtool alert query lists TeamADown and TeamBDown" alerts_query a vera-alerts TeamADown TeamBDown
silence_ids() { local n=$1 name=$2; shift 2; amt "$n" "$name" silence query -q && shows "$D/am/$name.out" "$@"; }
check "vera: amtool silence query lists the three silences" silence_ids a vera-silences "$S_A" "$S_B" "$S_ALL"
config_shown() { amt a vera-config config show && shows "$D/am/vera-config.out" 'group_wait: 1s'; }
check "vera: amtool config show (the status API) shows the route's group_wait: 1s" config_shown

t_log "a viewer's browser: Alertmanager's page and its alerts, through the tunnel"
check "chromium (netns a) loads Alertmanager's / through the tunnel" browse a am-root "$AM_TUNNEL/"
same_dom() {
    cmp -s "$D/am-root-direct.html" "$D/am-root.html" && return 0
    diff "$D/am-root-direct.html" "$D/am-root.html" | head -10 | sed 's/^/        /'
    return 1
}
check "  ... the same DOM as directly from the server netns" same_dom
check "chromium (netns a) opens /api/v2/alerts/groups through the tunnel" \
    browse a am-groups "$AM_TUNNEL/api/v2/alerts/groups"
check "  ... the DOM lists TeamADown (team-a) and TeamBDown (team-b)" groups_list_both "$D/am-groups.html"
check "chromium (netns a) takes a 1280x800 screenshot of it through the tunnel" \
    screenshot a am-groups "$AM_TUNNEL/api/v2/alerts/groups"
if [ -n "${E2E_SCREENSHOT_DIR:-}" ] && [ -s "$D/am-groups.png" ]; then
    mkdir -p "$E2E_SCREENSHOT_DIR" && cp "$D/am-groups.png" "$E2E_SCREENSHOT_DIR/alertmanager-alerts.png" &&
        t_log "screenshot kept as $E2E_SCREENSHOT_DIR/alertmanager-alerts.png"
fi

# audit_of PEER PATH — the gateway's audit lines for PEER and PATH.
audit_of() {
    sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep 'promgate::audit' | grep -Fw "peer=$1" | grep -E "path=$2( |$)"
}
# audit_has PEER METHOD PATH STATUS — a promgate::audit line with all four.
audit_has() {
    audit_of "$1" "$3" | grep -Fw "method=$2" | grep -Eq "status=$4\b" && return 0
    echo "        no audit line: peer=$1 method=$2 path=$3 status=$4"
    return 1
}
# audit_names_upstream PEER PATH NAME — that peer's audit line for PATH names
# the upstream NAME (issue 28: "the audit line names the upstream").
audit_names_upstream() {
    audit_of "$1" "$2" | grep -qF "$3" || { echo "        $(audit_of "$1" "$2" | tail -1)"; return 1; }
}
check "audit: vera GET /api/v2/alerts 200" retry 5 audit_has vera GET /api/v2/alerts 200
check "audit: vera's Alertmanager lines name the upstream (alertmanager)" audit_names_upstream vera /api/v2/alerts alertmanager

t_log "a viewer may not silence"
check_not "vera: amtool silence add is refused (amtool exits non-zero)" \
    add_silence a vera-add vera alertname=TeamADown namespace=team-a
check "audit: vera POST /api/v2/silences 403" retry 5 audit_has vera POST /api/v2/silences 403
check "Alertmanager holds no silence by vera" no_silence_by vera True

t_log "a scoped $SILENCER (alice, team-a) sees only team-a"
# Before any silence hides a firing alert.
check "alice: amtool alert query lists TeamADown" alerts_query c alice-alerts TeamADown
check "  ... and not TeamBDown" lacks "$D/am/alice-alerts.out" TeamBDown
alice_asks_team_b() { amt c alice-alerts-b alert query namespace=team-b; lacks "$D/am/alice-alerts-b.out" TeamBDown; }
check "alice: amtool alert query namespace=team-b gets no TeamBDown" alice_asks_team_b
# get NODE NAME URL — curl GET; the body goes to $D/r/NAME, the code is printed.
get() { on "$1" curl -s -o "$D/r/$2" -w '%{http_code}' --max-time 10 "$3" 2>/dev/null; }
only_team_a() { # FILE — JSON that names team-a and nothing of team-b
    shows "$1" team-a && lacks "$1" team-b TeamBDown
}
alice_groups() { [ "$(get c alice-groups "$AM_TUNNEL/api/v2/alerts/groups")" = 200 ] && only_team_a "$D/r/alice-groups"; }
check "alice: /api/v2/alerts/groups is 200 and holds team-a only" alice_groups
alice_alerts_json() { [ "$(get c alice-alerts.json "$AM_TUNNEL/api/v2/alerts")" = 200 ] && only_team_a "$D/r/alice-alerts.json"; }
check "alice: /api/v2/alerts is 200 and holds team-a only" alice_alerts_json
check "alice: amtool silence query lists the team-a silence" silence_ids c alice-silences "$S_A"
check "  ... and neither the team-b silence nor the unpinned one" lacks "$D/am/alice-silences.out" "$S_B" "$S_ALL"
alice_silence_b() { [ "$(get c alice-silence-b "$AM_TUNNEL/api/v2/silence/$S_B")" = 200 ]; }
check_not "alice: GET /api/v2/silence/<team-b's ID> is not 200" alice_silence_b

check "alice: amtool silence add alertname=TeamADown namespace=team-a is allowed" \
    add_silence c alice-add-a alice alertname=TeamADown namespace=team-a
ALICE_SID=$SID
check "  ... Alertmanager holds it, active" silence_state "$ALICE_SID" active
check "  ... pinned to namespace=\"team-a\"" silence_pinned "$ALICE_SID" namespace team-a
check_not "alice: amtool silence add alertname=TeamBDown namespace=team-b is refused" \
    add_silence c alice-add-b alice alertname=TeamBDown namespace=team-b
check_not "alice: amtool silence add alertname=TeamBDown (no namespace matcher) is refused" \
    add_silence c alice-add-none alice alertname=TeamBDown
check_not "alice: amtool silence add alertname=TeamBDown 'namespace=~team-.*' is refused" \
    add_silence c alice-add-re alice alertname=TeamBDown 'namespace=~team-.*'
check "Alertmanager holds no silence by alice that is not pinned to namespace=\"team-a\"" \
    no_silence_by alice "not $PINNED_A"
check "audit: alice POST /api/v2/silences 403" retry 5 audit_has alice POST /api/v2/silences 403
check_not "alice: amtool silence expire <team-b's silence> is refused" amt c alice-expire-b silence expire "$S_B"
check "  ... it is still active" silence_state "$S_B" active
check_not "alice: amtool silence expire <the unpinned silence> is refused" amt c alice-expire-all silence expire "$S_ALL"
check "  ... it is still active" silence_state "$S_ALL" active
if [ -n "$ALICE_SID" ]; then
    check "alice: amtool silence expire <her own team-a silence> is allowed" amt c alice-expire-a silence expire "$ALICE_SID"
    check "  ... Alertmanager holds it, expired" retry 5 silence_state "$ALICE_SID" expired
else
    check "alice: expiring her own silence needs the silence she could not create" false
fi

t_log "the $SILENCER (rita) and the admin (adam) create and expire silences; the viewer may not expire"
# silenced_direct — TeamADown is no longer an active alert (direct).
silenced_direct() { amt server direct-active alert query && lacks "$D/am/direct-active.out" TeamADown; }
active_direct() { alerts_query server direct-active TeamADown TeamBDown; }
for who in rita:b adam:d; do
    p=${who%:*} n=${who#*:}
    check "$p: amtool silence add alertname=TeamADown namespace=team-a" \
        add_silence "$n" "$p-add" "$p" alertname=TeamADown namespace=team-a
    sid=$SID
    # Without a silence, what follows would act on nothing and some of it
    # (the viewer's refused expire) would pass for the wrong reason.
    if [ -z "$sid" ]; then
        check "$p: the expire checks need the silence $p could not create" false
        continue
    fi
    check "  ... Alertmanager holds it, active, by $p" silence_state "$sid" active
    check "  ... and TeamADown is silenced within 10 s (no longer active, direct)" retry 10 silenced_direct
    check "audit: $p POST /api/v2/silences 200" retry 5 audit_has "$p" POST /api/v2/silences 200
    if [ "$p" = rita ]; then
        check_not "vera: amtool silence expire <rita's silence> is refused" amt a vera-expire silence expire "$sid"
        check "  ... it is still active" silence_state "$sid" active
        check "audit: vera DELETE /api/v2/silence/$sid 403" retry 5 audit_has vera DELETE "/api/v2/silence/$sid" 403
    fi
    check "$p: amtool silence expire <that silence>" amt "$n" "$p-expire" silence expire "$sid"
    check "  ... Alertmanager holds it, expired" retry 5 silence_state "$sid" expired
    check "  ... and TeamADown is active again within 10 s (direct)" retry 10 active_direct
    check "audit: $p DELETE /api/v2/silence/<id> 200" retry 5 audit_has "$p" DELETE "/api/v2/silence/$sid" 200
done

t_log "a second Prometheus in netns a federates and remote-reads through the tunnel, as vera (an unscoped viewer)"
# Federated series get via="federate" (metric_relabel_configs), so they are
# told apart from what remote read brings: a query for via="federate" finds
# nothing on the server. ALERTS exists only on the server: the second
# Prometheus has no rules, so only remote read can answer it.
# shellcheck disable=SC2034 # read by lab_start_prometheus
LAB_PROM_EXTRA_SCRAPE="  - job_name: federate
    honor_labels: true
    metrics_path: /federate
    params:
      'match[]': ['{__name__=\"up\"}']
    static_configs:
      - targets: ['$GW:80']
    metric_relabel_configs:
      - target_label: via
        replacement: federate
remote_read:
  - url: http://$GW/api/v1/read
    read_recent: true"
LAB_PROM_LISTEN=127.0.0.1:9190 lab_start_prometheus "$(lab_ns a)"
check "promtool check config accepts the second Prometheus's config" \
    quiet promtool check config "$D/prom-9190/prometheus.yml"
# query2 NAME PROMQL — the second Prometheus's /api/v1/query, into $D/r/NAME;
# true if it answered success with at least one series.
query2() {
    on a curl -s --max-time 10 -o "$D/r/$1" -G http://127.0.0.1:9190/api/v1/query \
        --data-urlencode "query=$2" && jsonq has-result "$D/r/$1" 2>/dev/null
}
check "federation: up{via=\"federate\",job=\"prometheus\"} (the server's up, federated) within 20 s" \
    retry 20 query2 federated 'up{via="federate",job="prometheus"}'
check "  ... the federation target is up (up{job=\"federate\"} == 1)" \
    retry 10 query2 federate-up 'up{job="federate"} == 1'
check "audit: vera GET /federate 200" retry 5 audit_has vera GET /federate 200
check "remote read: ALERTS{alertname=\"TeamBDown\"} (only the server has it) within 20 s" \
    retry 20 query2 remote-read 'ALERTS{alertname="TeamBDown",alertstate="firing"}'
check "  ... the same for prometheus_build_info{instance=\"127.0.0.1:9090\"} (the server's own)" \
    retry 10 query2 remote-read-build 'prometheus_build_info{job="prometheus",instance="127.0.0.1:9090"}'
check "audit: vera POST /api/v1/read 200" retry 5 audit_has vera POST /api/v1/read 200

t_log "status, metrics and readiness name each upstream; a down Alertmanager leaves Prometheus served"
on server "$BIN" status --config "$CFG" > "$D/status.txt" 2>&1
check "promgate status shows the alertmanager upstream and its URL" shows "$D/status.txt" alertmanager "$AM_DIRECT"
check "promgate status shows the prometheus upstream and its URL" shows "$D/status.txt" prometheus http://127.0.0.1:9090
upstream_up() { # NAME VALUE — a promgate_upstream_up sample naming NAME has VALUE
    on server curl -s --max-time 5 "http://$ADMIN/metrics" > "$D/metrics.txt" &&
        grep -Eq "^promgate_upstream_up\{[^}]*\"$1\"[^}]*\} $2(\.0*)?$" "$D/metrics.txt" ||
        { echo "        $(grep '^promgate_upstream_up' "$D/metrics.txt" | tr '\n' ' ')"; return 1; }
}
check "promgate_upstream_up names alertmanager, 1" retry 10 upstream_up alertmanager 1
check "promgate_upstream_up names prometheus, 1" upstream_up prometheus 1
lab_stop_pid "$AM_PID"
am_unreachable() { ! amt a vera-down alert query; }
check "Alertmanager stopped: amtool alert query through the tunnel fails within 10 s" retry 10 am_unreachable
check "promgate_upstream_up for alertmanager goes 0 within 20 s" retry 20 upstream_up alertmanager 0
# upstream_unready_after is 2s: past it, a down prometheus upstream would
# have made /readyz 503 by now.
sleep 3
check "/readyz stays 200 with Alertmanager down (only a prometheus upstream counts)" expect_code server "http://$ADMIN/readyz" 200
check "vera: Prometheus still answers /api/v1/query through the tunnel" \
    expect_code a "http://$GW/api/v1/query?query=up" 200

t_finish
