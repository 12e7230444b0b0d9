//! Checking a command's arguments against its `arg-type`, the way QEMU's QMP input visitor
//! does, before anything is sent.

use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

use crate::known;
use crate::schema::{
    DEPRECATED, Features, Id, JsonType, Kind, Member, ObjectDef, Schema, UNSTABLE,
};
use crate::text::{closest, describe_value};

/// At most this many problems are collected for one command; checking stops there.
pub const MAX_PROBLEMS: usize = 16;

/// Nesting the checker follows before it reports [`UncheckedReason::TooDeep`]: one step per
/// object, array, alternate or value it descends into. QEMU's JSON parser refuses input
/// nested deeper than 1024; real commands nest a few levels.
pub const MAX_DEPTH: usize = 512;

/// Union levels followed within one JSON object (a variant that is itself a union, ...).
/// QEMU's deepest is two.
const MAX_UNION_LEVELS: usize = 4;

/// The outcome of [`Schema::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether QEMU's argument check would accept the arguments.
    pub verdict: Verdict,
    /// Uses of commands, members or enum values the schema marks `deprecated` or
    /// `unstable`. Reported whatever the verdict.
    pub warnings: Vec<Warning>,
}

impl Report {
    /// Whether the arguments are known to be refused: send nothing.
    pub fn is_refused(&self) -> bool {
        matches!(self.verdict, Verdict::Invalid(_))
    }

    /// The problems found (empty unless [`Verdict::Invalid`]).
    pub fn problems(&self) -> &[Problem] {
        match &self.verdict {
            Verdict::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

/// Whether QEMU would accept a command's arguments, as far as its schema tells.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every part of the arguments was checked and fits the schema.
    Valid,
    /// QEMU would refuse them: the problems found, in the order met (members of one object
    /// in the order the `Map` iterates them, missing members last), at most
    /// [`MAX_PROBLEMS`]. Problems in a part that could be checked win over parts that could
    /// not.
    Invalid(Vec<Problem>),
    /// No problem was found, but part of the arguments could not be checked from the
    /// schema alone (the first such part).
    NotChecked(Unchecked),
}

/// One reason QEMU would refuse the arguments, with the path to it.
///
/// `path`, `expected` and `found` are what a client needs for an
/// `InvalidArguments { path, expected, found }` error; `Display` gives a full sentence such
/// as `arguments.file.filename: missing (required for driver "file")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `arguments`, `arguments.file.filename`, `arguments.keys[0].data`; for
    /// [`ProblemKind::UnknownCommand`], `execute`.
    pub path: String,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What the schema wants there: a type described by its structure (`str`, `int`,
    /// `one of "threads", "native"`, `array of str`, `object`), or the members an object has.
    pub expected: String,
    /// What was there: `nothing`, `string "nativ"`, `number 1.5`, `member "filenme"`.
    pub found: String,
    /// A close match for a misspelt command, member or enum value.
    pub suggestion: Option<String>,
    /// Context: `required for driver "file"`, `only for driver "file", "host_device"`,
    /// `the command takes no arguments`.
    pub note: Option<String>,
}

/// The kinds of [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The schema has no such command (QEMU answers `CommandNotFound`).
    UnknownCommand,
    /// A mandatory member is absent.
    Missing,
    /// A member the object (or the union variant selected) does not have.
    Unexpected,
    /// A value of the wrong JSON type, or a non-integer where an `int` is wanted.
    WrongType,
    /// A string that is not one of the enum's values.
    BadValue,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ProblemKind::UnknownCommand => {
                write!(f, "no command \"{}\" in the schema", self.found)?;
            }
            ProblemKind::Missing => write!(
                f,
                "{}: missing ({}), expected {}",
                self.path,
                self.note.as_deref().unwrap_or("required"),
                self.expected
            )?,
            ProblemKind::Unexpected => {
                write!(f, "{}: unexpected member", self.path)?;
                if let Some(note) = &self.note {
                    write!(f, " ({note})")?;
                }
            }
            ProblemKind::WrongType | ProblemKind::BadValue => {
                write!(f, "{}: expected {}, found {}", self.path, self.expected, self.found)?;
            }
        }
        if let Some(suggestion) = &self.suggestion {
            write!(f, " (did you mean \"{suggestion}\"?)")?;
        }
        Ok(())
    }
}

