//! The rule that turns the cluster's votes on one endpoint into its
//! effective verdict. Pure: no etcd, no cells, no clock; every node runs it
//! over the same revisions and so reaches the same verdicts.
//!
//! A vote is one live node's fall/rise verdict. The rule:
//! - Only a vote *cast* is evidence: a node's first vote, or a vote that
//!   changed. Then the quorum over the votes counted now decides, if it
//!   can.
//!   A node that comes back (restarted, reconnected) votes again only once
//!   its own fall/rise decided, so its vote is fresh evidence too.
//! - A vote withdrawn (a node restarting, its lease expiring, probing
//!   stalled, a hand-off under `probers`) or restated (the same vote again)
//!   is no evidence: the verdict in force stands, even where the votes left
//!   would now decide otherwise. Such a verdict is *contested*
//!   ([`Tally::contested`]); if no vote is cast for `vote-grace`, the votes
//!   left decide after all (a node gone for good must not pin a verdict):
//!   one node writes that decision to etcd and every node takes it at the
//!   record's revision.
//! - When the votes cannot decide (a tie under `majority`, nobody votes),
//!   the verdict in force stands until evidence moves it.
//!
//! So a change of membership never changes a verdict by itself within
//! `vote-grace`, and the verdict in force is history: each node keeps it
//! ([`Tally`]), and etcd keeps the last decision (`verdict/<id>`) for nodes
//! that join later.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Quorum;

/// The verdict in force on an endpoint, and the etcd revision of the vote
/// that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Up or down.
    pub up: bool,
    /// Revision of the deciding vote (0: not decided by votes, e.g. taken
    /// from a quorum at load).
    pub rev: i64,
}

/// What the votes of one revision were, compared with the last ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A node voted for the first time, or changed its vote.
    Cast,
    /// Votes only went away, or came again unchanged.
    None,
}

/// Counted votes: node to up.
pub type Votes = BTreeMap<String, bool>;

/// Compare the votes counted before and after a revision.
pub fn evidence(before: &Votes, after: &Votes) -> Evidence {
    if after.iter().any(|(n, up)| before.get(n) != Some(up)) {
        Evidence::Cast
    } else {
        Evidence::None
    }
}

/// The quorum's word on `votes`: `Some(up)` when it decides, `None` when it
/// cannot (nobody votes; a tie under `majority`).
pub fn decide(q: Quorum, votes: &Votes) -> Option<bool> {
    let n = votes.len();
    if n == 0 {
        return None;
    }
    let down = votes.values().filter(|up| !**up).count();
    let up = n - down;
    match q {
        Quorum::Majority if down * 2 > n => Some(false),
        Quorum::Majority if up * 2 > n => Some(true),
        Quorum::Majority => None,
        Quorum::Any => Some(down == 0),
        Quorum::All => Some(down < n),
        Quorum::AtLeast(k) => Some(down < k as usize),
    }
}

/// One endpoint's votes as last counted and the verdict in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// The votes counted at the last revision.
    pub votes: Votes,
    /// The verdict in force (`None`: the cluster never decided it; each
    /// node keeps its own until it does).
    pub held: Option<Held>,
}

impl Tally {
    /// Take the votes counted at revision `rev`; returns the new verdict
    /// when it changed.
    pub fn step(&mut self, q: Quorum, votes: Votes, rev: i64) -> Option<bool> {
        let cast = evidence(&self.votes, &votes) == Evidence::Cast;
        self.votes = votes;
        if !cast {
            return None;
        }
        let up = decide(q, &self.votes)?;
        match self.held {
            Some(h) if h.up == up => None,
            _ => {
                self.held = Some(Held { up, rev });
                Some(up)
            }
        }
    }

    /// The verdict the votes counted now would give where it differs from
    /// the one in force (which stands because only withdrawals led here).
    pub fn contested(&self, q: Quorum) -> Option<bool> {
        decide(q, &self.votes).filter(|up| self.held.map(|h| h.up) != Some(*up))
    }

