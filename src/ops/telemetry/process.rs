//! The standard `process_*` metrics, read from /proc on each scrape and
//! named as client_golang names them, so existing dashboards work.
//!
//! Reading is best effort: a field /proc does not give is left out of the
//! scrape rather than failing it.

use super::encode::gauge;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use std::time::{Instant, SystemTime};

/// USER_HZ: clock ticks per second in /proc, 100 on every Linux
/// architecture we ship for.
const TICKS_PER_SECOND: f64 = 100.0;
/// The page size /proc counts resident memory in.
const PAGE_BYTES: f64 = 4096.0;

/// What `/proc/self/stat` tells about the process.
#[derive(Debug, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    virtual_memory_bytes: f64,
    resident_memory_bytes: f64,
}

/// Parses `/proc/<pid>/stat`. The command name is parenthesised and may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime is field 14, stime 15, vsize 23, rss 24 (1-based); `rest` starts at 3.
    Some(ProcStat {
        cpu_seconds: (num(11) + num(12)) / TICKS_PER_SECOND,
        virtual_memory_bytes: num(20),
        resident_memory_bytes: num(21) * PAGE_BYTES,
    })
}

/// Encodes CPU, memory, open file descriptors and the start time.
pub(super) fn encode_process_metrics(
    enc: &mut DescriptorEncoder,
    started: Instant,
) -> Result<(), std::fmt::Error> {
    if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
    {
        ConstCounter::new(stat.cpu_seconds).encode(enc.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?)?;
        gauge(
            enc,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            stat.virtual_memory_bytes,
        )?;
        gauge(
            enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            stat.resident_memory_bytes,
        )?;
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            enc,
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        )?;
    }
    let start = SystemTime::now()
        .checked_sub(started.elapsed())
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    gauge(
        enc,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        start,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as a process may choose.
        let stat = "42 (my (odd) prog) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 123456789 300 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                cpu_seconds: 3.0,
                virtual_memory_bytes: 123456789.0,
                resident_memory_bytes: 300.0 * 4096.0,
            })
        );
        assert_eq!(parse_stat("no parenthesis"), None);
    }
}
