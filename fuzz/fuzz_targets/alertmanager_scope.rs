//! Arbitrary bytes through the Alertmanager scope enforcement
//! (`scope::alertmanager`): as Alertmanager's answers (alerts, alert
//! groups, silences, one silence, receivers), as a peer's new silence, and
//! as a request path.
//!
//! Invariants: no panic; every `Ok` body parses as JSON; every alert left
//! in a filtered list (or group) carries every scope label with an allowed
//! value, and no group is left empty; every silence left in a list, every
//! silence accepted as visible and every new silence accepted pins the
//! scope, judged by this target's own reading of the matchers (a matcher
//! with the label's name, a string value among the allowed ones, `isRegex`
//! exactly false and `isEqual` absent or true); an accepted new silence
//! has only the fields of a `postableSilence`, and a replace names a
//! lower-case UUID, the same one its body carries; a filter's output
//! filtered again is unchanged; and a silence route's ID makes a path with
//! nothing after the UUID.
//!
//! Input: the first byte picks the scope (low two bits) and the function
//! (the rest); the other bytes are the body or, for the route, a method
//! byte and a path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promgate::web::scope::Scope;
use promgate::web::scope::alertmanager::{
    self as am, NewSilence, Route, SilenceId, check_existing_silence, check_new_silence,
};
use serde_json::Value;

const ID: &str = "0f6c3d8e-2b1a-4c5d-9e8f-7a6b5c4d3e2f";

fn scope(kind: u8) -> Scope {
    let s = match kind % 4 {
        0 => Scope::new([("namespace", &["team-a"][..])]),
        1 => Scope::new([("namespace", &["team-a", "team-b", "x.y"][..])]),
        2 => Scope::new([
            ("namespace", &["team-a"][..]),
            ("cluster", &["eu", "us"][..]),
        ]),
        _ => Scope::new([("tenant", &["a\"b\\c\n|.*", "é"][..])]),
    };
    s.expect("the fuzz scopes are valid")
}

/// The alert carries every scope label with an allowed value.
fn admitted(scope: &Scope, alert: &Value) -> bool {
    let Some(labels) = alert.get("labels").and_then(Value::as_object) else {
        return false;
    };
    scope
        .labels()
        .iter()
        .all(|l| matches!(labels.get(&l.name), Some(Value::String(v)) if l.values.contains(v)))
}

/// For every scope label, some matcher is an equality on an allowed value.
fn pins(scope: &Scope, silence: &Value) -> bool {
    let Some(matchers) = silence.get("matchers").and_then(Value::as_array) else {
        return false;
    };
    scope.labels().iter().all(|l| {
        matchers.iter().any(|m| {
            m.get("name") == Some(&Value::String(l.name.clone()))
                && matches!(m.get("value"), Some(Value::String(v)) if l.values.contains(v))
                && m.get("isRegex") == Some(&Value::Bool(false))
                && matches!(m.get("isEqual"), None | Some(Value::Bool(true)))
        })
    })
}

fn array(out: &[u8]) -> Vec<Value> {
    match serde_json::from_slice(out) {
        Ok(Value::Array(a)) => a,
        other => panic!("a filter's output is not a JSON array: {other:?}"),
    }
}

type Filter = fn(&Scope, &[u8]) -> Result<Vec<u8>, am::Refusal>;

/// The filter's output, checked to be a fixed point of the filter.
fn filtered(f: Filter, scope: &Scope, body: &[u8]) -> Option<Vec<Value>> {
    let out = f(scope, body).ok()?;
    let again = f(scope, &out).expect("a filter's output filters again");
    assert_eq!(again, out, "filtering twice changed the answer");
    Some(array(&out))
}

fn route(scope_kind: u8, data: &[u8]) {
    let _ = scope_kind;
    let Some((&m, path)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let method = match m % 6 {
        0 => http::Method::GET,
        1 => http::Method::POST,
        2 => http::Method::DELETE,
        3 => http::Method::HEAD,
        4 => http::Method::PUT,
        _ => http::Method::OPTIONS,
    };
    let Ok(normalized) = promgate::web::policy::normalize(path) else {
        return;
    };
    match am::scoped_alertmanager_request(&method, &normalized) {
        Route::Silence(id) | Route::ExpireSilence(id) => {
            let p = id.path();
            let tail = p
                .strip_prefix("/api/v2/silence/")
                .expect("the silence path");
            assert_eq!(tail.len(), 36, "{p}");
            assert!(
                tail.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
                "{p}"
            );
            assert_eq!(SilenceId::parse(tail).as_ref(), Some(&id));
        }
        Route::Open => assert!(
            method == http::Method::GET || method == http::Method::HEAD,
            "{method} {normalized} is open"
        ),
        Route::Alerts | Route::AlertGroups | Route::Silences | Route::Receivers => {
            assert_eq!(method, http::Method::GET, "{normalized}")
        }
        Route::NewSilence => assert_eq!(method, http::Method::POST),
        Route::Refuse(r) => {
            let _ = (r.status(), r.to_string());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let scope = scope(kind);
    match (kind >> 2) % 7 {
        0 => {
            if let Some(alerts) = filtered(am::filter_alerts, &scope, body) {
                assert!(alerts.iter().all(|a| admitted(&scope, a)), "{alerts:?}");
            }
        }
        1 => {
            if let Some(groups) = filtered(am::filter_alert_groups, &scope, body) {
                for g in &groups {
                    let alerts = g["alerts"].as_array().expect("a group keeps its alerts");
                    assert!(!alerts.is_empty(), "an empty group is kept");
                    assert!(alerts.iter().all(|a| admitted(&scope, a)), "{g:?}");
                }
            }
        }
        2 => {
            if let Some(silences) = filtered(am::filter_silences, &scope, body) {
                assert!(silences.iter().all(|s| pins(&scope, s)), "{silences:?}");
            }
        }
        3 => {
            let id = SilenceId::parse(ID).unwrap();
            if check_existing_silence(&scope, &id, body).is_ok() {
                let v: Value = serde_json::from_slice(body).expect("accepted, so JSON");
                assert_eq!(v["id"], ID);
                assert!(pins(&scope, &v), "{v:?}");
            }
        }
        4 => {
            if let Ok(out) = am::receiver_names(body) {
                for r in array(&out) {
                    let o = r.as_object().expect("a receiver is an object");
                    assert!(
                        o.len() == 1 && o.get("name").is_some_and(Value::is_string),
                        "{o:?}"
                    );
                }
            }
        }
        5 => {
            let (out, id) = match check_new_silence(&scope, body) {
                Ok(NewSilence::Create(out)) => (out, None),
                Ok(NewSilence::Replace { id, body }) => (body, Some(id)),
                Err(_) => return,
            };
            let v: Value = serde_json::from_slice(&out).expect("the rebuilt silence is JSON");
            let o = v.as_object().expect("the rebuilt silence is an object");
            assert!(
                o.keys().all(|k| matches!(
                    k.as_str(),
                    "id" | "matchers" | "startsAt" | "endsAt" | "createdBy" | "comment"
                )),
                "{o:?}"
            );
            assert!(pins(&scope, &v), "{v:?}");
            match id {
                Some(id) => {
                    assert_eq!(SilenceId::parse(id.as_str()).as_ref(), Some(&id));
                    assert_eq!(o.get("id").and_then(Value::as_str), Some(id.as_str()));
                }
                None => assert!(o.get("id").is_none()),
            }
        }
        _ => route(kind, body),
    }
});
