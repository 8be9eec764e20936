//! Adds a peer's scope to PromQL, then proves the result carries it.
//!
//! [`enforce_query`] parses a query with `promql-parser`, adds the scope
//! matchers to every vector and matrix selector in the tree (our own walk:
//! the crate's walkers and prom-label-proxy's enforcer both skip aggregation
//! parameters such as the `k` of `topk`, which Prometheus evaluates), prints
//! it, and then checks the printed text independently: it must parse again,
//! print the same, and every selector of the re-parsed tree must carry the
//! scope. What the upstream receives is exactly the text that was checked.
//!
//! Holes refused rather than copied: `or` between matchers inside braces
//! (Prometheus rejects it, and the crate's printer drops the other matchers
//! when it is present), and `info()` (it runs its own unscoped select on
//! `target_info`). A scope value is always printed escaped (the crate
//! escapes since 0.10; the round trip here would catch a regression).
//!
//! On a scope label a user matcher is replaced when the scope has one value
//! (so `namespace="team-b"` quietly becomes `namespace="team-a"`, as in
//! prom-label-proxy) and kept beside the scope's regex matcher when it has
//! several (Prometheus ANDs matchers, so it can only narrow the result).

use super::Scope;
pub use promgate_core::scope::{quote, scope_value};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector, token};

/// Longest query text accepted. The AST is recursive (parsing, printing,
/// walking and dropping it all recurse), so the input size bounds the stack
/// depth; 128 KiB stays far from the 2 MiB of a tokio worker's stack (see
/// the `deep_queries_are_bounded` test) and above real dashboard queries.
pub const MAX_QUERY_BYTES: usize = 128 * 1024;
/// Most operators, brackets and set keywords in one query. Each level of
/// the AST needs at least one, so this bounds the depth that the parser,
/// printer and `Drop` recurse to (measured: 10,000 levels still fit a 2 MiB
/// stack in a release build, 40,000 do not) and the parser's time, which
/// grows faster than linearly on long operator chains (1,000 `+`: ~5 ms).
/// Real queries, even generated ones, stay well below it.
pub const MAX_OPERATORS: usize = 2000;
/// Deepest expression tree walked; beyond it the query is refused.
pub const MAX_DEPTH: usize = 512;
/// Most regex matchers (`=~`, `!~`) in one query, counted in the text (so a
/// `=~` inside a string counts too: over-counting is safe). The parser
/// compiles each one; the patched parser bounds one compilation
/// (`REGEX_SIZE_LIMIT`, PATCHES.md) and this bounds their number, so one
/// query's regexes cost at most a few MiB and milliseconds. The count
/// applies again to the rewritten text, where a scope with several values
/// adds one regex matcher per selector.
pub const MAX_REGEX_MATCHERS: usize = 48;

/// Why a query or selector was not forwarded. Shown to the peer with a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromqlError {
    #[error("cannot parse {what}: {message}")]
    Parse { what: &'static str, message: String },
    #[error("the query is longer than {MAX_QUERY_BYTES} bytes")]
    TooLong,
    #[error("the query has more than {MAX_OPERATORS} operators and brackets")]
    TooComplex,
    #[error("the query nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error(
        "{0} has more than {MAX_REGEX_MATCHERS} regex matchers (=~ and !~); each is compiled to check it, so their number is bounded"
    )]
    TooManyRegexes(&'static str),
    #[error(
        "`or` between label matchers inside braces is not accepted (Prometheus rejects it, and it could hide the scope)"
    )]
    OrInBraces,
    #[error(
        "info() is not available to a scoped peer: it selects target_info series that the scope cannot constrain"
    )]
    Info,
    #[error("the query contains an expression promgate does not understand")]
    Unsupported,
    #[error("`{0}` is not a series selector (expected e.g. up{{job=\"x\"}}, without offset or @)")]
    NotASelector(String),
    #[error("the scoped query failed verification ({0}); nothing was forwarded")]
    Verify(String),
}

/// The scope itself as a series selector, `{namespace="team-a"}`: the
/// `match[]` used when a request gives none.
pub fn scope_selector(scope: &Scope) -> String {
    format!("{{{scope}}}")
}

/// Rewrites a PromQL query so that every selector carries `scope`.
pub fn enforce_query(scope: &Scope, query: &str) -> Result<String, PromqlError> {
    let mut expr = parse(query, "the query")?;
    add_scope(&mut expr, scope, 0)?;
    print_and_verify(expr, scope)
}

