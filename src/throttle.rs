//! Rate-limited log lines: a warning that can repeat many times a second
//! (accept failures, dropped webhook events, local probe errors) is logged
//! at most once per period, and the next line says how many were
//! suppressed meanwhile. Logging stays cheap under a flood, and the log
//! still tells how big the flood was.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows one log line per `period`; counts the rest.
#[derive(Debug)]
pub struct LogThrottle {
    period: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// At most one line per `period`.
    pub const fn new(period: Duration) -> LogThrottle {
        LogThrottle {
            period,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were
    /// suppressed since the last one; `None` (and one more suppressed)
    /// otherwise.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.last {
            Some(last) if now.duration_since(last) < self.period => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

/// `""` or `" (N similar suppressed)"`, to append to a throttled line.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_then_the_count_of_the_rest() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.allow_at(start), Some(0));
        for i in 1..=5 {
            assert_eq!(t.allow_at(start + Duration::from_secs(i)), None);
        }
        assert_eq!(t.allow_at(start + Duration::from_secs(10)), Some(5));
        assert_eq!(t.allow_at(start + Duration::from_secs(11)), None);
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(5), " (5 similar suppressed)");
    }
}
