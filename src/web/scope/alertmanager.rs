//! A scoped peer on Alertmanager's API v2: which alerts and silences it
//! sees, which silences it may create and expire (issue 28, part 3).
//!
//! The rules follow prom-label-proxy's Alertmanager enforcement
//! (`injectproxy/silences.go`, `alerts.go`), with three differences, all
//! towards refusing: answers are filtered here rather than narrowed by an
//! injected `filter` parameter (so nothing depends on how Alertmanager reads
//! one); a matcher pins the scope only when it is an equality (`isEqual`
//! true or absent, `isRegex` false), where prom-label-proxy ignores
//! `isEqual` and would take `namespace!="team-a"` as pinned; and a peer's
//! silence is rebuilt from the fields read here, never forwarded as sent.
//!
//! **The rule for a silence.** A silence *pins* the scope when, for every
//! scope label, one of its matchers is `name="value"` with an allowed value
//! (`isEqual` true or absent, `isRegex` false). Alertmanager ANDs a
//! silence's matchers, so such a silence can only mute alerts inside the
//! scope, whatever its other matchers say: a second, broader matcher on the
//! same label only narrows it. A scoped peer sees, creates, replaces and
//! expires only silences that pin its scope. A silence an admin wrote as
//! `namespace=~"team-a|team-b"` pins no one's scope and is invisible to both
//! teams.
//!
//! **The rule for an alert** is the one for series: every scope label is
//! among the alert's `labels` with an allowed value.
//!
//! Like the rest of [`crate::web::scope`] the module is I/O-free: bytes in,
//! bytes or a [`Refusal`] out. Whatever it cannot read is refused: a peer's
//! body gets 400, an upstream answer that is not the documented shape 502,
//! never the unfiltered bytes.
//!
//! ## How the proxy wires it
//!
//! For an upstream of kind `alertmanager` and a scoped peer, after the role
//! policy allowed the request, [`scoped_alertmanager_request`] classifies
//! the normalized path (as [`super::request::classify`] does for
//! Prometheus) into a [`Route`]:
//!
//! - [`Route::Alerts`], [`Route::AlertGroups`], [`Route::Silences`],
//!   [`Route::Receivers`]: forward the GET as `forward_filtered` in
//!   `proxy/scoped.rs` does (query string unchanged: `filter`, `receiver`,
//!   `active` and friends only narrow what Alertmanager answers, and the
//!   answer is filtered whatever they say; `Accept-Encoding: identity`; the
//!   body collected within `MAX_LIST_RESPONSE` under a `FILTERS` permit),
//!   then pass a 2xx answer through [`filter_alerts`],
//!   [`filter_alert_groups`], [`filter_silences`] or [`receiver_names`] off
//!   the driver's thread. Non-2xx answers pass as they are.
//! - [`Route::Silence`]`(id)`: forward `GET` [`SilenceId::path`]; on a 2xx
//!   answer, [`check_existing_silence`] decides: `Ok` passes the answer on,
//!   `Err` is the page.
//! - [`Route::NewSilence`]: read the JSON body (bounded as a form body is,
//!   `MAX_FORM_BODY` within `FORM_BODY_TIMEOUT`; a `Content-Encoding` other
//!   than identity refused with 415, as `request::rewrite` does), then
//!   [`check_new_silence`]. [`NewSilence::Create`]
//!   is POSTed with its rebuilt body and `Content-Type: application/json`,
//!   no query string. [`NewSilence::Replace`] first needs the silence it
//!   replaces: GET [`SilenceId::path`] upstream, [`check_existing_silence`]
//!   on the answer (a non-2xx answer refuses the request: nothing to check),
//!   and only then POST the rebuilt body.
//! - [`Route::ExpireSilence`]`(id)`: GET [`SilenceId::path`],
//!   [`check_existing_silence`] on the answer, and only then send `DELETE`
//!   to [`SilenceId::path`], built from the checked ID and never from the
//!   peer's raw path, so the silence checked is the silence expired.
//! - [`Route::Open`]: forward unchanged, as `Endpoint::Open` is.
//! - [`Route::Refuse`]: the page, with [`Refusal::status`] and the
//!   refusal's text, naming the peer and its scope as `handle_scoped` does.
//!
//! Between the check of an existing silence and the DELETE or POST that
//! follows, an admin could edit that silence; the peer's request then acts
//! on the edited one. prom-label-proxy has the same window. Alertmanager
//! offers no conditional update, so closing it would take a lock on every
//! silence write through the gateway; the window is a race with an admin,
//! not something a peer can widen on its own.
//!
//! What a scoped peer may not do, and why: `GET /api/v2/status` answers
//! with Alertmanager's whole configuration (every receiver's webhook URLs
//! and credentials, every team's routes) and the cluster's peer addresses:
//! refused. `/api/v2/receivers` is only the receivers' names and is
//! answered rebuilt with nothing but those names, so that the UI's receiver
//! filter works; a team sees the names of other teams' receivers (an admin
//! who minds can add it to the peer's `deny_paths`). `POST /api/v2/alerts`
//! is how Prometheus sends alerts, not a peer: refused. The API v1 (gone
//! since Alertmanager 0.27), `/metrics`, `/debug`, `/-/reload` and anything
//! not listed here are refused.
//!
//! Left as Alertmanager answers them: an alert's `status.silencedBy` and
//! `status.inhibitedBy` may name silences or alerts outside the scope, by
//! opaque ID or fingerprint only; those IDs open nothing
//! ([`Route::Silence`] checks the silence itself).

