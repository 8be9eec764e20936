//! Validation as a user meets it: whole files in, messages with file, line
//! and field out.

use super::*;
use promgate_core::keys::{PrivateKey, encode_key};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn write_key(dir: &Path) -> PrivateKey {
    let k = PrivateKey::generate();
    std::fs::write(dir.join("private.key"), k.to_base64()).unwrap();
    k
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("promgate-config-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn peer_key() -> String {
    encode_key(PrivateKey::generate().public_key().as_bytes())
}

#[test]
fn the_minimal_file_from_the_issue_works_as_written() {
    let dir = tempdir("minimal");
    write_key(&dir);
    let text = format!(
        r#"[gateway]
private_key_file = "{}/private.key"
listen_port = 51820
address = "10.13.13.1/24"     # the gateway's address inside the tunnel
upstream = "http://prometheus.default.svc.cluster.local"
http_ports = [80]             # TCP ports served inside the tunnel

[[peer]]
name = "alice"
public_key = "{}"
allowed_ips = ["10.13.13.2/32"]
"#,
        dir.display(),
        peer_key()
    );
    let cfg = parse(&dir.join("promgate.toml"), &text).unwrap();
    assert_eq!(cfg.gateway.listen_port, 51820);
    assert_eq!(cfg.gateway.served_ports(), vec![80]);
    assert_eq!(cfg.peers.len(), 1);
    assert_eq!(cfg.peers[0].role, Role::Viewer);
    assert_eq!(cfg.peers[0].origin.line, 8);
}

fn base(dir: &Path) -> String {
    format!(
        "[gateway]\nprivate_key_file = \"{}/private.key\"\naddress = \"10.13.13.1/24\"\n",
        dir.display()
    )
}

fn errors_of(text: &str, dir: &Path) -> Vec<ConfigError> {
    parse(&dir.join("p.toml"), text).unwrap_err().0
}

/// The one error `text` must have, as the user reads it.
fn one_error(text: &str, dir: &Path) -> String {
    let errs: Vec<String> = errors_of(text, dir).iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap_or_default()
}

#[test]
fn errors_name_file_line_and_field() {
    let dir = tempdir("errors");
    let own = write_key(&dir);
    let k = peer_key();
    let text = format!(
        "{}\n[[peer]]\nname = \"a\"\npublic_key = \"{k}\"\nallowed_ips = [\"10.13.13.2/32\"]\n\n[[peer]]\nname = \"a\"\npublic_key = \"{k}\"\nallowed_ips = [\"10.13.13.2/31\"]\n\n[[peer]]\nname = \"bad\"\npublic_key = \"xyz\"\nallowed_ips = [\"10.13.13.9/32\"]\n\n[[peer]]\nname = \"me\"\npublic_key = \"{}\"\nallowed_ips = []\n",
        base(&dir),
        encode_key(own.public_key().as_bytes())
    );
    let errs = errors_of(&text, &dir);
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = shown.join("\n");
    assert!(
        all.contains("p.toml:17: peer \"bad\".public_key: key is not valid base64"),
        "{all}"
    );
    assert!(all.contains("peer \"me\".allowed_ips: is empty"), "{all}");
    assert!(all.contains("peer \"a\".name: duplicate name"), "{all}");
    assert!(all.contains("same key as peer \"a\""), "{all}");
    assert!(
        all.contains("10.13.13.2/32 overlaps 10.13.13.2/31"),
        "{all}"
    );
}

#[test]
fn own_key_as_peer_is_refused() {
    let dir = tempdir("own");
    let own = write_key(&dir);
    let text = format!(
        "{}[[peer]]\nname = \"me\"\npublic_key = \"{}\"\nallowed_ips = \"10.13.13.5/32\"\n",
        base(&dir),
        encode_key(own.public_key().as_bytes())
    );
    let all = errors_of(&text, &dir)
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("is the gateway's own public key"), "{all}");
}

#[test]
fn syntax_errors_carry_a_line() {
    let dir = tempdir("syntax");
    write_key(&dir);
    let text = format!("{}listen_port = \"x\"\n", base(&dir));
    let errs = errors_of(&text, &dir);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 4, "{}", errs[0]);
}