/// A part of the arguments the checker could not judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    /// Where: `arguments` for a whole command, or the path to the value.
    pub path: String,
    /// Why.
    pub reason: UncheckedReason,
}

/// Why a part of the arguments was not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UncheckedReason {
    /// QEMU itself takes this command's arguments free-form (`'gen': false` in its schema,
    /// like `device_add`, whose properties depend on the device); the text says what QEMU
    /// does with them instead.
    FreeForm(&'static str),
    /// The schema types this value `any`: QEMU's handler interprets it (e.g. `qom-set`'s
    /// `value`, typed by the property it sets).
    AnyValue,
    /// Nested deeper than [`MAX_DEPTH`] checking steps.
    TooDeep,
    /// A meta-type or JSON type this crate does not know (from a newer QEMU).
    UnknownType(String),
}

impl fmt::Display for Unchecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            UncheckedReason::FreeForm(why) => write!(f, "{}: not checked: {why}", self.path),
            UncheckedReason::AnyValue => write!(
                f,
                "{}: not checked: the schema accepts any value here; the command interprets it",
                self.path
            ),
            UncheckedReason::TooDeep => {
                write!(f, "{}: not checked: nested deeper than {MAX_DEPTH} levels", self.path)
            }
            UncheckedReason::UnknownType(what) => {
                write!(f, "{}: not checked: unknown schema type \"{what}\"", self.path)
            }
        }
    }
}

/// The use of something the schema marks `deprecated` or `unstable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where: `execute` for the command itself, else the path to the member or value.
    pub path: String,
    /// What is marked.
    pub subject: Subject,
    /// Its name: the command, the member or the enum value.
    pub name: String,
    /// The feature.
    pub feature: Feature,
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// The command.
    Command,
    /// An object member.
    Member,
    /// An enum value.
    Value,
}

/// The schema features that give a [`Warning`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feature {
    /// Will go away; QEMU may refuse it under `-compat deprecated-input=reject`.
    Deprecated,
    /// Experimental; QEMU may refuse it under `-compat unstable-input=reject`.
    Unstable,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = match self.subject {
            Subject::Command => "command",
            Subject::Member => "member",
            Subject::Value => "value",
        };
        let feature = match self.feature {
            Feature::Deprecated => "deprecated",
            Feature::Unstable => "unstable",
        };
        write!(f, "{}: {subject} \"{}\" is {feature}", self.path, self.name)
    }
}

impl Schema {
    /// Checks `arguments` for `command` as QEMU's QMP input visitor would: unknown members,
    /// missing mandatory members, JSON types (an `int` must be an integer of at most 64 bits),
    /// enum values, arrays, nested objects, alternates, and flat unions whose discriminator
    /// picks the variant. `None` means no `arguments` member at all, which QEMU treats as
    /// `{}`.
    ///
    /// Costs no allocation when the arguments are valid and nothing is deprecated.
    ///
    /// What the schema cannot tell is reported as [`Verdict::NotChecked`], never guessed:
    /// `device_add`'s device properties, values typed `any`. Integer ranges narrower than
    /// 64 bits (`uint8`, ...) are invisible in the schema (every integer type shows as
    /// `int`): any integer from `i64::MIN` to `u64::MAX` passes.
    ///
    /// `Some(&Value::Null)` is refused, as QEMU refuses `"arguments": null`: a client that
    /// means "no arguments" passes `None`.
    pub fn check(&self, command: &str, arguments: Option<&Value>) -> Report {
        self.check_with(command, |checker, ty| match arguments {
            None => checker.check_object_type(ty, &Map::new(), &At::ROOT),
            Some(value) => checker.check_value(ty, value, &At::ROOT),
        })
    }

    /// [`Schema::check`] for arguments held as a JSON object's map, as a command type keeps
    /// them (`qmp_codec::Command::arguments`), without wrapping them in a `Value`.
    pub fn check_map(&self, command: &str, arguments: Option<&Map<String, Value>>) -> Report {
        let empty = Map::new();
        self.check_with(command, |checker, ty| {
            checker.check_object_type(ty, arguments.unwrap_or(&empty), &At::ROOT);
        })
    }

