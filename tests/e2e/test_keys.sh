#!/usr/bin/env bash
# promgate genkey/pubkey and the real wg(8) agree both ways: keys made by one
# give the same public key in the other. Needs no namespace, but uses the lab
# for its temp dir and cleanup like every other test.
set -u
. "$(dirname "$0")/lib.sh"

t_lab
N=${KEYS_ITERATIONS:-20}

is_key() { # FILE — a 32-byte standard base64 key on one line
    python3 -c 'import base64,sys; t=open(sys.argv[1]).read(); sys.exit(0 if t.endswith("\n") and t.count("\n")==1 and len(base64.b64decode(t.strip(), validate=True))==32 else 1)' "$1" 2>/dev/null
}

t_log "promgate genkey -> wg pubkey vs promgate pubkey ($N keys)"
pg_to_wg() {
    local i a b rc=0
    for i in $(seq 1 "$N"); do
        "$BIN" genkey > "$D/pg-$i.key" || { echo "        promgate genkey exited $?"; return 1; }
        is_key "$D/pg-$i.key" || { echo "        key $i is not a 32-byte base64 line: $(head -c 80 "$D/pg-$i.key")"; rc=1; continue; }
        a=$(wg pubkey < "$D/pg-$i.key") || { echo "        wg pubkey refused key $i"; rc=1; continue; }
        b=$("$BIN" pubkey < "$D/pg-$i.key") || { echo "        promgate pubkey refused key $i"; rc=1; continue; }
        [ -n "$a" ] && [ "$a" = "$b" ] || { echo "        key $i: wg pubkey '$a' != promgate pubkey '$b'"; rc=1; }
    done
    return $rc
}
check "$N promgate genkey keys: wg pubkey == promgate pubkey" pg_to_wg
check "$N promgate genkey keys are all distinct" \
    test "$(cat "$D"/pg-*.key | sort -u | wc -l)" = "$N"

t_log "wg genkey -> promgate pubkey vs wg pubkey ($N keys)"
wg_to_pg() {
    local i a b rc=0
    for i in $(seq 1 "$N"); do
        (umask 077; wg genkey > "$D/wg-$i.key")
        a=$(wg pubkey < "$D/wg-$i.key")
        b=$("$BIN" pubkey < "$D/wg-$i.key") || { echo "        promgate pubkey exited non-zero on wg key $i"; rc=1; continue; }
        [ -n "$a" ] && [ "$a" = "$b" ] || { echo "        key $i: wg pubkey '$a' != promgate pubkey '$b'"; rc=1; }
    done
    return $rc
}
check "$N wg genkey keys: promgate pubkey == wg pubkey" wg_to_pg

t_log "a known vector"
# RFC 7748 section 6.1: Alice's private key and public key.
VEC_PRIV=$(python3 -c 'import base64; print(base64.b64encode(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")).decode())')
VEC_PUB=$(python3 -c 'import base64; print(base64.b64encode(bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")).decode())')
check "promgate pubkey of the RFC 7748 test key is its public key" \
    test "$(echo "$VEC_PRIV" | "$BIN" pubkey)" = "$VEC_PUB"
check "wg pubkey agrees on the RFC 7748 test key (sanity)" \
    test "$(echo "$VEC_PRIV" | wg pubkey)" = "$VEC_PUB"

t_log "garbage on stdin"
# pubkey_refuses DESC-INPUT: exit non-zero, print a message on stderr, nothing on stdout.
pubkey_refuses() {
    local input=$1 rc
    printf '%b' "$input" | "$BIN" pubkey > "$D/g.out" 2> "$D/g.err"
    rc=$?
    echo "        exit $rc, stderr: $(head -c 200 "$D/g.err" | tr '\n' ' ')"
    [ $rc -ne 0 ] && [ -s "$D/g.err" ] && [ ! -s "$D/g.out" ]
}
check "promgate pubkey refuses 'not a key' with a message" pubkey_refuses 'not a key\n'
check "promgate pubkey refuses empty input with a message" pubkey_refuses ''
check "promgate pubkey refuses a 31-byte key" \
    pubkey_refuses "$(head -c 31 /dev/urandom | base64 -w0)\n"
check "promgate pubkey refuses a 33-byte key" \
    pubkey_refuses "$(head -c 33 /dev/urandom | base64 -w0)\n"
check "promgate pubkey refuses a key with a bad base64 character" \
    pubkey_refuses "$(wg genkey 2>/dev/null | sed 's/^./*/')\n"
wg_pubkey_of_garbage() { echo 'not a key' | wg pubkey >/dev/null 2>&1; }
check_not "wg pubkey also refuses 'not a key' (sanity)" wg_pubkey_of_garbage

t_finish