#[test]
fn unknown_fields_are_refused() {
    let dir = tempdir("unknown");
    write_key(&dir);
    let text = format!("{}lisen_port = 1\n", base(&dir));
    let errs = errors_of(&text, &dir);
    assert!(errs[0].to_string().contains("lisen_port"), "{}", errs[0]);
}

#[test]
fn a_per_peer_connection_cap_above_the_total_is_refused() {
    let dir = tempdir("caps");
    write_key(&dir);
    let text = format!(
        "{}max_connections_per_peer = 64\nmax_connections = 32\n",
        base(&dir)
    );
    let err = one_error(&text, &dir);
    assert!(
        err.contains(
            "gateway.max_connections_per_peer: 64 is more than gateway.max_connections (32)"
        ),
        "{err}"
    );
    let text = format!("{}max_connections = 64\n", base(&dir));
    assert!(
        errors_of(&text, &dir).len() == 1,
        "the default 128 per peer is above 64"
    );
    // Issue 24: a total whose minimum buffers need more than half the
    // memory budget is refused, naming both keys.
    let text = format!("{}max_connections = 4096\n", base(&dir));
    let err = one_error(&text, &dir);
    assert!(
        err.contains("gateway.max_connections: 4096 connections hold 128 MiB of minimum buffers (32 KiB each), more than half of gateway.tcp_memory_budget (64 MiB)"),
        "{err}"
    );
    let text = format!(
        "{}max_connections = 4096\ntcp_memory_budget = 268435456\n",
        base(&dir)
    );
    assert!(parse(&dir.join("p.toml"), &text).is_ok());
    let text = format!(
        "{}max_connections_per_peer = 32\nmax_connections = 32\n",
        base(&dir)
    );
    assert!(parse(&dir.join("p.toml"), &text).is_ok());
    let text = format!(
        "{}max_upstream_requests_per_peer = 20\nmax_upstream_requests = 10\n",
        base(&dir)
    );
    let err = one_error(&text, &dir);
    assert!(
        err.contains("gateway.max_upstream_requests_per_peer: 20 is more than gateway.max_upstream_requests (10)"),
        "{err}"
    );
}

#[test]
fn the_tcp_sender_is_classic_or_wan_and_anything_else_is_named() {
    use promgate_core::gateway::TcpSender;
    let dir = tempdir("sender");
    write_key(&dir);
    let cfg = parse(&dir.join("p.toml"), &base(&dir)).unwrap();
    assert_eq!(cfg.gateway.tcp_sender, TcpSender::Classic);
    let text = format!("{}tcp_sender = \"wan\"\n", base(&dir));
    let cfg = parse(&dir.join("p.toml"), &text).unwrap();
    assert_eq!(cfg.gateway.tcp_sender, TcpSender::Wan);
    assert_eq!(cfg.gateway.core_settings().limits.sender, TcpSender::Wan);
    let text = format!("{}tcp_sender = \"wan-cubic\"\n", base(&dir));
    let cfg = parse(&dir.join("p.toml"), &text).unwrap();
    assert_eq!(cfg.gateway.tcp_sender, TcpSender::WanCubic);
    let text = format!("{}tcp_sender = \"bbr\"\n", base(&dir));
    let err = one_error(&text, &dir);
    assert!(
        err.contains("gateway.tcp_sender: `bbr` is not a TCP sender"),
        "{err}"
    );
}

#[test]
fn allowed_hosts_take_names_and_ip_literals_and_name_a_bad_entry() {
    let dir = tempdir("hosts");
    write_key(&dir);
    let text = format!(
        "{}allowed_hosts = [\"prometheus.vpn.example\", \"10.0.0.1\", \"fd00::1\"]\n",
        base(&dir)
    );
    let cfg = parse(&dir.join("p.toml"), &text).unwrap();
    assert_eq!(
        cfg.gateway.allowed_hosts,
        ["prometheus.vpn.example", "10.0.0.1", "fd00::1"]
    );
    let text = format!(
        "{}allowed_hosts = [\n  \"ok.example\",\n  \"https://prom.example/\",\n  \"prom.example:80\",\n]\n",
        base(&dir)
    );
    let errs: Vec<String> = errors_of(&text, &dir)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains(
            "p.toml:6: gateway.allowed_hosts: `https://prom.example/` is not a host name"
        ),
        "{errs:?}"
    );
    assert!(
        errs[1].contains("p.toml:7: gateway.allowed_hosts: `prom.example:80`"),
        "{errs:?}"
    );
}

