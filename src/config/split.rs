//! A large zone file read in pieces.
//!
//! The toml crate lexes a whole document into a token vector, builds a
//! tree of it, then deserialises the tree: about 38 bytes of peak memory per
//! byte of text, so a zone of a million `[[record]]` tables (73 MB of TOML)
//! needed 2.5 GB to load. Its `[[record]]` tables are independent of one
//! another, so here the file is cut, at table headers, into the head (every
//! table but the records, kept in one document so TOML's own rules about it
//! still apply) and runs of at most N records, each parsed on its own and
//! dropped once its records are compiled. Headers are found with
//! toml_parser's streaming lexer, so a `[[record]]` inside a multi-line
//! string or a multi-line array is not mistaken for one.
//!
//! Every span a piece yields is moved back to the file's own offsets, so an
//! error in a piece reads `file:line:column` exactly as in the whole file.

use std::ops::Range;

use toml_parser::lexer::TokenKind;

/// How a file is read: its head and its runs of records.
pub(super) struct Plan {
    /// The file's text outside the record tables, in order.
    pub(super) head: String,
    /// For each piece of `head`: where it starts in `head` and in the file.
    head_map: Vec<(usize, usize)>,
    /// Runs of consecutive `[[record]]` tables (with their sub-tables), as
    /// byte ranges of the file.
    pub(super) chunks: Vec<Range<usize>>,
}

impl Plan {
    /// The file offset of an offset in `head`.
    pub(super) fn head_offset(&self, at: usize) -> usize {
        let i = self.head_map.partition_point(|&(h, _)| h <= at) - 1;
        let (h, f) = self.head_map[i];
        f + (at - h)
    }
}

/// The plan for a file with more than `per_chunk` `[[record]]` tables, or
/// `None` to read it whole.
pub(super) fn plan(text: &str, per_chunk: usize) -> Option<Plan> {
    let headers = headers(text);
    if headers.iter().filter(|h| h.array_of_records).count() <= per_chunk {
        return None;
    }
    let mut plan = Plan {
        head: String::new(),
        head_map: Vec::new(),
        chunks: Vec::new(),
    };
    let add_head = |plan: &mut Plan, range: Range<usize>| {
        if !range.is_empty() {
            plan.head_map.push((plan.head.len(), range.start));
            plan.head.push_str(&text[range]);
        }
    };
    // Before the first header: the root table.
    add_head(&mut plan, 0..headers.first().map_or(text.len(), |h| h.at));
    let mut run: Option<(usize, usize)> = None; // start, tables in it
    for (i, h) in headers.iter().enumerate() {
        let end = headers.get(i + 1).map_or(text.len(), |n| n.at);
        if !h.record {
            if let Some((start, _)) = run.take() {
                plan.chunks.push(start..h.at);
            }
            add_head(&mut plan, h.at..end);
            continue;
        }
        match &mut run {
            // A new `[[record]]` in a full run starts the next one; a
            // `[record.x]` sub-table stays with the table it belongs to.
            Some((start, n)) if h.array_of_records && *n == per_chunk => {
                plan.chunks.push(*start..h.at);
                run = Some((h.at, 1));
            }
            Some((_, n)) => *n += usize::from(h.array_of_records),
            None => run = Some((h.at, usize::from(h.array_of_records))),
        }
    }
    if let Some((start, _)) = run {
        plan.chunks.push(start..text.len());
    }
    if plan.head_map.is_empty() {
        plan.head_map.push((0, 0));
    }
    Some(plan)
}

/// A table header: where its `[` is, and whether it is a record table.
struct Header {
    at: usize,
    /// The first key is `record` (`[[record]]`, `[record.x]`, ...).
    record: bool,
    /// Exactly `[[record]]`: one more record.
    array_of_records: bool,
}

/// Every table header of the document, in order. A header is a `[` that
/// starts a line outside any value.
fn headers(text: &str) -> Vec<Header> {
    let source = toml_parser::Source::new(text);
    let mut tokens = source.lex();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(t) = tokens.next() {
        match t.kind() {
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Newline => line_start = depth == 0,
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                // The header: `[` or `[[`, keys, up to the end of the line.
                let at = t.span().start();
                let mut array = false;
                let mut keys: Vec<&str> = Vec::new();
                let mut dotted = false;
                for t in tokens.by_ref() {
                    let raw = &text[t.span().start()..t.span().end()];
                    match t.kind() {
                        TokenKind::Newline => break,
                        TokenKind::LeftSquareBracket if keys.is_empty() => array = true,
                        TokenKind::Dot => dotted = true,
                        TokenKind::Atom if keys.is_empty() || dotted => {
                            // A bare `a.b` may lex as one atom.
                            keys.extend(raw.split('.').map(str::trim));
                            dotted = false;
                        }
                        TokenKind::BasicString | TokenKind::LiteralString
                            if keys.is_empty() || dotted =>
                        {
                            keys.push(raw.get(1..raw.len().saturating_sub(1)).unwrap_or(""));
                            dotted = false;
                        }
                        _ => {}
                    }
                }
                let record = keys.first() == Some(&"record");
                out.push(Header {
                    at,
                    record,
                    array_of_records: record && array && keys.len() == 1,
                });
                line_start = true;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                depth += 1;
                line_start = false;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.saturating_sub(1);
                line_start = false;
            }
            _ => line_start = false,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str, n: usize) -> (String, Vec<&str>) {
        let p = plan(text, n).expect("split");
        let chunks = p.chunks.iter().map(|r| &text[r.clone()]).collect();
        (p.head, chunks)
    }

    #[test]
    fn records_are_cut_in_runs_and_the_rest_is_the_head() {
        let text = "[zone]\nname = \"a.\"\n\n[[record]]\nname = \"x\"\n[[record]]\nname = \"y\"\n[record.sub]\nk = 1\n[check.c]\nt = \"\"\"\n[[record]]\n\"\"\"\n[[record]]\nv = [\n[[1]],\n]\n";
        let (head, chunks) = pieces(text, 1);
        assert_eq!(
            head,
            "[zone]\nname = \"a.\"\n\n[check.c]\nt = \"\"\"\n[[record]]\n\"\"\"\n"
        );
        assert_eq!(
            chunks,
            [
                "[[record]]\nname = \"x\"\n",
                "[[record]]\nname = \"y\"\n[record.sub]\nk = 1\n",
                "[[record]]\nv = [\n[[1]],\n]\n",
            ]
        );
        let p = plan(text, 1).unwrap();
        // `[check.c]` is at its own place in the file.
        let in_head = head.find("[check.c]").unwrap();
        assert_eq!(p.head_offset(in_head), text.find("[check.c]").unwrap());
        assert_eq!(p.head_offset(0), 0);
    }

    #[test]
    fn quoted_and_spaced_record_headers_count() {
        let text = "[[\"record\"]]\na = 1\n[['record']]\na = 2\n  [[ record ]]\na = 3\n";
        let (head, chunks) = pieces(text, 2);
        assert_eq!(head, "");
        assert_eq!(chunks.len(), 2);
        assert!(plan(text, 3).is_none(), "three records fit in one piece");
    }
}
