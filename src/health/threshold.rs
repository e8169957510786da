//! The fall/rise threshold machine of one endpoint (keepalived and HAProxy
//! semantics): an up endpoint goes down after exactly `fall` consecutive
//! failures, a down one comes up after exactly `rise` consecutive successes,
//! and one result the other way resets the run.

/// Threshold state of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    up: bool,
    /// Consecutive results that disagree with `up`.
    run: u32,
}

impl Threshold {
    /// Start in this state with no run.
    pub fn new(up: bool) -> Self {
        Threshold { up, run: 0 }
    }

    /// Resume in a state with a run in progress (after a reload).
    pub fn resume(up: bool, run: u32) -> Self {
        Threshold { up, run }
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
            return None;
        }
        self.run += 1;
        let needed = if self.up { fall } else { rise };
        if self.run >= needed.max(1) {
            self.up = ok;
            self.run = 0;
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
    fn resume_keeps_a_run_in_progress() {
        let mut t = Threshold::resume(true, 2);
        assert_eq!(feed(&mut t, "-", 3, 2), "D");
    }
}
