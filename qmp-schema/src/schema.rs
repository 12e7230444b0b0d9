//! The parsed, indexed schema: every `SchemaInfo` entry of a `query-qmp-schema` reply,
//! with every type reference resolved to an index once, so checks and probes never look a
//! type up by its (masked) name again.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny};
use serde_json::Value;

use crate::Error;

/// Index of an entry in [`Schema::entries`].
pub(crate) type Id = u32;

/// Feature flags the checker reports on; any other feature is only kept by name.
pub(crate) const DEPRECATED: u8 = 1;
pub(crate) const UNSTABLE: u8 = 2;

/// A QMP schema as QEMU reports it through `query-qmp-schema`, parsed and indexed once.
///
/// Build one per connection with [`Schema::from_slice`] (the reply's bytes) or
/// [`Schema::from_value`] (the reply already parsed); it is immutable, `Send` and `Sync`,
/// so an `Arc<Schema>` can serve every task that sends commands on that connection. Then:
///
/// * [`Schema::check`] validates a command's arguments before they are sent;
/// * [`Schema::has`] answers libvirt-style feature probes such as
///   `"blockdev-add/arg-type/+file/aio"`;
/// * [`Schema::describe`] and the `complete_*` methods say what a command takes.
///
/// QEMU masks the names of all types but the built-in ones as numbers (`"49"`); nothing this
/// type returns to a user shows those numbers: types are named by the command, member or
/// path they are reached through, or described by their structure.
#[derive(Debug)]
pub struct Schema {
    pub(crate) entries: Vec<Entry>,
    /// Entries whose names are small decimal numbers (QEMU's masked type names), by number.
    numbered: Vec<Id>,
    /// Every other entry: built-in types, arrays (`"[int]"`), commands and events.
    named: HashMap<Box<str>, Id>,
    /// Commands and events, each sorted by name.
    pub(crate) commands: Vec<Id>,
    pub(crate) events: Vec<Id>,
}

const NO_ENTRY: Id = Id::MAX;

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: Box<str>,
    pub(crate) features: Features,
    pub(crate) kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Builtin(JsonType),
    Enum(EnumDef),
    Array {
        element: Id,
    },
    Object(ObjectDef),
    Alternate {
        branches: Box<[Id]>,
    },
    Command(CommandDef),
    Event {
        arguments: Option<Id>,
    },
    /// A meta-type this crate does not know (a newer QEMU's); values of it are not checked.
    Other(Box<str>),
}

/// The JSON type of a built-in QAPI type (`SchemaInfoBuiltin`'s `json-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonType {
    String,
    Number,
    Int,
    Boolean,
    Null,
    Object,
    Array,
    Value,
    /// A JSON type this crate does not know; values of it are not checked.
    Other,
}

impl JsonType {
    fn parse(name: &str) -> Self {
        match name {
            "string" => Self::String,
            "number" => Self::Number,
            "int" => Self::Int,
            "boolean" => Self::Boolean,
            "null" => Self::Null,
            "object" => Self::Object,
            "array" => Self::Array,
            "value" => Self::Value,
            _ => Self::Other,
        }
    }
}

/// Feature names as the schema lists them, plus the two the checker warns about as flags.
#[derive(Debug, Default)]
pub(crate) struct Features {
    pub(crate) names: Box<[Box<str>]>,
    pub(crate) flags: u8,
}

impl Features {
    fn new(names: Vec<String>) -> Self {
        let flags = names.iter().fold(0, |flags, name| {
            flags
                | match name.as_str() {
                    "deprecated" => DEPRECATED,
                    "unstable" => UNSTABLE,
                    _ => 0,
                }
        });
        Self { names: names.into_iter().map(String::into_boxed_str).collect(), flags }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| &**n == name)
    }
}

#[derive(Debug)]
pub(crate) struct EnumDef {
    pub(crate) values: Box<[EnumValue]>,
    /// Indices into `values`, sorted by name.
    sorted: Box<[u32]>,
}

#[derive(Debug)]
pub(crate) struct EnumValue {
    pub(crate) name: Box<str>,
    pub(crate) features: Features,
}