use super::Scope;
use http::{Method, StatusCode};
use serde_json::{Map, Value};

/// A silence ID as Alertmanager makes them, a lower-case UUID
/// (`8-4-4-4-12` hex digits). The proxy puts it into an upstream path, so
/// nothing else, not even a `/`, ever gets there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceId(String);

impl SilenceId {
    /// The ID, when `text` is a lower-case UUID.
    pub fn parse(text: &str) -> Option<SilenceId> {
        let b = text.as_bytes();
        let ok = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
            });
        ok.then(|| SilenceId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `/api/v2/silence/<id>`: where the proxy fetches the silence (GET)
    /// and expires it (DELETE), below the upstream's base path.
    pub fn path(&self) -> String {
        format!("{SILENCE_PREFIX}{}", self.0)
    }
}

/// What the proxy does with a scoped peer's request to Alertmanager; see
/// the module doc for each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/v2/alerts`: the answer goes through [`filter_alerts`].
    Alerts,
    /// `GET /api/v2/alerts/groups`: through [`filter_alert_groups`].
    AlertGroups,
    /// `GET /api/v2/silences`: through [`filter_silences`].
    Silences,
    /// `GET /api/v2/silence/{id}`: the answer through [`check_existing_silence`].
    Silence(SilenceId),
    /// `GET /api/v2/receivers`: through [`receiver_names`].
    Receivers,
    /// `POST /api/v2/silences`: the body through [`check_new_silence`].
    NewSilence,
    /// `DELETE /api/v2/silence/{id}`: fetch it, [`check_existing_silence`],
    /// then DELETE [`SilenceId::path`].
    ExpireSilence(SilenceId),
    /// The UI's page and assets, `/-/healthy`, `/-/ready`: forwarded as is.
    Open,
    /// Refused with [`Refusal::status`].
    Refuse(Refusal),
}

/// Why a scoped peer's request to Alertmanager is refused, or why an
/// upstream answer could not be filtered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{path} {why}")]
    Closed { path: String, why: &'static str },
    #[error("{method} is not allowed on {path} for a peer with a scope")]
    Method { method: Method, path: String },
    #[error("{0:?} is not a silence ID (a lower-case UUID, as Alertmanager makes them)")]
    BadSilenceId(String),
    #[error("the silence is not JSON: {0}")]
    NotJson(String),
    #[error("the silence cannot be read: {0}")]
    Shape(String),
    #[error("the silence does not pin the peer's scope: {0}")]
    NotPinned(String),
    #[error(
        "silence {0} does not pin the peer's scope ({1}), so a peer with a scope may not see, \
         replace or expire it"
    )]
    OtherSilence(String, String),
    #[error("Alertmanager's answer ({what}) cannot be read: {why}")]
    Unreadable { what: &'static str, why: String },
}

