//! Host, Origin and Sec-Fetch-Site checks (issue 23, item 3).
//!
//! A browser on a peer's machine is a confused deputy: it carries the
//! peer's tunnel, so its pages could speak for the peer. Two attacks are
//! closed here:
//!
//! - DNS rebinding: a page re-points its own name at the gateway's tunnel
//!   address and reads the answers as same-origin. The browser still sends
//!   the attacker's name in `Host`, so only requests for the gateway's own
//!   addresses, or names the operator listed in `gateway.allowed_hosts`,
//!   are served.
//! - Cross-site requests: a form on any page can POST to the gateway. A
//!   browser marks such requests with `Origin` and `Sec-Fetch-Site`, so an
//!   unsafe method with a foreign origin is refused. Tools (curl, amtool,
//!   promtool, remote read, federation) send neither header and pass.

use crate::config::GatewayConfig;
use http::header::{self, HeaderMap};
use http::{Method, Uri, Version};
use std::net::IpAddr;

/// The host part of a `Host` value, an authority or an allowed-hosts entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

/// Splits `host[:port]` (IPv6 in brackets). `None` when it is not one:
/// empty, userinfo, a path, an unbracketed IPv6 address, a bad port.
pub fn parse_host_port(s: &str) -> Option<(HostName, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = inside.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':')?)?),
        };
        return Some((HostName::Ip(IpAddr::V6(ip)), port));
    }
    match s.split_once(':') {
        Some((host, port)) => Some((parse_host(host)?, Some(parse_port(port)?))),
        None => Some((parse_host(s)?, None)),
    }
}

/// Decimal digits only: `u16::from_str` would also take a `+`.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An IPv4 literal or a DNS name (no port, no brackets).
fn parse_host(s: &str) -> Option<HostName> {
    if let Ok(ip) = s.parse::<std::net::Ipv4Addr>() {
        return Some(HostName::Ip(IpAddr::V4(ip)));
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (name.len() <= 253 && name.split('.').all(label_ok))
        .then(|| HostName::Name(name.to_ascii_lowercase()))
}

/// One entry of `gateway.allowed_hosts`: a DNS name or an IP literal
/// (IPv6 with or without brackets), no scheme, port, path or whitespace.
pub fn parse_allowed_host(s: &str) -> Option<HostName> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(HostName::Ip(ip));
    }
    match parse_host_port(s)? {
        (host, None) => Some(host),
        (_, Some(_)) => None,
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// HTTP/1.1 without `Host` (400).
    MissingHost,
    /// A `Host` that is not `host[:port]`, or more than one (400).
    MalformedHost(String),
    /// A host that is not the gateway's (421).
    ForeignHost(String),
    /// An unsafe method from a page of another origin (403).
    ForeignOrigin(String),
    /// An unsafe method the browser marked as cross-site or same-site (403).
    CrossSite(String),
}

/// What the tunnel proxy answers to: its tunnel addresses on its HTTP
/// ports, and the operator's `allowed_hosts` on any port.
#[derive(Debug, Clone)]
pub struct HostCheck {
    tunnel: Vec<IpAddr>,
    /// Every served port, all upstreams together (`Host` may name any).
    ports: Vec<u16>,
    /// The ports of the one upstream this check is for, when it is for
    /// one: an `Origin` on the tunnel address must then be one of them.
    /// Each upstream is its own origin, so a page of one (a plain HTTP
    /// upstream's, say) cannot act with the peer's rights on another.
    origin_ports: Option<Vec<u16>>,
    allowed: Vec<HostName>,
}

impl HostCheck {
    pub fn new(config: &GatewayConfig) -> Self {
        HostCheck {
            tunnel: config.addresses.iter().map(|n| n.addr()).collect(),
            ports: config.served_ports(),
            origin_ports: None,
            // Validated in config; a bad entry could only never match.
            allowed: config
                .allowed_hosts
                .iter()
                .filter_map(|h| parse_allowed_host(h))
                .collect(),
        }
    }

    /// The same check for requests to the upstream served on `ports`: an
    /// `Origin` on a tunnel address must be that upstream's own.
    pub fn for_upstream(&self, ports: &[u16]) -> Self {
        HostCheck {
            origin_ports: Some(ports.to_vec()),
            ..self.clone()
        }
    }

    fn is_tunnel(&self, host: &HostName, port: Option<u16>) -> bool {
        matches!(host, HostName::Ip(ip) if self.tunnel.contains(ip))
            && port.is_none_or(|p| self.ports.contains(&p))
    }

