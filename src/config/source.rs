//! A zone or settings file's text: byte offsets to `file:line:column`, the
//! problems found in it, and deserialisation that reports every unknown key.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{ConfigError, MAX_TTL};
use crate::model::Origin;

/// A zone or settings file's text. Errors name the file; text that is not
/// UTF-8 is located at its first bad byte, by line and column.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigError> {
    let whole_file = |msg: String| ConfigError {
        origin: Origin {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
        },
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| whole_file(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let text = std::str::from_utf8(&e.as_bytes()[..good]).expect("valid up to here");
        let origin = Source::new(path, text).origin(good);
        ConfigError {
            origin,
            msg: format!(
                "not UTF-8: byte 0x{:02x} cannot start a character here (zone and settings files are UTF-8 text)",
                e.as_bytes()[good]
            ),
        }
    })
}

/// A file's text with its line starts, to turn byte spans into line:column.
pub(super) struct Source<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            file,
            text,
            line_starts,
        }
    }

    pub(super) fn origin(&self, offset: usize) -> Origin {
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let col = self.text[start..offset.min(self.text.len())]
            .chars()
            .count()
            + 1;
        Origin {
            file: self.file.to_path_buf(),
            line,
            col,
        }
    }

    pub(super) fn at<T>(&self, s: &Spanned<T>) -> Origin {
        self.origin(s.span().start)
    }
}

/// Collects the problems of one file.
pub(super) struct Ctx<'s, 'a> {
    pub(super) src: &'s Source<'a>,
    pub(super) errors: &'s mut Vec<ConfigError>,
}

impl Ctx<'_, '_> {
    pub(super) fn err<T>(&mut self, at: &Spanned<T>, msg: impl Into<String>) {
        let origin = self.src.at(at);
        self.errors.push(ConfigError {
            origin,
            msg: msg.into(),
        });
    }

    pub(super) fn err_at(&mut self, origin: Origin, msg: impl Into<String>) {
        self.errors.push(ConfigError {
            origin,
            msg: msg.into(),
        });
    }

    /// An integer field within `lo..=hi`, else an error naming `what`.
    pub(super) fn int(
        &mut self,
        v: &Option<Spanned<i64>>,
        what: &str,
        lo: i64,
        hi: i64,
        default: i64,
    ) -> i64 {
        match v {
            None => default,
            Some(s) if (lo..=hi).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.err(
                    s,
                    format!("{what} {} is out of range ({lo}..={hi})", s.get_ref()),
                );
                default
            }
        }
    }

    pub(super) fn ttl(&mut self, v: &Option<Spanned<i64>>, default: u32) -> u32 {
        self.int(v, "TTL", 0, MAX_TTL, i64::from(default)) as u32
    }

    pub(super) fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        what: &str,
        default: Duration,
    ) -> Duration {
        match v {
            None => default,
            Some(s) => match humantime::parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.err(
                        s,
                        format!(
                            "{what} {:?} is not a duration like \"5s\" or \"200ms\": {e}",
                            s.get_ref()
                        ),
                    );
                    default
                }
            },
        }
    }
}

/// Remove the key written at `offset` from the tree; whether one was.
fn remove_key_at(table: &mut toml::de::DeTable<'_>, offset: usize) -> bool {
    use toml::de::DeValue;
    let found = table
        .iter()
        .find(|(k, _)| k.span().start == offset)
        .map(|(k, _)| k.get_ref().to_string());
    if let Some(k) = found {
        table.remove(k.as_str());
        return true;
    }
    fn in_value(v: &mut DeValue<'_>, offset: usize) -> bool {
        match v {
            DeValue::Table(t) => remove_key_at(t, offset),
            DeValue::Array(a) => a.iter_mut().any(|i| in_value(i.get_mut(), offset)),
            _ => false,
        }
    }
    table.iter_mut().any(|(_, v)| in_value(v.get_mut(), offset))
}

/// Most unknown keys one file reports (each costs a parse).
const MAX_UNKNOWN_KEYS: usize = 64;

