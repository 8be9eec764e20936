//! Validation of the upstreams: the `[[upstream]]` list, or the older
//! `[gateway] upstream` with `http_ports`, which is one Prometheus named
//! "prometheus" served on each of those ports.
//!
//! Every upstream is served on its own tunnel ports, and the proxy picks the
//! upstream of a connection by the port it was accepted on, so no two
//! upstreams may share a port. The two spellings may not be mixed: a file
//! with both would leave a reader unsure which one is served.

use super::defaults::{DEFAULT_HTTP_PORTS, DEFAULT_UPSTREAM};
use super::problems::Problems;
use super::raw::RawUpstream;
use std::collections::HashMap;
use std::ops::Range;
use toml::Spanned;

/// What an upstream is, which decides the access rules its requests meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamKind {
    /// Prometheus: its UI, read API and federation for viewers
    /// (`web::policy`), label scopes enforced.
    Prometheus,
    /// Alertmanager: its UI and read API v2 for viewers, silences for
    /// responders (`web::policy`).
    Alertmanager,
    /// Anything else spoken over HTTP. It has no built-in rules: a peer
    /// reaches it only through an `allow_paths` entry naming it.
    Http,
}

impl UpstreamKind {
    /// The kinds as written in the config, for messages.
    pub const NAMES: &'static str = "\"prometheus\", \"alertmanager\" or \"http\"";

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Prometheus => "prometheus",
            UpstreamKind::Alertmanager => "alertmanager",
            UpstreamKind::Http => "http",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "prometheus" => Some(UpstreamKind::Prometheus),
            "alertmanager" => Some(UpstreamKind::Alertmanager),
            "http" => Some(UpstreamKind::Http),
            _ => None,
        }
    }

    /// The upstream's own readiness endpoint, probed every 2 s; `/` for
    /// plain HTTP, where any answer counts as up.
    pub fn probe_path(self) -> &'static str {
        match self {
            UpstreamKind::Prometheus | UpstreamKind::Alertmanager => "/-/ready",
            UpstreamKind::Http => "/",
        }
    }

    /// What error pages call it: the peer knows the product, not our name.
    pub fn display_name(self) -> &'static str {
        match self {
            UpstreamKind::Prometheus => "Prometheus",
            UpstreamKind::Alertmanager => "Alertmanager",
            UpstreamKind::Http => "the upstream",
        }
    }
}

/// One validated upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Its name in metrics, logs, `status` and `allow_paths` entries.
    pub name: String,
    pub url: http::Uri,
    /// Tunnel TCP ports it is served on: one for `[[upstream]]`, each of
    /// `http_ports` for the older spelling.
    pub ports: Vec<u16>,
    pub kind: UpstreamKind,
}

impl UpstreamConfig {
    /// The one Prometheus of a config that names no `[[upstream]]`.
    pub fn single_prometheus(url: http::Uri, ports: Vec<u16>) -> Self {
        UpstreamConfig {
            name: "prometheus".into(),
            url,
            ports,
            kind: UpstreamKind::Prometheus,
        }
    }

    /// One upstream on one port, for tests.
    #[cfg(test)]
    pub fn on_port(name: &str, url: http::Uri, port: u16, kind: UpstreamKind) -> Self {
        UpstreamConfig {
            name: name.into(),
            url,
            ports: vec![port],
            kind,
        }
    }

    /// One upstream of each kind, all at `url`: "prometheus" on 80,
    /// "alertmanager" on 9093, "wiki" (plain HTTP) on 8080. For tests.
    #[cfg(test)]
    pub fn one_of_each_kind(url: &http::Uri) -> Vec<Self> {
        vec![
            Self::on_port("prometheus", url.clone(), 80, UpstreamKind::Prometheus),
            Self::on_port(
                "alertmanager",
                url.clone(),
                9093,
                UpstreamKind::Alertmanager,
            ),
            Self::on_port("wiki", url.clone(), 8080, UpstreamKind::Http),
        ]
    }
}

