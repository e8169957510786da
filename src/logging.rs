//! Where log lines go: stderr, through a bounded queue and a thread of its
//! own, so that nothing a log write does can stop or slow a task.
//!
//! - A closed stderr (`gslb serve 2>&1 | tee log` in an SSH session that
//!   dropped, or `| head`) fails every write with EPIPE. tracing's writer
//!   reports a failed write with `eprintln!`, which panics on that same
//!   closed stderr: the task that logged (a probe task, the signal handler)
//!   was gone. Here the writer swallows the error and counts it.
//! - A slow reader fills the pipe and a write blocks: the queue (lossy) then
//!   drops lines and counts them, instead of blocking whoever logs.
//!
//! Both counts are `gslb_log_lines_lost_total{why}`.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines waiting for stderr at most: about 5 MB of typical lines.
pub const QUEUE_LINES: usize = 16_384;

static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines lost since start: (failed writes to stderr, lines dropped
/// because the queue was full).
pub fn lost() -> (u64, u64) {
    (
        WRITE_ERRORS.load(Ordering::Relaxed),
        DROPPED.get().map_or(0, |c| c.dropped_lines() as u64),
    )
}

/// Writes to stderr; a failed write is counted, never reported as an error
/// (so nothing upstream prints, panics or retries).
struct CountedStderr;

impl Write for CountedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(buf).is_err() {
            WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Install the process's log subscriber at `level` in `format` (`text` or
/// `json`). Keep the guard until exit: dropping it flushes the queue.
pub fn init(level: &str, format: &str) -> Result<WorkerGuard, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("log level {level:?}: {e}"))?;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("gslb-log")
        .finish(CountedStderr);
    let _ = DROPPED.set(writer.error_counter());
    // Colours only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        "json" => builder.json().flatten_event(true).init(),
        "text" => builder.init(),
        other => return Err(format!("log format {other:?} is not text or json")),
    }
    Ok(guard)
}
