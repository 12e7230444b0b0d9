//! What a command takes and returns, as data (serialisable for `--json`) and as text, and
//! completion candidates for member names and values.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::known;
use crate::path::Found;
use crate::schema::{Entry, Features, Id, JsonType, Kind, ObjectDef, Schema};
use crate::text::{builtin_name, closest};

/// What [`Schema::describe`] found: a command, an event, or a type reached by a path.
/// `Display` renders it as indented text; it serialises to JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Description {
    /// A command.
    Command {
        /// Its name.
        name: String,
        /// Its features (`deprecated`, `unstable`, ...).
        features: Vec<String>,
        /// Whether it may be sent out-of-band (`exec-oob`).
        allow_oob: bool,
        /// What it takes.
        arguments: Shape,
        /// For a command that takes free-form arguments beyond those listed (`device_add`),
        /// what QEMU does with them; [`Schema::check`] does not check such a command.
        free_form: Option<String>,
        /// What it returns.
        returns: Shape,
    },
    /// An event.
    Event {
        /// Its name.
        name: String,
        /// Its features.
        features: Vec<String>,
        /// What its `data` holds.
        data: Option<Shape>,
    },
    /// The type a path (`blockdev-add/arg-type/+file`) leads to.
    Type {
        /// The path as given.
        path: String,
        /// The type.
        shape: Shape,
    },
    /// The answer to a boolean path query (`.../^value`, `.../!json-type`, `.../$feature`).
    Flag {
        /// The path as given.
        path: String,
        /// Whether it holds.
        present: bool,
    },
}

/// A type, described by its structure. Types QEMU masks as numbers are never named: an
/// object met a second time in one description refers back to where it was first shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Shape {
    /// A built-in type: `str`, `int`, `number`, `bool`, `null`, `any`.
    Builtin {
        /// Its QAPI name.
        name: String,
    },
    /// A string from a fixed set.
    Enum {
        /// The values, in schema order.
        values: Vec<Named>,
    },
    /// A JSON array.
    Array {
        /// The type of every element.
        element: Box<Shape>,
    },
    /// A JSON object.
    Object {
        /// The members every value has (a union's base members included).
        members: Vec<MemberShape>,
        /// For a flat union: the discriminator and the members each value of it adds.
        union: Option<Union>,
    },
    /// One of several types, told apart by JSON type.
    Alternate {
        /// The branches.
        branches: Vec<Shape>,
    },
    /// An object or alternate already shown in this description, at `path`.
    SameAs {
        /// Where it was shown: `arguments`, `arguments.file`, `arguments (driver "file")`.
        path: String,
        /// Whether it is an alternate (else an object).
        alternate: bool,
    },
    /// Nested deeper than a description goes (only a schema built to loop does that).
    Truncated,
    /// A meta-type this crate does not know.
    Unknown {
        /// Its meta-type.
        meta_type: String,
    },
}

/// A name with the schema features it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Named {
    /// The name.
    pub name: String,
    /// Its features.
    pub features: Vec<String>,
}

/// An object member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberShape {
    /// Its name.
    pub name: String,
    /// Whether it may be left out.
    pub optional: bool,
    /// Its features.
    pub features: Vec<String>,
    /// Its type.
    #[serde(rename = "type")]
    pub shape: Shape,
}

/// A flat union's discriminator and variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Union {
    /// The discriminator member.
    pub tag: String,
    /// The variants, discriminator values that share a variant type grouped together.
    pub variants: Vec<UnionVariant>,
}

/// The members some discriminator values add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnionVariant {
    /// The discriminator values.
    pub cases: Vec<String>,
    /// What they add (an object).
    pub shape: Shape,
}