    /// A verdict decided elsewhere (a record in etcd, written by a node
    /// that saw a revision this node did not): taken when it is newer than
    /// the one in force. Returns the new verdict when it changed.
    pub fn adopt(&mut self, record: Held) -> Option<bool> {
        match self.held {
            Some(h) if h.rev >= record.rev => None,
            Some(h) => {
                self.held = Some(record);
                (h.up != record.up).then_some(record.up)
            }
            None => {
                self.held = Some(record);
                Some(record.up)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn votes(s: &str) -> Votes {
        // "ab-c+" : a, b down... written as name then sign.
        s.split_whitespace()
            .map(|v| {
                let (n, sign) = v.split_at(v.len() - 1);
                (n.to_string(), sign == "+")
            })
            .collect()
    }

    #[test]
    fn the_quorum_decides_only_when_it_can() {
        let m = Quorum::Majority;
        assert_eq!(decide(m, &votes("")), None);
        assert_eq!(decide(m, &votes("a- b- c+")), Some(false));
        assert_eq!(decide(m, &votes("a- b+ c+")), Some(true));
        assert_eq!(decide(m, &votes("a- b+")), None, "a tie decides nothing");
        assert_eq!(decide(m, &votes("a-")), Some(false));
        assert_eq!(decide(Quorum::Any, &votes("a- b+ c+")), Some(false));
        assert_eq!(decide(Quorum::Any, &votes("a+ b+")), Some(true));
        assert_eq!(decide(Quorum::All, &votes("a- b+")), Some(true));
        assert_eq!(decide(Quorum::All, &votes("a- b-")), Some(false));
        assert_eq!(decide(Quorum::AtLeast(2), &votes("a- b+")), Some(true));
        assert_eq!(decide(Quorum::AtLeast(2), &votes("a- b- c+")), Some(false));
    }

    /// Each row: the votes counted after a revision, and the verdict in
    /// force after it ('+' up, '-' down, '?' never decided).
    fn run(q: Quorum, rows: &[(&str, char)]) {
        let mut t = Tally::default();
        for (i, (v, want)) in rows.iter().enumerate() {
            t.step(q, votes(v), i as i64 + 1);
            let got = match t.held {
                None => '?',
                Some(h) if h.up => '+',
                Some(_) => '-',
            };
            assert_eq!(got, *want, "row {i}: votes {v:?} in {rows:?}");
        }
    }

    #[test]
    fn a_restart_of_one_of_two_deciding_nodes_moves_nothing() {
        // Three nodes, two see the primary fail; ns2 restarts (its vote goes,
        // then comes back decided by its own fall).
        run(
            Quorum::Majority,
            &[
                ("a+ b+ c+", '+'),
                ("a- b+ c+", '+'),
                ("a- b- c+", '-'),
                ("a- c+", '-'), // b restarting: 1 of 2 is no majority, it stands
                ("a- b- c+", '-'),
            ],
        );
    }

    #[test]
    fn withdrawals_never_decide_even_where_the_rest_would() {
        run(
            Quorum::Majority,
            &[
                ("a+ b+ c-", '+'),
                ("c-", '+'),    // a and b gone: c alone would say down
                ("c- d+", '+'), // d's first vote: 1-1, no decision
                ("c- d-", '-'), // d changed: 2 of 2
            ],
        );
        // `any`: the node that saw it down restarts; the others' up votes
        // do not bring it back.
        run(
            Quorum::Any,
            &[("a- b+ c+", '-'), ("b+ c+", '-'), ("a- b+ c+", '-')],
        );
        // `all`: the one node that saw it up dies; the others' down votes
        // do not fail it by themselves.
        run(Quorum::All, &[("a- b- c+", '+'), ("a- b-", '+')]);
    }

    #[test]
    fn a_verdict_that_stands_on_withdrawals_alone_is_contested() {
        let mut t = Tally::default();
        let q = Quorum::All;
        t.step(q, votes("a- b- c+"), 1);
        assert_eq!(t.contested(q), None);
        t.step(q, votes("a- b-"), 2);
        assert_eq!(t.contested(q), Some(false), "the votes left say down");
        // A tie is not contested: nothing would decide it.
        let mut t = Tally::default();
        let m = Quorum::Majority;
        t.step(m, votes("a- b- c+"), 1);
        t.step(m, votes("a- c+"), 2);
        assert_eq!(t.contested(m), None);
        // Decided by the record the grace leads to.
        let mut t = Tally::default();
        t.step(q, votes("a- b- c+"), 1);
        t.step(q, votes("a- b-"), 2);
        assert_eq!(t.adopt(Held { up: false, rev: 2 }), Some(false));
        assert_eq!(t.contested(q), None);
    }

    #[test]
    fn a_vote_that_comes_back_is_fresh_evidence_a_restated_one_is_not() {
        run(
            Quorum::Majority,
            &[
                ("a- b- c- d+ e+", '-'),
                ("c- d+ e+", '-'),       // a and b restarting: contested, stands
                ("c- d+ e+", '-'),       // d restates its vote: no evidence
                ("a- c- d+ e+", '-'),    // a back, decided down again: 2-2
                ("a- b+ c- d+ e+", '+'), // b back and sees it up: 3 of 5
            ],
        );
    }

    #[test]
    fn two_nodes_need_both_to_change_the_verdict_under_majority() {
        run(
            Quorum::Majority,
            &[
                ("a+ b+", '+'),
                ("a- b+", '+'), // one bad vantage point fails nothing
                ("a- b-", '-'),
                ("a+ b-", '-'), // one sees it back: not yet
                ("a+ b+", '+'),
            ],
        );
        // `any`: one node's down fails it; both must see it up again.
        run(
            Quorum::Any,
            &[("a+ b+", '+'), ("a- b+", '-'), ("a+ b+", '+')],
        );
    }

    #[test]
    fn nothing_is_decided_before_a_vote() {
        run(
            Quorum::Majority,
            &[("", '?'), ("a+ b-", '?'), ("a+ b- c+", '+')],
        );
    }

    #[test]
    fn newer_records_are_adopted_older_ones_ignored() {
        let mut t = Tally::default();
        assert_eq!(t.adopt(Held { up: false, rev: 5 }), Some(false));
        assert_eq!(t.adopt(Held { up: true, rev: 4 }), None, "older");
        assert_eq!(t.adopt(Held { up: false, rev: 9 }), None, "same verdict");
        assert_eq!(t.held, Some(Held { up: false, rev: 9 }));
        t.step(Quorum::Majority, votes("a+"), 12);
        assert_eq!(
            t.adopt(Held { up: false, rev: 10 }),
            None,
            "decided later here"
        );
        assert_eq!(t.held, Some(Held { up: true, rev: 12 }));
    }
}
