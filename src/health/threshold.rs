//! The fall/rise threshold machine of one endpoint (keepalived and HAProxy
//! semantics): an up endpoint goes down after exactly `fall` consecutive
//! failures, a down one comes up after exactly `rise` consecutive successes,
//! and one result the other way resets the run.
//!
//! A verdict is *decided* once fall/rise stands behind it: right after a
//! transition, or once as many consecutive results as would have made it
//! (`rise` successes for up, `fall` failures for down) agree with the state
//! it started in. A starting state (up at start, or restored from the state
//! file) is not evidence until then, and a cluster never hears of it.

/// Threshold state of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    up: bool,
    /// Consecutive results that disagree with `up`.
    run: u32,
    /// Consecutive results that agree with `up` (saturating).
    agree: u32,
    /// fall/rise stands behind `up`.
    decided: bool,
}

impl Threshold {
    /// Start in this state with no run.
    pub fn new(up: bool) -> Self {
        Threshold::resume(up, 0)
    }

    /// Resume in a state with a run in progress (after a reload).
    pub fn resume(up: bool, run: u32) -> Self {
        Threshold {
            up,
            run,
            agree: 0,
            decided: false,
        }
    }

    /// Whether fall/rise stands behind the current verdict (see the module
    /// documentation): only then is it evidence.
    pub fn decided(&self) -> bool {
        self.decided
    }

    /// Forget that the verdict was decided (probing stalled): it must be
    /// confirmed again before it counts.
    pub fn undecide(&mut self) {
        self.decided = false;
        self.agree = 0;
    }

    /// Current verdict.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Length of the run toward a transition.
    pub fn run(&self) -> u32 {
        self.run
    }

    /// A transition is under way: the fast re-probe applies.
    pub fn pending(&self) -> bool {
        self.run > 0
    }

    /// Feed one probe result; returns the new state when it changes.
    pub fn observe(&mut self, ok: bool, fall: u32, rise: u32) -> Option<bool> {
        if ok == self.up {
            self.run = 0;
            self.agree = self.agree.saturating_add(1);
            // What it would take to reach this state: rise successes for
            // up, fall failures for down.
            let confirm = if self.up { rise } else { fall };
            if self.agree >= confirm.max(1) {
                self.decided = true;
            }
            return None;
        }
        self.agree = 0;
        self.run += 1;
        let needed = if self.up { fall } else { rise };
        if self.run >= needed.max(1) {
            self.up = ok;
            self.run = 0;
            self.decided = true;
            Some(ok)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Threshold, results: &str, fall: u32, rise: u32) -> String {
        results
            .chars()
            .map(|c| match t.observe(c == '+', fall, rise) {
                Some(true) => 'U',
                Some(false) => 'D',
                None => '.',
            })
            .collect()
    }

    #[test]
    fn goes_down_after_exactly_fall_failures() {
        let mut t = Threshold::new(true);
        assert_eq!(feed(&mut t, "--", 3, 2), "..");
        assert!(t.is_up(), "still up after the 2nd failure");
        assert!(t.pending());
        assert_eq!(feed(&mut t, "-", 3, 2), "D", "down right after the 3rd");
        assert!(!t.is_up());
        assert!(!t.pending());
    }

    #[test]
    fn comes_up_after_exactly_rise_successes() {
        let mut t = Threshold::new(false);
        assert_eq!(feed(&mut t, "+", 3, 2), ".");
        assert!(!t.is_up());
        assert_eq!(feed(&mut t, "+", 3, 2), "U");
        assert!(t.is_up());
    }

    #[test]
    fn one_result_the_other_way_resets_the_run() {
        let mut t = Threshold::new(true);
        assert_eq!(
            feed(&mut t, "--+--+--+", 3, 2),
            ".........",
            "a blip never fails a healthy endpoint"
        );
        assert!(t.is_up());
        assert_eq!(feed(&mut t, "---", 3, 2), "..D");
        assert_eq!(
            feed(&mut t, "+-+-+-", 3, 2),
            "......",
            "flapping never brings it back"
        );
        assert_eq!(feed(&mut t, "++", 3, 2), ".U");
    }

    #[test]
    fn flapping_backend_full_sequence() {
        let mut t = Threshold::new(true);
        assert_eq!(
            feed(&mut t, "+++---+++--++-+---", 3, 2),
            ".....D.U.........D"
        );
    }

    #[test]
    fn fall_and_rise_of_one_are_immediate() {
        let mut t = Threshold::new(true);
        assert_eq!(feed(&mut t, "-+-+", 1, 1), "DUDU");
    }

    #[test]
    fn a_starting_state_is_decided_only_by_as_many_results_as_would_make_it() {
        // Up at start: rise (2) successes confirm it.
        let mut t = Threshold::new(true);
        assert!(!t.decided(), "a starting state is no evidence");
        feed(&mut t, "+", 3, 2);
        assert!(!t.decided());
        feed(&mut t, "+", 3, 2);
        assert!(t.decided());
        // Restored down: fall (3) failures confirm it; a success resets.
        let mut t = Threshold::new(false);
        feed(&mut t, "--+--", 3, 2);
        assert!(!t.decided());
        feed(&mut t, "-", 3, 2);
        assert!(t.decided());
        // A transition is decided by definition.
        let mut t = Threshold::new(true);
        assert_eq!(feed(&mut t, "---", 3, 2), "..D");
        assert!(t.decided());
        // A stall forgets it; the same run confirms it again.
        t.undecide();
        assert!(!t.decided());
        feed(&mut t, "---", 3, 2);
        assert!(t.decided());
    }

    #[test]
    fn resume_keeps_a_run_in_progress() {
        let mut t = Threshold::resume(true, 2);
        assert_eq!(feed(&mut t, "-", 3, 2), "D");
    }
}
