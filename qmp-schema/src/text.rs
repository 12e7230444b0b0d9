//! Words for users: close-match suggestions, and values and types described by what they
//! are (QEMU's masked type numbers never appear).

use std::fmt::Write as _;

use serde_json::Value;

use crate::schema::{Id, JsonType, Kind, Schema};

/// Longest name compared for a suggestion; longer ones are not typos of a QAPI name.
const MAX_SUGGEST_LEN: usize = 64;
/// Enum values listed in a type description before "... (N in all)".
const LISTED_VALUES: usize = 8;
/// How deep a type description nests (`array of array of ...`, alternates of alternates).
const DESCRIBE_DEPTH: usize = 3;

/// The candidate closest to `wanted` by edit distance, if it is close enough to be a typo:
/// at most a third of the longer name's length (and at least 1) edits away. Of equally
/// close candidates, the one nearest in length wins, then the first.
pub(crate) fn closest<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if wanted.len() > MAX_SUGGEST_LEN {
        return None;
    }
    let mut best: Option<((usize, usize), &str)> = None;
    for candidate in candidates {
        if candidate.len() > MAX_SUGGEST_LEN || candidate == wanted {
            continue;
        }
        let limit = (wanted.len().max(candidate.len()) / 3).max(1);
        let limit = best.map_or(limit, |((d, _), _)| limit.min(d));
        let Some(distance) = edit_distance(wanted, candidate, limit) else { continue };
        let score = (distance, wanted.len().abs_diff(candidate.len()));
        if best.is_none_or(|(best_score, _)| score < best_score) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Edit distance between `a` and `b` counting insertions, deletions, substitutions and
/// swaps of two neighbours (optimal string alignment), by `char` with ASCII case ignored;
/// `None` when it exceeds `limit`. Names are short (bounded by [`MAX_SUGGEST_LEN`]).
fn edit_distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    // Three rows of the distance table: two back (for swaps), the previous and the current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        let mut row_min = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j - 1] + cost).min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
            row_min = row_min.min(best);
        }
        if row_min > limit {
            return None;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    Some(previous[b.len()]).filter(|&d| d <= limit)
}

/// A short description of a JSON value for "found ..." texts.
pub(crate) fn describe_value(value: &Value) -> String {
    const MAX_SHOWN: usize = 40;
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > MAX_SHOWN => {
            format!("string \"{}...\"", s.chars().take(MAX_SHOWN).collect::<String>())
        }
        Value::String(s) => format!("string \"{s}\""),
        Value::Array(items) => format!("an array ({} items)", items.len()),
        Value::Object(_) => "an object".into(),
    }
}

impl Schema {
    /// What a value of type `id` must look like, in a few words: `str`, `int`,
    /// `one of "a", "b"`, `array of str`, `object`, `str or null`.
    pub(crate) fn describe_type(&self, id: Id) -> String {
        let mut out = String::new();
        self.write_type(id, DESCRIBE_DEPTH, &mut out);
        out
    }

    fn write_type(&self, id: Id, depth: usize, out: &mut String) {
        let entry = self.entry(id);
        match &entry.kind {
            Kind::Builtin(json_type) => out.push_str(builtin_name(&entry.name, *json_type)),
            Kind::Enum(def) => {
                out.push_str("one of ");
                for (i, value) in def.values.iter().take(LISTED_VALUES).enumerate() {
                    let _ = write!(out, "{}\"{}\"", if i == 0 { "" } else { ", " }, value.name);
                }
                if def.values.len() > LISTED_VALUES {
                    let _ = write!(out, ", ... ({} in all)", def.values.len());
                }
            }
            Kind::Array { element } => {
                out.push_str("array of ");
                if depth == 0 {
                    out.push_str("...");
                } else {
                    self.write_type(*element, depth - 1, out);
                }
            }
            Kind::Object(def) if def.members.is_empty() && def.variants.is_empty() => {
                out.push_str("empty object");
            }
            Kind::Object(_) => out.push_str("object"),
            Kind::Alternate { branches } => {
                for (i, &branch) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" or ");
                    }
                    if depth == 0 {
                        out.push_str("...");
                        break;
                    }
                    self.write_type(branch, depth - 1, out);
                }
            }
            Kind::Command(_) | Kind::Event { .. } => out.push_str("(not a type)"),
            Kind::Other(meta) => {
                let _ = write!(out, "a {meta}");
            }
        }
    }
}

/// A built-in type's QAPI name; QEMU reports every integer type (`uint8`, `size`, ...) as
/// `int`, so that is the finest name there is.
pub(crate) fn builtin_name(name: &str, json_type: JsonType) -> &str {
    match json_type {
        JsonType::String => "str",
        JsonType::Int => "int",
        JsonType::Number => "number",
        JsonType::Boolean => "bool",
        JsonType::Null => "null",
        JsonType::Value => "any",
        JsonType::Object | JsonType::Array | JsonType::Other => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_and_stops_at_the_limit() {
        assert_eq!(edit_distance("filename", "filename", 2), Some(0));
        assert_eq!(edit_distance("filenme", "filename", 2), Some(1));
        assert_eq!(edit_distance("node_name", "node-name", 2), Some(1));
        assert_eq!(edit_distance("Native", "native", 2), Some(0));
        assert_eq!(edit_distance("kitten", "sitting", 3), Some(3));
        assert_eq!(edit_distance("kitten", "sitting", 2), None);
        assert_eq!(edit_distance("aoi", "aio", 2), Some(1), "a swap is one edit");
        assert_eq!(edit_distance("statsu", "status", 2), Some(1));
        assert_eq!(edit_distance("", "abc", 5), Some(3));
    }

    #[test]
    fn closest_suggests_only_near_misses() {
        let members = ["filename", "locking", "aio", "aio-max-batch", "drop-cache"];
        assert_eq!(closest("filenme", members), Some("filename"));
        assert_eq!(closest("aoi", members), Some("aio"));
        assert_eq!(closest("drop_cache", members), Some("drop-cache"));
        assert_eq!(closest("bogus", members), None);
        assert_eq!(closest("x", ["y"]), Some("y"), "one edit is always allowed");
        assert_eq!(closest("aio", ["aio"]), None, "an exact name is not a suggestion");
        assert_eq!(closest("query-statsu", ["query-stats", "query-status"]), Some("query-status"));
    }

    #[test]
    fn values_are_described_briefly() {
        assert_eq!(describe_value(&serde_json::json!("x")), "string \"x\"");
        assert_eq!(describe_value(&serde_json::json!(1.5)), "number 1.5");
        assert_eq!(describe_value(&serde_json::json!([1, 2])), "an array (2 items)");
        let long = "a".repeat(100);
        assert_eq!(describe_value(&Value::String(long)).len(), "string \"...\"".len() + 40);
    }
}
