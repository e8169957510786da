//! The `[cluster]` settings: validated, plain data.

use std::path::PathBuf;
use std::time::Duration;

/// When the cluster calls an endpoint down, given how many live observers
/// that probe it say down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// More than half of them (the default).
    Majority,
    /// One of them.
    Any,
    /// Every one of them.
    All,
    /// At least this many.
    AtLeast(u32),
}

impl Quorum {
    /// The effective verdict from `up` and `down` observations: `None` when
    /// nobody observes the endpoint (the caller falls back to its own).
    pub fn decide(self, up: usize, down: usize) -> Option<bool> {
        let n = up + down;
        if n == 0 {
            return None;
        }
        let is_down = match self {
            Quorum::Majority => down * 2 > n,
            Quorum::Any => down >= 1,
            Quorum::All => down == n,
            Quorum::AtLeast(k) => down >= k as usize,
        };
        Some(!is_down)
    }

    /// As written in the settings file and shown in status.
    pub fn describe(self) -> String {
        match self {
            Quorum::Majority => "majority".into(),
            Quorum::Any => "any".into(),
            Quorum::All => "all".into(),
            Quorum::AtLeast(n) => n.to_string(),
        }
    }
}

/// How to reach etcd and take part in a cluster.
#[derive(Clone, PartialEq)]
pub struct ClusterSettings {
    /// Cluster name: the etcd key prefix is `/gslb/<name>/`.
    pub name: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// etcd endpoints (`http://` or `https://` URLs).
    pub etcd: Vec<String>,
    /// The quorum rule.
    pub quorum: Quorum,
    /// How long a silent node's observations stay valid (whole seconds).
    pub lease_ttl: Duration,
    /// How long a verdict that only withdrawn votes hold stands before the
    /// votes left decide.
    pub vote_grace: Duration,
    /// etcd user name.
    pub user: Option<String>,
    /// etcd password (never logged or shown).
    pub password: Option<String>,
    /// CA bundle that signs etcd's server certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    pub key_file: Option<PathBuf>,
}

impl ClusterSettings {
    /// The etcd key prefix of this cluster.
    pub fn prefix(&self) -> String {
        format!("/gslb/{}/", self.name)
    }
}

// By hand: the password must never reach a log line or a panic message.
impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("etcd", &self.etcd)
            .field("quorum", &self.quorum)
            .field("lease_ttl", &self.lease_ttl)
            .field("vote_grace", &self.vote_grace)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Quorum;

    #[test]
    fn majority_needs_more_than_half_saying_down() {
        let q = Quorum::Majority;
        assert_eq!(q.decide(3, 0), Some(true));
        assert_eq!(q.decide(2, 1), Some(true), "one of three cannot fail it");
        assert_eq!(q.decide(1, 2), Some(false), "two of three do");
        assert_eq!(q.decide(1, 1), Some(true), "a tie is not a majority");
        assert_eq!(q.decide(0, 1), Some(false));
        assert_eq!(q.decide(0, 0), None);
    }

    #[test]
    fn any_all_and_counts() {
        assert_eq!(Quorum::Any.decide(2, 1), Some(false));
        assert_eq!(Quorum::Any.decide(3, 0), Some(true));
        assert_eq!(Quorum::All.decide(1, 2), Some(true));
        assert_eq!(Quorum::All.decide(0, 3), Some(false));
        assert_eq!(Quorum::AtLeast(2).decide(2, 1), Some(true));
        assert_eq!(Quorum::AtLeast(2).decide(1, 2), Some(false));
        // Fewer live observers than N: never down.
        assert_eq!(Quorum::AtLeast(2).decide(0, 1), Some(true));
    }
}