    /// Any port: the name is what DNS rebinding forges, and a user may
    /// reach the gateway through a local forwarder on another port.
    fn is_allowed(&self, host: &HostName) -> bool {
        self.allowed.contains(host)
    }

    fn host_ok(&self, value: &str) -> Result<(), Refusal> {
        match parse_host_port(value) {
            None => Err(Refusal::MalformedHost(value.to_string())),
            Some((h, port)) if self.is_tunnel(&h, port) || self.is_allowed(&h) => Ok(()),
            Some(_) => Err(Refusal::ForeignHost(value.to_string())),
        }
    }

    /// `http://<tunnel address>[:port]`, or `http(s)://<allowed host>[:port]`.
    fn origin_ok(&self, origin: &str) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false; // "null", or garbage
        };
        let Some((host, port)) = parse_host_port(authority) else {
            return false;
        };
        let scheme = scheme.to_ascii_lowercase();
        // An origin without a port is on http's 80.
        let own_upstream = self
            .origin_ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&port.unwrap_or(80)));
        (scheme == "http" && self.is_tunnel(&host, port) && own_upstream)
            || ((scheme == "http" || scheme == "https") && self.is_allowed(&host))
    }

    /// True when the request carries an `Origin` that is not the gateway's
    /// own or an allowed host's (`null` included): its answer must not be
    /// readable by that page, see `Proxy::handle`.
    pub fn has_foreign_origin(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::ORIGIN)
            .iter()
            .any(|v| !v.to_str().is_ok_and(|o| self.origin_ok(o)))
    }

    /// Checks one request head; `Ok` when it may go on to the policy.
    pub fn check(
        &self,
        method: &Method,
        version: Version,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        // Absolute form: the authority is the target (RFC 9112 3.2.2);
        // a Host next to it must be acceptable too, so neither can smuggle
        // a foreign name past the other.
        if let Some(a) = uri.authority() {
            self.host_ok(a.as_str())?;
        }
        let mut hosts = headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(_), Some(_)) => {
                return Err(Refusal::MalformedHost("more than one Host header".into()));
            }
            (Some(h), None) => {
                let v = h.to_str().map_err(|_| {
                    Refusal::MalformedHost(String::from_utf8_lossy(h.as_bytes()).into())
                })?;
                self.host_ok(v)?;
            }
            // HTTP/1.0 may omit Host; no browser does.
            (None, _) if version == Version::HTTP_11 && uri.authority().is_none() => {
                return Err(Refusal::MissingHost);
            }
            (None, _) => {}
        }

        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        for v in headers.get_all("sec-fetch-site") {
            let v = String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase();
            if v == "cross-site" || v == "same-site" {
                return Err(Refusal::CrossSite(v));
            }
        }
        for v in headers.get_all(header::ORIGIN) {
            let text = String::from_utf8_lossy(v.as_bytes());
            if !self.origin_ok(text.trim()) {
                return Err(Refusal::ForeignOrigin(text.into()));
            }
        }
        Ok(())
    }
}

