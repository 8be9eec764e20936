//! Filters `/api/v1/rules` and `/api/v1/alerts` responses to the entries
//! inside a peer's scope, as prom-label-proxy does.
//!
//! A rule is kept when its own `labels` (the `labels:` of the rule file)
//! satisfy the scope; its active `alerts` are filtered by their labels too,
//! and a group left without rules disappears. An alert is kept when its
//! labels satisfy the scope. Everything else in the document is kept as it
//! was. A body that is not the JSON shape Prometheus documents is an error:
//! the proxy then answers 502 instead of passing it through.

use super::Scope;
use serde_json::{Map, Value};

/// Which list the response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Rules,
    Alerts,
}

/// The upstream answer was not what Prometheus documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("the upstream's {0:?} response is not JSON: {1}")]
    NotJson(ListKind, String),
    #[error("the upstream's {0:?} response has an unexpected shape at {1}")]
    Shape(ListKind, &'static str),
}

/// Returns the response body with only what `scope` admits.
pub fn filter_response(scope: &Scope, kind: ListKind, body: &[u8]) -> Result<Vec<u8>, FilterError> {
    let mut doc: Value =
        serde_json::from_slice(body).map_err(|e| FilterError::NotJson(kind, e.to_string()))?;
    // Error answers ("status": "error") carry no data; pass them on as they are.
    match doc.get("status").and_then(Value::as_str) {
        Some("error") => return Ok(body.to_vec()),
        Some("success") => {}
        _ => return Err(FilterError::Shape(kind, "status")),
    }
    let data = doc
        .get_mut("data")
        .and_then(Value::as_object_mut)
        .ok_or(FilterError::Shape(kind, "data"))?;
    match kind {
        ListKind::Alerts => {
            let alerts = data
                .get_mut("alerts")
                .and_then(Value::as_array_mut)
                .ok_or(FilterError::Shape(kind, "data.alerts"))?;
            retain_admitted(scope, alerts);
        }
        ListKind::Rules => {
            let groups = data
                .get_mut("groups")
                .and_then(Value::as_array_mut)
                .ok_or(FilterError::Shape(kind, "data.groups"))?;
            for group in groups.iter_mut() {
                let rules = group
                    .get_mut("rules")
                    .and_then(Value::as_array_mut)
                    .ok_or(FilterError::Shape(kind, "data.groups[].rules"))?;
                retain_admitted(scope, rules);
                for rule in rules.iter_mut() {
                    if let Some(alerts) = rule.get_mut("alerts").and_then(Value::as_array_mut) {
                        retain_admitted(scope, alerts);
                    }
                }
            }
            groups.retain(|g| {
                g.get("rules")
                    .and_then(Value::as_array)
                    .is_some_and(|r| !r.is_empty())
            });
        }
    }
    serde_json::to_vec(&doc).map_err(|e| FilterError::NotJson(kind, e.to_string()))
}

/// Keeps the entries whose `labels` object satisfies the scope; an entry
/// without labels is outside every scope.
fn retain_admitted(scope: &Scope, entries: &mut Vec<Value>) {
    entries.retain(|e| {
        e.get("labels")
            .and_then(Value::as_object)
            .is_some_and(|labels: &Map<String, Value>| {
                scope.admits(|name| labels.get(name).and_then(Value::as_str))
            })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team_a() -> Scope {
        Scope::new([("namespace", &["team-a"][..])]).unwrap()
    }

    #[test]
    fn alerts_are_filtered_by_labels() {
        let body = br#"{"status":"success","data":{"alerts":[
            {"labels":{"alertname":"A","namespace":"team-a"},"state":"firing","value":"1"},
            {"labels":{"alertname":"B","namespace":"team-b"},"state":"firing","value":"1"},
            {"labels":{"alertname":"C"},"state":"firing","value":"1"}]}}"#;
        let out = filter_response(&team_a(), ListKind::Alerts, body).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let alerts = v["data"]["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0]["labels"]["alertname"], "A");
    }

    #[test]
    fn rules_are_filtered_and_empty_groups_dropped() {
        let body = br#"{"status":"success","data":{"groups":[
            {"name":"g1","file":"r.yml","interval":15,"rules":[
                {"name":"TeamA","type":"alerting","labels":{"namespace":"team-a"},
                 "alerts":[{"labels":{"alertname":"TeamA","namespace":"team-a"}},
                           {"labels":{"alertname":"TeamA","namespace":"team-b"}}]},
                {"name":"TeamB","type":"alerting","labels":{"namespace":"team-b"},"alerts":[]},
                {"name":"rec","type":"recording","query":"sum(up)"}]},
            {"name":"g2","file":"r.yml","rules":[
                {"name":"TeamB2","type":"alerting","labels":{"namespace":"team-b"}}]}]}}"#;
        let out = filter_response(&team_a(), ListKind::Rules, body).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let groups = v["data"]["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0]["interval"], 15);
        let rules = groups[0]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["name"], "TeamA");
        assert_eq!(rules[0]["alerts"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn odd_bodies_fail_closed() {
        let s = team_a();
        assert!(filter_response(&s, ListKind::Alerts, b"not json").is_err());
        assert!(
            filter_response(&s, ListKind::Alerts, br#"{"status":"success","data":{}}"#).is_err()
        );
        assert!(
            filter_response(&s, ListKind::Rules, br#"{"status":"success","data":[]}"#).is_err()
        );
        assert!(filter_response(&s, ListKind::Alerts, br#"{"data":{"alerts":[]}}"#).is_err());
        let err = br#"{"status":"error","error":"x"}"#;
        assert_eq!(
            filter_response(&s, ListKind::Rules, err).unwrap(),
            err.to_vec()
        );
    }
}
