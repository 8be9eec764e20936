#!/usr/bin/env bash
# The container image (built by scripts/image), run the way the Terraform
# module runs it (terraform/deployment.tf):
#
#   podman, runtime runc; read-only root filesystem (and no tmpfs on /tmp);
#   --cap-drop ALL; no-new-privileges; UID/GID 65532; no /dev/net/tun;
#   promgate.toml mounted read-only as one file (the module's subPath), the
#   key and peers.d as read-only directories laid out the way the kubelet
#   writes Secret and ConfigMap volumes (..data -> a timestamped directory,
#   each file a symlink through ..data, updated by swapping ..data);
#   the network is the lab's server namespace (--network ns:/run/netns/...).
#
# alice (a), a wireguard-go peer in her own namespace, queries Prometheus
# through it. /healthz, /readyz and /metrics answer on 9586. bob (b) is added
# to peers.d after the start, by a ..data swap, and is served. /bin/sh cannot
# run in the image; the preStop `sleep` runs (while the gateway still serves)
# and SIGTERM then stops the gateway cleanly. The image's labels match
# Cargo.toml. The container and its helpers are removed on any exit.
#
# In CI (PROMGATE_CI=1, which .ci/run sets, or CI=true) a missing podman or
# image is a failure. Elsewhere a missing podman that cannot be installed
# skips the test (exit 77, which tests/e2e/run reports as SKIP).
set -u
. "$(dirname "$0")/lib.sh"

IMAGE=${PROMGATE_IMAGE:-localhost/promgate:dev}
in_ci() { [ "${PROMGATE_CI:-}" = 1 ] || [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; }
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    if in_ci; then
        echo "$T_NAME: FAIL: podman or runc missing in CI (scripts/test installs them from its PACKAGES list)"
        exit 1
    fi
    echo "$T_NAME: SKIP: podman and runc are needed to run the container image, and they are not installed."
    echo "  As root on Debian: apt-get install -y --no-install-recommends podman runc debootstrap; scripts/image"
    exit 77
fi

# The same podman settings as scripts/image: runc (crun refuses hybrid
# cgroups), no ulimits, no pids limit (not permitted on some machines).
PODMAN_CONF=$(mktemp /tmp/pgimg-containers.XXXX.conf)
printf '[containers]\ndefault_ulimits = []\npids_limit = 0\n\n[engine]\nruntime = "runc"\n' > "$PODMAN_CONF"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PODMAN_CONF}
if ! podman image exists "$IMAGE"; then
    rm -f "$PODMAN_CONF"
    echo "$T_NAME: FAIL: no image $IMAGE; build it first with scripts/image (scripts/test does)"
    exit 1
fi

t_lab a b
CTR=pgimg-$LAB_ID
img_cleanup() {
    podman rm -f -t 0 "$CTR" >/dev/null 2>&1
    rm -f "$PODMAN_CONF"
}
trap 'img_cleanup; lab_cleanup' EXIT
trap 'img_cleanup; lab_cleanup; exit 130' INT
trap 'img_cleanup; lab_cleanup; exit 143' TERM
# Containers of labs whose owner died (killed runs) go too.
for c in $(podman ps -a --format '{{.Names}}' | grep '^pgimg-' || true); do
    [ -f "/run/pglab/${c#pgimg-}" ] || { t_log "removing stale container $c"; podman rm -f -t 0 "$c" >/dev/null 2>&1; }
done

lab_start_prometheus "$SRV"
EP=$(lab_ip server):51820
for n in gw a b; do lab_keypair "$D" "$n"; done
GWPUB=$(cat "$D/gw.pub")

# kubelet_dir DIR FILE... — DIR holds FILEs (from $D/stage) the way the
# kubelet's atomic writer lays out a volume: ..TIMESTAMP/ with the files,
# ..data -> ..TIMESTAMP, and FILE -> ..data/FILE. Run again with a new set
# to update it (a new ..TIMESTAMP, ..data swapped by rename, old one gone).
KD_N=0
kubelet_dir() {
    local dir=$1 f old new; shift
    KD_N=$((KD_N + 1))
    new="..2026_01_01_00_00_0${KD_N}.$RANDOM"
    mkdir -p "$dir/$new"
    for f in "$@"; do cp "$D/stage/$f" "$dir/$new/$f"; done
    chmod 755 "$dir/$new"
    old=$(readlink "$dir/..data" 2>/dev/null || true)
    ln -s "$new" "$dir/..data_tmp"
    mv -T "$dir/..data_tmp" "$dir/..data"
    for f in "$@"; do [ -L "$dir/$f" ] || ln -s "..data/$f" "$dir/$f"; done
    [ -z "$old" ] || rm -rf "${dir:?}/$old"
}