/// Rewrites one `match[]` series selector so that it carries `scope`.
pub fn enforce_selector(scope: &Scope, selector: &str) -> Result<String, PromqlError> {
    let mut expr = parse(selector, "the match[] selector")?;
    match &mut expr {
        Expr::VectorSelector(vs) if vs.offset.is_none() && vs.at.is_none() => {
            scope_one_selector(vs, scope)?
        }
        _ => return Err(PromqlError::NotASelector(selector.to_string())),
    }
    print_and_verify(expr, scope)
}

fn parse(text: &str, what: &'static str) -> Result<Expr, PromqlError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(PromqlError::TooLong);
    }
    if operator_count(text) > MAX_OPERATORS {
        return Err(PromqlError::TooComplex);
    }
    if regex_matcher_count(text) > MAX_REGEX_MATCHERS {
        return Err(PromqlError::TooManyRegexes(what));
    }
    parser::parse(text).map_err(|message| PromqlError::Parse { what, message })
}

/// An upper bound on the AST depth of `text`, from its characters alone.
/// It deliberately ignores strings, braces and comments: counting inside
/// them only over-counts, while a scanner that misread a quote could
/// under-count and let a stack-overflowing query through.
fn operator_count(text: &str) -> usize {
    let symbols = text
        .bytes()
        .filter(|b| b"([{+-*/%^<>=!@".contains(b))
        .count();
    let keywords = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            ["and", "or", "unless", "atan2", "offset", "bool"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
        })
        .count();
    symbols + keywords
}

/// `=~` and `!~` in `text`, strings and comments included.
fn regex_matcher_count(text: &str) -> usize {
    text.as_bytes()
        .windows(2)
        .filter(|w| w == b"=~" || w == b"!~")
        .count()
}

/// Takes the tree by value: it is dropped before the verification parse,
/// so the two trees' compiled regexes are never held at once.
fn print_and_verify(expr: Expr, scope: &Scope) -> Result<String, PromqlError> {
    let printed = expr.to_string();
    drop(expr);
    if regex_matcher_count(&printed) > MAX_REGEX_MATCHERS {
        return Err(PromqlError::TooManyRegexes(
            "the query with the scope added",
        ));
    }
    let reparsed = parser::parse(&printed)
        .map_err(|e| PromqlError::Verify(format!("the rewritten text does not parse: {e}")))?;
    if reparsed.to_string() != printed {
        return Err(PromqlError::Verify(
            "the rewritten text does not print back the same".into(),
        ));
    }
    check_scoped(&reparsed, scope, 0)?;
    Ok(printed)
}

/// Adds the scope to every selector. The match is exhaustive on purpose: a
/// new node type in the parser must be handled here before this compiles.
fn add_scope(expr: &mut Expr, scope: &Scope, depth: usize) -> Result<(), PromqlError> {
    if depth > MAX_DEPTH {
        return Err(PromqlError::TooDeep);
    }
    let d = depth + 1;
    match expr {
        Expr::Aggregate(a) => {
            add_scope(&mut a.expr, scope, d)?;
            // The parameter (topk's k, quantile's φ, count_values' label) is
            // evaluated by Prometheus and may select series: scope it too.
            if let Some(p) = a.param.as_deref_mut() {
                add_scope(p, scope, d)?;
            }
            Ok(())
        }
        Expr::Unary(u) => add_scope(&mut u.expr, scope, d),
        Expr::Binary(b) => {
            add_scope(&mut b.lhs, scope, d)?;
            add_scope(&mut b.rhs, scope, d)
        }
        Expr::Paren(p) => add_scope(&mut p.expr, scope, d),
        Expr::Subquery(s) => add_scope(&mut s.expr, scope, d),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::VectorSelector(vs) => scope_one_selector(vs, scope),
        Expr::MatrixSelector(ms) => scope_one_selector(&mut ms.vs, scope),
        Expr::Call(c) => {
            if c.func.name == "info" {
                return Err(PromqlError::Info);
            }
            for arg in c.args.args.iter_mut() {
                add_scope(arg, scope, d)?;
            }
            Ok(())
        }
        Expr::Extension(_) => Err(PromqlError::Unsupported),
    }
}