impl Refusal {
    /// The HTTP status the peer gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Closed { .. } | Refusal::NotPinned(_) | Refusal::OtherSilence(..) => {
                StatusCode::FORBIDDEN
            }
            Refusal::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::BadSilenceId(_) | Refusal::NotJson(_) | Refusal::Shape(_) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::Unreadable { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

const SILENCE_PREFIX: &str = "/api/v2/silence/";

/// The UI (Alertmanager's Elm UI: `/`, `script.js`, `favicon.ico`,
/// `/lib/...`) and the health endpoints: nothing in them is data; the data
/// the UI shows comes from the API above, enforced.
const OPEN: &[&str] = &["/", "/script.js", "/favicon.ico", "/-/healthy", "/-/ready"];
const OPEN_UNDER: &str = "/lib/";

const STATUS_WHY: &str = "holds Alertmanager's whole configuration (every receiver's URLs and \
     credentials, every team's routes) and its cluster peers, so it is closed to a peer with a \
     scope";
const POST_ALERTS_WHY: &str =
    "is how Prometheus sends alerts; a peer with a scope may only read them";
const V1_WHY: &str = "is Alertmanager's API v1, which has no scope enforcement here (it is gone \
     since Alertmanager 0.27); use /api/v2";
const OTHER_WHY: &str = "is not among the Alertmanager endpoints open to a peer with a scope \
     (alerts, alert groups, silences, receivers, the UI)";

/// Classifies a scoped peer's request to Alertmanager. `path` must be
/// normalized by [`crate::web::policy::normalize`] (so it is lower-case).
/// Default-deny: an endpoint not listed is refused.
pub fn scoped_alertmanager_request(method: &Method, path: &str) -> Route {
    let get = method == Method::GET;
    let read = get || method == Method::HEAD;
    let refuse_method = || {
        Route::Refuse(Refusal::Method {
            method: method.clone(),
            path: path.to_string(),
        })
    };
    let closed = |why| {
        Route::Refuse(Refusal::Closed {
            path: path.to_string(),
            why,
        })
    };
    // The lists are filtered, so a HEAD (no body to filter) is refused
    // with them, as for Prometheus's rules and alerts.
    let list = |route: Route| if get { route } else { refuse_method() };
    match path {
        "/api/v2/alerts" if method == Method::POST => closed(POST_ALERTS_WHY),
        "/api/v2/alerts" => list(Route::Alerts),
        "/api/v2/alerts/groups" => list(Route::AlertGroups),
        "/api/v2/silences" if method == Method::POST => Route::NewSilence,
        "/api/v2/silences" => list(Route::Silences),
        "/api/v2/receivers" => list(Route::Receivers),
        "/api/v2/status" => closed(STATUS_WHY),
        p if OPEN.contains(&p) || p.starts_with(OPEN_UNDER) => {
            if read {
                Route::Open
            } else {
                refuse_method()
            }
        }
        p if p.starts_with(SILENCE_PREFIX) => {
            let raw = &p[SILENCE_PREFIX.len()..];
            let Some(id) = SilenceId::parse(raw) else {
                return Route::Refuse(Refusal::BadSilenceId(raw.to_string()));
            };
            if get {
                Route::Silence(id)
            } else if method == Method::DELETE {
                Route::ExpireSilence(id)
            } else {
                refuse_method()
            }
        }
        p if p == "/api/v1" || p.starts_with("/api/v1/") => closed(V1_WHY),
        _ => closed(OTHER_WHY),
    }
}

/// A peer's new silence, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewSilence {
    /// A new silence: POST this body (JSON, rebuilt from what was read).
    Create(Vec<u8>),
    /// A body with an `id` replaces that silence. Alertmanager expires or
    /// updates the old one, so the old one must pin the scope too: the
    /// proxy fetches it ([`SilenceId::path`]), [`check_existing_silence`]
    /// decides, and only then is `body` POSTed.
    Replace { id: SilenceId, body: Vec<u8> },
}