    fn check_with(&self, command: &str, arguments: impl FnOnce(&mut Checker<'_>, Id)) -> Report {
        let Some((id, def)) = self.command(command) else {
            let problem = Problem {
                path: "execute".into(),
                kind: ProblemKind::UnknownCommand,
                expected: "a command of this QEMU".into(),
                found: command.into(),
                suggestion: closest(command, self.commands()).map(Into::into),
                note: None,
            };
            return Report { verdict: Verdict::Invalid(vec![problem]), warnings: Vec::new() };
        };
        let mut checker = Checker::new(self);
        checker.warn(&self.entry(id).features, &At::EXECUTE, Subject::Command, command);
        if let Some(why) = known::free_form(command) {
            checker.not_checked(&At::ROOT, UncheckedReason::FreeForm(why));
        } else {
            arguments(&mut checker, def.arguments);
        }
        checker.finish()
    }
}

/// Where the checker is: a path kept on the stack and rendered only for a report.
#[derive(Clone, Copy)]
struct At<'p> {
    parent: Option<&'p At<'p>>,
    step: Step<'p>,
}

#[derive(Clone, Copy)]
enum Step<'p> {
    Named(&'p str),
    Member(&'p str),
    Index(usize),
}

impl<'p> At<'p> {
    const ROOT: At<'static> = At { parent: None, step: Step::Named("arguments") };
    const EXECUTE: At<'static> = At { parent: None, step: Step::Named("execute") };

    fn member(&'p self, name: &'p str) -> Self {
        At { parent: Some(self), step: Step::Member(name) }
    }

    fn index(&'p self, index: usize) -> Self {
        At { parent: Some(self), step: Step::Index(index) }
    }

    fn render(&self) -> String {
        let mut steps = vec![self.step];
        let mut at = self;
        while let Some(parent) = at.parent {
            steps.push(parent.step);
            at = parent;
        }
        let mut out = String::new();
        for step in steps.iter().rev() {
            match step {
                Step::Named(name) => out.push_str(name),
                Step::Member(name) => {
                    out.push('.');
                    out.push_str(name);
                }
                Step::Index(index) => {
                    out.push('[');
                    out.push_str(&index.to_string());
                    out.push(']');
                }
            }
        }
        out
    }
}

struct Checker<'s> {
    schema: &'s Schema,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
    unchecked: Option<Unchecked>,
    depth: usize,
}

/// One level of a flat union within a JSON object: the base object, or a variant and the
/// discriminator value that picked it.
#[derive(Clone, Copy)]
struct Level<'s, 'v> {
    def: &'s ObjectDef,
    picked_by: Option<(&'s str, &'v str)>,
}

impl<'s> Checker<'s> {
    fn new(schema: &'s Schema) -> Self {
        Self { schema, problems: Vec::new(), warnings: Vec::new(), unchecked: None, depth: 0 }
    }

    fn finish(self) -> Report {
        let verdict = if !self.problems.is_empty() {
            Verdict::Invalid(self.problems)
        } else if let Some(unchecked) = self.unchecked {
            Verdict::NotChecked(unchecked)
        } else {
            Verdict::Valid
        };
        Report { verdict, warnings: self.warnings }
    }

    fn full(&self) -> bool {
        self.problems.len() >= MAX_PROBLEMS
    }