/// `a.cmp(b)` for the short names of a schema, without a call to `memcmp`: the binary
/// searches over names run on every check, and most comparisons end within a byte or two.
#[inline]
fn cmp_names(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl EnumDef {
    pub(crate) fn find(&self, name: &str) -> Option<&EnumValue> {
        let at = self.sorted.binary_search_by(|&i| cmp_names(&self.values[i as usize].name, name));
        at.ok().map(|at| &self.values[self.sorted[at] as usize])
    }
}

#[derive(Debug)]
pub(crate) struct ObjectDef {
    /// In schema order (the order QEMU visits them in).
    pub(crate) members: Box<[Member]>,
    /// Indices into `members`, sorted by name.
    sorted: Box<[u32]>,
    /// Indices of the members without a default, i.e. mandatory ones.
    pub(crate) required: Box<[u32]>,
    /// Index of the discriminator member of a flat union.
    pub(crate) tag: Option<u32>,
    /// In schema order.
    pub(crate) variants: Box<[Variant]>,
    /// Indices into `variants`, sorted by case.
    variants_sorted: Box<[u32]>,
}

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) name: Box<str>,
    pub(crate) ty: Id,
    pub(crate) optional: bool,
    pub(crate) features: Features,
}

#[derive(Debug)]
pub(crate) struct Variant {
    pub(crate) case: Box<str>,
    pub(crate) ty: Id,
}

impl ObjectDef {
    pub(crate) fn find(&self, name: &str) -> Option<&Member> {
        // Most objects are small: a scan that rejects on length and first byte beats the
        // string comparisons of a binary search there.
        const SCAN: usize = 16;
        if self.members.len() <= SCAN {
            let wanted = name.as_bytes();
            return self.members.iter().find(|m| {
                let have = m.name.as_bytes();
                have.len() == wanted.len() && have.first() == wanted.first() && have == wanted
            });
        }
        let at = self.sorted.binary_search_by(|&i| cmp_names(&self.members[i as usize].name, name));
        at.ok().map(|at| &self.members[self.sorted[at] as usize])
    }

    pub(crate) fn variant(&self, case: &str) -> Option<&Variant> {
        let at =
            self.variants_sorted.binary_search_by(|&i| (*self.variants[i as usize].case).cmp(case));
        at.ok().map(|at| &self.variants[self.variants_sorted[at] as usize])
    }

    pub(crate) fn tag_member(&self) -> Option<&Member> {
        self.tag.map(|tag| &self.members[tag as usize])
    }
}

#[derive(Debug)]
pub(crate) struct CommandDef {
    pub(crate) arguments: Id,
    pub(crate) returns: Id,
    pub(crate) allow_oob: bool,
}

