//! Per-peer label scoping: which *data* a peer may see, not only which
//! endpoints.
//!
//! A scoped peer (`scope = { namespace = "team-a" }` in its config) may only
//! see, or compute a value from, series that carry every scope label with one
//! of its allowed values. The identity is the WireGuard key, so no header or
//! query parameter can claim another scope.
//!
//! The module is I/O-free, like [`crate::web::policy`]: the proxy hands it the
//! request (method, normalized path, query string, content type, body bytes)
//! and gets back a rewritten request or a refusal ([`request`]); rule and
//! alert lists are filtered as bytes in, bytes out ([`filter`]). PromQL is
//! rewritten and then independently verified ([`promql`]). Anything the
//! module does not understand is refused, never passed through unmodified.

pub mod alertmanager;
pub mod filter;
pub mod promql;
pub mod request;

use promgate_core::role::Role;
pub use promgate_core::scope::{
    RawScope, RawScopeValues, Scope, ScopeError, ScopeLabel, is_label_name,
};

/// Why admin peers cannot be scoped; shown by `check`.
pub const ADMIN_SCOPE_MESSAGE: &str = "an admin peer cannot be scoped: the admin endpoints \
     (delete_series, clean_tombstones, snapshot, reload, quit) act on all data regardless of \
     labels; use role = \"viewer\" with a scope, or drop the scope";

/// Validates a peer's `scope` table against its role. The messages are for
/// `check`, one per problem; the config module adds the file, line and field.
pub fn validate_peer_scope(raw: RawScope, role: Role) -> Result<Scope, Vec<String>> {
    if role == Role::Admin {
        return Err(vec![ADMIN_SCOPE_MESSAGE.to_string()]);
    }
    Scope::from_raw(raw).map_err(|errors| errors.iter().map(ToString::to_string).collect())
}
