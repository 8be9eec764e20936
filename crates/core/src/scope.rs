//! A peer's label scope, validated: which label values its data is limited
//! to. The data path carries it with the peer's access rules; the main
//! crate's `scope` module enforces it on queries and lists.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// One enforced label and the values it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeLabel {
    pub name: String,
    /// Sorted and de-duplicated; never empty.
    pub values: Vec<String>,
}

/// The validated scope of one peer: every label is enforced on every series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Sorted by name; never empty. Shared: every connection of the peer
    /// carries a copy.
    labels: std::sync::Arc<[ScopeLabel]>,
}

/// A scope problem in the config, in words for `check`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("is empty: name at least one label, e.g. scope = {{ namespace = \"team-a\" }}")]
    Empty,
    #[error("`{0}` is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)")]
    BadLabelName(String),
    #[error("`{0}` starts with \"__\", which Prometheus reserves for internal labels")]
    ReservedLabelName(String),
    #[error("label `{0}` has no value: give one value or a list of values")]
    NoValues(String),
    #[error("label `{0}` has an empty value, which would match series without the label")]
    EmptyValue(String),
}

/// A scope as written in TOML: `{ label = "value" }` or `{ label = ["a", "b"] }`.
pub type RawScope = BTreeMap<String, RawScopeValues>;

/// One label's value or values, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawScopeValues {
    One(String),
    Many(Vec<String>),
}

/// True for a legacy Prometheus label name, `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Scope {
    /// Validates a scope from config. Returns every problem, not just the first.
    pub fn from_raw(raw: RawScope) -> Result<Scope, Vec<ScopeError>> {
        let mut errors = Vec::new();
        if raw.is_empty() {
            errors.push(ScopeError::Empty);
        }
        let mut labels = Vec::with_capacity(raw.len());
        for (name, values) in raw {
            if !is_label_name(&name) {
                errors.push(ScopeError::BadLabelName(name));
                continue;
            }
            if name.starts_with("__") {
                errors.push(ScopeError::ReservedLabelName(name));
                continue;
            }
            let mut values = match values {
                RawScopeValues::One(v) => vec![v],
                RawScopeValues::Many(v) => v,
            };
            if values.is_empty() {
                errors.push(ScopeError::NoValues(name));
                continue;
            }
            if values.iter().any(String::is_empty) {
                errors.push(ScopeError::EmptyValue(name));
                continue;
            }
            values.sort();
            values.dedup();
            labels.push(ScopeLabel { name, values });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // BTreeMap iteration already sorted the names.
        Ok(Scope {
            labels: labels.into(),
        })
    }

    /// Builds a scope in code (tests, benches). Same rules as [`Scope::from_raw`].
    pub fn new<'a>(
        labels: impl IntoIterator<Item = (&'a str, &'a [&'a str])>,
    ) -> Result<Scope, Vec<ScopeError>> {
        let raw = labels
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    RawScopeValues::Many(v.iter().map(|s| s.to_string()).collect()),
                )
            })
            .collect();
        Scope::from_raw(raw)
    }

    pub fn labels(&self) -> &[ScopeLabel] {
        &self.labels
    }

    /// True when a series with these labels is inside the scope.
    pub fn admits<'a>(&self, mut get: impl FnMut(&str) -> Option<&'a str>) -> bool {
        self.labels
            .iter()
            .all(|l| get(&l.name).is_some_and(|v| l.values.iter().any(|a| a == v)))
    }
}

/// `namespace="team-a"` or `cluster="prod",namespace=~"team-a|team-b"`:
/// the selector form, for `status`, `peer list` and the audit line.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let value = scope_value(l);
            let op = if l.values.len() == 1 { "=" } else { "=~" };
            write!(f, "{}{op}{}", l.name, quote(&value))?;
        }
        Ok(())
    }
}

/// PromQL string literal for `s`, escaped the way Prometheus unquotes it.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `regexp.QuoteMeta`: the value as a literal RE2 pattern.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The matcher value the scope puts on `label`: the value itself when there
/// is one, else an anchored-by-Prometheus alternation of literal values.
pub fn scope_value(label: &ScopeLabel) -> String {
    match label.values.as_slice() {
        [one] => one.clone(),
        many => many
            .iter()
            .map(|v| quote_meta(v))
            .collect::<Vec<_>>()
            .join("|"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawScope {
        #[derive(Deserialize)]
        struct W {
            scope: RawScope,
        }
        toml::from_str::<W>(text).expect("test TOML").scope
    }

    #[test]
    fn valid_scopes() {
        let s = Scope::from_raw(raw(r#"scope = { namespace = "team-a" }"#)).unwrap();
        assert_eq!(s.to_string(), r#"namespace="team-a""#);
        let s = Scope::from_raw(raw(
            r#"scope = { namespace = ["team-b", "team-a", "team-a"], cluster = "prod" }"#,
        ))
        .unwrap();
        assert_eq!(
            s.to_string(),
            r#"cluster="prod",namespace=~"team-a|team-b""#
        );
        assert!(s.admits(|n| match n {
            "cluster" => Some("prod"),
            "namespace" => Some("team-b"),
            _ => None,
        }));
        assert!(!s.admits(|n| (n == "namespace").then_some("team-a")));
    }

    #[test]
    fn invalid_scopes_name_the_problem() {
        let cases = [
            (r#"scope = {}"#, ScopeError::Empty),
            (
                r#"scope = { "name-space" = "a" }"#,
                ScopeError::BadLabelName("name-space".into()),
            ),
            (
                r#"scope = { "1ns" = "a" }"#,
                ScopeError::BadLabelName("1ns".into()),
            ),
            (
                r#"scope = { __name__ = "up" }"#,
                ScopeError::ReservedLabelName("__name__".into()),
            ),
            (
                r#"scope = { namespace = "" }"#,
                ScopeError::EmptyValue("namespace".into()),
            ),
            (
                r#"scope = { namespace = ["a", ""] }"#,
                ScopeError::EmptyValue("namespace".into()),
            ),
            (
                r#"scope = { namespace = [] }"#,
                ScopeError::NoValues("namespace".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Scope::from_raw(raw(text)), Err(vec![want]), "{text}");
        }
    }
}