impl Schema {
    /// Describes a command, an event, or the type a probe path leads to (see
    /// [`Schema::has`] for the path syntax), for `qmp schema COMMAND|EVENT|TYPE-PATH`.
    ///
    /// # Errors
    /// [`Error::NotFound`] (with a close match when there is one) when `target` is none of
    /// those; the errors of [`Schema::has`] for a malformed path.
    pub fn describe(&self, target: &str) -> Result<Description, Error> {
        let not_found = || Error::NotFound {
            target: target.into(),
            suggestion: closest(target, self.commands().chain(self.events())).map(Into::into),
        };
        // A command or event by its name first: QAPI names have no '/', but a schema's
        // names are whatever the schema says.
        if let Some(id) = self.lookup(target) {
            if matches!(self.entry(id).kind, Kind::Command(_) | Kind::Event { .. }) {
                return Ok(self.describe_entry(id, target));
            }
        }
        if !target.contains('/') {
            return Err(not_found());
        }
        match self.resolve_path(target)? {
            Found::Absent => Err(not_found()),
            Found::Flag => Ok(Description::Flag { path: target.into(), present: true }),
            Found::Entry(id) => Ok(self.describe_entry(id, target)),
        }
    }

    fn describe_entry(&self, id: Id, path: &str) -> Description {
        let entry = self.entry(id);
        let mut shaper = Shaper { schema: self, shown: HashMap::new(), depth: 0 };
        match &entry.kind {
            Kind::Command(command) => Description::Command {
                name: entry.name.to_string(),
                features: names(&entry.features),
                allow_oob: command.allow_oob,
                arguments: shaper.shape(command.arguments, "arguments"),
                free_form: known::free_form(&entry.name).map(Into::into),
                returns: shaper.shape(command.returns, "returns"),
            },
            Kind::Event { arguments } => Description::Event {
                name: entry.name.to_string(),
                features: names(&entry.features),
                data: arguments.map(|data| shaper.shape(data, "data")),
            },
            _ => Description::Type { path: path.into(), shape: shaper.shape(id, path) },
        }
    }
}

fn names(features: &Features) -> Vec<String> {
    features.names.iter().map(ToString::to_string).collect()
}

/// How deep a description nests before it says [`Shape::Truncated`]; QEMU's deepest
/// type is a few levels, everything below is shown once and referred to.
const MAX_SHAPE_DEPTH: usize = 32;

/// Builds [`Shape`]s, showing each object (with members) and alternate once per description.
struct Shaper<'s> {
    schema: &'s Schema,
    shown: HashMap<Id, String>,
    depth: usize,
}