    fn check_value(&mut self, ty: Id, value: &Value, at: &At<'_>) {
        if self.full() {
            return;
        }
        if self.depth >= MAX_DEPTH {
            self.not_checked(at, UncheckedReason::TooDeep);
            return;
        }
        self.depth += 1;
        let schema = self.schema;
        match &schema.entry(ty).kind {
            Kind::Builtin(json_type) => self.check_builtin(*json_type, ty, value, at),
            Kind::Enum(def) => match value {
                Value::String(text) => {
                    if let Some(known) = def.find(text) {
                        self.warn(&known.features, at, Subject::Value, text);
                    } else {
                        let suggestion = closest(text, def.values.iter().map(|v| &*v.name));
                        self.problem(at, ProblemKind::BadValue, ty, value, suggestion, None);
                    }
                }
                _ => self.wrong_type(at, ty, value),
            },
            Kind::Array { element } => match value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_value(*element, item, &at.index(i));
                    }
                }
                _ => self.wrong_type(at, ty, value),
            },
            Kind::Object(def) => match value {
                Value::Object(map) => self.check_object(def, map, at),
                _ => self.wrong_type(at, ty, value),
            },
            // QEMU picks an alternate's branch by the value's JSON type alone.
            Kind::Alternate { branches } => {
                match branches.iter().find(|&&branch| schema.takes_json_kind(branch, value)) {
                    Some(&branch) => self.check_value(branch, value, at),
                    None => self.wrong_type(at, ty, value),
                }
            }
            Kind::Command(_) | Kind::Event { .. } | Kind::Other(_) => {
                let meta = match &schema.entry(ty).kind {
                    Kind::Other(meta) => meta.to_string(),
                    _ => "command".into(),
                };
                self.not_checked(at, UncheckedReason::UnknownType(meta));
            }
        }
        self.depth -= 1;
    }

    fn check_builtin(&mut self, json_type: JsonType, ty: Id, value: &Value, at: &At<'_>) {
        let fits = match json_type {
            JsonType::String => value.is_string(),
            // QEMU parses integers that fit neither i64 nor u64 as doubles, which no integer
            // type takes; serde_json does the same.
            JsonType::Int => value.is_i64() || value.is_u64(),
            JsonType::Number => value.is_number(),
            JsonType::Boolean => value.is_boolean(),
            JsonType::Null => value.is_null(),
            JsonType::Object => value.is_object(),
            JsonType::Array => value.is_array(),
            JsonType::Value => {
                self.not_checked(at, UncheckedReason::AnyValue);
                true
            }
            JsonType::Other => {
                self.not_checked(
                    at,
                    UncheckedReason::UnknownType(self.schema.entry(ty).name.to_string()),
                );
                true
            }
        };
        if !fits {
            self.wrong_type(at, ty, value);
        }
    }

    /// Checks an object value, held as its map, against a command's arguments type.
    fn check_object_type(&mut self, ty: Id, map: &Map<String, Value>, at: &At<'_>) {
        match &self.schema.entry(ty).kind {
            Kind::Object(def) => self.check_object(def, map, at),
            // QEMU's arguments types are objects; any other takes the general path.
            _ => self.check_value(ty, &Value::Object(map.clone()), at),
        }
    }

    fn check_object(&mut self, def: &'s ObjectDef, map: &Map<String, Value>, at: &At<'_>) {
        let mut levels = [Level { def, picked_by: None }; MAX_UNION_LEVELS];
        let mut count = 1;
        // Unknown members can only be told apart once the variant is known; when the
        // discriminator is missing or wrong, that problem is reported instead.
        let mut variant_known = true;
        while let Some(tag) = levels[count - 1].def.tag_member() {
            let Some(Value::String(case)) = map.get(&*tag.name) else {
                variant_known = false;
                break;
            };
            let Some(variant) = levels[count - 1].def.variant(case) else {
                // An enum value with no variant listed adds no members.
                variant_known = self.schema.enum_has(tag.ty, case);
                break;
            };
            let Kind::Object(next) = &self.schema.entry(variant.ty).kind else {
                unreachable!("variants are objects: checked when the schema was built")
            };
            if count == MAX_UNION_LEVELS {
                self.not_checked(at, UncheckedReason::TooDeep);
                return;
            }
            levels[count] = Level { def: next, picked_by: Some((&tag.name, case)) };
            count += 1;
        }
        let levels = &levels[..count];
        let mut required_seen = [0usize; MAX_UNION_LEVELS];
        for (key, value) in map {
            let found = levels
                .iter()
                .enumerate()
                .find_map(|(i, level)| level.def.find(key).map(|m| (i, m)));
            match found {
                Some((level, member)) => {
                    let here = at.member(key);
                    self.warn(&member.features, &here, Subject::Member, key);
                    if !member.optional {
                        required_seen[level] += 1;
                    }
                    self.check_value(member.ty, value, &here);
                }
                None if variant_known => self.unexpected(key, levels, at),
                None => {}
            }
            if self.full() {
                return;
            }
        }
        for (level, seen) in levels.iter().zip(required_seen) {
            if seen < level.def.required.len() {
                for &index in &level.def.required {
                    let member = &level.def.members[index as usize];
                    if !map.contains_key(&*member.name) {
                        self.missing(member, level.picked_by, at);
                    }
                }
            }
        }
    }

    fn unexpected(&mut self, key: &str, levels: &[Level<'s, '_>], at: &At<'_>) {
        let names = || levels.iter().flat_map(|level| level.def.members.iter().map(|m| &*m.name));
        let suggestion = closest(key, names());
        let mut expected = String::new();
        for (i, name) in names().enumerate() {
            if i == 8 {
                expected.push_str(", ...");
                break;
            }
            expected.push_str(if i == 0 { "one of " } else { ", " });
            expected.push_str(name);
        }
        let note = if expected.is_empty() {
            expected.push_str("no members");
            (at.parent.is_none()).then(|| "the command takes no arguments".to_owned())
        } else {
            self.schema.other_variants_with(key, levels)
        };
        let problem = Problem {
            path: at.member(key).render(),
            kind: ProblemKind::Unexpected,
            expected,
            found: format!("member \"{key}\""),
            suggestion: suggestion.map(Into::into),
            note,
        };
        self.problems.push(problem);
    }

    fn missing(&mut self, member: &Member, picked_by: Option<(&str, &str)>, at: &At<'_>) {
        if self.full() {
            return;
        }
        self.problems.push(Problem {
            path: at.member(&member.name).render(),
            kind: ProblemKind::Missing,
            expected: self.schema.describe_type(member.ty),
            found: "nothing".into(),
            suggestion: None,
            note: picked_by.map(|(tag, case)| format!("required for {tag} \"{case}\"")),
        });
    }

    fn wrong_type(&mut self, at: &At<'_>, ty: Id, value: &Value) {
        self.problem(at, ProblemKind::WrongType, ty, value, None, None);
    }

    fn problem(
        &mut self,
        at: &At<'_>,
        kind: ProblemKind,
        ty: Id,
        value: &Value,
        suggestion: Option<&str>,
        note: Option<String>,
    ) {
        self.problems.push(Problem {
            path: at.render(),
            kind,
            expected: self.schema.describe_type(ty),
            found: describe_value(value),
            suggestion: suggestion.map(Into::into),
            note,
        });
    }

    fn not_checked(&mut self, at: &At<'_>, reason: UncheckedReason) {
        if self.unchecked.is_none() {
            self.unchecked = Some(Unchecked { path: at.render(), reason });
        }
    }

    #[inline]
    fn warn(&mut self, features: &Features, at: &At<'_>, subject: Subject, name: &str) {
        if features.flags != 0 {
            self.warn_flagged(features, at, subject, name);
        }
    }

    #[cold]
    fn warn_flagged(&mut self, features: &Features, at: &At<'_>, subject: Subject, name: &str) {
        for (flag, feature) in [(DEPRECATED, Feature::Deprecated), (UNSTABLE, Feature::Unstable)] {
            if features.flags & flag != 0 {
                self.warnings.push(Warning {
                    path: at.render(),
                    subject,
                    name: name.into(),
                    feature,
                });
            }
        }
    }
}

