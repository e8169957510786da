//! A node's cluster mode as one state machine: events in (a session became
//! live, a keep-alive was answered, the session was lost, the watchdog's
//! tick), transitions out. Pure: the caller passes the clock, so every rule
//! is a row of a table test. Timers are events (the tick), not conditions
//! scattered over tasks.
//!
//! | mode | event | next |
//! |---|---|---|
//! | any | `Live` | `cluster` |
//! | `stale`, `local` | `Answered` (a live session's keep-alive) | `cluster` |
//! | `cluster` | `Tick`, no live session for [`STALE_AFTER`] | `stale` |
//! | `cluster`, `stale` | `Tick`, `lease-ttl` since last live (or answered) | `local` |
//! | `cluster`, `stale` | `Tick` after a gap longer than `lease-ttl` (this process was paused) | unchanged; the time away does not count |

use std::time::{Duration, Instant};

use super::{Mode, STALE_AFTER};

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session is live: record written, state loaded, watch running.
    Live,
    /// The live session's lease keep-alive was answered.
    Answered,
    /// The live session ended, and why.
    Lost(String),
    /// The watchdog's tick.
    Tick,
}

/// A change of mode, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The mode left.
    pub from: Mode,
    /// The mode entered.
    pub to: Mode,
    /// Why, for the log.
    pub why: String,
}

/// The machine.
#[derive(Clone, Debug)]
pub struct ModeMachine {
    mode: Mode,
    live: bool,
    /// When a session was last fully live (None: never since start).
    last_live: Option<Instant>,
    /// When the last live session ended, and why.
    lost: Option<(Instant, String)>,
    last_tick: Option<Instant>,
    /// A pause was found at the last tick: how long.
    paused: Option<Duration>,
    ttl: Duration,
}

impl ModeMachine {
    /// A node that has not reached etcd yet: `local`.
    pub fn new(ttl: Duration) -> Self {
        ModeMachine {
            mode: Mode::Local,
            live: false,
            last_live: None,
            lost: None,
            last_tick: None,
            paused: None,
            ttl,
        }
    }

    /// The mode now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether a session is live now.
    pub fn live(&self) -> bool {
        self.live
    }

    /// When a session was last fully live.
    pub fn last_live(&self) -> Option<Instant> {
        self.last_live
    }

    /// The pause the last tick found, if any (then taken).
    pub fn take_pause(&mut self) -> Option<Duration> {
        self.paused.take()
    }

    /// Take `event` at `now`; the change of mode it makes, if any.
    pub fn on(&mut self, event: Event, now: Instant) -> Option<Change> {
        match event {
            Event::Live => {
                self.live = true;
                self.last_live = Some(now);
                self.lost = None;
                self.enter(Mode::Cluster, "connected")
            }
            Event::Answered if self.live => {
                self.last_live = Some(now);
                // A late answer after the watchdog gave up on etcd.
                self.enter(Mode::Cluster, "etcd answers again")
            }
            Event::Answered => None,
            Event::Lost(why) => {
                if self.live {
                    self.live = false;
                    self.lost = Some((now, why));
                }
                None
            }
            Event::Tick => {
                let gap = self.last_tick.map(|t| now.saturating_duration_since(t));
                self.last_tick = Some(now);
                if gap.is_some_and(|g| g > self.ttl) && self.mode != Mode::Local {
                    // Paused: the time away is no silence of etcd's.
                    self.paused = gap;
                    self.last_live = Some(now);
                    if !self.live {
                        self.lost = Some((now, "this process was paused".into()));
                    }
                    return None;
                }
                let silent_for = self.last_live.map(|t| now.saturating_duration_since(t));
                if self.mode != Mode::Local && silent_for.is_none_or(|s| s > self.ttl) {
                    let ttl = humantime::format_duration(self.ttl);
                    return self.enter(
                        Mode::Local,
                        &format!("no live etcd session for longer than lease-ttl ({ttl})"),
                    );
                }
                if self.mode == Mode::Cluster
                    && !self.live
                    && let Some((at, why)) = &self.lost
                    && now.saturating_duration_since(*at) > STALE_AFTER
                {
                    let why = why.clone();
                    return self.enter(Mode::Stale, &why);
                }
                None
            }
        }
    }

