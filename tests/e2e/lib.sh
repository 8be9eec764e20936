# shellcheck shell=bash
# tests/e2e/lib.sh — check helpers for the end-to-end tests. Sourced by each
# tests/e2e/test_*.sh, which runs in its own lab (scripts/lab.sh).
#
#   check DESC CMD...        pass if CMD exits 0
#   check_not DESC CMD...    pass if CMD exits non-zero
#   retry SECS CMD...        run CMD until it succeeds or SECS elapse
#   t_finish                 print the test's tally; exit 1 if any check failed
#   t_lab CLIENT...          start the lab; sets GW, SRV, D and BIN
#   t_gateway_key [DIR]      make the gateway's key pair; sets GWKEY and GWPUB
#   on NODE CMD...           run CMD in the lab netns of NODE (server, a, b, ...)
#   quiet CMD...             run CMD with its output thrown away
#   jsonq SUBCOMMAND FILE .. a JSON assertion (tests/e2e/jsonq.py says which)
#   metric NAME              a value from the gateway's /metrics
#   wg_handshake NODE        a client's latest handshake time (0: none)
#   status_block FILE NAME   one peer's lines of `promgate status` output
#   fresh_session NODE       make a client handshake anew on its next packet
#   now, seconds_since T0    wall-clock time, and seconds elapsed since T0
#   at_most VALUE LIMIT      VALUE is a number no larger than LIMIT
#   gateway_toml [OPTS]      the text of a gateway config for the lab
#   upstream_toml NAME URL PORT KIND
#                            the text of one [[upstream]] table
#   peer_toml NAME KEY IP .. the text of one [[peer]] table

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$E2E_DIR/../../scripts/lab.sh"

T_PASS=0
T_FAIL=0
T_FAILED=()
T_NAME=$(basename "$0" .sh)

# t_lab CLIENT... — a lab (lab_up) with these clients (lab_add_client).
# Sets GW (the gateway's tunnel address), SRV (the server netns), D (the
# lab's directory) and BIN (the promgate binary under test).
t_lab() {
    GW=10.13.13.1
    lab_up
    local c
    for c in "$@"; do lab_add_client "$c"; done
    SRV=$(lab_ns server)
    D=$LAB_DIR
    BIN=$(lab_promgate_bin)
}

# t_gateway_key [DIR] — the gateway's key made by `promgate genkey` in
# DIR/gw.key (owner-only; DIR defaults to $D) and its public key by
# `promgate pubkey` in DIR/gw.pub. Sets GWKEY and GWPUB.
t_gateway_key() {
    local dir=${1:-$D}
    (umask 077; "$BIN" genkey > "$dir/gw.key")
    "$BIN" pubkey < "$dir/gw.key" > "$dir/gw.pub"
    GWKEY=$(cat "$dir/gw.key")
    GWPUB=$(cat "$dir/gw.pub")
}

t_log() { printf '[%s %s] %s\n' "$T_NAME" "$(date +%T)" "$*"; }

check() {
    local desc=$1; shift
    if "$@"; then
        T_PASS=$((T_PASS + 1)); printf '  ok    %s\n' "$desc"
    else
        T_FAIL=$((T_FAIL + 1)); T_FAILED+=("$desc"); printf '  FAIL  %s\n' "$desc"
    fi
}

check_not() {
    local desc=$1; shift
    if "$@"; then
        T_FAIL=$((T_FAIL + 1)); T_FAILED+=("$desc"); printf '  FAIL  %s (unexpectedly succeeded)\n' "$desc"
    else
        T_PASS=$((T_PASS + 1)); printf '  ok    %s\n' "$desc"
    fi
}

retry() {
    local secs=$1; shift
    local deadline=$((SECONDS + secs))
    while :; do
        "$@" && return 0
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.5
    done
}

on() { local n=$1; shift; ip netns exec "$(lab_ns "$n")" "$@"; }

# http_code NODE URL [CURL ARGS...] — prints the status code (000 on failure).
http_code() {
    local n=$1 url=$2; shift 2
    on "$n" curl -s -o /dev/null -w '%{http_code}' --max-time "${T_CURL_MAX:-5}" "$@" "$url" 2>/dev/null
}

# expect_code NODE URL CODE — true if URL answers CODE; logs what it saw.
expect_code() {
    local got; got=$(http_code "$1" "$2")
    [ "$got" = "$3" ] && return 0
    echo "        $2 from $1: got HTTP $got, want $3"
    return 1
}

quiet() { "$@" >/dev/null 2>&1; }

# jsonq SUBCOMMAND FILE [ARGS...] — see tests/e2e/jsonq.py; on failure it
# says on stderr what it found.
jsonq() { python3 "$E2E_DIR/jsonq.py" "$@"; }

# json_status_success FILE — the Prometheus API envelope says success.
json_status_success() {
    jsonq status-success "$1" 2>/dev/null || { echo "        body: $(head -c 300 "$1")"; return 1; }
}

# query_up_is_one FILE — the "up" query returned samples, each of value "1".
query_up_is_one() { jsonq up-is-one "$1" 2>/dev/null; }