impl Schema {
    /// Parses a `query-qmp-schema` reply: either the whole reply line QEMU sent
    /// (`{"return": [...]}`) or just its `return` array.
    ///
    /// # Errors
    /// [`Error::Json`] when the bytes are not of that shape; [`Error::DuplicateName`],
    /// [`Error::UndefinedType`] or [`Error::Malformed`] when the entries do not hold
    /// together (QEMU's own schema always does).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let entries = if first == Some(&b'{') {
            serde_json::from_slice::<Reply<'_>>(bytes)?.entries
        } else {
            serde_json::from_slice::<Vec<RawEntry<'_>>>(bytes)?
        };
        Self::build(entries)
    }

    /// Like [`Schema::from_slice`], for a reply a client has already parsed: the `return`
    /// value of `query-qmp-schema` (an array), or the whole reply object holding it.
    ///
    /// # Errors
    /// As [`Schema::from_slice`].
    pub fn from_value(value: &Value) -> Result<Self, Error> {
        let array = value.get("return").unwrap_or(value);
        Self::build(Vec::<RawEntry<'_>>::deserialize(array)?)
    }

    /// Names of all commands, sorted.
    pub fn commands(&self) -> impl Iterator<Item = &str> + '_ {
        self.commands.iter().map(|&id| &*self.entries[id as usize].name)
    }

    /// Names of all events, sorted.
    pub fn events(&self) -> impl Iterator<Item = &str> + '_ {
        self.events.iter().map(|&id| &*self.entries[id as usize].name)
    }

    /// Whether the schema has a command of this name.
    pub fn has_command(&self, name: &str) -> bool {
        self.command(name).is_some()
    }

    pub(crate) fn entry(&self, id: Id) -> &Entry {
        &self.entries[id as usize]
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<Id> {
        match number(name) {
            Some(n) if n < self.numbered.len() => {
                Some(self.numbered[n]).filter(|&id| id != NO_ENTRY)
            }
            _ => self.named.get(name).copied(),
        }
    }

    pub(crate) fn command(&self, name: &str) -> Option<(Id, &CommandDef)> {
        let id = self.lookup(name)?;
        match &self.entry(id).kind {
            Kind::Command(command) => Some((id, command)),
            _ => None,
        }
    }

    fn build(raw: Vec<RawEntry<'_>>) -> Result<Self, Error> {
        let count = raw.len();
        // Masked names are 0..count in QEMU's replies; anything far beyond goes to the map,
        // so a hostile "99999999" cannot make us allocate a huge table.
        let numbered_limit = count.saturating_mul(4).saturating_add(16);
        let mut schema = Self {
            entries: Vec::with_capacity(count),
            numbered: vec![NO_ENTRY; count],
            named: HashMap::with_capacity(count / 2),
            commands: Vec::new(),
            events: Vec::new(),
        };
        let mut metas = Vec::with_capacity(count);
        for (index, entry) in raw.iter().enumerate() {
            let id = Id::try_from(index).map_err(|_| malformed(&entry.name, "too many entries"))?;
            let fresh = match number(&entry.name).filter(|&n| n < numbered_limit) {
                Some(n) => {
                    if n >= schema.numbered.len() {
                        schema.numbered.resize(n + 1, NO_ENTRY);
                    }
                    std::mem::replace(&mut schema.numbered[n], id) == NO_ENTRY
                }
                None => schema.named.insert(entry.name.as_ref().into(), id).is_none(),
            };
            if !fresh {
                return Err(Error::DuplicateName(entry.name.clone().into_owned()));
            }
            metas.push(Meta::of(&entry.meta_type));
        }
        for entry in raw {
            let built = schema.convert(entry, &metas)?;
            schema.entries.push(built);
        }
        schema.validate_unions()?;
        let by_name = |ids: &mut Vec<Id>, entries: &[Entry]| {
            ids.sort_unstable_by(|&a, &b| entries[a as usize].name.cmp(&entries[b as usize].name));
        };
        by_name(&mut schema.commands, &schema.entries);
        by_name(&mut schema.events, &schema.entries);
        Ok(schema)
    }

    /// Resolves `name`, a type reference made by `used_by`, to an entry that is a type.
    fn resolve(&self, name: &str, used_by: &str, metas: &[Meta]) -> Result<Id, Error> {
        let id = self
            .lookup(name)
            .ok_or_else(|| Error::UndefinedType { name: name.into(), used_by: used_by.into() })?;
        match metas[id as usize] {
            Meta::Command | Meta::Event => {
                Err(malformed(used_by, "refers to a command or event as a type"))
            }
            _ => Ok(id),
        }
    }

    fn convert(&mut self, raw: RawEntry<'_>, metas: &[Meta]) -> Result<Entry, Error> {
        let id = Id::try_from(self.entries.len()).expect("checked while registering names");
        let name = &*raw.name;
        let kind = match metas[id as usize] {
            Meta::Builtin => Kind::Builtin(JsonType::parse(&required(
                raw.json_type,
                name,
                "a builtin needs json-type",
            )?)),
            Meta::Enum => Kind::Enum(
                enum_def(raw.members, raw.values)
                    .ok_or_else(|| malformed(name, "an enum needs members or values"))?,
            ),
            Meta::Array => {
                let element = required(raw.element_type, name, "an array needs element-type")?;
                Kind::Array { element: self.resolve(&element, name, metas)? }
            }
            Meta::Object => {
                Kind::Object(self.object_def(name, raw.members, raw.tag, raw.variants, metas)?)
            }
            Meta::Alternate => {
                let members =
                    raw.members.ok_or_else(|| malformed(name, "an alternate needs members"))?;
                let branches = members
                    .into_iter()
                    .map(|member| {
                        let ty = member
                            .ty
                            .ok_or_else(|| malformed(name, "an alternate member needs a type"))?;
                        self.resolve(&ty, name, metas)
                    })
                    .collect::<Result<_, _>>()?;
                Kind::Alternate { branches }
            }
            Meta::Command => {
                self.commands.push(id);
                let arguments = required(raw.arg_type, name, "a command needs arg-type")?;
                let returns = required(raw.ret_type, name, "a command needs ret-type")?;
                Kind::Command(CommandDef {
                    arguments: self.resolve(&arguments, name, metas)?,
                    returns: self.resolve(&returns, name, metas)?,
                    allow_oob: raw.allow_oob,
                })
            }
            Meta::Event => {
                self.events.push(id);
                let arguments =
                    raw.arg_type.map(|ty| self.resolve(&ty, name, metas)).transpose()?;
                Kind::Event { arguments }
            }
            Meta::Other => Kind::Other(raw.meta_type.into()),
        };
        Ok(Entry { name: raw.name.into(), features: Features::new(raw.features), kind })
    }

    fn object_def(
        &self,
        name: &str,
        members: Option<Vec<RawMember<'_>>>,
        tag: Option<Cow<'_, str>>,
        variants: Option<Vec<RawVariant<'_>>>,
        metas: &[Meta],
    ) -> Result<ObjectDef, Error> {
        let members: Box<[Member]> = members
            .unwrap_or_default()
            .into_iter()
            .map(|member| {
                let (Some(member_name), Some(ty)) = (member.name, member.ty) else {
                    return Err(malformed(name, "an object member needs a name and a type"));
                };
                Ok(Member {
                    name: member_name.into_boxed_str(),
                    ty: self.resolve(&ty, name, metas)?,
                    optional: member.has_default,
                    features: Features::new(member.features),
                })
            })
            .collect::<Result<_, _>>()?;
        let sorted = sorted_indices(&members, |m| &m.name);
        let required = (0..members.len()).filter(|&i| !members[i].optional).map(index).collect();
        let tag =
            match tag {
                Some(tag) => {
                    Some(members.iter().position(|m| *m.name == *tag).map(index).ok_or_else(
                        || malformed(name, "the union tag is not one of its members"),
                    )?)
                }
                None => None,
            };
        let variants: Box<[Variant]> = variants
            .unwrap_or_default()
            .into_iter()
            .map(|variant| {
                let ty = self.resolve(&variant.ty, name, metas)?;
                if metas[ty as usize] != Meta::Object {
                    return Err(malformed(name, "a union variant is not an object type"));
                }
                Ok(Variant { case: variant.case.into_boxed_str(), ty })
            })
            .collect::<Result<_, _>>()?;
        if !variants.is_empty() && tag.is_none() {
            return Err(malformed(name, "union variants without a tag"));
        }
        let variants_sorted = sorted_indices(&variants, |v| &v.case);
        Ok(ObjectDef { members, sorted, required, tag, variants, variants_sorted })
    }

    /// A union variant must not lead back to itself through variants alone: the checker
    /// would otherwise walk that loop for one JSON object. QEMU never builds such schemas.
    fn validate_unions(&self) -> Result<(), Error> {
        // 0 = unvisited, 1 = on the current walk, 2 = known to end.
        let mut state = vec![0u8; self.entries.len()];
        let mut stack: Vec<(Id, usize)> = Vec::new();
        for start in 0..self.entries.len() {
            if state[start] != 0 {
                continue;
            }
            stack.push((index(start), 0));
            state[start] = 1;
            while let Some((id, next)) = stack.last_mut() {
                let variants = match &self.entries[*id as usize].kind {
                    Kind::Object(object) => &object.variants[..],
                    _ => &[],
                };
                if let Some(variant) = variants.get(*next) {
                    *next += 1;
                    match state[variant.ty as usize] {
                        0 => {
                            state[variant.ty as usize] = 1;
                            stack.push((variant.ty, 0));
                        }
                        1 => {
                            return Err(malformed(
                                &self.entries[start].name,
                                "its union variants loop back to it",
                            ));
                        }
                        _ => {}
                    }
                } else {
                    state[*id as usize] = 2;
                    stack.pop();
                }
            }
        }
        Ok(())
    }
}