# The module's promgate.toml (terraform/templates/promgate.toml.tftpl) with
# the lab's values; paths are the module's paths in the container.
mkdir -p "$D/stage" "$D/etc/key" "$D/etc/peers.d"
cat > "$D/etc/promgate.toml" <<EOF
[gateway]
private_key_file = "/etc/promgate/key/private.key"
listen_port = 51820
address = "$GW/24"
upstream = "http://127.0.0.1:9090"
http_ports = [80]
mtu = 1420
endpoint = "$EP"
peers_dir = "/etc/promgate/peers.d"

[admin]
listen = "0.0.0.0:9586"
EOF
chmod 0444 "$D/etc/promgate.toml"
cp "$D/gw.key" "$D/stage/private.key"
kubelet_dir "$D/etc/key" private.key
# The Secret's files are 0440, readable through fs_group 65532.
chown -h root:65532 "$D/etc/key"/..20*/private.key
chmod 0440 "$D/etc/key"/..20*/private.key
peer_toml alice "$(cat "$D/a.pub")" 10.13.13.2 'role = "viewer"' > "$D/stage/alice.toml"
peer_toml bob "$(cat "$D/b.pub")" 10.13.13.3 'role = "viewer"' > "$D/stage/bob.toml"
chmod 0444 "$D/stage/"*.toml
kubelet_dir "$D/etc/peers.d" alice.toml

MOUNTS=(-v "$D/etc/promgate.toml:/etc/promgate/promgate.toml:ro"
    -v "$D/etc/key:/etc/promgate/key:ro"
    -v "$D/etc/peers.d:/etc/promgate/peers.d:ro")
SECURITY=(--read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges
    --user 65532:65532 --group-add 65532)

t_log "image: $IMAGE ($(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12))"
label() { podman image inspect --format "{{index .Labels \"org.opencontainers.image.$1\"}}" "$IMAGE"; }
CARGO_VERSION=$(awk -F'"' '/^version *=/ { print $2; exit }' "$E2E_DIR/../../Cargo.toml")
CARGO_LICENSE=$(awk -F'"' '/^license *=/ { print $2; exit }' "$E2E_DIR/../../Cargo.toml")
check "label version is Cargo.toml's ($(label version))" test "$(label version)" = "$CARGO_VERSION"
check "label licenses is Cargo.toml's licence, or NOASSERTION while it has none ($(label licenses))" \
    test "$(label licenses)" = "${CARGO_LICENSE:-NOASSERTION}"
check "label source is set ($(label source))" test -n "$(label source)"
check "label revision is set ($(label revision))" test -n "$(label revision)"

# `promgate check` with the image's binary, against the mounted config.
image_check() {
    podman run --rm --network none "${SECURITY[@]}" "${MOUNTS[@]}" \
        --entrypoint /usr/local/bin/promgate "$IMAGE" check --config /etc/promgate/promgate.toml > "$D/check.log" 2>&1 ||
        { sed 's/^/        /' "$D/check.log"; return 1; }
}
check "promgate check (the image's binary) accepts the mounted config" image_check

t_log "starting the container in $SRV"
podman run -d --name "$CTR" --network "ns:/run/netns/$SRV" --log-driver k8s-file \
    "${SECURITY[@]}" "${MOUNTS[@]}" "$IMAGE" > "$D/ctr.id" 2> "$D/ctr.err" ||
    { cat "$D/ctr.err"; }
PID=$(podman inspect --format '{{.State.Pid}}' "$CTR" 2>/dev/null || echo 0)
logs() { podman logs "$CTR" > "$D/promgate-container.log" 2>&1; }
admin_up() { [ "$(http_code server http://127.0.0.1:9586/healthz)" = 200 ]; }
if ! retry 20 admin_up; then logs; tail -30 "$D/promgate-container.log"; fi
check "container running (pid $PID)" test "$(podman inspect --format '{{.State.Running}}' "$CTR" 2>/dev/null)" = true

# What the process got, from the host's view of it.
status_field() { awk -v f="$1:" '$1 == f { $1 = ""; sub(/^ /, ""); print; exit }' "/proc/$PID/status"; }
check "runtime is runc ($(podman inspect --format '{{.OCIRuntime}}' "$CTR"))" \
    test "$(podman inspect --format '{{.OCIRuntime}}' "$CTR")" = runc
check "runs as uid 65532 ($(status_field Uid))" test "$(status_field Uid | awk '{print $1 $2 $3 $4}')" = 65532655326553265532
check "runs as gid 65532 ($(status_field Gid))" test "$(status_field Gid | awk '{print $1 $2 $3 $4}')" = 65532655326553265532
for c in CapInh CapPrm CapEff CapBnd CapAmb; do
    check "$c is empty ($(status_field $c))" test "$(status_field $c)" = 0000000000000000