# metric NAME — the value of NAME (with its labels, if any, exactly as
# exported) on the gateway's /metrics at $ADMIN (default 127.0.0.1:9586),
# scraped from the server netns. Prints nothing and fails if it is absent.
metric() {
    on server curl -s --max-time 5 "http://${ADMIN:-127.0.0.1:9586}/metrics" |
        awk -v m="$1" '$1 == m { print $2 + 0; found = 1; exit } END { if (!found) exit 1 }'
}

# wg_handshake NODE — unix time of the client's latest handshake with the
# gateway (its only peer); 0 if none.
wg_handshake() { on "$1" wg show "$(lab_ifname "$1")" latest-handshakes | awk '{print $2}'; }

# fresh_session NODE — remove and re-add the gateway ($GWPUB at $EP, routing
# $GW/32) on the client, so its next packet starts a handshake at once: no
# retry timer left over from an initiation the gateway ignored, and no 15 s
# of silence towards a restarted gateway.
fresh_session() {
    local ifn; ifn=$(lab_ifname "$1")
    on "$1" wg set "$ifn" peer "$GWPUB" remove
    on "$1" wg set "$ifn" peer "$GWPUB" endpoint "$EP" allowed-ips "$GW/32"
}

# status_block FILE NAME — the lines `promgate status` (saved in FILE)
# prints for the peer NAME.
status_block() { awk -v n="($2)" '/^peer: / { p = index($0, n) > 0 } p' "$1"; }

# now — wall-clock seconds with nanoseconds, for seconds_since.
now() { date +%s.%N; }
# seconds_since T0 — seconds elapsed since T0 (from now), two decimals.
seconds_since() { awk -v t0="$1" -v t1="$(now)" 'BEGIN { printf "%.2f\n", t1 - t0 }'; }
# at_most VALUE LIMIT — VALUE is a number (not "never") no larger than LIMIT.
at_most() { awk -v v="$1" -v l="$2" 'BEGIN { exit !(v ~ /^[0-9.]+$/ && v + 0 <= l + 0) }'; }

# gateway_toml [--key LINE] [--upstream URL] [--admin ADDR]
#              [--gateway LINE]... [--admin-line LINE]...
# The text of a gateway config for the lab: [gateway] at $GW/24 on port
# 51820 serving HTTP on port 80, and [admin]. By default the key is the file
# $LAB_DIR/gw.key, the upstream the lab's Prometheus and the admin server
# 127.0.0.1:9586. --gateway and --admin-line add lines to those tables.
# `--upstream none` leaves out `upstream` and `http_ports`, for a config
# whose upstreams are [[upstream]] tables (upstream_toml).
# A blank line ends it, so upstream_toml and peer_toml output can follow.
gateway_toml() {
    local key="private_key_file = \"$LAB_DIR/gw.key\"" upstream=http://127.0.0.1:9090
    local admin=127.0.0.1:9586 gateway_lines=() admin_lines=()
    while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || { echo "gateway_toml: $1 needs a value" >&2; return 2; }
        case $1 in
            --key) key=$2 ;;
            --upstream) upstream=$2 ;;
            --admin) admin=$2 ;;
            --gateway) gateway_lines+=("$2") ;;
            --admin-line) admin_lines+=("$2") ;;
            *) echo "gateway_toml: unknown option $1" >&2; return 2 ;;
        esac
        shift 2
    done
    printf '[gateway]\n%s\nlisten_port = 51820\naddress = "%s/24"\n' "$key" "$GW"
    [ "$upstream" = none ] || printf 'upstream = "%s"\nhttp_ports = [80]\n' "$upstream"
    [ ${#gateway_lines[@]} -eq 0 ] || printf '%s\n' "${gateway_lines[@]}"
    printf '\n[admin]\nlisten = "%s"\n' "$admin"
    [ ${#admin_lines[@]} -eq 0 ] || printf '%s\n' "${admin_lines[@]}"
    echo
}

# upstream_toml NAME URL PORT KIND — one [[upstream]] table (issue 28's
# spelling: the upstream served on tunnel port PORT, of kind prometheus,
# alertmanager or http), and a blank line after it.
upstream_toml() {
    printf '[[upstream]]\nname = "%s"\nurl = "%s"\nport = %s\nkind = "%s"\n\n' "$@"
}

# peer_toml NAME PUBKEY IP [LINE...] — one [[peer]] table for the host
# IP/32, with any further lines (role, scope...), and a blank line after it.
# Its fields are on lines 2 to 4, which tests of error messages rely on.
peer_toml() {
    printf '[[peer]]\nname = "%s"\npublic_key = "%s"\nallowed_ips = ["%s/32"]\n' "$1" "$2" "$3"
    shift 3
    [ $# -eq 0 ] || printf '%s\n' "$@"
    echo
}

t_finish() {
    local rc=0
    echo "$T_NAME: $T_PASS checks passed, $T_FAIL failed"
    if [ "$T_FAIL" -gt 0 ]; then
        printf '  failed: %s\n' "${T_FAILED[@]}"
        lab_dump_logs 30
        rc=1
    fi
    exit $rc
}
