#!/usr/bin/env bash
# Fault suite (issue 13): config chaos. promgate runs as uid 65534 (so that
# a file can be unreadable to it) and watches gateway.toml and peers.d.
# Each bad state below must be refused, logged and counted
# (promgate_config_reloads_refused_total), with the last good peer set left
# in force (vera and sam keep being served), and the next good write must
# apply:
#
#   truncated     sam's peers file cut to 70 bytes in place, mid-key (as a
#                 writer that died mid-write leaves it)
#   symlink loop  sam's peers file replaced by a link to itself
#   unreadable    sam's peers file replaced by one with mode 000
#   deleted       the main config file removed (deleting a peers.d file is
#                 how a peer is removed, so that case is a removal, tested
#                 in test_hot_reload.sh)
#   next good     tom's file is added: applied, and he is served, within 3 s
#
#   vera (a) 10.13.13.2, sam (b) 10.13.13.3, tom (c) 10.13.13.4 (added last)
set -u
. "$(dirname "$0")/faults_lib.sh"

NOBODY=65534
faults_setup a b c
mv "$D/peers.d/c.toml" "$D/tom.toml.good"
cp "$D/peers.d/b.toml" "$D/sam.toml.good"
cp "$D/gateway.toml" "$D/gateway.toml.good"
chown $NOBODY:$NOBODY "$D/gw.key"
chmod 0400 "$D/gw.key"
if ! setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups test -x "$BIN"; then
    cp "$BIN" "$D/promgate"; chmod 755 "$D/promgate"; BIN=$D/promgate
fi
lab_start_prometheus "$SRV"
lab_spawn "$SRV" promgate-gateway setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs "$BIN" serve --config "$D/gateway.toml"
PG=$LAB_LAST_PID
lab_wait_promgate "$SRV" "$D/gateway.toml" "$PG"
LOG=$D/promgate-gateway.log
for n in a b c; do faults_client "$n"; done
check "vera is served" retry 15 expect_code a "http://$GW/-/ready" 200
check "sam is served" retry 15 expect_code b "http://$GW/-/ready" 200

refused() { metric promgate_config_reloads_refused_total; }
refused_more_than() { [ "$(refused)" -gt "$1" ]; }
both_served() { expect_code a "http://$GW/-/ready" 200 && expect_code b "http://$GW/-/ready" 200; }
log_refusals() { grep -c 'config reload refused' "$LOG"; }

# chaos NAME CMD... — apply a bad state, then check it is refused, logged
# and counted, and that the last good set is still served.
chaos() {
    local name=$1; shift
    local before logged
    before=$(refused)
    logged=$(log_refusals)
    "$@"
    check "$name: refused and counted (refusals $before -> $(retry 5 refused_more_than "$before"; refused))" refused_more_than "$before"
    check "$name: the refusal is logged" test "$(log_refusals)" -gt "$logged"
    check "$name: vera and sam still served (last good set in force)" both_served
}
# Every change replaces b.toml in one step (ftruncate, or rename over it):
# a moment without the file would be a legitimate removal of sam.
truncate_in_place() { truncate -s 70 "$D/peers.d/b.toml"; }
# (mv refuses to rename a link over the file it points to; rename(2) does not.)
symlink_loop() {
    ln -s b.toml "$D/peers.d/.b.lnk"
    python3 -c 'import os, sys; os.rename(sys.argv[1], sys.argv[2])' "$D/peers.d/.b.lnk" "$D/peers.d/b.toml"
}
unreadable() {
    cp "$D/sam.toml.good" "$D/peers.d/.b.tmp"; chmod 000 "$D/peers.d/.b.tmp"
    mv -fT "$D/peers.d/.b.tmp" "$D/peers.d/b.toml"
}
main_deleted() { rm "$D/gateway.toml"; }
restore_sam() { cp "$D/sam.toml.good" "$D/peers.d/.b.tmp"; mv -fT "$D/peers.d/.b.tmp" "$D/peers.d/b.toml"; }

chaos "truncated peers file" truncate_in_place
restore_sam
chaos "symlink loop" symlink_loop
restore_sam
chaos "unreadable peers file" unreadable
restore_sam
chaos "main config deleted" main_deleted
cp "$D/gateway.toml.good" "$D/gateway.toml.tmp"; mv "$D/gateway.toml.tmp" "$D/gateway.toml"

t_log "the next good write: tom's peers file"
applied0=$(metric promgate_config_reloads_applied_total)
applied_more() { [ "$(metric promgate_config_reloads_applied_total)" -gt "$applied0" ]; }
t0=$(date +%s%N)
cp "$D/tom.toml.good" "$D/peers.d/.c.tmp"; mv "$D/peers.d/.c.tmp" "$D/peers.d/c.toml"
retry 3 applied_more; rc=$?
check "the good write is applied within 3 s ($(ms_since "$t0") ms; applied $applied0 -> $(metric promgate_config_reloads_applied_total))" test $rc = 0
# tom's client sends its first initiation only now (no traffic before), so
# WireGuard's 5 s handshake retry does not enter the figure.
retry 3 expect_code c "http://$GW/-/ready" 200; rc=$?
check "tom is served within 3 s of his file being written ($(ms_since "$t0") ms)" test $rc = 0
check "vera and sam still served" both_served
t_finish
