//! The role of a peer: a leaf type shared by the configuration, the access
//! policy and label scoping, so that none of them needs another.

use serde::Deserialize;

/// What a peer may do through the HTTP proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Viewer,
    /// May silence alerts in Alertmanager (create and expire silences) and
    /// is otherwise a viewer, of Prometheus too. On-call people must
    /// silence a page at 3 a.m.; that must not also let them delete series
    /// or reload Prometheus, which `admin` does.
    Responder,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Admin => "admin",
        }
    }
}