impl Shaper<'_> {
    fn shape(&mut self, id: Id, path: &str) -> Shape {
        if self.depth == MAX_SHAPE_DEPTH {
            return Shape::Truncated;
        }
        self.depth += 1;
        let shape = self.shape_of(id, path);
        self.depth -= 1;
        shape
    }

    fn shape_of(&mut self, id: Id, path: &str) -> Shape {
        let entry: &Entry = self.schema.entry(id);
        match &entry.kind {
            Kind::Builtin(json_type) => {
                Shape::Builtin { name: builtin_name(&entry.name, *json_type).into() }
            }
            Kind::Enum(def) => Shape::Enum {
                values: def
                    .values
                    .iter()
                    .map(|v| Named { name: v.name.to_string(), features: names(&v.features) })
                    .collect(),
            },
            Kind::Array { element } => {
                Shape::Array { element: Box::new(self.shape(*element, &format!("{path}[]"))) }
            }
            Kind::Object(def) => {
                if !(def.members.is_empty() && def.variants.is_empty()) {
                    if let Some(first) = self.shown.get(&id) {
                        return Shape::SameAs { path: first.clone(), alternate: false };
                    }
                    self.shown.insert(id, path.to_owned());
                }
                self.object(def, path)
            }
            // Alternates are shown once too: in a schema whose alternates nest, showing each
            // every time would double the output at every level.
            Kind::Alternate { branches } => {
                if let Some(first) = self.shown.get(&id) {
                    return Shape::SameAs { path: first.clone(), alternate: true };
                }
                self.shown.insert(id, path.to_owned());
                Shape::Alternate {
                    branches: branches.iter().map(|&branch| self.shape(branch, path)).collect(),
                }
            }
            Kind::Command(_) | Kind::Event { .. } => Shape::Unknown { meta_type: "command".into() },
            Kind::Other(meta) => Shape::Unknown { meta_type: meta.to_string() },
        }
    }

    fn object(&mut self, def: &ObjectDef, path: &str) -> Shape {
        let members = def
            .members
            .iter()
            .map(|m| MemberShape {
                name: m.name.to_string(),
                optional: m.optional,
                features: names(&m.features),
                shape: self.shape(m.ty, &format!("{path}.{}", m.name)),
            })
            .collect();
        let union = def.tag_member().map(|tag| {
            // Values that share a variant type are shown together, in schema order.
            let mut variants: Vec<(Id, Vec<String>)> = Vec::new();
            for variant in &def.variants {
                match variants.iter_mut().find(|(ty, _)| *ty == variant.ty) {
                    Some((_, cases)) => cases.push(variant.case.to_string()),
                    None => variants.push((variant.ty, vec![variant.case.to_string()])),
                }
            }
            let variants = variants
                .into_iter()
                .map(|(ty, cases)| {
                    let at = format!("{path} ({} \"{}\")", tag.name, cases[0]);
                    UnionVariant { shape: self.shape(ty, &at), cases }
                })
                .collect();
            Union { tag: tag.name.to_string(), variants }
        });
        Shape::Object { members, union }
    }
}

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        match self {
            Description::Command { name, features, allow_oob, arguments, free_form, returns } => {
                let _ = write!(out, "command {name}{}", tags(features));
                if *allow_oob {
                    out.push_str(" (allows out-of-band)");
                }
                out.push('\n');
                write_section(&mut out, "arguments", arguments);
                if let Some(free_form) = free_form {
                    let _ = writeln!(out, "  ... and more: {free_form}");
                }
                write_section(&mut out, "returns", returns);
            }
            Description::Event { name, features, data } => {
                let _ = writeln!(out, "event {name}{}", tags(features));
                match data {
                    Some(data) => write_section(&mut out, "data", data),
                    None => out.push_str("data: none\n"),
                }
            }
            Description::Type { path, shape } => write_section(&mut out, path, shape),
            Description::Flag { path, present } => {
                let _ = writeln!(out, "{path}: {}", if *present { "yes" } else { "no" });
            }
        }
        f.write_str(&out)
    }
}

fn write_section(out: &mut String, title: &str, shape: &Shape) {
    if is_empty_object(shape) {
        let _ = writeln!(out, "{title}: none");
        return;
    }
    let _ = writeln!(out, "{title}: {}", inline(shape));
    write_children(out, shape, 1);
}

fn is_empty_object(shape: &Shape) -> bool {
    matches!(shape, Shape::Object { members, union: None } if members.is_empty())
}

fn tags(features: &[String]) -> String {
    if features.is_empty() { String::new() } else { format!(" [{}]", features.join(", ")) }
}

/// A type in one line: `str`, `one of "a", "b"`, `array of object`, `object or str`.
fn inline(shape: &Shape) -> String {
    match shape {
        Shape::Builtin { name } => name.clone(),
        Shape::Enum { values } => {
            let listed: Vec<String> =
                values.iter().map(|v| format!("\"{}\"{}", v.name, tags(&v.features))).collect();
            format!("one of {}", listed.join(", "))
        }
        Shape::Array { element } => format!("array of {}", inline(element)),
        Shape::Object { .. } if is_empty_object(shape) => "empty object".into(),
        Shape::Object { union: Some(union), .. } => format!("object, by {}", union.tag),
        Shape::Object { .. } => "object".into(),
        Shape::Alternate { branches } => {
            branches.iter().map(inline).collect::<Vec<_>>().join(" or ")
        }
        Shape::SameAs { path, alternate: false } => format!("object as {path}"),
        Shape::SameAs { path, alternate: true } => format!("the same type as {path}"),
        Shape::Truncated => "...".into(),
        Shape::Unknown { meta_type } => format!("({meta_type})"),
    }
}