/// The fields of a `postableSilence` besides `id` and `matchers`: all
/// required, all strings (dates are checked by Alertmanager).
const SILENCE_STRINGS: &[&str] = &["startsAt", "endsAt", "createdBy", "comment"];

/// Checks a scoped peer's `POST /api/v2/silences` body: a
/// `postableSilence` whose matchers pin the scope, with no field this
/// module does not know (Go's JSON decoder would also read `"Matchers"` or
/// `"NAME"` as the fields it checked, case-insensitively, so such keys are
/// refused rather than guessed at). The body sent on is rebuilt from the
/// values read, so Alertmanager sees exactly what was checked.
pub fn check_new_silence(scope: &Scope, body: &[u8]) -> Result<NewSilence, Refusal> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| Refusal::NotJson(e.to_string()))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| Refusal::Shape("it is not a JSON object".into()))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !(*k == "id" || *k == "matchers" || SILENCE_STRINGS.contains(&k.as_str())))
    {
        return Err(Refusal::Shape(format!("unknown field {k:?}")));
    }
    let mut out = Map::new();
    let id = match obj.get("id") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            Some(SilenceId::parse(s).ok_or_else(|| Refusal::BadSilenceId(s.clone()))?)
        }
        Some(_) => return Err(Refusal::Shape("`id` must be a string".into())),
    };
    if let Some(id) = &id {
        out.insert("id".into(), Value::String(id.as_str().to_string()));
    }
    let matchers = obj
        .get("matchers")
        .ok_or_else(|| Refusal::Shape("`matchers` is missing".into()))?
        .as_array()
        .ok_or_else(|| Refusal::Shape("`matchers` must be an array".into()))?;
    if matchers.is_empty() {
        return Err(Refusal::Shape("`matchers` is empty".into()));
    }
    let read = matchers
        .iter()
        .enumerate()
        .map(|(i, m)| read_posted_matcher(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    pinned(scope, &read).map_err(Refusal::NotPinned)?;
    out.insert(
        "matchers".into(),
        Value::Array(read.iter().map(Matcher::to_json).collect()),
    );
    for field in SILENCE_STRINGS {
        match obj.get(*field) {
            Some(Value::String(s)) => {
                out.insert((*field).into(), Value::String(s.clone()));
            }
            Some(_) => return Err(Refusal::Shape(format!("`{field}` must be a string"))),
            None => return Err(Refusal::Shape(format!("`{field}` is missing"))),
        }
    }
    let body =
        serde_json::to_vec(&Value::Object(out)).map_err(|e| Refusal::NotJson(e.to_string()))?;
    Ok(match id {
        Some(id) => NewSilence::Replace { id, body },
        None => NewSilence::Create(body),
    })
}

/// Decides on a silence fetched from Alertmanager (`gettableSilence`, the
/// answer to GET [`SilenceId::path`]): `Ok` when it pins the scope, so the
/// peer may see it, replace it or expire it. `id` is the silence asked
/// for; an answer about another one is unreadable.
pub fn check_existing_silence(scope: &Scope, id: &SilenceId, body: &[u8]) -> Result<(), Refusal> {
    let unreadable = |why: String| Refusal::Unreadable {
        what: "a silence",
        why,
    };
    let doc: Value = serde_json::from_slice(body).map_err(|e| unreadable(e.to_string()))?;
    if doc.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(unreadable(format!("it is not silence {}", id.as_str())));
    }
    match silence_pins(scope, &doc) {
        Ok(()) => Ok(()),
        Err(why) => Err(Refusal::OtherSilence(id.as_str().to_string(), why)),
    }
}

/// True when a `gettableSilence` (one element of `GET /api/v2/silences`,
/// or the answer for one ID) pins the scope. Anything unreadable in it is
/// outside the scope.
pub fn silence_visible(scope: &Scope, silence: &Value) -> bool {
    silence_pins(scope, silence).is_ok()
}