fn enum_def(members: Option<Vec<RawMember<'_>>>, values: Option<Vec<String>>) -> Option<EnumDef> {
    // QEMU 6.2 added `members` (with per-value features); `values` is the older list.
    let values: Box<[EnumValue]> = match (members, values) {
        (Some(members), _) => members
            .into_iter()
            .map(|m| {
                Some(EnumValue {
                    name: m.name?.into_boxed_str(),
                    features: Features::new(m.features),
                })
            })
            .collect::<Option<_>>()?,
        (None, Some(values)) => values
            .into_iter()
            .map(|v| EnumValue { name: v.into_boxed_str(), features: Features::default() })
            .collect(),
        (None, None) => return None,
    };
    let sorted = sorted_indices(&values, |v| &v.name);
    Some(EnumDef { values, sorted })
}

fn sorted_indices<T>(items: &[T], key: impl Fn(&T) -> &str) -> Box<[u32]> {
    let mut sorted: Vec<u32> = (0..items.len()).map(index).collect();
    sorted.sort_unstable_by(|&a, &b| key(&items[a as usize]).cmp(key(&items[b as usize])));
    sorted.into()
}

/// Converts a position in a list that came from the schema to the index type. Lists are
/// bounded by the input's size, far below `u32::MAX` entries.
fn index(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

fn required<'a>(
    field: Option<Cow<'a, str>>,
    entry: &str,
    what: &'static str,
) -> Result<Cow<'a, str>, Error> {
    field.ok_or_else(|| malformed(entry, what))
}

