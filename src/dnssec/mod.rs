//! DNSSEC (issue 20). So far its keys: made, read and turned into the DS
//! records a parent needs (`gslb dnssec keygen`, `gslb dnssec ds`), in
//! BIND's key-file format so that keys move between gslb and the tools
//! operators already use. Signing comes next.

pub mod keyfile;