/// Filters `GET /api/v2/alerts` (an array of `gettableAlert`) to the
/// alerts whose labels satisfy the scope.
pub fn filter_alerts(scope: &Scope, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    const WHAT: &str = "alerts";
    let mut doc = parse_answer(WHAT, body)?;
    let alerts = top_array(WHAT, &mut doc)?;
    retain_admitted_alerts(scope, alerts);
    to_answer(WHAT, &doc)
}

/// Filters `GET /api/v2/alerts/groups` (an array of `alertGroup`, each
/// with `labels`, `receiver` and `alerts`): each group's alerts as
/// [`filter_alerts`] does; a group left without alerts disappears. A group
/// without an `alerts` array makes the answer unreadable.
pub fn filter_alert_groups(scope: &Scope, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    const WHAT: &str = "alert groups";
    let mut doc = parse_answer(WHAT, body)?;
    let groups = top_array(WHAT, &mut doc)?;
    for group in groups.iter_mut() {
        let alerts = group
            .get_mut("alerts")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| Refusal::Unreadable {
                what: WHAT,
                why: "a group has no `alerts` array".into(),
            })?;
        retain_admitted_alerts(scope, alerts);
    }
    groups.retain(|g| {
        g.get("alerts")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    });
    to_answer(WHAT, &doc)
}

/// Filters `GET /api/v2/silences` (an array of `gettableSilence`) to the
/// silences that pin the scope.
pub fn filter_silences(scope: &Scope, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    const WHAT: &str = "silences";
    let mut doc = parse_answer(WHAT, body)?;
    let silences = top_array(WHAT, &mut doc)?;
    silences.retain(|s| silence_visible(scope, s));
    to_answer(WHAT, &doc)
}

/// Rebuilds `GET /api/v2/receivers` (an array of `{"name": ...}`) with the
/// names only, so that whatever a later Alertmanager adds to a receiver
/// there (its configuration, say) does not reach a scoped peer.
pub fn receiver_names(body: &[u8]) -> Result<Vec<u8>, Refusal> {
    const WHAT: &str = "receivers";
    let mut doc = parse_answer(WHAT, body)?;
    let receivers = top_array(WHAT, &mut doc)?;
    let names = receivers
        .iter()
        .map(|r| match r.get("name") {
            Some(Value::String(n)) => {
                let mut m = Map::new();
                m.insert("name".into(), Value::String(n.clone()));
                Ok(Value::Object(m))
            }
            _ => Err(Refusal::Unreadable {
                what: WHAT,
                why: "a receiver has no string `name`".into(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    to_answer(WHAT, &Value::Array(names))
}

fn parse_answer(what: &'static str, body: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::Unreadable {
        what,
        why: format!("not JSON: {e}"),
    })
}

fn top_array<'a>(what: &'static str, doc: &'a mut Value) -> Result<&'a mut Vec<Value>, Refusal> {
    doc.as_array_mut().ok_or(Refusal::Unreadable {
        what,
        why: "not a JSON array".into(),
    })
}

fn to_answer(what: &'static str, doc: &Value) -> Result<Vec<u8>, Refusal> {
    serde_json::to_vec(doc).map_err(|e| Refusal::Unreadable {
        what,
        why: e.to_string(),
    })
}

/// Keeps the alerts whose `labels` object satisfies the scope; an alert
/// without one, or with a scope label that is not a string, is outside.
fn retain_admitted_alerts(scope: &Scope, alerts: &mut Vec<Value>) {
    alerts.retain(|a| {
        a.get("labels")
            .and_then(Value::as_object)
            .is_some_and(|labels| scope.admits(|name| labels.get(name).and_then(Value::as_str)))
    });
}

/// One silence matcher as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Matcher {
    name: String,
    value: String,
    is_regex: bool,
    /// `None` when absent, which Alertmanager reads as true.
    is_equal: Option<bool>,
}

impl Matcher {
    fn pins(&self, name: &str, allowed: &[String]) -> bool {
        self.name == name
            && !self.is_regex
            && self.is_equal != Some(false)
            && allowed.contains(&self.value)
    }

    /// The matcher as the selector a user would write, for messages.
    fn describe(&self) -> String {
        let op = match (self.is_equal != Some(false), self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        format!(
            "{}{op}{}",
            self.name,
            promgate_core::scope::quote(&self.value)
        )
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), Value::String(self.name.clone()));
        m.insert("value".into(), Value::String(self.value.clone()));
        m.insert("isRegex".into(), Value::Bool(self.is_regex));
        if let Some(e) = self.is_equal {
            m.insert("isEqual".into(), Value::Bool(e));
        }
        Value::Object(m)
    }
}

/// Reads matcher `i` of a peer's silence: exactly the keys `name`,
/// `value`, `isRegex` and optionally `isEqual`, with their types.
fn read_posted_matcher(i: usize, m: &Value) -> Result<Matcher, Refusal> {
    let obj = m
        .as_object()
        .ok_or_else(|| Refusal::Shape(format!("`matchers[{i}]` is not an object")))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "value" | "isRegex" | "isEqual"))
    {
        return Err(Refusal::Shape(format!(
            "`matchers[{i}]` has an unknown field {k:?}"
        )));
    }
    read_matcher(obj).map_err(|why| Refusal::Shape(format!("`matchers[{i}]`: {why}")))
}