/// An upstream name: 1 to 32 of `a-z 0-9 _ -`, starting with a letter.
/// Names are metric label values and the prefix of `allow_paths` entries
/// (`"wiki:/"`), so no `:` or `/`, and lower case only so that `Wiki` and
/// `wiki` cannot be two upstreams.
pub(crate) fn valid_upstream_name(name: &str) -> bool {
    name.len() <= 32
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The older keys of `[gateway]`, with their spans, for the upstream set.
pub(super) struct GatewayUpstreamKeys {
    pub(super) upstream: Option<Spanned<String>>,
    pub(super) http_ports: Option<Spanned<Vec<u16>>>,
    /// The `[gateway]` table's span, for a missing key.
    pub(super) table: Range<usize>,
}

/// The upstream set: `[[upstream]]` when there is any, else the one
/// Prometheus of `[gateway] upstream` and `http_ports` (with their
/// defaults). Problems are reported and the bad upstreams left out.
pub(super) fn validate_upstreams(
    problems: &mut Problems<'_>,
    gateway: GatewayUpstreamKeys,
    list: Vec<Spanned<RawUpstream>>,
) -> Vec<UpstreamConfig> {
    if list.is_empty() {
        let url = validate_url(
            problems,
            "gateway.upstream",
            gateway.upstream,
            gateway.table,
        );
        let ports = validate_http_ports(problems, gateway.http_ports);
        return url
            .map(|u| vec![UpstreamConfig::single_prometheus(u, ports)])
            .unwrap_or_default();
    }
    for (key, span) in [
        (
            "gateway.upstream",
            gateway.upstream.as_ref().map(|u| u.span()),
        ),
        (
            "gateway.http_ports",
            gateway.http_ports.as_ref().map(|p| p.span()),
        ),
    ] {
        if let Some(span) = span {
            problems.push(
                span,
                key,
                "is the older spelling of one upstream; with [[upstream]] in the file, move it into an [[upstream]] table (name, url, port, kind) and remove gateway.upstream and gateway.http_ports",
            );
        }
    }
    let mut upstreams = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut ports: HashMap<u16, (String, usize)> = HashMap::new();
    for raw in list {
        let span = raw.span();
        let line = problems.line_of(span.start);
        let before = problems.count();
        let raw = raw.into_inner();
        let name = match raw.name {
            Some(n) if valid_upstream_name(n.get_ref()) => n.into_inner(),
            Some(n) => {
                problems.push(
                    n.span(),
                    "upstream.name",
                    format!(
                        "`{}` must be 1-32 characters of a-z, 0-9, '_' or '-', starting with a letter",
                        n.get_ref()
                    ),
                );
                String::new()
            }
            None => {
                problems.push(span.clone(), "upstream.name", "missing");
                String::new()
            }
        };
        let field = |f: &str| {
            if name.is_empty() {
                format!("upstream.{f}")
            } else {
                format!("upstream \"{name}\".{f}")
            }
        };
        if !name.is_empty()
            && let Some(first) = names.insert(name.clone(), line)
        {
            problems.push(
                span.clone(),
                &field("name"),
                format!("duplicate name, also at line {first}"),
            );
        }
        let url = match raw.url {
            Some(u) => validate_url(problems, &field("url"), Some(u), span.clone()),
            None => {
                problems.push(
                    span.clone(),
                    &field("url"),
                    "missing, e.g. \"http://alertmanager.monitoring.svc:9093\"",
                );
                None
            }
        };
        let port = match raw.port {
            Some(p) if *p.get_ref() == 0 => {
                problems.push(p.span(), &field("port"), "must not be 0");
                None
            }
            Some(p) => {
                let port = *p.get_ref();
                if let Some((other, other_line)) = ports.insert(port, (name.clone(), line)) {
                    problems.push(
                        p.span(),
                        &field("port"),
                        format!(
                            "tunnel port {port} is already upstream \"{other}\"'s (line {other_line}); each upstream needs a port of its own"
                        ),
                    );
                }
                Some(port)
            }
            None => {
                problems.push(
                    span.clone(),
                    &field("port"),
                    "missing: the tunnel TCP port it is served on, e.g. 9093",
                );
                None
            }
        };
        let kind = match raw.kind {
            Some(k) => match UpstreamKind::parse(k.get_ref()) {
                Some(kind) => Some(kind),
                None => {
                    problems.push(
                        k.span(),
                        &field("kind"),
                        format!(
                            "`{}` is not a kind of upstream; use {}",
                            k.get_ref(),
                            UpstreamKind::NAMES
                        ),
                    );
                    None
                }
            },
            None => {
                problems.push(
                    span.clone(),
                    &field("kind"),
                    format!("missing: {}", UpstreamKind::NAMES),
                );
                None
            }
        };
        if problems.count() > before {
            continue;
        }
        if let (Some(url), Some(port), Some(kind)) = (url, port, kind) {
            upstreams.push(UpstreamConfig {
                name,
                url,
                ports: vec![port],
                kind,
            });
        }
    }
    upstreams
}

/// An upstream URL: `http://` with a host (and an optional base path).
fn validate_url(
    problems: &mut Problems<'_>,
    field: &str,
    raw: Option<Spanned<String>>,
    table: Range<usize>,
) -> Option<http::Uri> {
    let (text, span) = match raw {
        Some(u) => (u.get_ref().clone(), u.span()),
        None => (DEFAULT_UPSTREAM.to_string(), table),
    };
    match text.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
        Ok(_) => {
            problems.push(
                span,
                field,
                format!("`{text}` must be an http:// URL with a host"),
            );
            None
        }
        Err(e) => {
            problems.push(span, field, format!("`{text}` is not a URL: {e}"));
            None
        }
    }
}

fn validate_http_ports(problems: &mut Problems<'_>, raw: Option<Spanned<Vec<u16>>>) -> Vec<u16> {
    let Some(p) = raw else {
        return DEFAULT_HTTP_PORTS.to_vec();
    };
    let ports = p.get_ref().clone();
    if ports.is_empty() || ports.contains(&0) {
        problems.push(
            p.span(),
            "gateway.http_ports",
            "list at least one port, none of them 0",
        );
    }
    ports
}