fn malformed(entry: &str, reason: &'static str) -> Error {
    Error::Malformed { entry: entry.into(), reason }
}

/// QEMU's masked type names: a decimal number without leading zeros.
fn number(name: &str) -> Option<usize> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 9 || (bytes[0] == b'0' && bytes.len() > 1) {
        return None;
    }
    bytes
        .iter()
        .try_fold(0usize, |n, &b| b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0')))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Builtin,
    Enum,
    Array,
    Object,
    Alternate,
    Command,
    Event,
    Other,
}

impl Meta {
    fn of(name: &str) -> Self {
        match name {
            "builtin" => Self::Builtin,
            "enum" => Self::Enum,
            "array" => Self::Array,
            "object" => Self::Object,
            "alternate" => Self::Alternate,
            "command" => Self::Command,
            "event" => Self::Event,
            _ => Self::Other,
        }
    }
}

// What `query-qmp-schema` sends (QEMU's qapi/introspect.json, `SchemaInfo` and friends).
// One flat struct for every meta-type: the fields that do not apply are simply absent.
// Type references are borrowed from the input where it has no escapes: they are resolved
// to indices and dropped, so they cost no allocation.

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(rename = "return", borrow)]
    entries: Vec<RawEntry<'a>>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "meta-type", borrow)]
    meta_type: Cow<'a, str>,
    #[serde(default)]
    features: Vec<String>,
    #[serde(rename = "json-type", default, borrow)]
    json_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    members: Option<Vec<RawMember<'a>>>,
    #[serde(default)]
    values: Option<Vec<String>>,
    #[serde(rename = "element-type", default, borrow)]
    element_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tag: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    variants: Option<Vec<RawVariant<'a>>>,
    #[serde(rename = "arg-type", default, borrow)]
    arg_type: Option<Cow<'a, str>>,
    #[serde(rename = "ret-type", default, borrow)]
    ret_type: Option<Cow<'a, str>>,
    #[serde(rename = "allow-oob", default)]
    allow_oob: bool,
}

/// An object, enum or alternate member: objects have all fields, enums `name` and
/// `features`, alternates only `type`.
#[derive(Deserialize)]
struct RawMember<'a> {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type", default, borrow)]
    ty: Option<Cow<'a, str>>,
    /// An object member with a `default` key (always `null` so far) is optional.
    #[serde(rename = "default", default, deserialize_with = "present")]
    has_default: bool,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
