//! DNSSEC (issue 20): keys made, read and turned into the DS records a
//! parent needs (`gslb dnssec keygen`, `gslb dnssec ds`), in BIND's
//! key-file format so that keys move between gslb and the tools operators
//! already use ([`keyfile`]); answers signed online ([`sign`]). Below the
//! model: it knows hickory's records and ring's keys, nothing of gslb's.

pub mod keyfile;
pub mod sign;
