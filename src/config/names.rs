//! Names in a zone file: owner names relative to the apex, and the checks
//! and regions a file defines, looked up by name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hickory_proto::rr::Name;

/// Parse a domain name in the zone file: `@` is the apex, a trailing dot makes
/// it absolute, anything else is relative to the apex.
pub(crate) fn parse_name(s: &str, apex: &Name) -> Result<Name, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty name".into());
    }
    if s == "@" {
        return Ok(apex.clone());
    }
    let name = Name::from_ascii(s).map_err(|e| format!("invalid name {s:?}: {e}"))?;
    if name.is_fqdn() {
        Ok(name)
    } else {
        name.append_domain(apex)
            .map_err(|e| format!("invalid name {s:?}: {e}"))
    }
}

/// Like [`parse_name`], and the name must be the apex or below it; a `*` is
/// only allowed as the leftmost label.
pub(super) fn parse_owner(s: &str, apex: &Name) -> Result<Name, String> {
    let name = parse_name(s, apex)?;
    if !apex.zone_of(&name) {
        return Err(format!("name {name} is outside the zone {apex}"));
    }
    if name.iter().skip(1).any(|l| l == b"*") {
        return Err(format!(
            "name {name}: `*` is only allowed as the leftmost label of a wildcard"
        ));
    }
    Ok(name)
}

/// Checks or regions of a zone: the valid ones, and the names of invalid ones.
pub(super) struct Defined<T> {
    pub(super) valid: BTreeMap<String, Arc<T>>,
    invalid: BTreeSet<String>,
    /// Every name with its offset in the file: messages list them in the
    /// file's order.
    order: Vec<(usize, String)>,
}

impl<T> Default for Defined<T> {
    fn default() -> Self {
        Defined {
            valid: BTreeMap::new(),
            invalid: Default::default(),
            order: Vec::new(),
        }
    }
}

impl<T> Defined<T> {
    pub(super) fn insert(&mut self, name: &str, at: usize, built: Option<Arc<T>>) {
        self.order.push((at, name.to_string()));
        match built {
            Some(v) => {
                self.valid.insert(name.to_string(), v);
            }
            None => {
                self.invalid.insert(name.to_string());
            }
        }
    }

    /// The item called `name`; `Err(None)` when it is defined but invalid
    /// (already reported), `Err(Some(msg))` when it does not exist.
    pub(super) fn get(&self, what: &str, name: &str) -> Result<Arc<T>, Option<String>> {
        if let Some(v) = self.valid.get(name) {
            return Ok(v.clone());
        }
        if self.invalid.contains(name) {
            return Err(None);
        }
        let mut order = self.order.clone();
        order.sort();
        let known: Vec<&str> = order.iter().map(|(_, n)| n.as_str()).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        Err(Some(format!("unknown {what} {name:?} (defined: {known})")))
    }
}