impl Schema {
    /// Whether an alternate's branch of type `id` is the one QEMU picks for `value`.
    fn takes_json_kind(&self, id: Id, value: &Value) -> bool {
        match &self.entry(id).kind {
            Kind::Builtin(json_type) => match json_type {
                JsonType::String => value.is_string(),
                JsonType::Number | JsonType::Int => value.is_number(),
                JsonType::Boolean => value.is_boolean(),
                JsonType::Null => value.is_null(),
                JsonType::Object => value.is_object(),
                JsonType::Array => value.is_array(),
                JsonType::Value | JsonType::Other => true,
            },
            Kind::Enum(_) => value.is_string(),
            Kind::Array { .. } => value.is_array(),
            Kind::Object(_) => value.is_object(),
            // QEMU has no alternates within alternates; a schema that does is followed
            // until the depth limit.
            Kind::Alternate { .. } | Kind::Other(_) => true,
            Kind::Command(_) | Kind::Event { .. } => false,
        }
    }

    /// `only for driver "file", "host_device"` when `key` is a member of other variants of
    /// a union among `levels`: the usual mistake of a member given for the wrong driver.
    fn other_variants_with(&self, key: &str, levels: &[Level<'_, '_>]) -> Option<String> {
        const LISTED: usize = 4;
        for level in levels {
            let Some(tag) = level.def.tag_member() else { continue };
            let mut cases = level.def.variants.iter().filter(|variant| {
                matches!(&self.entry(variant.ty).kind, Kind::Object(o) if o.find(key).is_some())
            });
            let Some(first) = cases.next() else { continue };
            let mut note = format!("only for {} \"{}\"", tag.name, first.case);
            for (i, variant) in cases.enumerate() {
                if i + 1 == LISTED {
                    note.push_str(", ...");
                    break;
                }
                let _ = write!(note, ", \"{}\"", variant.case);
            }
            return Some(note);
        }
        None
    }

