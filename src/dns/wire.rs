//! Walking a DNS message's sections on the wire, without parsing it: for
//! the few places that need one record's bytes (the OPT of a request's ECS
//! check, of a truncated RRL response) or the question's end. Every read is
//! bounds-checked, so any bytes are safe to walk.

/// Where a message's OPT record is (from its owner name to the end of its
/// RDATA), if it has one in the additional section. Bounds-checked: any
/// bytes are safe to walk.
pub(crate) fn opt_record(m: &[u8]) -> Option<std::ops::Range<usize>> {
    let count = |i: usize| usize::from(u16::from_be_bytes([m[i], m[i + 1]]));
    if m.len() < 12 || count(10) == 0 {
        return None;
    }
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(m, i)? + 4;
    }
    for n in 0..an + ns + ar {
        let start = i;
        i = skip_name(m, i)?;
        let rtype = u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]);
        let rdlen = usize::from(u16::from_be_bytes([*m.get(i + 8)?, *m.get(i + 9)?]));
        let end = i + 10 + rdlen;
        m.get(i + 10..end)?;
        if rtype == 41 && n >= an + ns && i == start + 1 {
            return Some(start..end);
        }
        i = end;
    }
    None
}

/// The offset just past the name at `i`.
pub(crate) fn skip_name(m: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *m.get(i)?;
        match len {
            0 => return Some(i + 1),
            l if l & 0xc0 == 0xc0 => return Some(i + 2),
            l => i += 1 + usize::from(l),
        }
    }
}