/// The loopback control endpoint answers only to `localhost`, `127.0.0.1`,
/// `[::1]` and its own listen address, with no port or its own.
pub fn loopback_host_ok(value: &str, listen: std::net::SocketAddr) -> bool {
    let Some((host, port)) = parse_host_port(value) else {
        return false;
    };
    let own = match host {
        HostName::Name(n) => n == "localhost",
        HostName::Ip(ip) => {
            ip == IpAddr::from([127, 0, 0, 1])
                || ip == std::net::Ipv6Addr::LOCALHOST
                || ip == listen.ip()
        }
    };
    own && port.is_none_or(|p| p == listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use promgate_core::keys::PrivateKey;

    fn check() -> HostCheck {
        let mut c = GatewayConfig::with_defaults(
            PrivateKey::generate(),
            "10.13.13.1/24".parse().unwrap(),
            "http://prometheus:9090".parse().unwrap(),
        );
        c.addresses.push("fd13::1/64".parse().unwrap());
        c.upstreams[0].ports = vec![80, 8080];
        c.allowed_hosts = vec!["Prom.VPN.example".into(), "192.0.2.7".into()];
        HostCheck::new(&c)
    }

    fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> Result<(), Refusal> {
        let mut b = http::Request::builder().method(method).uri(target);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let (p, ()) = b.body(()).unwrap().into_parts();
        check().check(&p.method, p.version, &p.uri, &p.headers)
    }

    #[test]
    fn tunnel_addresses_pass_with_a_served_port_or_none() {
        for host in [
            "10.13.13.1",
            "10.13.13.1:80",
            "10.13.13.1:8080",
            "[fd13::1]",
            "[FD13::1]:80",
        ] {
            assert_eq!(head("GET", "/", &[("host", host)]), Ok(()), "{host}");
        }
        for host in ["10.13.13.1:9090", "[fd13::1]:22", "10.13.13.2", "[::1]"] {
            assert_eq!(
                head("GET", "/", &[("host", host)]),
                Err(Refusal::ForeignHost(host.into())),
                "{host}"
            );
        }
    }

    #[test]
    fn allowed_hosts_pass_in_any_case_and_on_any_port() {
        for host in [
            "prom.vpn.example",
            "PROM.vpn.EXAMPLE:3000",
            "prom.vpn.example.",
            "192.0.2.7:1",
        ] {
            assert_eq!(head("GET", "/", &[("host", host)]), Ok(()), "{host}");
        }
    }

    #[test]
    fn other_hosts_are_refused_or_malformed() {
        assert_eq!(
            head("GET", "/", &[("host", "attacker.example")]),
            Err(Refusal::ForeignHost("attacker.example".into()))
        );
        // A rebinding name that merely starts with the address.
        assert!(matches!(
            head("GET", "/", &[("host", "10.13.13.1.nip.io")]),
            Err(Refusal::ForeignHost(_))
        ));
        for bad in [
            "",
            "fd13::1",
            "10.13.13.1:",
            "10.13.13.1:x",
            "u@10.13.13.1",
            "a b",
        ] {
            assert!(
                matches!(
                    head("GET", "/", &[("host", bad)]),
                    Err(Refusal::MalformedHost(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            head(
                "GET",
                "/",
                &[("host", "10.13.13.1"), ("host", "attacker.example")]
            ),
            Err(Refusal::MalformedHost(_))
        ));
    }

    #[test]
    fn host_is_required_on_http_1_1_and_absolute_form_is_checked() {
        assert_eq!(head("GET", "/", &[]), Err(Refusal::MissingHost));
        assert_eq!(head("GET", "http://10.13.13.1/", &[]), Ok(()));
        assert_eq!(
            head("GET", "http://attacker.example/", &[("host", "10.13.13.1")]),
            Err(Refusal::ForeignHost("attacker.example".into()))
        );
        assert_eq!(
            head("GET", "http://10.13.13.1/", &[("host", "attacker.example")]),
            Err(Refusal::ForeignHost("attacker.example".into()))
        );
        let (p, ()) = http::Request::get("/")
            .version(Version::HTTP_10)
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            check().check(&p.method, p.version, &p.uri, &p.headers),
            Ok(())
        );
    }

    #[test]
    fn unsafe_methods_need_the_gateways_own_origin_if_any() {
        let h = ("host", "10.13.13.1");
        for origin in [
            "http://10.13.13.1",
            "http://10.13.13.1:8080",
            "http://[fd13::1]",
            "https://prom.vpn.example",
            "http://prom.vpn.example:3000",
        ] {
            assert_eq!(
                head("POST", "/", &[h, ("origin", origin)]),
                Ok(()),
                "{origin}"
            );
        }
        for origin in [
            "https://attacker.example",
            "null",
            "https://10.13.13.1",
            "http://10.13.13.1:9090",
            "http://10.13.13.1/",
            "ftp://prom.vpn.example",
        ] {
            for m in ["POST", "PUT", "DELETE", "PATCH"] {
                assert_eq!(
                    head(m, "/", &[h, ("origin", origin)]),
                    Err(Refusal::ForeignOrigin(origin.into())),
                    "{m} {origin}"
                );
            }
            // Read-only methods pass: reading is what the Host check guards.
            for m in ["GET", "HEAD", "OPTIONS"] {
                assert_eq!(
                    head(m, "/", &[h, ("origin", origin)]),
                    Ok(()),
                    "{m} {origin}"
                );
            }
        }
    }

    #[test]
    fn unsafe_methods_marked_cross_site_or_same_site_are_refused() {
        let h = ("host", "10.13.13.1");
        for site in ["cross-site", "same-site", "Cross-Site"] {
            assert!(
                matches!(
                    head("POST", "/", &[h, ("sec-fetch-site", site)]),
                    Err(Refusal::CrossSite(_))
                ),
                "{site}"
            );
            assert_eq!(head("GET", "/", &[h, ("sec-fetch-site", site)]), Ok(()));
        }
        for site in ["same-origin", "none"] {
            assert_eq!(head("POST", "/", &[h, ("sec-fetch-site", site)]), Ok(()));
        }
        // Tools send neither header.
        assert_eq!(head("POST", "/api/v1/admin/tsdb/snapshot", &[h]), Ok(()));
    }

    #[test]
    fn allowed_host_entries_are_names_or_ip_literals_only() {
        for ok in [
            "prometheus",
            "Prom.example.com",
            "prom.example.",
            "10.0.0.1",
            "fd00::1",
            "[fd00::1]",
            "a_b.internal",
        ] {
            assert!(parse_allowed_host(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "http://prom.example",
            "prom.example/",
            "prom.example:80",
            "[fd00::1]:80",
            "prom example",
            " prom.example",
            "*.example.com",
            "-bad.example",
            "a..b",
            "user@prom.example",
        ] {
            assert!(parse_allowed_host(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_control_endpoint_answers_to_loopback_names_only() {
        let listen: std::net::SocketAddr = "127.0.0.1:9587".parse().unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:9587",
            "127.0.0.1",
            "127.0.0.1:9587",
            "[::1]",
            "[::1]:9587",
        ] {
            assert!(loopback_host_ok(ok, listen), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost:80",
            "127.0.0.1:1",
            "10.0.0.1",
            "localhost.evil.example",
            "",
        ] {
            assert!(!loopback_host_ok(bad, listen), "{bad}");
        }
        let other: std::net::SocketAddr = "127.0.0.2:9587".parse().unwrap();
        assert!(loopback_host_ok("127.0.0.2:9587", other));
    }

    /// Issue 28: each upstream is its own origin. A page of one upstream
    /// (port 9093) cannot POST to another (port 80) with the peer's
    /// rights, nor read its answers; its own page can. `Host` may still
    /// name any served port.
    #[test]
    fn an_origin_of_another_upstream_is_foreign() {
        let mut c = GatewayConfig::with_defaults(
            PrivateKey::generate(),
            "10.13.13.1/24".parse().unwrap(),
            "http://prometheus:9090".parse().unwrap(),
        );
        c.upstreams.push(crate::config::UpstreamConfig::on_port(
            "alertmanager",
            "http://alertmanager:9093".parse().unwrap(),
            9093,
            crate::config::UpstreamKind::Alertmanager,
        ));
        c.allowed_hosts = vec!["prom.vpn.example".into()];
        let all = HostCheck::new(&c);
        let prometheus = all.for_upstream(&[80]);
        let alertmanager = all.for_upstream(&[9093]);
        let post = |hc: &HostCheck, host: &str, origin: &str| {
            let (p, ()) = http::Request::builder()
                .method("POST")
                .uri("/x")
                .header("host", host)
                .header("origin", origin)
                .body(())
                .unwrap()
                .into_parts();
            hc.check(&p.method, p.version, &p.uri, &p.headers)
        };
        let am_page = "http://10.13.13.1:9093";
        assert_eq!(post(&alertmanager, "10.13.13.1:9093", am_page), Ok(()));
        assert_eq!(
            post(&prometheus, "10.13.13.1", am_page),
            Err(Refusal::ForeignOrigin(am_page.into()))
        );
        assert_eq!(post(&prometheus, "10.13.13.1", "http://10.13.13.1"), Ok(()));
        assert_eq!(
            post(&prometheus, "10.13.13.1", "http://10.13.13.1:80"),
            Ok(())
        );
        assert_eq!(
            post(&alertmanager, "10.13.13.1:9093", "http://10.13.13.1"),
            Err(Refusal::ForeignOrigin("http://10.13.13.1".into()))
        );
        // The gateway-wide check (no upstream) still takes every served port.
        assert_eq!(post(&all, "10.13.13.1", am_page), Ok(()));
        // Names in allowed_hosts are matched on any port, as before.
        assert_eq!(
            post(&prometheus, "10.13.13.1", "https://prom.vpn.example:9093"),
            Ok(())
        );
        let mut h = http::HeaderMap::new();
        h.insert("origin", am_page.parse().unwrap());
        assert!(prometheus.has_foreign_origin(&h));
        assert!(!alertmanager.has_foreign_origin(&h));
    }
}
