//! Validation of the `[admin]` table: where the admin server and the
//! control endpoint listen, and when `/readyz` gives up on the upstream.
//!
//! The control endpoint must stay on loopback: it names peers and their
//! endpoints, which are not for the cluster network.

use super::AdminConfig;
use super::defaults::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_CONTROL_LISTEN, DEFAULT_UPSTREAM_UNREADY_AFTER,
};
use super::problems::{Problems, parse_duration};
use super::raw::RawAdmin;
use std::net::SocketAddr;
use toml::Spanned;

/// Validates `[admin]`; a missing table means every default.
pub(super) fn validate_admin(problems: &mut Problems<'_>, raw: Option<RawAdmin>) -> AdminConfig {
    let mut admin = AdminConfig {
        listen: Some(DEFAULT_ADMIN_LISTEN),
        control_listen: Some(DEFAULT_CONTROL_LISTEN),
        upstream_unready_after: Some(DEFAULT_UPSTREAM_UNREADY_AFTER),
    };
    let Some(raw) = raw else { return admin };
    if let Some(l) = raw.listen {
        admin.listen = listen_address(problems, "admin.listen", l);
    }
    if let Some(l) = raw.control_listen {
        let span = l.span();
        admin.control_listen = listen_address(problems, "admin.control_listen", l);
        if let Some(a) = admin.control_listen
            && !a.ip().is_loopback()
        {
            problems.push(span, "admin.control_listen", "must be a loopback address: peer names and endpoints are not for the cluster network");
        }
    }
    if let Some(d) = raw.upstream_unready_after {
        if d.get_ref() == "off" {
            admin.upstream_unready_after = None;
        } else {
            admin.upstream_unready_after = Some(parse_duration(
                problems,
                "admin.upstream_unready_after",
                Some(d),
                DEFAULT_UPSTREAM_UNREADY_AFTER,
            ));
        }
    }
    admin
}

/// `ip:port`, or `None` for "off" (or empty), which disables the listener.
fn listen_address(
    problems: &mut Problems<'_>,
    field: &str,
    v: Spanned<String>,
) -> Option<SocketAddr> {
    if v.get_ref().is_empty() || v.get_ref() == "off" {
        return None;
    }
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(
                v.span(),
                field,
                format!(
                    "`{}` is not ip:port, e.g. \"{DEFAULT_ADMIN_LISTEN}\"; \"off\" disables it",
                    v.get_ref()
                ),
            );
            None
        }
    }
}