/// The members of objects within `shape`, indented by `depth`.
fn write_children(out: &mut String, shape: &Shape, depth: usize) {
    let indent = "  ".repeat(depth);
    match shape {
        Shape::Object { members, union } => {
            for member in members {
                let _ = writeln!(
                    out,
                    "{indent}{}{}: {}{}",
                    member.name,
                    if member.optional { " (optional)" } else { "" },
                    inline(&member.shape),
                    tags(&member.features)
                );
                write_children(out, &member.shape, depth + 1);
            }
            if let Some(union) = union {
                for variant in &union.variants {
                    let cases: Vec<String> =
                        variant.cases.iter().map(|c| format!("\"{c}\"")).collect();
                    if is_empty_object(&variant.shape) {
                        let _ = writeln!(
                            out,
                            "{indent}when {} is {}: nothing more",
                            union.tag,
                            cases.join(", ")
                        );
                        continue;
                    }
                    let _ = writeln!(out, "{indent}when {} is {}:", union.tag, cases.join(", "));
                    match &variant.shape {
                        Shape::SameAs { path, .. } => {
                            let _ = writeln!(out, "{indent}  the members of {path}");
                        }
                        other => write_children(out, other, depth + 1),
                    }
                }
            }
        }
        Shape::Array { element } => write_children(out, element, depth),
        Shape::Alternate { branches } => {
            for branch in branches {
                write_children(out, branch, depth);
            }
        }
        _ => {}
    }
}