/// Parse a zone or settings file. Every unknown key is reported with its position, not
/// only the first: on serde's "unknown field" error the file is parsed
/// again without that key (and those found before it) and deserialised
/// again, so a typo in one table hides neither the others nor the semantic
/// errors found later.
pub(super) fn parse_collecting<T: serde::de::DeserializeOwned>(
    src: &Source<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    parse_piece(src, src.text, None, errors)
}

/// Parse `text`, a piece of `src` (config/split.rs), as
/// [`parse_collecting`] does: `to_file` moves an offset in `text` to the
/// file's (`None`: `text` is the whole file), so every span of the result
/// and every error is where it is in the file.
pub(super) fn parse_piece<T: serde::de::DeserializeOwned>(
    src: &Source<'_>,
    text: &str,
    to_file: Option<&dyn Fn(usize) -> usize>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let whole_file = || Origin {
        file: src.file.to_path_buf(),
        line: 1,
        col: 1,
    };
    let parse = || -> Result<Spanned<toml::de::DeTable<'_>>, toml::de::Error> {
        let mut tree = toml::de::DeTable::parse(text)?;
        if let Some(to_file) = to_file {
            move_spans(tree.get_mut(), to_file);
        }
        Ok(tree)
    };
    let mut tree = match parse() {
        Ok(t) => t,
        Err(e) => {
            let origin = e.span().map_or_else(whole_file, |s| {
                src.origin(to_file.map_or(s.start, |f| f(s.start)))
            });
            errors.push(ConfigError {
                origin,
                msg: e.message().trim().to_string(),
            });
            return None;
        }
    };
    // Where the keys taken out so far were written (file offsets).
    let mut removed = Vec::new();
    for _ in 0..=MAX_UNKNOWN_KEYS {
        // The tree is deserialised as it is, not cloned: it is most of the
        // memory a large file costs. A retry parses the text again.
        let parsed: Result<T, toml::de::Error> =
            serde::Deserialize::deserialize(toml::de::Deserializer::from(tree));
        let e = match parsed {
            Ok(f) => return Some(f),
            Err(e) => e,
        };
        // A field missing once a misspelt one was taken out is that typo
        // again (`vaule` for `value`): already reported, with the names
        // expected.
        if !removed.is_empty() && e.message().starts_with("missing field") {
            return None;
        }
        // The tree's spans are the file's already.
        errors.push(ConfigError {
            origin: e.span().map_or_else(whole_file, |s| src.origin(s.start)),
            msg: e.message().trim().to_string(),
        });
        let unknown = e.message().starts_with("unknown field");
        match e.span() {
            Some(span) if unknown => removed.push(span.start),
            _ => return None,
        }
        tree = parse().ok()?;
        if !removed.iter().all(|&at| remove_key_at(tree.get_mut(), at)) {
            return None;
        }
    }
    None
}

/// Move every span of the tree from a piece's offsets to the file's.
fn move_spans(table: &mut toml::de::DeTable<'_>, to_file: &dyn Fn(usize) -> usize) {
    let old = std::mem::take(table);
    for (key, mut value) in old {
        let span = moved(key.span(), to_file);
        move_value(&mut value, to_file);
        table.insert(Spanned::new(span, key.into_inner()), value);
    }
}

fn move_value(v: &mut Spanned<toml::de::DeValue<'_>>, to_file: &dyn Fn(usize) -> usize) {
    use toml::de::DeValue;
    let span = moved(v.span(), to_file);
    let mut inner = std::mem::replace(v, Spanned::new(0..0, DeValue::Boolean(false))).into_inner();
    match &mut inner {
        DeValue::Table(t) => move_spans(t, to_file),
        DeValue::Array(a) => a.iter_mut().for_each(|i| move_value(i, to_file)),
        _ => {}
    }
    *v = Spanned::new(span, inner);
}

fn moved(span: std::ops::Range<usize>, to_file: &dyn Fn(usize) -> usize) -> std::ops::Range<usize> {
    let start = to_file(span.start);
    start..start + span.len()
}
