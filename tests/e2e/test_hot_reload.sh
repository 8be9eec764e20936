#!/usr/bin/env bash
# Hot reload of peers_dir under load (the issue's requirement):
#
#   alice (a) 10.13.13.2  streams a 200 MiB file (curl --limit-rate, ~10 s)
#   bob   (b) 10.13.13.3  added by writing peers.d/bob.toml mid-download;
#                         must get its first 200 within 2 s of the write
#   carol (c) 10.13.13.4  added by fixing a broken file
#
# alice's download must finish complete (curl exit 0, every byte, same hash)
# and her session must survive: no new handshake on either side. A broken
# file is refused (logged, counted) while alice and bob keep working, and
# a SIGHUP reloads without touching sessions. Finally bob's file is removed
# while he streams: his stream must end at once, the others stay served.
#
# The upstream is python3's http.server serving static files in the server
# netns (the e2e tests do not need nginx).
set -u
. "$(dirname "$0")/lib.sh"

GW=10.13.13.1
BIG_MIB=${HOT_RELOAD_MIB:-200}
RATE=${HOT_RELOAD_RATE:-20M}
lab_up
lab_add_client a
lab_add_client b
lab_add_client c
SRV=$(lab_ns server)
D=$LAB_DIR
BIN=$(lab_promgate_bin)
ADMIN=127.0.0.1:9586

t_log "upstream: python3 http.server with a $BIG_MIB MiB file"
mkdir -p "$D/www"
echo '<html><body>hot reload upstream</body></html>' > "$D/www/index.html"
head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom > "$D/www/big.bin"
BIG_SIZE=$(stat -c %s "$D/www/big.bin")
BIG_SUM=$(sha256sum < "$D/www/big.bin" | cut -d' ' -f1)
lab_start_pyhttp "$SRV" 127.0.0.1:8080 "$D/www"

(umask 077; "$BIN" genkey > "$D/gw.key")
"$BIN" pubkey < "$D/gw.key" > "$D/gw.pub"
GWPUB=$(cat "$D/gw.pub")
EP=$(lab_ip server):51820
for n in a b c; do lab_keypair "$D" "$n"; done

mkdir -p "$D/peers.d"
cat > "$D/gateway.toml" <<EOF
[gateway]
private_key_file = "$D/gw.key"
listen_port = 51820
address = "$GW/24"
upstream = "http://127.0.0.1:8080"
http_ports = [80]
peers_dir = "peers.d"

[admin]
listen = "$ADMIN"
EOF

# peer_file NAME KEYFILE IP — the TOML of one peer
peer_file() {
    # The upstream is a file server, not Prometheus: name its file for viewers.
    printf '[[peer]]\nname = "%s"\npublic_key = "%s"\nallowed_ips = ["%s/32"]\nallow_paths = ["/big.bin"]\n' "$1" "$(cat "$2")" "$3"
}
# put_peer_file NAME CONTENT — atomic write: a hidden temp file, then rename
put_peer_file() {
    printf '%s' "$2" > "$D/peers.d/.$1.tmp"
    mv -f "$D/peers.d/.$1.tmp" "$D/peers.d/$1.toml"
}
put_peer_file alice "$(peer_file alice "$D/a.pub" 10.13.13.2)"

quiet() { "$@" >/dev/null 2>&1; }
check "promgate check accepts the config with alice in peers.d" quiet "$BIN" check --config "$D/gateway.toml"
lab_start_promgate "$SRV" "$D/gateway.toml"
PG=$LAB_PROMGATE_PID
PGLOG=$D/promgate-gateway.log

lab_wg_client "$(lab_ns a)" "$(lab_ifname a)" "$D/a.key" 10.13.13.2/32 "$GWPUB" "$EP" "$GW/32"
# bob and carol: interfaces up, but no packet sent yet (no keepalive), so no
# handshake is attempted before their peer files exist.
lab_wg_client "$(lab_ns b)" "$(lab_ifname b)" "$D/b.key" 10.13.13.3/32 "$GWPUB" "$EP" "$GW/32"
lab_wg_client "$(lab_ns c)" "$(lab_ifname c)" "$D/c.key" 10.13.13.4/32 "$GWPUB" "$EP" "$GW/32"

# metric NAME_AND_LABELS — its value from /metrics (empty if absent)
metric() {
    on server curl -s --max-time 5 "http://$ADMIN/metrics" |
        awk -v m="$1" '$1 == m { print $2; found = 1; exit } END { if (!found) exit 1 }'
}
wg_hs() { on "$1" wg show "$(lab_ifname "$1")" latest-handshakes | awk '{print $2}'; }
# fresh_session NODE — remove and re-add the gateway on the client, so the
# next packet starts a handshake at once (no 5 s retry timer left over from
# an initiation that the gateway ignored).
fresh_session() {
    local ifn; ifn=$(lab_ifname "$1")
    on "$1" wg set "$ifn" peer "$GWPUB" remove
    on "$1" wg set "$ifn" peer "$GWPUB" endpoint "$EP" allowed-ips "$GW/32"
}
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }

t_log "alice: baseline"
check "alice: GET / is 200 within 15 s (handshake)" retry 15 expect_code a "http://$GW/" 200
T_CURL_MAX=2 check "bob: not served before his file exists" expect_code b "http://$GW/" 000
HS_A0=$(metric 'promgate_peer_handshakes_total{peer="alice"}')
WGHS_A0=$(wg_hs a)
REFUSED0=$(metric promgate_config_reloads_refused_total)
APPLIED0=$(metric promgate_config_reloads_applied_total)
check "metrics: alice has handshakes_total >= 1 (${HS_A0:-absent})" test "${HS_A0:-0}" -ge 1
check "alice: wireguard-go reports a handshake ($WGHS_A0)" test "${WGHS_A0:-0}" -gt 0

t_log "alice streams $BIG_MIB MiB at $RATE; bob's file is written mid-download"
on a curl -s --limit-rate "$RATE" --max-time 120 -o "$D/a-big.bin" \
    -w '%{http_code} %{size_download} %{time_total}' "http://$GW/big.bin" > "$D/a-big.result" 2> "$D/a-big.err" &
DL=$!
growing() { [ "$(stat -c %s "$D/a-big.bin" 2>/dev/null || echo 0)" -gt $((8 * 1024 * 1024)) ]; }
check "alice: download under way (> 8 MiB received)" retry 10 growing
got_before=$(stat -c %s "$D/a-big.bin" 2>/dev/null || echo 0)

T0=$(now)
put_peer_file bob "$(peer_file bob "$D/b.pub" 10.13.13.3)"
bob_first_ok() {
    local deadline=$((SECONDS + 6)) code
    while [ $SECONDS -lt $deadline ]; do
        fresh_session b
        code=$(on b curl -s -o /dev/null -w '%{http_code}' --max-time 0.8 "http://$GW/" 2>/dev/null)
        if [ "$code" = 200 ]; then BOB_T=$(since "$T0"); return 0; fi
        sleep 0.1
    done
    BOB_T=never; return 1
}
BOB_T=never
bob_first_ok
check "bob: first 200 within 2 s of writing peers.d/bob.toml (took ${BOB_T}s)" \
    python3 -c "import sys; sys.exit(0 if '$BOB_T' != 'never' and float('$BOB_T') <= 2.0 else 1)"
got_at_bob=$(stat -c %s "$D/a-big.bin" 2>/dev/null || echo 0)
check "alice: still downloading while bob joined ($((got_before / 1048576)) -> $((got_at_bob / 1048576)) MiB of $BIG_MIB)" \
    test "$got_at_bob" -lt "$BIG_SIZE"
check "log: peers reloaded with bob added" bash -c "grep 'peers reloaded' '$PGLOG' | grep -q bob"

t_log "a broken file while alice is still streaming"
printf '[[peer]]\nname = "carol"\npublic_key = "this is not a key"\nallowed_ips = ["10.13.13.4/32"]\n' > "$D/peers.d/.carol.tmp"
mv -f "$D/peers.d/.carol.tmp" "$D/peers.d/carol.toml"
refused_up() { local v; v=$(metric promgate_config_reloads_refused_total); [ "${v%.*}" -gt "${REFUSED0%.*}" ]; }
check "broken carol.toml: promgate_config_reloads_refused_total goes up within 3 s (was $REFUSED0)" retry 3 refused_up
got_at_broken=$(stat -c %s "$D/a-big.bin" 2>/dev/null || echo 0)
check "log: ERROR 'config reload refused' naming carol.toml" \
    bash -c "sed 's/\x1b\[[0-9;]*m//g' '$PGLOG' | grep 'config reload refused' | grep -q 'ERROR.*carol.toml\|carol.toml.*ERROR'"
check "bob: still served with the refused file in place" expect_code b "http://$GW/" 200
check "carol: not served (her file was refused)" expect_code c "http://$GW/" 000
check "gateway still running" lab_pid_alive "$PG"
check "alice: still downloading during the refused reload ($((got_at_broken / 1048576)) MiB of $BIG_MIB)" \
    test "$got_at_broken" -lt "$BIG_SIZE"

t_log "alice's download ends"
wait "$DL"; DL_RC=$?
read -r DL_CODE DL_SIZE DL_TIME < "$D/a-big.result" 2>/dev/null
t_log "alice's download took ${DL_TIME:-?} s"
check "alice: curl exit 0 (got $DL_RC$( [ -s "$D/a-big.err" ] && echo ": $(head -c 200 "$D/a-big.err")"))" test "$DL_RC" = 0
check "alice: HTTP 200 and all $BIG_SIZE bytes (got ${DL_CODE:-?} ${DL_SIZE:-?})" \
    test "${DL_CODE:-}" = 200 -a "${DL_SIZE:-}" = "$BIG_SIZE"