/// Walking into a command's arguments along a dotted path, choosing union variants from
/// the arguments typed so far.
impl Schema {
    /// Member names to complete `partial` with, for the shell: `partial` is a dotted path
    /// into `command`'s arguments whose last component is being typed (`"file.fil"`),
    /// `given` the arguments typed so far, which pick union variants (`driver` ...) and
    /// whose members are not offered again. Returns full dotted paths
    /// (`"file.filename"`), sorted; empty when nothing fits.
    pub fn complete_member(
        &self,
        command: &str,
        given: Option<&Value>,
        partial: &str,
    ) -> Vec<String> {
        let (parents, prefix) =
            partial.rsplit_once('.').map_or(("", partial), |(p, last)| (p, last));
        let Some((ty, here)) = self.walk_arguments(command, given, parents) else {
            return Vec::new();
        };
        let Some(ty) = self.through_alternates(ty, |kind| matches!(kind, Kind::Object(_))) else {
            return Vec::new();
        };
        let Kind::Object(def) = &self.entry(ty).kind else { return Vec::new() };
        let map = here.and_then(Value::as_object);
        let mut out: Vec<String> = self
            .object_levels(def, here)
            .iter()
            .flat_map(|level| level.members.iter())
            .filter(|m| {
                m.name.starts_with(prefix) && !map.is_some_and(|map| map.contains_key(&*m.name))
            })
            .map(|m| {
                if parents.is_empty() {
                    m.name.to_string()
                } else {
                    format!("{parents}.{}", m.name)
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Values to complete for the member at dotted `path` of `command`'s arguments:
    /// enum values, `true`/`false`, `null`, as JSON text would spell them without quotes,
    /// starting with `prefix`; empty for free-form types.
    pub fn complete_value(
        &self,
        command: &str,
        given: Option<&Value>,
        path: &str,
        prefix: &str,
    ) -> Vec<String> {
        let Some((ty, _)) = self.walk_arguments(command, given, path) else { return Vec::new() };
        let mut out = Vec::new();
        self.values_of(ty, &mut out, 0);
        out.retain(|v| v.starts_with(prefix));
        out
    }

    fn values_of(&self, ty: Id, out: &mut Vec<String>, depth: usize) {
        match &self.entry(ty).kind {
            Kind::Enum(def) => out.extend(def.values.iter().map(|v| v.name.to_string())),
            Kind::Builtin(JsonType::Boolean) => out.extend(["true".into(), "false".into()]),
            Kind::Builtin(JsonType::Null) => out.push("null".into()),
            Kind::Alternate { branches } if depth < 4 => {
                for &branch in branches {
                    self.values_of(branch, out, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// The type at a dotted path into a command's arguments (numbers index arrays), and
    /// the part of `given` there.
    fn walk_arguments<'v>(
        &self,
        command: &str,
        given: Option<&'v Value>,
        path: &str,
    ) -> Option<(Id, Option<&'v Value>)> {
        let (_, command) = self.command(command)?;
        let mut ty = command.arguments;
        let mut here = given;
        for step in path.split('.').filter(|s| !s.is_empty()) {
            if let Ok(index) = step.parse::<usize>() {
                ty = self.through_alternates(ty, |kind| matches!(kind, Kind::Array { .. }))?;
                let Kind::Array { element } = &self.entry(ty).kind else { return None };
                ty = *element;
                here = here.and_then(|v| v.get(index));
                continue;
            }
            ty = self.through_alternates(ty, |kind| matches!(kind, Kind::Object(_)))?;
            let Kind::Object(def) = &self.entry(ty).kind else { return None };
            let member = self.object_levels(def, here).iter().find_map(|level| level.find(step))?;
            ty = member.ty;
            here = here.and_then(|v| v.get(step));
        }
        Some((ty, here))
    }

    /// `ty`, or the first branch of the alternate `ty` whose kind `wanted` accepts.
    fn through_alternates(&self, ty: Id, wanted: impl Fn(&Kind) -> bool) -> Option<Id> {
        match &self.entry(ty).kind {
            Kind::Alternate { branches } => {
                branches.iter().copied().find(|&branch| wanted(&self.entry(branch).kind))
            }
            kind if wanted(kind) => Some(ty),
            _ => None,
        }
    }

    /// An object and the union variants the discriminators in `given` pick.
    fn object_levels<'s>(
        &'s self,
        def: &'s ObjectDef,
        given: Option<&Value>,
    ) -> Vec<&'s ObjectDef> {
        let mut levels = vec![def];
        while let Some(tag) = levels.last().and_then(|level| level.tag_member()) {
            let case = given.and_then(|v| v.get(&*tag.name)).and_then(Value::as_str);
            let variant = case.and_then(|case| levels.last()?.variant(case));
            match variant.map(|v| &self.entry(v.ty).kind) {
                Some(Kind::Object(next)) if levels.len() < 8 => levels.push(next),
                _ => break,
            }
        }
        levels
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Schema {
        Schema::from_value(&json!([
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "bool", "meta-type": "builtin", "json-type": "boolean"},
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "1", "meta-type": "enum", "values": ["file", "raw"]},
            {"name": "2", "meta-type": "object", "tag": "driver",
             "members": [{"name": "driver", "type": "1"}, {"name": "node-name", "type": "str", "default": null}],
             "variants": [{"case": "file", "type": "3"}, {"case": "raw", "type": "4"}]},
            {"name": "3", "meta-type": "object", "members": [
                {"name": "filename", "type": "str"},
                {"name": "locking", "type": "bool", "default": null, "features": ["unstable"]}]},
            {"name": "4", "meta-type": "object", "members": [{"name": "file", "type": "5", "default": null}]},
            {"name": "5", "meta-type": "alternate", "members": [{"type": "2"}, {"type": "str"}]},
            {"name": "blockdev-add", "meta-type": "command", "arg-type": "2", "ret-type": "0"},
            {"name": "BLOCK_THING", "meta-type": "event", "arg-type": "3"},
        ]))
        .unwrap()
    }

    #[test]
    fn a_recursive_union_is_shown_once_and_referred_to() {
        let description = schema().describe("blockdev-add").unwrap();
        let Description::Command { arguments: Shape::Object { union: Some(union), .. }, .. } =
            &description
        else {
            panic!("{description:?}")
        };
        assert_eq!(union.tag, "driver");
        assert_eq!(union.variants[0].cases, ["file"]);
        let Shape::Object { members, .. } = &union.variants[1].shape else { panic!() };
        let Shape::Alternate { branches } = &members[0].shape else { panic!() };
        assert_eq!(branches[0], Shape::SameAs { path: "arguments".into(), alternate: false });
        let text = description.to_string();
        assert_eq!(
            text,
            "command blockdev-add\n\
             arguments: object, by driver\n\
             \x20 driver: one of \"file\", \"raw\"\n\
             \x20 node-name (optional): str\n\
             \x20 when driver is \"file\":\n\
             \x20   filename: str\n\
             \x20   locking (optional): bool [unstable]\n\
             \x20 when driver is \"raw\":\n\
             \x20   file (optional): object as arguments or str\n\
             returns: none\n"
        );
        assert!(!text.chars().any(|c| c.is_ascii_digit()), "no masked type number shows");
    }

    #[test]
    fn events_paths_flags_and_unknown_targets() {
        let s = schema();
        assert!(
            s.describe("BLOCK_THING")
                .unwrap()
                .to_string()
                .starts_with("event BLOCK_THING\ndata: object\n")
        );
        let file = s.describe("blockdev-add/arg-type/+file").unwrap();
        assert!(
            matches!(&file, Description::Type { path, .. } if path == "blockdev-add/arg-type/+file")
        );
        assert!(file.to_string().contains("filename: str"));
        assert_eq!(
            s.describe("blockdev-add/arg-type/driver/^raw").unwrap(),
            Description::Flag { path: "blockdev-add/arg-type/driver/^raw".into(), present: true }
        );
        let Err(Error::NotFound { suggestion, .. }) = s.describe("blockdev-ad") else { panic!() };
        assert_eq!(suggestion.as_deref(), Some("blockdev-add"));
        assert!(
            matches!(s.describe("2"), Err(Error::NotFound { .. })),
            "masked names are not targets"
        );
        // Found by the fuzzer: a command whose name has a '/' is still described by name.
        let odd = Schema::from_value(&json!([
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "a/b", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
        ]))
        .unwrap();
        assert!(matches!(odd.describe("a/b"), Ok(Description::Command { .. })));
        let json = serde_json::to_value(s.describe("blockdev-add").unwrap()).unwrap();
        assert_eq!(json["kind"], "command");
        assert_eq!(json["arguments"]["members"][0]["type"]["type"], "enum");
    }

    #[test]
    fn completion_follows_the_variant_picked_so_far() {
        let s = schema();
        assert_eq!(s.complete_member("blockdev-add", None, ""), ["driver", "node-name"]);
        let given = json!({"driver": "file"});
        assert_eq!(
            s.complete_member("blockdev-add", Some(&given), ""),
            ["filename", "locking", "node-name"]
        );
        assert_eq!(s.complete_member("blockdev-add", Some(&given), "fi"), ["filename"]);
        let nested = json!({"driver": "raw", "file": {"driver": "file"}});
        assert_eq!(s.complete_member("blockdev-add", Some(&nested), "file.f"), ["file.filename"]);
        assert_eq!(s.complete_value("blockdev-add", None, "driver", ""), ["file", "raw"]);
        assert_eq!(s.complete_value("blockdev-add", Some(&given), "locking", "t"), ["true"]);
        assert_eq!(s.complete_value("blockdev-add", Some(&nested), "file.driver", "r"), ["raw"]);
        assert!(s.complete_member("no-such-command", None, "").is_empty());
        assert!(s.complete_member("blockdev-add", None, "nope.x").is_empty());
    }

    #[test]
    fn looping_and_doubling_schemas_give_bounded_descriptions() {
        let s = Schema::from_value(&json!([
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "1", "meta-type": "alternate", "members": [{"type": "1"}, {"type": "2"}]},
            {"name": "2", "meta-type": "array", "element-type": "2"},
            {"name": "3", "meta-type": "alternate", "members": [{"type": "4"}, {"type": "4"}]},
            {"name": "4", "meta-type": "alternate", "members": [{"type": "5"}, {"type": "5"}]},
            {"name": "5", "meta-type": "alternate", "members": [{"type": "6"}, {"type": "6"}]},
            {"name": "6", "meta-type": "builtin", "json-type": "int"},
            {"name": "7", "meta-type": "object", "members": [
                {"name": "a", "type": "1"}, {"name": "b", "type": "3"}, {"name": "c", "type": "3"}]},
            {"name": "c", "meta-type": "command", "arg-type": "7", "ret-type": "0"},
        ]))
        .unwrap();
        let text = s.describe("c").unwrap().to_string();
        assert!(text.contains("a: the same type as arguments.a or array of array of "), "{text}");
        assert!(
            text.contains("array of ...\n"),
            "a self-nested array ends at the depth limit: {text}"
        );
        assert!(text.contains("c: the same type as arguments.b\n"), "{text}");
        assert!(text.len() < 1000, "{text}");
    }
}