/// A metric name the printer can write bare before the braces.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn scope_one_selector(vs: &mut VectorSelector, scope: &Scope) -> Result<(), PromqlError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(PromqlError::OrInBraces);
    }
    // A UTF-8 metric name ({"my.metric"}) cannot be printed bare; move it
    // into an explicit __name__ matcher, which the printer quotes.
    if let Some(name) = vs.name.take_if(|n| !is_metric_name(n)) {
        vs.matchers.matchers.retain(|m| m.name != "__name__");
        vs.matchers
            .matchers
            .push(Matcher::new(MatchOp::Equal, "__name__", &name));
    }
    for label in scope.labels() {
        let value = scope_value(label);
        let matcher = if label.values.len() == 1 {
            vs.matchers.matchers.retain(|m| m.name != label.name);
            Matcher::new(MatchOp::Equal, &label.name, &value)
        } else {
            Matcher::new_matcher(token::T_EQL_REGEX, label.name.clone(), value)
                .map_err(|e| PromqlError::Verify(format!("scope regex: {e}")))?
        };
        vs.matchers.matchers.push(matcher);
    }
    Ok(())
}

/// The independent check: every selector anywhere in the tree carries every
/// scope label with an allowed value, and nothing unscoped is left.
fn check_scoped(expr: &Expr, scope: &Scope, depth: usize) -> Result<(), PromqlError> {
    if depth > MAX_DEPTH {
        return Err(PromqlError::TooDeep);
    }
    let d = depth + 1;
    match expr {
        Expr::Aggregate(a) => {
            check_scoped(&a.expr, scope, d)?;
            match &a.param {
                Some(p) => check_scoped(p, scope, d),
                None => Ok(()),
            }
        }
        Expr::Unary(u) => check_scoped(&u.expr, scope, d),
        Expr::Binary(b) => {
            check_scoped(&b.lhs, scope, d)?;
            check_scoped(&b.rhs, scope, d)
        }
        Expr::Paren(p) => check_scoped(&p.expr, scope, d),
        Expr::Subquery(s) => check_scoped(&s.expr, scope, d),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::VectorSelector(vs) => check_selector(vs, scope),
        Expr::MatrixSelector(ms) => check_selector(&ms.vs, scope),
        Expr::Call(c) => {
            if c.func.name == "info" {
                return Err(PromqlError::Info);
            }
            c.args
                .args
                .iter()
                .try_for_each(|a| check_scoped(a, scope, d))
        }
        Expr::Extension(_) => Err(PromqlError::Unsupported),
    }
}

