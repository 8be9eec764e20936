//! Arbitrary PromQL through the scope rewriter, `enforce_query`, under one
//! of several scopes (one label with one value, one with several, two
//! labels, a value that needs escaping).
//!
//! Invariants: no panic; a query is either refused or rewritten so that
//! every selector of the output, as this target's own walk of the re-parsed
//! tree finds them (aggregation parameters, subqueries and function
//! arguments included), carries every scope label, checked by what its
//! matcher matches rather than how it is printed; and the peak heap of one
//! rewrite stays under 16 MiB (issue 23: one small query once took
//! gigabytes through regex compilation).
//!
//! Input: the first byte picks the scope, the rest is the query (UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use promgate::web::scope::Scope;
use promgate::web::scope::promql::enforce_query;
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(now, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const PEAK_LIMIT: usize = 16 * 1024 * 1024;

fn scope(kind: u8) -> Scope {
    let s = match kind % 4 {
        0 => Scope::new([("namespace", &["team-a"][..])]),
        1 => Scope::new([("namespace", &["team-a", "team-b", "x.y"][..])]),
        2 => Scope::new([("namespace", &["team-a"][..]), ("cluster", &["eu", "us"][..])]),
        _ => Scope::new([("tenant", &["a\"b\\c\n|.*"][..])]),
    };
    s.expect("the fuzz scopes are valid")
}

/// Does `vs` carry every scope label? Judged by what its matchers match:
/// an `=` on an allowed value, or a regex that matches the allowed values
/// and none of a few others.
fn carries(vs: &VectorSelector, scope: &Scope) -> bool {
    if !vs.matchers.or_matchers.is_empty() {
        return false;
    }
    scope.labels().iter().all(|label| {
        vs.matchers.matchers.iter().any(|m| {
            m.name == label.name
                && match &m.op {
                    MatchOp::Equal => label.values.contains(&m.value),
                    MatchOp::Re(_) => {
                        label.values.iter().all(|v| m.is_match(v))
                            && ["", "team-c", "xay", "team-a ", ".*", "a"]
                                .iter()
                                .filter(|p| !label.values.iter().any(|v| v == *p))
                                .all(|p| !m.is_match(p))
                    }
                    MatchOp::NotEqual | MatchOp::NotRe(_) => false,
                }
        })
    })
}

/// This target's own walk: every node type, so a new one fails to compile.
fn all_scoped(e: &Expr, scope: &Scope) -> bool {
    match e {
        Expr::Aggregate(a) => {
            all_scoped(&a.expr, scope) && a.param.as_deref().is_none_or(|p| all_scoped(p, scope))
        }
        Expr::Unary(u) => all_scoped(&u.expr, scope),
        Expr::Binary(b) => all_scoped(&b.lhs, scope) && all_scoped(&b.rhs, scope),
        Expr::Paren(p) => all_scoped(&p.expr, scope),
        Expr::Subquery(s) => all_scoped(&s.expr, scope),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
        Expr::VectorSelector(vs) => carries(vs, scope),
        Expr::MatrixSelector(ms) => carries(&ms.vs, scope),
        Expr::Call(c) => c.func.name != "info" && c.args.args.iter().all(|a| all_scoped(a, scope)),
        Expr::Extension(_) => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(rest) else {
        return;
    };
    let scope = scope(kind);
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = enforce_query(&scope, query);
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    assert!(
        peak <= PEAK_LIMIT,
        "rewriting {query:?} took {peak} bytes of heap at its peak"
    );
    let Ok(out) = out else {
        return;
    };
    let tree = parser::parse(&out).expect("the rewritten query parses");
    assert!(
        all_scoped(&tree, &scope),
        "{query:?} became {out:?}, which has a selector without the scope {scope}"
    );
});
