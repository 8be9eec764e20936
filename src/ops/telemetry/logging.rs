//! Logging setup: one global tracing subscriber writing to stderr, as text
//! for people or as one JSON object per line for log collectors.
//!
//! `RUST_LOG` overrides the level. Colour is used only on a terminal:
//! escape codes in `kubectl logs` or a file break grep.
//!
//! Lines are collected in memory and written to stderr in one call, at
//! most [`FLUSH_EVERY`] later: the audit log has a line per request, and a
//! `write` per line was a tenth of the gateway's CPU per small request.
//! Warnings and errors are written at once (with everything before them,
//! so the order is kept), and so is everything at exit and on a panic.

use std::io::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// The longest a line waits in memory.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Past this many bytes waiting, a line is written at once.
const MAX_BUFFERED: usize = 64 * 1024;

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn buffer() -> MutexGuard<'static, Vec<u8>> {
    BUFFER.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        // Nowhere to report a failed write to stderr; drop the lines.
        let _ = std::io::stderr().write_all(buf);
        buf.clear();
    }
}

/// Writes every waiting line to stderr.
pub(crate) fn flush_logs() {
    write_out(&mut buffer());
}

/// Flushes the log buffer when dropped: hold it for the life of `main`.
pub(crate) struct FlushOnDrop;

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        flush_logs();
    }
}

/// The subscriber's writer: appends one event to the buffer.
struct BufferedStderr;

struct Line {
    buf: MutexGuard<'static, Vec<u8>>,
    urgent: bool,
}

impl std::io::Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.urgent || self.buf.len() >= MAX_BUFFERED {
            write_out(&mut self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buf: buffer(),
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            buf: buffer(),
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

/// Installs the global tracing subscriber and starts the flusher thread.
/// `RUST_LOG` overrides the level. A second call (tests) leaves the first
/// subscriber in place.
pub(crate) fn init_logging(format: LogFormat) -> FlushOnDrop {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BufferedStderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        let _ = std::thread::Builder::new()
            .name("promgate-logs".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush_logs();
                }
            });
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush_logs();
            previous(info);
        }));
    }
    FlushOnDrop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(urgent: bool, text: &[u8]) {
        let mut l = Line {
            buf: buffer(),
            urgent,
        };
        l.write_all(text).unwrap();
    }

    // One test, as the buffer is global.
    #[test]
    fn info_waits_a_warning_writes_everything_and_so_does_a_full_buffer() {
        line(false, b"info line\n");
        assert!(buffer().ends_with(b"info line\n"));
        line(true, b"warning line\n");
        assert!(buffer().is_empty(), "a warning leaves nothing behind");
        line(false, &vec![b'x'; MAX_BUFFERED]);
        assert!(buffer().is_empty(), "a full buffer is written out");
        line(false, b"later\n");
        flush_logs();
        assert!(buffer().is_empty());
    }
}
