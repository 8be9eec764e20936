//! The public `endpoint` (`host:port`) that goes into client configs.
//!
//! It is checked where it is configured and again wherever a client config
//! is rendered, because wg-quick runs some config lines as root: the text
//! must hold a host and a port and nothing else.

use super::defaults::DEFAULT_LISTEN_PORT;

/// Why an `endpoint` cannot go into a client config. Each variant carries
/// the endpoint as given, with control characters escaped for display.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("`{shown}` needs a port, e.g. \"vpn.example.com:{port}\"", port = DEFAULT_LISTEN_PORT)]
    NoPort { shown: String },
    #[error("`{shown}`: `{port}` is not a port (1-65535)")]
    BadPort { shown: String, port: String },
    #[error("`{shown}`: the host must be a DNS name, an IPv4 address or [an IPv6 address]")]
    BadHost { shown: String },
}

/// Checks an `endpoint` (`host:port`, `[v6]:port`) before it is written
/// into client configs: a DNS name or IP literal and a port, nothing else.
/// A line break here would let a config line such as `PostUp` reach the
/// client, where wg-quick runs it as root.
pub(crate) fn check_endpoint(text: &str) -> Result<(), EndpointError> {
    let shown = text.escape_debug().to_string();
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(EndpointError::NoPort { shown });
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(EndpointError::BadPort {
            shown,
            port: port.escape_debug().to_string(),
        });
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err(EndpointError::BadHost { shown });
    }
    Ok(())
}