check "alice: the file is byte-identical (sha256)" \
    test "$(sha256sum < "$D/a-big.bin" | cut -d' ' -f1)" = "$BIG_SUM"
rm -f "$D/a-big.bin"
HS_A1=$(metric 'promgate_peer_handshakes_total{peer="alice"}')
WGHS_A1=$(wg_hs a)
check "alice: no new handshake at the gateway (handshakes_total $HS_A0 -> $HS_A1)" test "$HS_A0" = "$HS_A1"
check "alice: no new handshake at her client (latest-handshake $WGHS_A0 -> $WGHS_A1)" test "$WGHS_A0" = "$WGHS_A1"
check "alice: GET / still 200 after the download" expect_code a "http://$GW/" 200

t_log "fix the broken file"
APPLIED1=$(metric promgate_config_reloads_applied_total)
put_peer_file carol "$(peer_file carol "$D/c.pub" 10.13.13.4)"
applied_up() { local v; v=$(metric promgate_config_reloads_applied_total); [ "${v%.*}" -gt "${APPLIED1%.*}" ]; }
check "fixed carol.toml: promgate_config_reloads_applied_total goes up within 3 s (was $APPLIED1)" retry 3 applied_up
fresh_session c
check "carol: GET / is 200 within 5 s" retry 5 expect_code c "http://$GW/" 200
check "bob: GET / still 200" expect_code b "http://$GW/" 200
check "promgate check accepts the fixed peers.d" quiet "$BIN" check --config "$D/gateway.toml"

t_log "SIGHUP with nothing changed"
APPLIED2=$(metric promgate_config_reloads_applied_total)
HS_A2=$(metric 'promgate_peer_handshakes_total{peer="alice"}')
kill -HUP "$PG"
applied_up2() { local v; v=$(metric promgate_config_reloads_applied_total); [ "${v%.*}" -gt "${APPLIED2%.*}" ]; }
check "SIGHUP: promgate_config_reloads_applied_total goes up within 2 s (was $APPLIED2)" retry 2 applied_up2
check "SIGHUP: gateway still running" lab_pid_alive "$PG"
check "alice: GET / still 200 after SIGHUP" expect_code a "http://$GW/" 200
check "alice: still no new handshake after SIGHUP ($HS_A2 -> $(metric 'promgate_peer_handshakes_total{peer="alice"}'))" \
    test "$HS_A2" = "$(metric 'promgate_peer_handshakes_total{peer="alice"}')"

t_log "removing bob while he streams"
on b curl -s --limit-rate "$RATE" --max-time 60 -o "$D/b-big.bin" \
    -w '%{http_code} %{size_download}' "http://$GW/big.bin" > "$D/b-big.result" 2> /dev/null &
BDL=$!
b_growing() { [ "$(stat -c %s "$D/b-big.bin" 2>/dev/null || echo 0)" -gt $((4 * 1024 * 1024)) ]; }
check "bob: download under way (> 4 MiB)" retry 10 b_growing
T1=$(now)
rm -f "$D/peers.d/bob.toml"
b_done() { ! kill -0 "$BDL" 2>/dev/null; }
if retry 5 b_done; then BCUT=$(since "$T1"); else BCUT=never; fi
wait "$BDL" 2>/dev/null; BDL_RC=$?
read -r _ B_SIZE _ < "$D/b-big.result" 2>/dev/null
check "bob: his stream ends within ~3 s of removing bob.toml (took ${BCUT}s, curl exit $BDL_RC)" \
    python3 -c "import sys; sys.exit(0 if '$BCUT' != 'never' and float('$BCUT') <= 3.0 else 1)"
check "bob: the stream was cut short, not completed (${B_SIZE:-?} of $BIG_SIZE bytes)" \
    test "$BDL_RC" != 0 -a "${B_SIZE:-0}" -lt "$BIG_SIZE"
rm -f "$D/b-big.bin"
T_CURL_MAX=3 check "bob: no longer served (000)" expect_code b "http://$GW/" 000
check "alice: GET / still 200 after bob's removal" expect_code a "http://$GW/" 200
check "carol: GET / still 200 after bob's removal" expect_code c "http://$GW/" 200
check "alice: still on her first handshake ($HS_A0 -> $(metric 'promgate_peer_handshakes_total{peer="alice"}'))" \
    test "$HS_A0" = "$(metric 'promgate_peer_handshakes_total{peer="alice"}')"
kill "$BDL" 2>/dev/null

t_log "summary: refused $REFUSED0 -> $(metric promgate_config_reloads_refused_total), applied $APPLIED0 -> $(metric promgate_config_reloads_applied_total)"
t_finish