#[test]
fn missing_key_file_is_named() {
    let dir = tempdir("nokey");
    let text = "[gateway]\nprivate_key_file = \"/nonexistent/k\"\naddress = \"10.13.13.1/24\"\n";
    let errs = errors_of(text, &dir);
    assert!(
        errs[0]
            .to_string()
            .contains(":2: gateway.private_key_file: cannot read /nonexistent/k"),
        "{}",
        errs[0]
    );
}

#[test]
fn scope_is_read_inline_and_from_peers_dir() {
    let dir = tempdir("scope");
    write_key(&dir);
    std::fs::create_dir_all(dir.join("peers.d")).unwrap();
    std::fs::write(
        dir.join("peers.d/bob.toml"),
        format!("[[peer]]\nname = \"bob\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.3/32\"]\nscope = {{ namespace = [\"team-b\", \"team-c\"], cluster = \"prod\" }}\n", peer_key()),
    )
    .unwrap();
    let text = format!(
        "{}peers_dir = \"peers.d\"\n[[peer]]\nname = \"alice\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\nscope = {{ namespace = \"team-a\" }}\n",
        base(&dir),
        peer_key()
    );
    let cfg = parse(&dir.join("p.toml"), &text).unwrap();
    let scope_of = |name: &str| {
        cfg.peers
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.scope.as_ref())
            .map(|s| s.to_string())
    };
    assert_eq!(scope_of("alice").as_deref(), Some(r#"namespace="team-a""#));
    assert_eq!(
        scope_of("bob").as_deref(),
        Some(r#"cluster="prod",namespace=~"team-b|team-c""#)
    );
}

#[test]
fn bad_scopes_are_refused_with_file_line_and_field() {
    let dir = tempdir("badscope");
    write_key(&dir);
    let peer = |extra: &str| {
        format!(
            "{}[[peer]]\nname = \"alice\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\n{extra}\n",
            base(&dir),
            peer_key()
        )
    };
    let cases = [
        (r#"scope = { namespace = "" }"#, "empty value"),
        (
            r#"scope = { "team.name" = "a" }"#,
            "not a valid Prometheus label name",
        ),
        (r#"scope = {}"#, "is empty"),
        (
            "role = \"admin\"\nscope = { namespace = \"team-a\" }",
            "admin peer cannot be scoped",
        ),
    ];
    for (extra, want) in cases {
        let errs = errors_of(&peer(extra), &dir);
        assert_eq!(errs.len(), 1, "{extra}: {errs:?}");
        let e = errs[0].to_string();
        assert!(e.contains("peer \"alice\".scope: "), "{e}");
        assert!(e.contains(want), "{extra}: {e}");
        assert!(
            e.starts_with(&format!("{}:", dir.join("p.toml").display())),
            "{e}"
        );
        assert!(errs[0].line >= 4, "{e}");
    }
}

#[test]
fn peers_dir_is_merged_and_its_errors_name_its_files() {
    let dir = tempdir("peersdir");
    write_key(&dir);
    std::fs::create_dir_all(dir.join("peers.d")).unwrap();
    std::fs::write(
        dir.join("peers.d/bob.toml"),
        format!("[[peer]]\nname = \"bob\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.3/32\"]\nrole = \"admin\"\n", peer_key()),
    )
    .unwrap();
    let text = format!("{}peers_dir = \"peers.d\"\n", base(&dir));
    let cfg = parse(&dir.join("p.toml"), &text).unwrap();
    assert_eq!(cfg.peers.len(), 1);
    assert_eq!(cfg.peers[0].role, Role::Admin);

    std::fs::write(
        dir.join("peers.d/carol.toml"),
        "[[peer]]\nname = \"carol\"\nrole = \"root\"\n",
    )
    .unwrap();
    let all = errors_of(&text, &dir)
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("carol.toml:"), "{all}");
    assert!(
        all.contains("\"root\" is not a role") || all.contains("`root` is not a role"),
        "{all}"
    );
}

#[test]
fn nested_networks_of_different_peers_overlap() {
    let dir = tempdir("nested");
    write_key(&dir);
    let text = format!(
        "{}[[peer]]\nname = \"a\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.16/28\"]\n[[peer]]\nname = \"b\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.20/32\"]\n[[peer]]\nname = \"c\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.40/32\"]\n",
        base(&dir),
        peer_key(),
        peer_key(),
        peer_key()
    );
    let errs = errors_of(&text, &dir);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .to_string()
            .contains("peer \"b\".allowed_ips: 10.13.13.20/32 overlaps 10.13.13.16/28"),
        "{}",
        errs[0]
    );
}

#[test]
fn the_shipped_example_config_validates() {
    let dir = tempdir("example");
    write_key(&dir);
    let text = include_str!("../../config/promgate.example.toml")
        .replace(
            "/etc/promgate/key/private.key",
            &dir.join("private.key").display().to_string(),
        )
        .replace("peers_dir = \"/etc/promgate/peers.d\"", "");
    let cfg = parse(&dir.join("promgate.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.peers.len(), 3);
    let scopes: Vec<_> = cfg
        .peers
        .iter()
        .map(|p| p.scope.as_ref().map(|s| s.to_string()))
        .collect();
    assert_eq!(
        scopes,
        [
            None,
            Some(r#"namespace="team-a""#.to_string()),
            Some(r#"cluster="prod",namespace=~"team-b|team-b-batch""#.to_string())
        ]
    );
    assert_eq!(cfg.gateway.upstream_timeout, Duration::from_secs(120));
    let upstreams: Vec<_> = cfg
        .gateway
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.kind, u.ports.clone()))
        .collect();
    assert_eq!(
        upstreams,
        [
            ("prometheus", UpstreamKind::Prometheus, vec![80]),
            ("alertmanager", UpstreamKind::Alertmanager, vec![9093])
        ]
    );
    assert_eq!(
        cfg.admin.upstream_unready_after,
        Some(Duration::from_secs(60))
    );
}

#[test]
fn a_bad_path_prefix_names_the_list_it_is_in() {
    let dir = tempdir("paths");
    write_key(&dir);
    let text = format!(
        "{}[[peer]]\nname = \"a\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\nallow_paths = [\"api/v1/x\"]\ndeny_paths = [\"api/v1/y\"]\n",
        base(&dir),
        peer_key()
    );
    let all: Vec<String> = errors_of(&text, &dir)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all[0].contains("peer \"a\".allow_paths: `api/v1/x` must start with '/'"),
        "{all:?}"
    );
    assert!(
        all[1].contains("peer \"a\".deny_paths: `api/v1/y` must start with '/'"),
        "{all:?}"
    );
}

#[test]
fn defaults_apply_when_fields_are_left_out() {
    let dir = tempdir("defaults");
    write_key(&dir);
    let cfg = parse(&dir.join("p.toml"), &base(&dir)).unwrap();
    assert_eq!(cfg.gateway.listen_port, DEFAULT_LISTEN_PORT);
    assert_eq!(
        cfg.gateway.identity_header.as_str(),
        DEFAULT_IDENTITY_HEADER
    );
    assert_eq!(cfg.gateway.served_ports(), DEFAULT_HTTP_PORTS);
    assert!(cfg.gateway.allowed_hosts.is_empty());
    assert_eq!(cfg.admin.listen, Some(DEFAULT_ADMIN_LISTEN));
    assert_eq!(
        cfg.admin.control_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9587")
    );
    assert_eq!(
        cfg.gateway.upstreams[0].url.to_string(),
        format!("{DEFAULT_UPSTREAM}/")
    );
}

#[test]
fn a_bad_private_key_is_named_with_where_it_came_from() {
    let dir = tempdir("badkey");
    std::fs::write(dir.join("bad.key"), "not a key\n").unwrap();
    let with_key = |line: &str| format!("[gateway]\n{line}\naddress = \"10.13.13.1/24\"\n");
    let message = |line: &str| errors_of(&with_key(line), &dir)[0].to_string();

    let e = message("private_key_file = \"bad.key\"");
    let file = dir.join("bad.key");
    assert!(
        e.contains(&format!(
            "gateway.private_key_file: {}: key ",
            file.display()
        )),
        "{e}"
    );
    let e = message("private_key_env = \"PROMGATE_TEST_NO_SUCH_VARIABLE\"");
    assert!(
        e.contains(
            "gateway.private_key_env: environment variable PROMGATE_TEST_NO_SUCH_VARIABLE is not set"
        ),
        "{e}"
    );
    let e = message("private_key = \"not a key\"");
    assert!(e.contains(":2: gateway.private_key: key "), "{e}");
    let e = message("private_key = \"x\"\nprivate_key_file = \"bad.key\"");
    assert!(e.contains("set exactly one of"), "{e}");
}

#[test]
fn a_peers_file_replaced_by_a_symlink_loop_is_refused_not_skipped() {
    let dir = tempdir("symlink-loop");
    write_key(&dir);
    let peers = dir.join("peers.d");
    std::fs::create_dir_all(&peers).unwrap();
    std::os::unix::fs::symlink("bob.toml", peers.join("bob.toml")).unwrap();
    let err = load_peers_dir(&peers).unwrap_err().to_string();
    assert!(err.contains("bob.toml"), "{err}");
    std::fs::remove_file(peers.join("bob.toml")).unwrap();
    std::os::unix::fs::symlink("missing", peers.join("gone.toml")).unwrap();
    assert!(
        load_peers_dir(&peers).is_err(),
        "a dangling link was skipped"
    );
    std::fs::remove_file(peers.join("gone.toml")).unwrap();
    std::fs::create_dir(peers.join("dir.toml")).unwrap();
    assert_eq!(load_peers_dir(&peers).unwrap().len(), 0);
}

/// Issue 28: the `[[upstream]]` list as the issue spells it.
const TWO_UPSTREAMS: &str = r#"
[[upstream]]
name = "prometheus"
url = "http://prometheus.monitoring.svc:9090"
port = 80
kind = "prometheus"

[[upstream]]
name = "alertmanager"
url = "http://alertmanager.monitoring.svc:9093"
port = 9093
kind = "alertmanager"
"#;

fn all_errors(text: &str, dir: &Path) -> String {
    errors_of(text, dir)
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn upstreams_are_read_as_the_issue_spells_them() {
    let dir = tempdir("upstreams");
    write_key(&dir);
    let text = format!(
        "{}{TWO_UPSTREAMS}\n[[peer]]\nname = \"oncall\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\nrole = \"responder\"\nallow_paths = [\"alertmanager:/api/v2/alerts\"]\n",
        base(&dir),
        peer_key()
    );
    let cfg = parse(&dir.join("p.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<_> = cfg
        .gateway
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.kind, u.ports.clone(), u.url.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "prometheus",
                UpstreamKind::Prometheus,
                vec![80],
                "http://prometheus.monitoring.svc:9090/".to_string()
            ),
            (
                "alertmanager",
                UpstreamKind::Alertmanager,
                vec![9093],
                "http://alertmanager.monitoring.svc:9093/".to_string()
            ),
        ]
    );
    assert_eq!(cfg.gateway.served_ports(), [80, 9093]);
    assert_eq!(cfg.gateway.core_settings().http_ports, [80, 9093]);
    assert_eq!(cfg.gateway.core_settings().upstream_shares.upstreams, 2);
    assert_eq!(cfg.peers[0].role, Role::Responder);
}

#[test]
fn the_older_upstream_keys_are_one_prometheus_on_each_port() {
    let dir = tempdir("old-upstream");
    write_key(&dir);
    let text = format!(
        "{}upstream = \"http://127.0.0.1:9090\"\nhttp_ports = [80, 8080]\n",
        base(&dir)
    );
    let cfg = parse(&dir.join("p.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.gateway.upstreams.len(), 1);
    let u = &cfg.gateway.upstreams[0];
    assert_eq!(
        (u.name.as_str(), u.kind, u.ports.as_slice()),
        ("prometheus", UpstreamKind::Prometheus, &[80, 8080][..])
    );
}

#[test]
fn both_spellings_of_the_upstreams_are_refused_naming_both_keys() {
    let dir = tempdir("both-upstreams");
    write_key(&dir);
    let text = format!(
        "{}upstream = \"http://127.0.0.1:9090\"\nhttp_ports = [80]\n{TWO_UPSTREAMS}",
        base(&dir)
    );
    let errs = errors_of(&text, &dir);
    assert_eq!(errs.len(), 2, "{errs:?}");
    let all = all_errors(&text, &dir);
    assert!(
        all.contains("p.toml:4: gateway.upstream: is the older spelling"),
        "{all}"
    );
    assert!(
        all.contains("p.toml:5: gateway.http_ports: is the older spelling"),
        "{all}"
    );
    assert!(all.contains("[[upstream]]"), "{all}");
}

#[test]
fn bad_upstream_lists_are_refused_with_line_and_field() {
    let dir = tempdir("bad-upstreams");
    write_key(&dir);
    let text = format!(
        r#"{}
[[upstream]]
name = "prometheus"
url = "http://p:9090"
port = 80
kind = "prometheus"

[[upstream]]
name = "alertmanager"
url = "http://a:9093"
port = 80
kind = "alertmanager"

[[upstream]]
name = "loki"
url = "http://l:3100"
port = 3100
kind = "loki"

[[upstream]]
name = "prometheus"
url = "http://p2:9090"
port = 81
kind = "prometheus"

[[upstream]]
name = "Wiki:x"
url = "https://wiki"
port = 82
kind = "http"

[[upstream]]
name = "nothing"
"#,
        base(&dir)
    );
    let all = all_errors(&text, &dir);
    for want in [
        "p.toml:14: upstream \"alertmanager\".port: tunnel port 80 is already upstream \"prometheus\"'s (line 5)",
        "p.toml:21: upstream \"loki\".kind: `loki` is not a kind of upstream; use \"prometheus\", \"alertmanager\" or \"http\"",
        "p.toml:23: upstream \"prometheus\".name: duplicate name, also at line 5",
        "p.toml:30: upstream.name: `Wiki:x` must be 1-32 characters of a-z, 0-9, '_' or '-', starting with a letter",
        "p.toml:31: upstream.url: `https://wiki` must be an http:// URL with a host",
        "upstream \"nothing\".url: missing",
        "upstream \"nothing\".port: missing",
        "upstream \"nothing\".kind: missing",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn roles_include_responder_and_a_bad_one_lists_them_all() {
    let dir = tempdir("roles");
    write_key(&dir);
    let text = format!(
        "{}[[peer]]\nname = \"a\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\nrole = \"silencer\"\n",
        base(&dir),
        peer_key()
    );
    let all = all_errors(&text, &dir);
    assert!(
        all.contains(
            "peer \"a\".role: `silencer` is not a role; use \"viewer\", \"responder\" or \"admin\""
        ),
        "{all}"
    );
}

#[test]
fn a_path_entry_for_an_unknown_upstream_names_the_peer_and_the_key() {
    let dir = tempdir("path-upstream");
    write_key(&dir);
    let text = format!(
        "{}{TWO_UPSTREAMS}\n[[peer]]\nname = \"a\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\nallow_paths = [\"wiki:/\", \"alertmanager:/api/v2/alerts\"]\ndeny_paths = [\"grafana:/x\", \"Bad Name:/x\", \"alertmanager:api\"]\n",
        base(&dir),
        peer_key()
    );
    let all = all_errors(&text, &dir);
    assert!(
        all.contains(
            "peer \"a\".deny_paths: `Bad Name:/x`: before the ':' must be an upstream's name"
        ),
        "{all}"
    );
    assert!(
        all.contains("peer \"a\".deny_paths: `alertmanager:api` must start with '/'"),
        "{all}"
    );
    // The unknown names are found once the peer is valid on its own.
    let text = format!(
        "{}{TWO_UPSTREAMS}\n[[peer]]\nname = \"a\"\npublic_key = \"{}\"\nallowed_ips = [\"10.13.13.2/32\"]\nallow_paths = [\"wiki:/\", \"alertmanager:/api/v2/alerts\"]\ndeny_paths = [\"grafana:/x\"]\n",
        base(&dir),
        peer_key()
    );
    let errs = errors_of(&text, &dir);
    let all = all_errors(&text, &dir);
    assert_eq!(errs.len(), 2, "{all}");
    assert!(
        all.contains("p.toml:17: peer \"a\".allow_paths: `wiki:/` names upstream \"wiki\", which is not configured (the upstreams are \"prometheus\", \"alertmanager\")"),
        "{all}"
    );
    assert!(
        all.contains("peer \"a\".deny_paths: `grafana:/x` names upstream \"grafana\""),
        "{all}"
    );
}
