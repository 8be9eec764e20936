#!/usr/bin/env bash
# promgate peer add / list / remove, status and check, against a running
# gateway that hot-reloads peers_dir, with real wireguard-go clients that use
# exactly the client config that `peer add` printed.
#
#   alice (a) 10.13.13.2  peer add alice --endpoint <veth>:51820 (key made by promgate)
#   bob   (b) 10.13.13.3  peer add bob --public-key KEY (bob keeps his private key;
#                         the Endpoint comes from the config's gateway.endpoint)
#   carol (c) 10.13.13.4  peer add carol (QR code on); `wg-quick up` on the printed
#                         config as is (wg-quick falls back to wireguard-go)
#   yara  (d) 10.13.13.3  of a second gateway (UDP 51821) whose config has no
#                         peers_dir: peer add appends to the config file
#
# Also: the QR code (stderr, --qr-png), refused adds (duplicate name, key, IP,
# bad name), `peer remove` cutting alice off within ~2 s, `check` pointing at
# file:line in a broken peers file, and `peer add` on a config without
# peers_dir (appends a [[peer]] table, keeps comments and layout).
set -u
. "$(dirname "$0")/lib.sh"

t_lab a b c d
ADMIN=127.0.0.1:9586
EP=$(lab_ip server):51820
CFG=$D/gw/promgate.toml

lab_start_prometheus "$SRV"

mkdir -p "$D/gw/peers.d"
t_gateway_key "$D/gw"
{
    echo "# promgate for the peer add test"
    gateway_toml --key 'private_key_file = "gw.key"' --admin "$ADMIN" \
        --gateway 'endpoint = "vpn.example.com:51820"   # what clients are told by default' \
        --gateway 'peers_dir = "peers.d"'
} > "$CFG"

check "promgate check accepts the config with an empty peers.d" quiet "$BIN" check --config "$CFG"
lab_start_promgate "$SRV" "$CFG"
PG=$LAB_PROMGATE_PID