    fn enum_has(&self, id: Id, value: &str) -> bool {
        matches!(&self.entry(id).kind, Kind::Enum(def) if def.find(value).is_some())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A small schema with one of everything the checker handles.
    fn schema() -> Schema {
        Schema::from_value(&json!([
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "int", "meta-type": "builtin", "json-type": "int"},
            {"name": "number", "meta-type": "builtin", "json-type": "number"},
            {"name": "bool", "meta-type": "builtin", "json-type": "boolean"},
            {"name": "null", "meta-type": "builtin", "json-type": "null"},
            {"name": "any", "meta-type": "builtin", "json-type": "value"},
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "1", "meta-type": "enum", "values": ["file", "raw", "null-co"],
             "members": [{"name": "file"}, {"name": "raw"}, {"name": "null-co", "features": ["unstable"]}]},
            {"name": "2", "meta-type": "object", "tag": "driver", "members": [
                {"name": "driver", "type": "1"},
                {"name": "node-name", "type": "str", "default": null},
                {"name": "old", "type": "bool", "default": null, "features": ["deprecated"]}],
             "variants": [{"case": "file", "type": "3"}, {"case": "raw", "type": "4"}]},
            {"name": "3", "meta-type": "object", "members": [
                {"name": "filename", "type": "str"},
                {"name": "size", "type": "int", "default": null},
                {"name": "ratio", "type": "number", "default": null}]},
            {"name": "4", "meta-type": "object", "members": [{"name": "file", "type": "5"}]},
            {"name": "5", "meta-type": "alternate", "members": [{"type": "2"}, {"type": "str"}, {"type": "null"}]},
            {"name": "6", "meta-type": "object", "members": [
                {"name": "keys", "type": "[7]"}, {"name": "value", "type": "any", "default": null}]},
            {"name": "[7]", "meta-type": "array", "element-type": "7"},
            {"name": "7", "meta-type": "object", "members": [{"name": "code", "type": "int"}]},
            {"name": "add", "meta-type": "command", "arg-type": "2", "ret-type": "0"},
            {"name": "keys", "meta-type": "command", "arg-type": "6", "ret-type": "0"},
            {"name": "status", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
            {"name": "old-cmd", "meta-type": "command", "arg-type": "0", "ret-type": "0",
             "features": ["deprecated"]},
            {"name": "device_add", "meta-type": "command", "arg-type": "3", "ret-type": "0"},
        ]))
        .unwrap()
    }