done
check "no_new_privs is set" test "$(status_field NoNewPrivs)" = 1
check "same network namespace as the lab's server" test "$(readlink "/proc/$PID/ns/net")" = "$(ip netns exec "$SRV" readlink /proc/self/ns/net)"
check_not "no /dev/net/tun in the container" test -e "/proc/$PID/root/dev/net/tun"
ro_root() { ! touch "/proc/$PID/root/probe" 2>/dev/null && ! touch "/proc/$PID/root/tmp/probe" 2>/dev/null; }
check "root filesystem and /tmp are read-only (even to the host's root)" ro_root
check_not "/bin/sh is not in the image" test -e "/proc/$PID/root/bin/sh"
check_not "podman exec $CTR /bin/sh -c true fails" quiet podman exec "$CTR" /bin/sh -c true
check_not "podman run --entrypoint /bin/sh fails" quiet podman run --rm --network none --entrypoint /bin/sh "$IMAGE" -c true

t_log "probes and metrics on 9586"
check "/healthz 200 on 127.0.0.1:9586" expect_code server http://127.0.0.1:9586/healthz 200
# The kubelet probes the pod's address: the lab's server address here.
check "/readyz 200 on $(lab_ip server):9586 (the pod's address)" retry 10 expect_code server "http://$(lab_ip server):9586/readyz" 200
metrics_ok() {
    on server curl -s --max-time 5 http://127.0.0.1:9586/metrics > "$D/metrics.txt" &&
        grep -q '^# TYPE promgate_' "$D/metrics.txt"
}
check "/metrics 200 with promgate_* metrics" metrics_ok

t_log "alice browses Prometheus through the container"
lab_wg_client "$(lab_ns a)" "$(lab_ifname a)" "$D/a.key" 10.13.13.2/32 "$GWPUB" "$EP" "$GW/32"
lab_wg_client "$(lab_ns b)" "$(lab_ifname b)" "$D/b.key" 10.13.13.3/32 "$GWPUB" "$EP" "$GW/32"
check "alice: /-/ready 200 through the tunnel within 15 s" retry 15 expect_code a "http://$GW/-/ready" 200
query_up() {
    on "$1" curl -s --max-time 5 "http://$GW/api/v1/query?query=up" > "$D/$1-query.json" &&
        json_status_success "$D/$1-query.json" && query_up_is_one "$D/$1-query.json"
}
check "alice: /api/v1/query?query=up answers success, up == 1 (within 10 s: Prometheus scrapes itself every 1 s)" retry 10 query_up a
check "alice: the UI (/graph) answers 200 after redirects" \
    test "$(on a curl -s -L -o /dev/null -w '%{http_code}' --max-time 5 "http://$GW/graph")" = 200
HS=$(metric 'promgate_peer_handshakes_total{peer="alice"}')
check "metrics: alice's handshakes_total >= 1 (${HS:-absent})" test "${HS:-0}" -ge 1
T_CURL_MAX=2 check "bob: not served before his file is in peers.d" expect_code b "http://$GW/" 000

t_log "bob joins through the mounted peers.d (a kubelet-style ..data swap)"
APPLIED0=$(metric promgate_config_reloads_applied_total)
kubelet_dir "$D/etc/peers.d" alice.toml bob.toml
applied_up() { local v; v=$(metric promgate_config_reloads_applied_total); [ "${v%.*}" -gt "${APPLIED0%.*}" ]; }
check "reload applied: promgate_config_reloads_applied_total goes up within 5 s (was ${APPLIED0:-absent})" retry 5 applied_up
bob_ok() { fresh_session b; [ "$(http_code b "http://$GW/-/ready")" = 200 ]; }
check "bob: /-/ready 200 through the tunnel within 10 s of the swap" retry 10 bob_ok
check "bob: /api/v1/query?query=up answers success" query_up b
check "alice: still served after the reload" query_up a
logs
bob_logged() { sed 's/\x1b\[[0-9;]*m//g' "$D/promgate-container.log" | grep 'peers reloaded' | grep -q bob; }
check "container log: peers reloaded with bob" bob_logged

t_log "preStop: the module's exec hook, then SIGTERM"
prestop() {
    local t0 rc secs
    t0=$(now)
    podman exec "$CTR" /usr/local/bin/sleep 2; rc=$?
    secs=$(seconds_since "$t0")
    echo "        preStop sleep 2: exit $rc after ${secs}s"
    [ "$rc" = 0 ] && awk -v s="$secs" 'BEGIN { exit !(s >= 1.9) }'
}
query_up a > /dev/null 2>&1
prestop & PRESTOP=$!
sleep 0.5
check "alice: served while preStop sleeps" query_up a
check "preStop: podman exec $CTR /usr/local/bin/sleep 2 runs (exit 0, ~2 s)" wait "$PRESTOP"
T0=$(now)
podman stop -t 20 "$CTR" > /dev/null 2>&1
STOP_S=$(seconds_since "$T0")
EXIT=$(podman inspect --format '{{.State.ExitCode}}' "$CTR" 2>/dev/null)
check "SIGTERM: the gateway exits with 0 (got ${EXIT:-?}) within 12 s (took ${STOP_S}s)" \
    eval '[ "$EXIT" = 0 ] && at_most "$STOP_S" 12'
logs
if [ "$T_FAIL" -gt 0 ]; then
    echo "----- promgate-container.log (last 30 lines) -----"
    tail -30 "$D/promgate-container.log"
fi
t_finish