/// Reads a matcher's fields; other keys are ignored (in an answer, a later
/// Alertmanager's additions; a peer's own matchers are checked for unknown
/// keys first).
fn read_matcher(obj: &Map<String, Value>) -> Result<Matcher, String> {
    let string = |k: &str| match obj.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{k}` must be a string")),
        None => Err(format!("`{k}` is missing")),
    };
    let is_regex = match obj.get("isRegex") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`isRegex` must be true or false".into()),
        None => return Err("`isRegex` is missing".into()),
    };
    let is_equal = match obj.get("isEqual") {
        Some(Value::Bool(b)) => Some(*b),
        None => None,
        Some(_) => return Err("`isEqual` must be true or false".into()),
    };
    Ok(Matcher {
        name: string("name")?,
        value: string("value")?,
        is_regex,
        is_equal,
    })
}

/// `Ok` when the matchers pin every scope label; else the first label that
/// is not pinned and what the matchers say about it, in words.
fn pinned(scope: &Scope, matchers: &[Matcher]) -> Result<(), String> {
    for label in scope.labels() {
        if matchers.iter().any(|m| m.pins(&label.name, &label.values)) {
            continue;
        }
        let wanted = label
            .values
            .iter()
            .map(|v| format!("{}={}", label.name, promgate_core::scope::quote(v)))
            .collect::<Vec<_>>()
            .join(" or ");
        let on_label: Vec<String> = matchers
            .iter()
            .filter(|m| m.name == label.name)
            .map(Matcher::describe)
            .collect();
        let found = if on_label.is_empty() {
            format!("it has no matcher on `{}`", label.name)
        } else {
            format!("it has {}", on_label.join(", "))
        };
        return Err(format!(
            "label `{}` needs the equality matcher {wanted} (isRegex false, isEqual true); {found}",
            label.name
        ));
    }
    Ok(())
}

/// Whether a silence from Alertmanager pins the scope; the reason if not.
/// A matcher that cannot be read makes the silence unreadable, and so
/// outside the scope.
fn silence_pins(scope: &Scope, silence: &Value) -> Result<(), String> {
    let matchers = silence
        .get("matchers")
        .and_then(Value::as_array)
        .ok_or("it has no `matchers` array")?;
    let read = matchers
        .iter()
        .map(|m| {
            m.as_object()
                .ok_or_else(|| "a matcher is not an object".to_string())
                .and_then(read_matcher)
        })
        .collect::<Result<Vec<_>, _>>()?;
    pinned(scope, &read)
}

#[cfg(test)]
mod tests;
