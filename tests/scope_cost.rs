//! Issue 23, item 1: the cost of one hostile scoped query, in heap bytes.
//!
//! promql-parser compiles every `=~` and `!~` regex while it parses; with
//! the `regex` crate's defaults a 633-byte query of 32 `(?:\w){200}`
//! matchers took peak memory from 8 to 778 MiB. The patched parser bounds
//! one compilation and reads `\w` as Go does; `MAX_REGEX_MATCHERS` bounds
//! their number. This measures the peak heap of whole rewrites (parse, add
//! the scope, print, verify) with a counting allocator.

// A counting allocator needs `unsafe impl GlobalAlloc`; nothing else here
// is unsafe.
#![allow(unsafe_code)]

use promgate::web::scope::Scope;
use promgate::web::scope::promql::{MAX_REGEX_MATCHERS, PromqlError, enforce_query};
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

/// The issue's budget for one query's added peak memory.
const BUDGET: usize = 8 * 1024 * 1024;

/// Peak heap bytes added while rewriting `query`, and the result.
fn peak_of(scope: &Scope, query: &str) -> (usize, Result<String, PromqlError>) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = enforce_query(scope, query);
    (PEAK.load(Relaxed) - base, out)
}

fn selector(n: usize, pattern: &str) -> String {
    let matchers: Vec<String> = (0..n).map(|i| format!("l{i}=~\"{pattern}\"")).collect();
    format!("up{{{}}}", matchers.join(","))
}

/// One test, so no other test allocates on another thread meanwhile.
#[test]
fn hostile_regexes_stay_within_the_memory_budget() {
    let one = Scope::new([("namespace", &["team-a"][..])]).expect("scope");
    let many = Scope::new([("namespace", &["team-a", "team-b", "team-c"][..])]).expect("scope");
    let n = MAX_REGEX_MATCHERS;
    let cases: Vec<(&str, &Scope, String)> = vec![
        // The issue's reproduction: 633 bytes, 32 matchers.
        ("issue 23 query", &one, selector(32, r"(?:\\w){200}")),
        (
            "max matchers of ASCII \\w{200}",
            &one,
            selector(n - 1, r"(?:\\w){200}"),
        ),
        // Near and over the per-regex size limit, of several kinds.
        (
            "max matchers of [a-z]{800}",
            &one,
            selector(n - 1, "[a-z]{800}"),
        ),
        (
            "max matchers of [a-z]{1500}",
            &one,
            selector(n - 1, "[a-z]{1500}"),
        ),
        ("max matchers of .{100}", &one, selector(n - 1, ".{100}")),
        ("max matchers of .{120}", &one, selector(n - 1, ".{120}")),
        ("max matchers of .{130}", &one, selector(n - 1, ".{130}")),
        ("max matchers of .{140}", &one, selector(n - 1, ".{140}")),
        ("max matchers of .{150}", &one, selector(n - 1, ".{150}")),
        ("max matchers of .{200}", &one, selector(n - 1, ".{200}")),
        (
            "max matchers of [^a]{150}",
            &one,
            selector(n - 1, "[^a]{150}"),
        ),
        (
            "max matchers of [a-z]{3000}",
            &one,
            selector(n - 1, "[a-z]{3000}"),
        ),
        ("max matchers of .{300}", &one, selector(n - 1, ".{300}")),
        (
            "max matchers of \\pL{40}",
            &one,
            selector(n - 1, r"\\pL{40}"),
        ),
        (
            "max matchers of (?i)\\pL{5}",
            &one,
            selector(n - 1, r"(?i)\\pL{5}"),
        ),
        // A scope with several values adds a regex matcher per selector.
        (
            "many selectors, 3-value scope",
            &many,
            (0..n / 2)
                .map(|i| format!("m{i}"))
                .collect::<Vec<_>>()
                .join(" + "),
        ),
    ];
    let mut report = Vec::new();
    for (name, scope, query) in &cases {
        let (peak, out) = peak_of(scope, query);
        let outcome = match &out {
            Ok(_) => "rewritten".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        report.push(format!(
            "{name}: {} bytes, peak +{} KiB, {outcome}",
            query.len(),
            peak / 1024
        ));
        assert!(
            peak <= BUDGET,
            "{name}: peak +{} KiB exceeds the {} KiB budget",
            peak / 1024,
            BUDGET / 1024
        );
    }
    // The issue's query itself is served, not refused: Prometheus reads
    // `\w` as ASCII, and so does the patched parser now.
    assert!(peak_of(&one, &cases[0].2).1.is_ok());
    // One regex matcher too many is refused with a clear reason.
    let (_, out) = peak_of(&one, &selector(n + 1, "a"));
    assert!(
        matches!(out, Err(PromqlError::TooManyRegexes(_))),
        "{out:?}"
    );
    println!("{}", report.join("\n"));
}