# conf_get FILE SECTION KEY — a value from a wg-quick file
conf_get() {
    awk -v s="[$2]" -v k="$3" '
        /^\[/ { cur = $0 }
        cur == s { line = $0; sub(/[ \t]*=.*/, "", line)
                   if (line == k) { sub(/^[^=]*=[ \t]*/, ""); print; exit } }' "$1"
}
# strip_wg_quick IN OUT — drop what only wg-quick understands, for wg setconf
strip_wg_quick() {
    grep -Eiv '^[[:space:]]*(Address|DNS|MTU|Table|PreUp|PostUp|PreDown|PostDown|SaveConfig)[[:space:]]*=' "$1" > "$2"
}
# client_conf_ok FILE PRIVKEY_RE ADDR ENDPOINT — the printed config, strictly
client_conf_ok() {
    python3 - "$@" <<'PY'
import re, sys, base64
path, priv_re, addr, endpoint = sys.argv[1:5]
text = open(path).read()
errs = []
sections, cur = {}, None
for n, line in enumerate(text.splitlines(), 1):
    s = line.strip()
    if not s:
        continue
    if s in ("[Interface]", "[Peer]"):
        if s in sections:
            errs.append(f"line {n}: second {s}")
        cur = sections.setdefault(s, {})
        continue
    m = re.fullmatch(r"(\w+)\s*=\s*(.+)", s)
    if not m or cur is None:
        errs.append(f"line {n} is not a wg-quick line: {line!r}")
        continue
    cur[m[1]] = m[2]
def key32(v):
    try:
        return len(base64.b64decode(v, validate=True)) == 32
    except Exception:
        return False
i, p = sections.get("[Interface]", {}), sections.get("[Peer]", {})
if set(sections) != {"[Interface]", "[Peer]"}:
    errs.append(f"sections {sorted(sections)}")
if not re.fullmatch(priv_re, i.get("PrivateKey", "")):
    errs.append(f"PrivateKey {i.get('PrivateKey')!r} !~ {priv_re}")
if priv_re != "<CLIENT_PRIVATE_KEY>" and not key32(i.get("PrivateKey", "")):
    errs.append("PrivateKey is not a 32-byte base64 key")
if i.get("Address") != addr:
    errs.append(f"Address {i.get('Address')!r} != {addr!r}")
want = {"PublicKey": sys.argv[5], "Endpoint": endpoint, "AllowedIPs": "10.13.13.1/32", "PersistentKeepalive": "25"}
for k, v in want.items():
    if p.get(k) != v:
        errs.append(f"[Peer] {k} {p.get(k)!r} != {v!r}")
for e in errs:
    print("        " + e)
sys.exit(1 if errs else 0)
PY
}
has_qr() { grep -q '[█▀▄]' "$1"; }

t_log "peer add alice --endpoint $EP --no-qr"
"$BIN" peer add alice --endpoint "$EP" --no-qr --config "$CFG" > "$D/alice.conf" 2> "$D/alice.err"
rc=$?
check "peer add alice exits 0 (exit $rc; stderr: $(head -c 200 "$D/alice.err" | tr '\n' ' '))" test $rc = 0
A_PRIV=$(conf_get "$D/alice.conf" Interface PrivateKey)
A_ADDR=$(conf_get "$D/alice.conf" Interface Address)
check "alice.conf: stdout is exactly a wg-quick client config (PrivateKey, Address $A_ADDR, PublicKey, Endpoint $EP, AllowedIPs, PersistentKeepalive 25)" \
    client_conf_ok "$D/alice.conf" '[A-Za-z0-9+/]{43}=' 10.13.13.2/32 "$EP" "$GWPUB"
check_not "alice: --no-qr prints no QR code on stderr" has_qr "$D/alice.err"
check "peers.d/alice.toml was written" test -f "$D/gw/peers.d/alice.toml"
A_PUB=$(echo "$A_PRIV" | wg pubkey 2>/dev/null)
check "peers.d/alice.toml holds alice's public key (wg pubkey of the printed PrivateKey)" \
    grep -qF -- "$A_PUB" "$D/gw/peers.d/alice.toml"
check_not "peers.d/alice.toml does not hold alice's private key" grep -qF -- "$A_PRIV" "$D/gw/peers.d/alice.toml"
check_not "peers.d/alice.toml does not hold the gateway's private key" grep -qF -- "$GWKEY" "$D/gw/peers.d/alice.toml"
check "peers.d holds no temp files after the add" test "$(find "$D/gw/peers.d" -mindepth 1 | wc -l)" = 1
check "promgate check accepts the config with alice added" quiet "$BIN" check --config "$CFG"

t_log "alice applies the printed config with wg setconf (wg-quick fields stripped)"
strip_wg_quick "$D/alice.conf" "$D/alice.setconf"
if command -v wg-quick >/dev/null; then
    cp "$D/alice.conf" "$D/wgtest0.conf"
    check "wg-quick strip accepts the printed config" quiet wg-quick strip "$D/wgtest0.conf"
fi
lab_wg_iface "$(lab_ns a)" "$(lab_ifname a)" "$D/alice.setconf" "$A_ADDR" "$GW/32"
check "alice: GET /-/ready is 200 within 10 s (gateway hot-reloaded alice)" retry 10 expect_code a "http://$GW/-/ready" 200
check "alice: /api/v1/query?query=up is 200" expect_code a "http://$GW/api/v1/query?query=up" 200

t_log "peer add bob --public-key (bob keeps his private key)"
lab_keypair "$D" b
B_PUB=$(cat "$D/b.pub")
"$BIN" peer add bob --public-key "$B_PUB" --no-qr --config "$CFG" > "$D/bob.conf" 2> "$D/bob.err"
rc=$?
check "peer add bob --public-key exits 0 (exit $rc; stderr: $(head -c 200 "$D/bob.err" | tr '\n' ' '))" test $rc = 0
check "bob.conf: PrivateKey = <CLIENT_PRIVATE_KEY>, Address 10.13.13.3/32, Endpoint from the config (vpn.example.com:51820)" \
    client_conf_ok "$D/bob.conf" '<CLIENT_PRIVATE_KEY>' 10.13.13.3/32 vpn.example.com:51820 "$GWPUB"
check "peers.d/bob.toml holds bob's public key" grep -qF -- "$B_PUB" "$D/gw/peers.d/bob.toml"
mentions_a_private_key() { # FILE — bob's key, the gateway's, or the word
    grep -qF -- "$(cat "$D/b.key")" "$1" || grep -qF -- "$GWKEY" "$1" || grep -qi 'private' "$1"
}
check_not "peers.d/bob.toml holds no private key (no bob key, no gateway key, no PrivateKey/private_key)" \
    mentions_a_private_key "$D/gw/peers.d/bob.toml"
# bob fills in his key and, in this lab, the veth endpoint.
sed -e "s|<CLIENT_PRIVATE_KEY>|$(cat "$D/b.key")|" -e "s|^Endpoint = .*|Endpoint = $EP|" "$D/bob.conf" > "$D/bob.filled"
strip_wg_quick "$D/bob.filled" "$D/bob.setconf"
lab_wg_iface "$(lab_ns b)" "$(lab_ifname b)" "$D/bob.setconf" "$(conf_get "$D/bob.conf" Interface Address)" "$GW/32"
check "bob: GET /-/ready is 200 within 10 s" retry 10 expect_code b "http://$GW/-/ready" 200

t_log "the QR code"
"$BIN" peer add carol --endpoint "$EP" --config "$CFG" > "$D/carol.conf" 2> "$D/carol.err"
rc=$?
check "peer add carol (QR on) exits 0" test $rc = 0
check "carol: a QR code on stderr" has_qr "$D/carol.err"
check "carol: stdout is still only the client config" \
    client_conf_ok "$D/carol.conf" '[A-Za-z0-9+/]{43}=' 10.13.13.4/32 "$EP" "$GWPUB"
ifc=$(lab_ifname c)
cp "$D/carol.conf" "$D/$ifc.conf"
LAB_IFNAMES+=("$ifc")   # wireguard-go's socket, removed by lab_cleanup
on c env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wg-quick up "$D/$ifc.conf" > "$D/wg-quick-c.log" 2>&1
rc=$?
check "carol: wg-quick up the printed config as is exits 0" test $rc = 0
[ $rc = 0 ] || sed 's/^/        wg-quick: /' "$D/wg-quick-c.log" | tail -5
check "carol: GET /-/ready is 200 within 10 s (through wg-quick's interface)" retry 10 expect_code c "http://$GW/-/ready" 200

"$BIN" peer add dave --endpoint "$EP" --qr-png "$D/dave.png" --config "$CFG" > "$D/dave.conf" 2> "$D/dave.err"
rc=$?
check "peer add dave --qr-png exits 0" test $rc = 0
is_png() { head -c 8 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n' | grep -qx 89504e470d0a1a0a; }
check "dave: --qr-png wrote a PNG" is_png "$D/dave.png"
check_not "dave: with --qr-png, no QR code on stderr" has_qr "$D/dave.err"
check "dave: stdout is only the client config" \
    client_conf_ok "$D/dave.conf" '[A-Za-z0-9+/]{43}=' 10.13.13.5/32 "$EP" "$GWPUB"

t_log "refused adds"
sum_peers() { cat "$D/gw/peers.d"/* | sha256sum; }
S0=$(sum_peers); N0=$(find "$D/gw/peers.d" -mindepth 1 | wc -l)
# refused DESC-WORD ARGS... — non-zero, message on stderr naming WORD, nothing on stdout, peers.d untouched
refused() {
    local word=$1 rc; shift
    "$BIN" peer add "$@" --no-qr --config "$CFG" > "$D/ref.out" 2> "$D/ref.err"
    rc=$?
    echo "        exit $rc: $(head -c 200 "$D/ref.err" | tr '\n' ' ')"
    [ $rc -ne 0 ] || return 1
    grep -qiE -- "$word" "$D/ref.err" || { echo "        stderr does not mention $word"; return 1; }
    [ ! -s "$D/ref.out" ] || { echo "        stdout not empty: $(head -c 100 "$D/ref.out")"; return 1; }
    [ "$(sum_peers)" = "$S0" ] && [ "$(find "$D/gw/peers.d" -mindepth 1 | wc -l)" = "$N0" ] ||
        { echo "        peers.d changed"; return 1; }
}
check "peer add alice again: refused, names alice and the duplicate" refused 'alice.*(exist|duplicate|already|taken)|(exist|duplicate|already|taken).*alice' alice
check "peer add erin with bob's public key: refused, names the key problem" refused 'key' erin --public-key "$B_PUB"
check "peer add fred --ip 10.13.13.2 (alice's): refused, names the address" refused '10\.13\.13\.2' fred --ip 10.13.13.2
check "peer add gina --ip 10.13.13.1 (the gateway's): refused" refused '10\.13\.13\.1' gina --ip 10.13.13.1
check "peer add 'bad/name': refused, names the name" refused 'name' 'bad/name'
check "peer add hugo --public-key garbage: refused" refused 'key|base64' hugo --public-key 'not-a-key'
check "peer add ivan --public-key <the gateway's own key>: refused" refused 'key|gateway' ivan --public-key "$GWPUB"
check "peer add jack --ip not-an-ip: refused" refused 'ip|address|not-an-ip' jack --ip not-an-ip
# Not in the contract either way: an address outside the gateway's prefix.
if "$BIN" peer add kate --ip 10.99.0.2 --no-qr --config "$CFG" > /dev/null 2>&1; then
    t_log "NOTE: peer add kate --ip 10.99.0.2 (outside $GW/24) was accepted; removing kate"
    "$BIN" peer remove kate --config "$CFG" > /dev/null 2>&1
else
    t_log "NOTE: peer add kate --ip 10.99.0.2 (outside $GW/24) was refused"
fi

t_log "peer list and status"
on server "$BIN" peer list --config "$CFG" > "$D/list.txt" 2> "$D/list.err"
rc=$?
check "peer list exits 0" test $rc = 0
check "peer list shows alice with 10.13.13.2" grep -qE '^alice[[:space:]].*10\.13\.13\.2' "$D/list.txt"
lists() { # FILE NAME... — every NAME starts a row of the peer list in FILE
    local f=$1 n; shift
    for n in "$@"; do grep -q "^$n\b" "$f" || return 1; done
}
check "peer list shows bob, carol, dave" lists "$D/list.txt" bob carol dave
on a curl -s -o /dev/null --max-time 5 "http://$GW/api/v1/query?query=up"
# The watcher applies dave's file within ~0.5 s of `peer add`; wait for it
# (bounded) so that status sees the same peer set as `peer list`.
for _ in $(seq 1 30); do
    on server "$BIN" status --config "$CFG" > "$D/status.txt" 2> "$D/status.err"
    rc=$?
    grep -q '(dave)' "$D/status.txt" && break
    sleep 0.1
done
check "status (in the server netns) exits 0 (stderr: $(head -c 200 "$D/status.err" | tr '\n' ' '))" test $rc = 0
A_EP_LINE=$(status_block "$D/status.txt" alice | grep 'endpoint:')
check "status: shows alice's endpoint, address $(lab_ip a) and a port (${A_EP_LINE# *})" \
    grep -qE "endpoint: (\[::ffff:)?$(lab_ip a)\]?:[0-9]+\$" <<< "$A_EP_LINE"
check "status: prints the endpoint as wg show does, $(lab_ip a):PORT, not IPv4-mapped IPv6" \
    grep -qE "endpoint: $(lab_ip a):[0-9]+\$" <<< "$A_EP_LINE"
check "status: alice has a latest handshake" grep -q 'latest handshake' <<< "$(status_block "$D/status.txt" alice)"
check "status: alice's public key is listed" grep -qF -- "$A_PUB" "$D/status.txt"
dave_listed_without_endpoint() { grep -q '(dave)' "$D/status.txt" && ! status_block "$D/status.txt" dave | grep -q 'endpoint'; }
check "status: dave (never connected) has no endpoint" dave_listed_without_endpoint
[ "$(status_block "$D/status.txt" alice | wc -l)" -gt 0 ] || sed 's/^/        status: /' "$D/status.txt"
shows_a_private_key() { grep -qF -- "$GWKEY" "$D/status.txt" || grep -qF -- "$A_PRIV" "$D/status.txt"; }
check_not "status: never shows a private key" shows_a_private_key

t_log "peer remove alice"
check "bob: GET /-/ready 200 before the removal" expect_code b "http://$GW/-/ready" 200
T0=$(now)
"$BIN" peer remove alice --config "$CFG" > "$D/rm.out" 2> "$D/rm.err"
rc=$?
check "peer remove alice exits 0 (stderr: $(head -c 200 "$D/rm.err" | tr '\n' ' '))" test $rc = 0
cut_off() {
    local deadline=$((SECONDS + 5)) code
    while [ $SECONDS -lt $deadline ]; do
        code=$(on a curl -s -o /dev/null -w '%{http_code}' --max-time 0.5 "http://$GW/-/ready" 2>/dev/null)
        if [ "$code" != 200 ]; then
            CUT_T=$(seconds_since "$T0")
            return 0
        fi
        sleep 0.1
    done
    CUT_T=never; return 1
}
CUT_T=never
cut_off
check "alice: cut off within ~2 s of peer remove (first failed fetch after ${CUT_T}s)" at_most "$CUT_T" 2.5
T_CURL_MAX=3 check "alice: still cut off a moment later (000)" expect_code a "http://$GW/-/ready" 000
check "peers.d/alice.toml is gone" test ! -e "$D/gw/peers.d/alice.toml"
check "bob: still served after alice's removal" expect_code b "http://$GW/-/ready" 200
peer_list_shows() { "$BIN" peer list --config "$1" 2>/dev/null > "$D/list-now.txt"; shift; lists "$D/list-now.txt" "$@"; } # CONFIG NAME...
check_not "peer list no longer shows alice" peer_list_shows "$CFG" alice
check_not "peer remove alice again fails (no such peer)" quiet "$BIN" peer remove alice --config "$CFG"
check "promgate check still accepts the config" quiet "$BIN" check --config "$CFG"

t_log "promgate check on a broken peers file (a copy of the config dir)"
cp -r "$D/gw" "$D/broken"
peer_toml mallory "definitely not base64!" 10.13.13.50 > "$D/broken/peers.d/mallory.toml"
"$BIN" check --config "$D/broken/promgate.toml" > "$D/check.out" 2>&1
rc=$?
sed 's/^/        check: /' "$D/check.out" | head -5
check "check exits 1 on a bad public_key" test $rc = 1
check "check prints mallory.toml:3: <field>public_key: <message>" grep -qE 'mallory\.toml:3: [^:]*public_key: .+' "$D/check.out"
printf '[[peer]]\nname = "mallory"\npublic_key = "%s"\nallowed_ips = ["10.13.13.50/32"\n' "$(cat "$D/b.pub")" > "$D/broken/peers.d/mallory.toml"
"$BIN" check --config "$D/broken/promgate.toml" > "$D/check2.out" 2>&1
rc=$?
sed 's/^/        check: /' "$D/check2.out" | head -5
check "check exits 1 on a TOML syntax error" test $rc = 1
check "check names mallory.toml:LINE for the syntax error" grep -qE 'mallory\.toml:[0-9]+:' "$D/check2.out"
peer_toml mallory "$B_PUB" 10.13.13.50 > "$D/broken/peers.d/mallory.toml"
"$BIN" check --config "$D/broken/promgate.toml" > "$D/check3.out" 2>&1
rc=$?
sed 's/^/        check: /' "$D/check3.out" | head -5
exit_1_naming_public_key() { [ "$rc" = 1 ] && grep -qE 'mallory\.toml:[0-9]+: [^:]*public_key: ' "$D/check3.out"; }
check "check exits 1 on bob's key used twice, naming mallory.toml:LINE and public_key" exit_1_naming_public_key

t_log "peer add on a config without peers_dir (appends [[peer]] to the file)"
mkdir -p "$D/inline"
cp "$D/gw/gw.key" "$D/inline/gw.key"
cat > "$D/inline/promgate.toml" <<EOF
# Inline peers. This comment must survive.
[gateway]
private_key_file = "gw.key"   # trailing comment
listen_port = 51821
address = "$GW/24"
upstream = "http://127.0.0.1:9090"

# the admin section, with a blank line above
[admin]
listen = "127.0.0.1:9596"
control_listen = "127.0.0.1:9597"

[[peer]]
name = "zed"                  # the first peer
public_key = "$(cat "$D/b.pub")"
allowed_ips = ["10.13.13.2/32"]
EOF
cp "$D/inline/promgate.toml" "$D/inline/before.toml"
lab_start_promgate "$SRV" "$D/inline/promgate.toml"
PG2=$LAB_PROMGATE_PID
"$BIN" peer add yara --endpoint "$(lab_ip server):51821" --no-qr --config "$D/inline/promgate.toml" > "$D/yara.conf" 2> "$D/yara.err"
rc=$?
check "peer add yara (no peers_dir) exits 0 (stderr: $(head -c 200 "$D/yara.err" | tr '\n' ' '))" test $rc = 0
starts_with_the_original() {
    cmp -s "$D/inline/before.toml" <(head -c "$(stat -c %s "$D/inline/before.toml")" "$D/inline/promgate.toml")
}
check "the original file is kept byte for byte as the start of the new one (comments, layout)" starts_with_the_original
appended_text() { tail -n +$(($(wc -l < "$D/inline/before.toml") + 1)) "$D/inline/promgate.toml"; }
yara_appended() { appended_text | grep -q '^\[\[peer\]\]' && appended_text | grep -q 'name = "yara"'; }
check "a [[peer]] table for yara was appended" yara_appended
check "yara got the next free address (10.13.13.3/32, zed has .2)" \
    test "$(conf_get "$D/yara.conf" Interface Address)" = 10.13.13.3/32
check "promgate check accepts the appended file" quiet "$BIN" check --config "$D/inline/promgate.toml"
check "peer list shows zed and yara" peer_list_shows "$D/inline/promgate.toml" zed yara
strip_wg_quick "$D/yara.conf" "$D/yara.setconf"
lab_wg_iface "$(lab_ns d)" "$(lab_ifname d)" "$D/yara.setconf" "$(conf_get "$D/yara.conf" Interface Address)" "$GW/32"
check "yara: GET /-/ready through the second gateway is 200 within 10 s (config file hot-reloaded)" \
    retry 10 expect_code d "http://$GW/-/ready" 200
"$BIN" peer remove yara --config "$D/inline/promgate.toml" > /dev/null 2> "$D/yrm.err"
rc=$?
check "peer remove yara exits 0" test $rc = 0
yara_gone() { [ "$(http_code d "http://$GW/-/ready" --max-time 0.5)" != 200 ]; }
check "yara: cut off within ~2 s of peer remove" retry 2 yara_gone
check "second gateway still running" lab_pid_alive "$PG2"
same_but_blank_lines() {
    diff -B "$D/inline/before.toml" "$D/inline/promgate.toml" > /dev/null ||
        { diff "$D/inline/before.toml" "$D/inline/promgate.toml" | sed 's/^/        /' | head -10; false; }
}
check "after removing yara the file equals the original up to blank lines (diff -B)" same_but_blank_lines

check "gateway still running" lab_pid_alive "$PG"
t_finish
