#!/usr/bin/env bash
# Issue 6's proof: promgate needs no root, no capability and no TUN device.
#
# The release binary runs in the server netns as uid/gid 65534 (nobody), with
# empty permitted/effective/inheritable/ambient/bounding capability sets and
# no_new_privs, inside a mount namespace where /dev/net is an empty tmpfs (no
# /dev/net/tun at all). It listens on UDP 51820 and serves inner port 80 (a
# port of its userspace TCP stack, not an OS port). A real wireguard-go client
# then browses Prometheus through it.
set -u
. "$(dirname "$0")/lib.sh"

NOBODY=65534
t_lab a

lab_start_prometheus "$SRV"

# Run the binary in place if nobody can reach it, else from a copy in the lab.
as_nobody() {
    setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups \
        --inh-caps=-all --bounding-set=-all --no-new-privs "$@"
}
if ! as_nobody test -x "$BIN"; then
    cp "$BIN" "$D/promgate"; chmod 755 "$D/promgate"; BIN=$D/promgate
    t_log "uid $NOBODY cannot reach the binary's path; running a copy: $BIN"
fi

t_gateway_key
chown $NOBODY:$NOBODY "$D/gw.key"
chmod 0400 "$D/gw.key"
lab_keypair "$D" a

{
    gateway_toml
    peer_toml alice "$(cat "$D/a.pub")" 10.13.13.2
} > "$D/gateway.toml"
chmod 0644 "$D/gateway.toml"

t_log "preconditions"
check_not "uid $NOBODY cannot open /dev/net/tun (host mount namespace)" \
    quiet as_nobody /bin/sh -c 'exec 3<>/dev/net/tun'
check "uid $NOBODY can read the key file" as_nobody test -r "$D/gw.key"

t_log "start promgate as uid $NOBODY, no caps, no /dev/net/tun"
# ip netns exec -> unshare -m -> sh -> setpriv -> promgate: each step execs, so
# the pid we record is promgate's.
lab_spawn "$SRV" promgate-unpriv unshare -m --propagation private /bin/sh -c '
    mount -t tmpfs -o mode=0755,size=4k none /dev/net || exit 97
    exec setpriv --reuid='$NOBODY' --regid='$NOBODY' --clear-groups \
        --inh-caps=-all --bounding-set=-all --no-new-privs \
        "$0" serve --config "$1"' "$BIN" "$D/gateway.toml"
PG=$LAB_LAST_PID
lab_wait_promgate "$SRV" "$D/gateway.toml" "$PG"

status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$PG/status"; }
check "process is the promgate binary ($(readlink "/proc/$PG/exe"))" \
    test "$(readlink "/proc/$PG/exe")" = "$(readlink -f "$BIN")"
all_four_are_nobody() { # Uid|Gid — real, effective, saved and fs ids
    grep -Eq "^$1:[[:space:]]+$NOBODY[[:space:]]+$NOBODY[[:space:]]+$NOBODY[[:space:]]+$NOBODY\$" "/proc/$PG/status"
}
check "Uid is $NOBODY (real, effective, saved, fs): $(grep ^Uid: /proc/$PG/status | tr -s '\t' ' ')" \
    all_four_are_nobody Uid
check "Gid is $NOBODY" all_four_are_nobody Gid
check "no supplementary groups" test -z "$(status Groups)"
for c in CapEff CapPrm CapBnd CapInh CapAmb; do
    check "$c is 0 ($(status $c))" test "$(status $c)" = 0000000000000000
done
check "NoNewPrivs is 1" test "$(status NoNewPrivs)" = 1
check "/dev/net/tun does not exist in promgate's mount namespace" test ! -e "/proc/$PG/root/dev/net/tun"
holds_tun_fd() { ls -l "/proc/$PG/fd" 2>/dev/null | grep -q 'net/tun'; }
check_not "promgate holds no TUN fd" holds_tun_fd
udp_owner() { on server ss -Hulnpe "sport = :51820" 2>/dev/null | grep -q "uid:$NOBODY\b.*pid=$PG,\|pid=$PG,.*uid:$NOBODY\b"; }
check "UDP :51820 is bound by pid $PG as uid $NOBODY" udp_owner
check "no OS TCP socket on port 80 in the server netns" \
    test -z "$(on server ss -Htln 'sport = :80')"
check "admin /healthz 200" expect_code server http://127.0.0.1:9586/healthz 200

t_log "a wireguard-go client browses Prometheus through it"
lab_wg_client "$(lab_ns a)" "$(lab_ifname a)" "$D/a.key" 10.13.13.2/32 "$(cat "$D/gw.pub")" "$(lab_ip server):51820" 10.13.13.0/24
ping1() { on a ping -c 1 -W 1 "$GW" >/dev/null 2>&1; }
check "alice: ping $GW within 15 s (handshake)" retry 15 ping1
check "alice: GET http://$GW/-/ready is 200" retry 10 expect_code a "http://$GW/-/ready" 200
on a curl -s --max-time 5 -o "$D/q.json" "http://$GW/api/v1/query?query=up"
check "alice: /api/v1/query?query=up is JSON with status success" json_status_success "$D/q.json"
check "alice: /classic/graph is 200" expect_code a "http://$GW/classic/graph" 200
check "promgate still running as uid $NOBODY" lab_pid_alive "$PG"

t_finish
