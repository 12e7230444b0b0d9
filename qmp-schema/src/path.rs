//! Feature probes as path queries, with the syntax and meaning of libvirt's
//! `virQEMUQAPISchemaPathGet`.

use crate::Error;
use crate::schema::{Id, JsonType, Kind, Schema};

/// Steps a probe may take before it is taken for a loop (libvirt uses the same bound).
const MAX_PATH_STEPS: usize = 1000;

/// Where a probe path leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing: no such command, member, variant or value.
    Absent,
    /// A type (or a command or event, for a one-component path).
    Entry(Id),
    /// A true boolean query (`^value`, `!json-type`, `$feature`).
    Flag,
}

impl Schema {
    /// Answers a feature probe, a path into the schema in libvirt's syntax: whether this
    /// QEMU has a command, event, member, union variant, enum value or feature.
    ///
    /// The path is `/`-separated. The first component names a command or event (or any
    /// schema entry). After a command or event, `arg-type` or `ret-type` selects its
    /// arguments or return type (events have `arg-type` only). Then, depending on what the
    /// path has reached:
    ///
    /// * `name` selects an object's member; `*name` the same, but the member must be
    ///   optional; `+case` selects a union's variant by discriminator value;
    /// * `^value` is true when an enum has that value; `^value/$feature` when that value has
    ///   the feature;
    /// * `!json-type` is true when a built-in type has that JSON type (`string`, `int`,
    ///   `number`, `boolean`, `null`, `value`, ...);
    /// * `$feature` is true when the command, event or object type has the feature;
    ///
    /// arrays are looked through to their element type, and alternates try each branch
    /// until one matches. A component whose name does not start with a letter needs one
    /// character in front of it (libvirt's convention: a space), since any first character
    /// that is not a letter is taken as the operator.
    ///
    /// ```
    /// # let schema = qmp_schema::Schema::from_slice(br#"[
    /// #   {"name": "str", "meta-type": "builtin", "json-type": "string"},
    /// #   {"name": "0", "meta-type": "object", "members": []},
    /// #   {"name": "1", "meta-type": "enum", "values": ["file", "raw"]},
    /// #   {"name": "2", "meta-type": "object", "tag": "driver",
    /// #    "members": [{"name": "driver", "type": "1"}],
    /// #    "variants": [{"case": "file", "type": "3"}, {"case": "raw", "type": "0"}]},
    /// #   {"name": "3", "meta-type": "object",
    /// #    "members": [{"name": "aio", "type": "str", "default": null}]},
    /// #   {"name": "blockdev-add", "meta-type": "command", "arg-type": "2", "ret-type": "0"}
    /// # ]"#)?;
    /// assert!(schema.has("blockdev-add")?);
    /// assert!(schema.has("blockdev-add/arg-type/+file/aio")?);
    /// assert!(schema.has("blockdev-add/arg-type/+file/*aio")?);
    /// assert!(schema.has("blockdev-add/arg-type/driver/^raw")?);
    /// assert!(!schema.has("blockdev-add/arg-type/+raw/aio")?);
    /// # Ok::<(), qmp_schema::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::MalformedPath`] for an empty path or component, or a component after a
    /// terminal `!`/`$` query (or after `^value` other than one `$feature`);
    /// [`Error::PathLoop`] when the walk does not end (only a malformed schema does that).
    pub fn has(&self, path: &str) -> Result<bool, Error> {
        Ok(self.resolve_path(path)? != Found::Absent)
    }

    pub(crate) fn resolve_path(&self, path: &str) -> Result<Found, Error> {
        let components: Vec<&str> = path.split('/').collect();
        if components.iter().any(|c| c.is_empty()) {
            return Err(Error::MalformedPath { path: path.into(), reason: "empty component" });
        }
        let Some(first) = self.lookup(components[0]) else { return Ok(Found::Absent) };
        let mut walk = Walk { path, steps: 0 };
        walk.traverse(self, first, &components[1..])
    }
}

struct Walk<'p> {
    path: &'p str,
    steps: usize,
}

