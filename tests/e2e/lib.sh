# shellcheck shell=bash
# tests/e2e/lib.sh — check helpers for the end-to-end tests. Sourced by each
# tests/e2e/test_*.sh, which runs in its own lab (scripts/lab.sh).
#
#   check DESC CMD...        pass if CMD exits 0
#   check_not DESC CMD...    pass if CMD exits non-zero
#   retry SECS CMD...        run CMD until it succeeds or SECS elapse
#   t_finish                 print the test's tally; exit 1 if any check failed
#   on NODE CMD...           run CMD in the lab netns of NODE (server, a, b, ...)

. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/lab.sh"

T_PASS=0
T_FAIL=0
T_FAILED=()
T_NAME=$(basename "$0" .sh)

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

# json_status_success FILE — the Prometheus API envelope says success.
json_status_success() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d.get("status")=="success" else 1)' "$1" 2>/dev/null ||
        { echo "        body: $(head -c 300 "$1")"; return 1; }
}

# query_up_is_one FILE — the "up" query returned a sample with value "1".
query_up_is_one() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["data"]["result"]; sys.exit(0 if r and all(x["value"][1]=="1" for x in r) else 1)' "$1" 2>/dev/null
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