struct RawVariant<'a> {
    case: String,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(entries: &Value) -> Result<Schema, Error> {
        Schema::from_slice(entries.to_string().as_bytes())
    }

    #[test]
    fn bare_array_reply_object_and_value_all_parse() {
        let entries = json!([
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "stop", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
        ]);
        assert_eq!(schema(&entries).unwrap().commands().collect::<Vec<_>>(), ["stop"]);
        let reply = json!({"return": entries});
        let from_bytes = Schema::from_slice(reply.to_string().as_bytes()).unwrap();
        assert!(from_bytes.has_command("stop"));
        assert!(Schema::from_value(&reply).unwrap().has_command("stop"));
        assert!(Schema::from_value(&entries).unwrap().has_command("stop"));
        assert!(!from_bytes.has_command("0"), "a type is not a command");
    }

    #[test]
    fn optional_means_a_default_key_even_when_null() {
        let s = schema(&json!([
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "1", "meta-type": "object", "members": [
                {"name": "a", "type": "str"}, {"name": "b", "type": "str", "default": null}]},
        ]))
        .unwrap();
        let Kind::Object(object) = &s.entry(s.lookup("1").unwrap()).kind else { panic!() };
        assert!(!object.find("a").unwrap().optional);
        assert!(object.find("b").unwrap().optional);
        assert_eq!(&object.required[..], [0]);
    }

    #[test]
    fn enum_members_win_over_values_and_values_alone_work() {
        let s = schema(&json!([
            {"name": "1", "meta-type": "enum", "values": ["a", "b"],
             "members": [{"name": "a"}, {"name": "b", "features": ["deprecated"]}]},
            {"name": "2", "meta-type": "enum", "values": ["z", "y"]},
        ]))
        .unwrap();
        let Kind::Enum(one) = &s.entry(s.lookup("1").unwrap()).kind else { panic!() };
        assert_eq!(one.find("b").unwrap().features.flags, DEPRECATED);
        let Kind::Enum(two) = &s.entry(s.lookup("2").unwrap()).kind else { panic!() };
        assert!(two.find("y").is_some() && two.find("x").is_none());
    }

    #[test]
    fn broken_schemas_are_refused_with_the_entry_named() {
        let undefined = schema(&json!([{"name": "1", "meta-type": "array", "element-type": "7"}]));
        assert!(
            matches!(undefined, Err(Error::UndefinedType { name, used_by }) if name == "7" && used_by == "1")
        );
        let twice = schema(&json!([
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
        ]));
        assert!(matches!(twice, Err(Error::DuplicateName(name)) if name == "str"));
        let command_as_type = schema(&json!([
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "c", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
            {"name": "1", "meta-type": "array", "element-type": "c"},
        ]));
        assert!(matches!(command_as_type, Err(Error::Malformed { .. })));
        let bad_tag = schema(&json!([
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "1", "meta-type": "object", "members": [], "tag": "t",
             "variants": [{"case": "a", "type": "0"}]},
        ]));
        assert!(matches!(bad_tag, Err(Error::Malformed { .. })));
        assert!(matches!(Schema::from_slice(b"{\"return\": 5}"), Err(Error::Json(_))));
    }

    #[test]
    fn union_variants_that_loop_are_refused() {
        let looping = schema(&json!([
            {"name": "9", "meta-type": "enum", "values": ["a"]},
            {"name": "1", "meta-type": "object", "members": [{"name": "t", "type": "9"}],
             "tag": "t", "variants": [{"case": "a", "type": "2"}]},
            {"name": "2", "meta-type": "object", "members": [{"name": "t", "type": "9"}],
             "tag": "t", "variants": [{"case": "a", "type": "1"}]},
        ]));
        assert!(matches!(looping, Err(Error::Malformed { .. })), "{looping:?}");
    }

    #[test]
    fn huge_masked_numbers_do_not_allocate_a_table() {
        let s = schema(&json!([{"name": "999999999", "meta-type": "builtin", "json-type": "int"}]))
            .unwrap();
        assert!(s.numbered.len() <= 16);
        assert!(s.lookup("999999999").is_some());
        assert_eq!(number("007"), None);
        assert_eq!(number("0"), Some(0));
    }
}