impl Walk<'_> {
    fn traverse(&mut self, schema: &Schema, id: Id, rest: &[&str]) -> Result<Found, Error> {
        self.steps += 1;
        if self.steps > MAX_PATH_STEPS {
            return Err(Error::PathLoop(self.path.into()));
        }
        let Some((&component, after)) = rest.split_first() else { return Ok(Found::Entry(id)) };
        let (operator, name) = split_operator(component);
        let entry = schema.entry(id);
        match &entry.kind {
            Kind::Object(object) => match operator {
                Some('$') => self.feature(entry.features.has(name), after),
                Some('^' | '!') => Ok(Found::Absent),
                Some('+') => match object.variant(name) {
                    Some(variant) => self.traverse(schema, variant.ty, after),
                    None => Ok(Found::Absent),
                },
                _ => match object.find(name) {
                    Some(member) if operator != Some('*') || member.optional => {
                        self.traverse(schema, member.ty, after)
                    }
                    _ => Ok(Found::Absent),
                },
            },
            // Arrays are looked through: the component applies to the element type.
            Kind::Array { element } => self.traverse(schema, *element, rest),
            Kind::Command(_) | Kind::Event { .. } => match operator {
                Some('$') => self.feature(entry.features.has(name), after),
                Some('^' | '!' | '+' | '*') => Ok(Found::Absent),
                _ => match (&entry.kind, name) {
                    (Kind::Command(command), "arg-type") => {
                        self.traverse(schema, command.arguments, after)
                    }
                    (Kind::Command(command), "ret-type") => {
                        self.traverse(schema, command.returns, after)
                    }
                    (Kind::Event { arguments: Some(arguments) }, "arg-type") => {
                        self.traverse(schema, *arguments, after)
                    }
                    _ => Ok(Found::Absent),
                },
            },
            Kind::Enum(def) => {
                if operator != Some('^') {
                    return Ok(Found::Absent);
                }
                // One more component is allowed: a feature of the value.
                let feature = match after {
                    [] => None,
                    [feature] if feature.starts_with('$') => Some(&feature[1..]),
                    _ => return Err(self.malformed("only a $feature may follow a ^value")),
                };
                Ok(match (def.find(name), feature) {
                    (Some(value), Some(feature)) if value.features.has(feature) => Found::Flag,
                    (Some(_), None) => Found::Flag,
                    _ => Found::Absent,
                })
            }
            Kind::Builtin(json_type) => {
                if operator != Some('!') {
                    return Ok(Found::Absent);
                }
                self.feature(json_type_name(*json_type) == Some(name), after)
            }
            Kind::Alternate { branches } => {
                for &branch in branches {
                    let found = self.traverse(schema, branch, rest)?;
                    if found != Found::Absent {
                        return Ok(found);
                    }
                }
                Ok(Found::Absent)
            }
            Kind::Other(_) => Ok(Found::Absent),
        }
    }

    /// A terminal boolean query: nothing may follow it.
    fn feature(&self, present: bool, after: &[&str]) -> Result<Found, Error> {
        if !after.is_empty() {
            return Err(self.malformed("nothing may follow a terminal ! or $ query"));
        }
        Ok(if present { Found::Flag } else { Found::Absent })
    }

    fn malformed(&self, reason: &'static str) -> Error {
        Error::MalformedPath { path: self.path.into(), reason }
    }
}

/// Splits off the operator: any first character that is not an ASCII letter.
fn split_operator(component: &str) -> (Option<char>, &str) {
    match component.chars().next() {
        Some(c) if !c.is_ascii_alphabetic() => (Some(c), &component[c.len_utf8()..]),
        _ => (None, component),
    }
}