    fn enter(&mut self, to: Mode, why: &str) -> Option<Change> {
        if self.mode == to {
            return None;
        }
        let from = std::mem::replace(&mut self.mode, to);
        Some(Change {
            from,
            to,
            why: why.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: milliseconds since the start, the event, and the mode
    /// after it ('c', 's', 'l').
    fn run(rows: &[(u64, Event, char)]) {
        let t0 = Instant::now();
        let mut m = ModeMachine::new(Duration::from_secs(5));
        for (i, (ms, ev, want)) in rows.iter().enumerate() {
            m.on(ev.clone(), t0 + Duration::from_millis(*ms));
            let got = match m.mode() {
                Mode::Cluster => 'c',
                Mode::Stale => 's',
                Mode::Local => 'l',
            };
            assert_eq!(got, *want, "row {i}: {ev:?} at {ms} ms");
        }
    }

    fn lost() -> Event {
        Event::Lost("gone".into())
    }

    #[test]
    fn a_node_starts_local_and_joins_when_a_session_is_live() {
        run(&[
            (0, Event::Tick, 'l'),
            (100, Event::Tick, 'l'),
            (300, Event::Live, 'c'),
        ]);
    }

    #[test]
    fn a_reconnect_within_stale_after_changes_no_mode() {
        run(&[
            (0, Event::Live, 'c'),
            (500, Event::Answered, 'c'),
            (600, lost(), 'c'),
            (700, Event::Tick, 'c'),
            (3500, Event::Tick, 'c'),
            (3550, Event::Live, 'c'),
            (8000, Event::Tick, 'c'),
        ]);
    }

    #[test]
    fn stale_after_three_seconds_local_at_lease_ttl_after_last_live() {
        run(&[
            (0, Event::Live, 'c'),
            (1000, Event::Answered, 'c'),
            (1200, lost(), 'c'),
            (4100, Event::Tick, 'c'),
            (4300, Event::Tick, 's'),
            (5900, Event::Tick, 's'),
            (6100, Event::Tick, 'l'),
            (6300, Event::Live, 'c'),
        ]);
    }

    #[test]
    fn answers_of_a_session_that_is_not_live_keep_nobody_in_the_cluster() {
        // Keep-alives answered while the session is not live (a half-open
        // reconnect) move nothing: stale ends at lease-ttl after last live.
        run(&[
            (0, Event::Live, 'c'),
            (100, lost(), 'c'),
            (2000, Event::Answered, 'c'),
            (3200, Event::Tick, 's'),
            (4000, Event::Answered, 's'),
            (5200, Event::Tick, 'l'),
        ]);
    }

    #[test]
    fn a_late_answer_of_a_live_session_brings_it_back() {
        // No answer for longer than lease-ttl even though the session has
        // not ended yet: local; its next answer brings it back.
        run(&[
            (0, Event::Live, 'c'),
            (4900, Event::Tick, 'c'),
            (5100, Event::Tick, 'l'),
            (5200, Event::Answered, 'c'),
        ]);
    }

    #[test]
    fn a_pause_longer_than_lease_ttl_does_not_count_as_silence() {
        let t0 = Instant::now();
        let mut m = ModeMachine::new(Duration::from_secs(5));
        m.on(Event::Live, t0);
        m.on(Event::Tick, t0 + Duration::from_millis(100));
        // Nothing ran for 8 s.
        assert_eq!(m.on(Event::Tick, t0 + Duration::from_millis(8100)), None);
        assert_eq!(m.take_pause(), Some(Duration::from_secs(8)));
        assert_eq!(m.mode(), Mode::Cluster);
        // The session then finds its lease gone and ends: the clock starts
        // at the resume, not before the pause.
        m.on(
            Event::Lost("lease gone".into()),
            t0 + Duration::from_millis(8300),
        );
        let c = m.on(Event::Tick, t0 + Duration::from_millis(12_000));
        assert_eq!(
            c.map(|c| c.to),
            Some(Mode::Stale),
            "stale 3 s after the loss"
        );
        let c = m.on(Event::Tick, t0 + Duration::from_millis(13_200));
        assert_eq!(
            c.map(|c| c.to),
            Some(Mode::Local),
            "lease-ttl after the resume"
        );
    }
}