    fn problems(command: &str, arguments: &Value) -> Vec<String> {
        schema()
            .check(command, Some(arguments))
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn verdict(command: &str, arguments: Option<&Value>) -> Verdict {
        schema().check(command, arguments).verdict
    }

    #[test]
    fn valid_arguments_pass_with_nothing_to_report() {
        let s = schema();
        for (command, arguments) in [
            ("add", json!({"driver": "file", "filename": "/x", "size": 5, "ratio": 0.5})),
            ("add", json!({"driver": "file", "filename": "/x", "size": u64::MAX, "ratio": 1})),
            ("add", json!({"driver": "file", "filename": "/x", "size": i64::MIN})),
            ("add", json!({"driver": "raw", "file": {"driver": "file", "filename": "/x"}})),
            ("add", json!({"driver": "raw", "file": "node0"})),
            ("add", json!({"driver": "raw", "file": null, "node-name": "n"})),
            ("keys", json!({"keys": []})),
            ("keys", json!({"keys": [{"code": 1}, {"code": 2}]})),
            ("status", json!({})),
        ] {
            let report = s.check(command, Some(&arguments));
            assert_eq!(report, Report { verdict: Verdict::Valid, warnings: vec![] }, "{arguments}");
        }
        assert_eq!(verdict("status", None), Verdict::Valid, "no arguments at all is {{}}");
    }

    #[test]
    fn unknown_members_are_named_with_a_close_match() {
        assert_eq!(
            problems("add", &json!({"driver": "file", "filename": "/x", "sise": 1})),
            ["arguments.sise: unexpected member (did you mean \"size\"?)"]
        );
        assert_eq!(
            problems("status", &json!({"x": 1})),
            ["arguments.x: unexpected member (the command takes no arguments)"]
        );
    }

    #[test]
    fn a_member_of_another_variant_says_which() {
        assert_eq!(
            problems("add", &json!({"driver": "raw", "file": "n", "filename": "/x"})),
            ["arguments.filename: unexpected member (only for driver \"file\")"]
        );
    }

    #[test]
    fn missing_members_say_which_variant_needs_them() {
        assert_eq!(
            problems("add", &json!({})),
            [
                "arguments.driver: missing (required), expected one of \"file\", \"raw\", \"null-co\""
            ]
        );
        assert_eq!(
            problems("add", &json!({"driver": "raw", "file": {"driver": "file"}})),
            ["arguments.file.filename: missing (required for driver \"file\"), expected str"]
        );
        assert_eq!(
            verdict("keys", None),
            Verdict::Invalid(vec![Problem {
                path: "arguments.keys".into(),
                kind: ProblemKind::Missing,
                expected: "array of object".into(),
                found: "nothing".into(),
                suggestion: None,
                note: None,
            }])
        );
    }

    #[test]
    fn json_types_are_checked_and_int_means_a_64_bit_integer() {
        assert_eq!(
            problems("add", &json!({"driver": "file", "filename": 5})),
            ["arguments.filename: expected str, found number 5"]
        );
        for not_an_int in
            [json!(1.5), json!(1e3), json!(18_446_744_073_709_551_616.0), json!("1"), json!(null)]
        {
            assert_eq!(
                problems("add", &json!({"driver": "file", "filename": "x", "size": not_an_int}))
                    .len(),
                1,
                "{not_an_int}"
            );
        }
        assert_eq!(
            problems("add", &json!({"driver": "file", "filename": "x", "ratio": true})),
            ["arguments.ratio: expected number, found true"]
        );
        assert_eq!(
            problems("keys", &json!({"keys": {}})),
            ["arguments.keys: expected array of object, found an object"]
        );
        assert_eq!(
            problems("keys", &json!({"keys": [{"code": 1}, {"code": "a"}]})),
            ["arguments.keys[1].code: expected int, found string \"a\""]
        );
    }

    #[test]
    fn enum_values_get_a_suggestion_and_a_bad_discriminator_hides_variant_members() {
        assert_eq!(
            problems("add", &json!({"driver": "rwa", "filename": "/x"})),
            [
                "arguments.driver: expected one of \"file\", \"raw\", \"null-co\", found string \"rwa\" (did you mean \"raw\"?)"
            ]
        );
    }

    #[test]
    fn alternates_pick_their_branch_by_json_type() {
        assert_eq!(
            problems("add", &json!({"driver": "raw", "file": 5})),
            ["arguments.file: expected object or str or null, found number 5"]
        );
        assert_eq!(
            problems(
                "add",
                &json!({"driver": "raw", "file": {"driver": "raw", "file": {"driver": "nope"}}})
            ),
            [
                "arguments.file.file.driver: expected one of \"file\", \"raw\", \"null-co\", found string \"nope\""
            ]
        );
    }

    #[test]
    fn arguments_must_be_an_object() {
        assert_eq!(
            problems("status", &json!([])),
            ["arguments: expected empty object, found an array (0 items)"]
        );
        assert_eq!(problems("add", &json!(null)), ["arguments: expected object, found null"]);
    }

    #[test]
    fn a_map_is_checked_like_the_object_holding_it() {
        let s = schema();
        let arguments = json!({"driver": "raw", "file": {"driver": "file"}});
        let map = arguments.as_object().unwrap();
        assert_eq!(s.check_map("add", Some(map)), s.check("add", Some(&arguments)));
        assert_eq!(s.check_map("add", None), s.check("add", None));
        assert_eq!(s.check_map("status", None).verdict, Verdict::Valid);
    }

    #[test]
    fn unknown_commands_get_a_suggestion() {
        let report = schema().check("statsu", None);
        assert_eq!(report.problems()[0].kind, ProblemKind::UnknownCommand);
        assert_eq!(report.problems()[0].suggestion.as_deref(), Some("status"));
    }

    #[test]
    fn free_form_commands_and_any_values_are_not_checked() {
        let Verdict::NotChecked(unchecked) =
            verdict("device_add", Some(&json!({"driver": "e1000", "x": []})))
        else {
            panic!()
        };
        assert!(matches!(unchecked.reason, UncheckedReason::FreeForm(_)));
        assert_eq!(
            verdict("keys", Some(&json!({"keys": [], "value": {"a": 1}}))),
            Verdict::NotChecked(Unchecked {
                path: "arguments.value".into(),
                reason: UncheckedReason::AnyValue
            })
        );
        // A problem elsewhere still refuses the command.
        assert!(matches!(
            verdict("keys", Some(&json!({"keys": 1, "value": 1}))),
            Verdict::Invalid(_)
        ));
    }

    #[test]
    fn deprecated_and_unstable_uses_are_warnings() {
        let s = schema();
        let report = s.check("add", Some(&json!({"driver": "null-co", "old": true})));
        assert_eq!(report.verdict, Verdict::Valid);
        let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "arguments.driver: value \"null-co\" is unstable",
                "arguments.old: member \"old\" is deprecated"
            ]
        );
        let report = s.check("old-cmd", None);
        assert_eq!(report.warnings[0].to_string(), "execute: command \"old-cmd\" is deprecated");
    }

    #[test]
    fn problems_are_capped() {
        let many: Map<String, Value> = (0..100).map(|i| (format!("x{i}"), json!(1))).collect();
        assert_eq!(problems("status", &Value::Object(many)).len(), MAX_PROBLEMS);
    }

    #[test]
    fn deep_nesting_stops_at_the_limit_without_overflowing() {
        let mut value = json!({"driver": "file", "filename": "x"});
        for _ in 0..MAX_DEPTH {
            value = json!({"driver": "raw", "file": value});
        }
        // In a thread with the stack of a tokio worker (2 MiB), in a debug build.
        let verdict = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || schema().check("add", Some(&value)).verdict)
            .unwrap()
            .join()
            .unwrap();
        let Verdict::NotChecked(Unchecked { reason: UncheckedReason::TooDeep, path }) = verdict
        else {
            panic!("{verdict:?}")
        };
        assert!(path.starts_with("arguments.file.file."));
    }

    #[test]
    fn a_self_referential_alternate_is_cut_off_by_the_depth_limit() {
        let s = Schema::from_value(&json!([
            {"name": "0", "meta-type": "object", "members": [{"name": "a", "type": "1"}]},
            {"name": "1", "meta-type": "alternate", "members": [{"type": "1"}]},
            {"name": "c", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
        ]))
        .unwrap();
        let verdict = s.check("c", Some(&json!({"a": 1}))).verdict;
        assert!(matches!(
            verdict,
            Verdict::NotChecked(Unchecked { reason: UncheckedReason::TooDeep, .. })
        ));
    }
}