fn json_type_name(json_type: JsonType) -> Option<&'static str> {
    Some(match json_type {
        JsonType::String => "string",
        JsonType::Number => "number",
        JsonType::Int => "int",
        JsonType::Boolean => "boolean",
        JsonType::Null => "null",
        JsonType::Object => "object",
        JsonType::Array => "array",
        JsonType::Value => "value",
        JsonType::Other => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Schema {
        Schema::from_value(&json!([
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "int", "meta-type": "builtin", "json-type": "int"},
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "1", "meta-type": "enum", "values": ["a", "b"],
             "members": [{"name": "a"}, {"name": "b", "features": ["deprecated"]}]},
            {"name": "2", "meta-type": "object", "tag": "kind", "features": ["shiny"],
             "members": [{"name": "kind", "type": "1"}, {"name": "opt", "type": "[3]", "default": null}],
             "variants": [{"case": "a", "type": "3"}, {"case": "b", "type": "0"}]},
            {"name": "3", "meta-type": "object", "members": [{"name": "n", "type": "int"}]},
            {"name": "[3]", "meta-type": "array", "element-type": "3"},
            {"name": "4", "meta-type": "alternate", "members": [{"type": "str"}, {"type": "3"}]},
            {"name": "cmd", "meta-type": "command", "arg-type": "2", "ret-type": "4",
             "features": ["unstable"]},
            {"name": "EV", "meta-type": "event", "arg-type": "3"},
        ]))
        .unwrap()
    }

    #[test]
    fn members_optional_members_variants_and_arrays() {
        let s = schema();
        assert!(s.has("cmd").unwrap());
        assert!(!s.has("nope").unwrap());
        assert!(s.has("cmd/arg-type").unwrap());
        assert!(s.has("cmd/arg-type/kind").unwrap());
        assert!(!s.has("cmd/arg-type/*kind").unwrap(), "kind is mandatory");
        assert!(s.has("cmd/arg-type/*opt").unwrap());
        assert!(s.has("cmd/arg-type/opt/n").unwrap(), "arrays are looked through");
        assert!(s.has("cmd/arg-type/+a/n").unwrap());
        assert!(!s.has("cmd/arg-type/+b/n").unwrap());
        assert!(!s.has("cmd/arg-type/+c").unwrap());
        assert!(!s.has("cmd/arg-type/n").unwrap(), "variant members need their +case");
        assert!(s.has("EV/arg-type/n").unwrap());
        assert!(!s.has("EV/ret-type").unwrap());
        assert!(!s.has("cmd/name").unwrap());
    }

    #[test]
    fn enum_values_json_types_features_and_alternates() {
        let s = schema();
        assert!(s.has("cmd/arg-type/kind/^a").unwrap());
        assert!(!s.has("cmd/arg-type/kind/^c").unwrap());
        assert!(s.has("cmd/arg-type/kind/^b/$deprecated").unwrap());
        assert!(!s.has("cmd/arg-type/kind/^a/$deprecated").unwrap());
        assert!(s.has("cmd/arg-type/+a/n/!int").unwrap());
        assert!(!s.has("cmd/arg-type/+a/n/!string").unwrap());
        assert!(s.has("cmd/$unstable").unwrap());
        assert!(!s.has("cmd/$deprecated").unwrap());
        assert!(s.has("cmd/arg-type/$shiny").unwrap());
        assert!(s.has("cmd/ret-type/n").unwrap(), "an alternate tries its object branch");
        assert!(s.has("cmd/ret-type/!string").unwrap(), "and its builtin branch");
        assert!(!s.has("cmd/ret-type/!int").unwrap());
        assert!(!s.has("cmd/arg-type/^a").unwrap(), "^ on an object is false");
        assert!(!s.has("cmd/+a").unwrap(), "operators on a command are false");
    }

    #[test]
    fn malformed_paths_are_errors() {
        let s = schema();
        for bad in [
            "",
            "cmd/",
            "cmd//arg-type",
            "cmd/$unstable/x",
            "cmd/arg-type/kind/^b/x",
            "cmd/arg-type/+a/n/!int/x",
            "cmd/arg-type/kind/^b/$deprecated/x",
        ] {
            assert!(matches!(s.has(bad), Err(Error::MalformedPath { .. })), "{bad:?}");
        }
    }

    #[test]
    fn a_space_escapes_names_that_do_not_start_with_a_letter() {
        let s = schema();
        assert!(s.has("cmd/ arg-type/ kind").unwrap());
        assert_eq!(split_operator("^a"), (Some('^'), "a"));
        assert_eq!(split_operator("abc"), (None, "abc"));
        assert_eq!(split_operator("é"), (Some('é'), ""));
    }
}