fn check_selector(vs: &VectorSelector, scope: &Scope) -> Result<(), PromqlError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(PromqlError::Verify(format!("{vs} has `or` matchers")));
    }
    for label in scope.labels() {
        let want = scope_value(label);
        let carried = vs.matchers.matchers.iter().any(|m| {
            m.name == label.name
                && match &m.op {
                    MatchOp::Equal => label.values.contains(&m.value),
                    MatchOp::Re(_) => label.values.len() > 1 && m.value == want,
                    MatchOp::NotEqual | MatchOp::NotRe(_) => false,
                }
        });
        if !carried {
            return Err(PromqlError::Verify(format!(
                "{vs} lacks the scope label {}",
                label.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the scope_rewrite fuzz target: a numeric offset too large
    /// for a Duration panicked inside the parser (on the blocking pool the
    /// peer got a 500). The patched parser refuses it (PATCHES.md).
    #[test]
    fn an_offset_too_large_for_a_duration_is_refused_not_a_panic() {
        let scope = Scope::new([("namespace", &["team-a", "team-b"][..])]).unwrap();
        let q = "r/teGx[5] offset 1111111111111111111111111%11111111111111191111111111111111111h @ 10@ 1001";
        assert!(matches!(
            enforce_query(&scope, q),
            Err(PromqlError::Parse { .. })
        ));
        assert!(enforce_query(&scope, "x offset 1e300").is_err());
    }

    fn team_a() -> Scope {
        Scope::new([("namespace", &["team-a"][..])]).unwrap()
    }

    fn two_teams() -> Scope {
        Scope::new([
            ("namespace", &["team-a", "team-b"][..]),
            ("cluster", &["prod"][..]),
        ])
        .unwrap()
    }

    #[test]
    fn ordinary_queries_round_trip_with_the_scope() {
        let s = team_a();
        let cases = [
            ("up", r#"up{namespace="team-a"}"#),
            (r#"up{job="x"}"#, r#"up{job="x",namespace="team-a"}"#),
            (
                "sum by (job) (rate(http_requests_total[5m]))",
                r#"sum by (job) (rate(http_requests_total{namespace="team-a"}[5m]))"#,
            ),
            (
                "a / on(instance) group_left b",
                r#"a{namespace="team-a"} / on (instance) group_left () b{namespace="team-a"}"#,
            ),
            ("1 + 2", "1 + 2"),
            (
                r#"histogram_quantile(0.9, sum by (le) (rate(x_bucket[1m])))"#,
                r#"histogram_quantile(0.9, sum by (le) (rate(x_bucket{namespace="team-a"}[1m])))"#,
            ),
            (
                "max_over_time(rate(x[1m])[1h:5m] offset 1d)",
                r#"max_over_time(rate(x{namespace="team-a"}[1m])[1h:5m] offset 1d)"#,
            ),
            (
                r#"{__name__=~"up|x"}"#,
                r#"{__name__=~"up|x",namespace="team-a"}"#,
            ),
        ];
        for (q, want) in cases {
            assert_eq!(enforce_query(&s, q).as_deref(), Ok(want), "{q}");
        }
    }

    #[test]
    fn several_values_and_labels_are_all_enforced() {
        let s = two_teams();
        assert_eq!(
            enforce_query(&s, r#"up{namespace="team-c"}"#).as_deref(),
            Ok(r#"up{cluster="prod",namespace="team-c",namespace=~"team-a|team-b"}"#)
        );
        assert_eq!(
            enforce_selector(&s, "up").as_deref(),
            Ok(r#"up{cluster="prod",namespace=~"team-a|team-b"}"#)
        );
        let dotted = Scope::new([("namespace", &["a.b", "c|d"][..])]).unwrap();
        assert_eq!(
            enforce_query(&dotted, "up").as_deref(),
            Ok(r#"up{namespace=~"a\\.b|c\\|d"}"#)
        );
    }

    /// Each hostile query either comes out scoped (and never containing an
    /// unscoped selector) or is refused.
    #[test]
    fn hostile_queries_are_scoped_or_refused() {
        let s = team_a();
        let scoped = [
            (r#"up{namespace="team-b"}"#, r#"up{namespace="team-a"}"#),
            (r#"up{namespace!="team-a"}"#, r#"up{namespace="team-a"}"#),
            (r#"up{namespace=~".*"}"#, r#"up{namespace="team-a"}"#),
            (r#"up{namespace!~"team-a"}"#, r#"up{namespace="team-a"}"#),
            (r#"up{"namespace"="team-b"}"#, r#"up{namespace="team-a"}"#),
            (
                r#"up{namespace="team-b", namespace="team-c"}"#,
                r#"up{namespace="team-a"}"#,
            ),
            (
                r#"topk(scalar(sum(x{namespace="b"}) > bool 5), up)"#,
                r#"topk(scalar(sum(x{namespace="team-a"}) > bool 5), up{namespace="team-a"})"#,
            ),
            (
                r#"quantile(scalar(y), up)"#,
                r#"quantile(scalar(y{namespace="team-a"}), up{namespace="team-a"})"#,
            ),
            (
                r#"rate(x{namespace="b"}[5m] @ end())"#,
                r#"rate(x{namespace="team-a"}[5m] @ end())"#,
            ),
            (
                r#"x{namespace="b"} @ start() offset -5m"#,
                r#"x{namespace="team-a"} @ start() offset -5m"#,
            ),
            (
                r#"sum_over_time(x{namespace="b"}[1h:] @ 100)"#,
                r#"sum_over_time(x{namespace="team-a"}[1h:] @ 100.000)"#,
            ),
            (
                r#"label_replace(up{namespace="team-b"}, "namespace", "team-a", "", "")"#,
                r#"label_replace(up{namespace="team-a"}, "namespace", "team-a", "", "")"#,
            ),
            (
                r#"absent(nope{namespace="team-b"})"#,
                r#"absent(nope{namespace="team-a"})"#,
            ),
            (
                r#"up{job="\"} or up{namespace=\"team-b\"}"}"#,
                r#"up{job="\"} or up{namespace=\"team-b\"}",namespace="team-a"}"#,
            ),
            (
                r#"up{job="a\\", namespace="x"}"#,
                r#"up{job="a\\",namespace="team-a"}"#,
            ),
            (
                "up{job=`}) or vector(1) or up{`}",
                r#"up{job="}) or vector(1) or up{",namespace="team-a"}"#,
            ),
            (r#"up{job="a\nb"}"#, r#"up{job="a\nb",namespace="team-a"}"#),
            (
                r#"label_replace(up, "a", "\"} or vector(1) #", "b", "")"#,
                r#"label_replace(up{namespace="team-a"}, "a", "\"} or vector(1) #", "b", "")"#,
            ),
            (
                r#"{"my.metric", namespace="b"}"#,
                r#"{__name__="my.metric",namespace="team-a"}"#,
            ),
        ];
        for (q, want) in scoped {
            assert_eq!(enforce_query(&s, q).as_deref(), Ok(want), "{q}");
        }
        let refused = [
            r#"up{namespace="team-a" or namespace="team-b"}"#,
            r#"up{job="x" or namespace="team-b"}"#,
            r#"info(up)"#,
            r#"info(up, {k8s_cluster=~".+"})"#,
            r#"sum(info(rate(x[1m])))"#,
            "up{",
            "up[5m",
            "",
            "sum(",
            r#"up{namespace="a"} or"#,
        ];
        for q in refused {
            assert!(enforce_query(&s, q).is_err(), "{q} was not refused");
        }
    }

    /// Values with quotes, backslashes, braces and ` or ` go out escaped
    /// (promql-parser before 0.10.0 printed them raw).
    #[test]
    fn scope_values_are_escaped() {
        for value in [
            r#"a"} or up{x=""#,
            r#"a\"#,
            "a} or up{",
            "a or b",
            "tab\there",
            r#"\"#,
        ] {
            let s = Scope::new([("namespace", &[value][..])]).unwrap();
            let out = enforce_query(&s, "up").unwrap();
            let Expr::VectorSelector(vs) = parser::parse(&out).unwrap() else {
                panic!("{out} is not one selector");
            };
            assert_eq!(vs.matchers.matchers.len(), 1, "{out}");
            assert_eq!(vs.matchers.matchers[0].value, value, "{out}");
            // The multi-value form too.
            let s = Scope::new([("namespace", &[value, "z"][..])]).unwrap();
            let out = enforce_query(&s, "up").unwrap();
            assert!(
                matches!(parser::parse(&out), Ok(Expr::VectorSelector(_))),
                "{out}"
            );
        }
    }

    #[test]
    fn match_selectors() {
        let s = team_a();
        assert_eq!(
            enforce_selector(&s, r#"{job="x"}"#).as_deref(),
            Ok(r#"{job="x",namespace="team-a"}"#)
        );
        assert_eq!(
            enforce_selector(&s, r#"{__name__=~".+"}"#).as_deref(),
            Ok(r#"{__name__=~".+",namespace="team-a"}"#)
        );
        for bad in [
            "rate(x[5m])",
            "up offset 5m",
            "up @ 10",
            "up[5m]",
            "up or down",
            r#"{a="b" or c="d"}"#,
            "1",
        ] {
            assert!(enforce_selector(&s, bad).is_err(), "{bad}");
        }
        assert_eq!(scope_selector(&s), r#"{namespace="team-a"}"#);
    }

    #[test]
    fn the_verifier_catches_an_unscoped_selector() {
        let s = team_a();
        let e = parser::parse(r#"topk(scalar(x), up{namespace="team-a"})"#).unwrap();
        assert!(check_scoped(&e, &s, 0).is_err());
        let e = parser::parse(r#"up{namespace=~"team-a"}"#).unwrap();
        assert!(check_scoped(&e, &s, 0).is_err());
        let e = parser::parse(r#"up{namespace="team-a"}"#).unwrap();
        assert!(check_scoped(&e, &s, 0).is_ok());
    }

    /// A long chain or deep nesting is refused or handled without
    /// overflowing a tokio-sized (2 MiB) stack.
    #[test]
    fn deep_queries_are_bounded() {
        let s = team_a();
        let run = |q: String| {
            let s = s.clone();
            std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || enforce_query(&s, &q).is_ok())
                .unwrap()
                .join()
                .expect("no stack overflow")
        };
        let n = MAX_OPERATORS;
        assert!(!run("(".repeat(MAX_QUERY_BYTES / 2)
            + "up"
            + &")".repeat(MAX_QUERY_BYTES / 2)));
        assert!(!run(vec!["up"; MAX_QUERY_BYTES / 3].join("+")));
        assert!(!run(format!("{}up", "-".repeat(MAX_QUERY_BYTES - 2))));
        // Just inside the operator bound, but deeper than the walk allows.
        assert!(!run("(".repeat(n) + "up" + &")".repeat(n)));
        assert!(!run(vec!["up"; n].join("+")));
        assert!(!run("abs(".repeat(n / 2) + "up" + &")".repeat(n / 2)));
        assert!(run(vec!["up"; 100].join(" + ")));
    }
}
