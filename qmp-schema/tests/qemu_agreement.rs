//! Agreement with a real QEMU: thousands of argument objects generated around the schema
//! (valid ones, and ones with a member dropped or added, a value of the wrong type, a wrong
//! enum value, another union variant, `null` for an optional member, no or non-object
//! arguments) are checked by the checker and sent to a paused QEMU 7.2; QEMU's accept or
//! refuse must match the verdict on every case the checker claims to check, and when both
//! refuse, the parameter QEMU names must be among the problems the checker reports.
//!
//! Cases the checker reports as not checked are not sent, only counted. The generator reads
//! the schema JSON itself (not through the crate under test) and sends only commands whose
//! effects on a paused throwaway VM do not matter: queries, and adding or removing backends
//! of kinds that touch nothing outside QEMU (see `safe_commands` and `ALLOWED_VARIANTS`).
//!
//! `QMP_SCHEMA_AGREEMENT_SEED=N` replays another sequence (the seed is printed).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use qmp_schema::{MAX_PROBLEMS, Report, Schema, Verdict};
use serde_json::{Map, Value, json};

const SCHEMA: &[u8] = include_bytes!("data/qemu-7.2-schema.json");

/// How QEMU 7.2.22 words the errors of its argument check (the QMP input visitor,
/// qapi/qobject-input-visitor.c, and the dispatcher's check of `arguments`), with the way to
/// find the parameter path in each. Every other error comes from the command itself, after
/// its arguments were accepted. Seen on QEMU 7.2.22; re-check on another version.
const ARGUMENT_ERRORS: &[(&str, &str)] = &[
    // (prefix, what follows the quoted parameter path)
    ("Parameter '", "' is missing"),
    ("Parameter '", "' is unexpected"),
    ("Invalid parameter type for '", "', expected: "),
    ("Parameter '", "' does not accept value '"),
    // Unsigned and size types word a wrong JSON type this way.
    ("Parameter '", "' expects uint64"),
    ("Parameter '", "' expects size"),
    // Integer types narrower than 64 bits: invisible in the schema, avoided by the
    // generator (small non-negative integers only), but still an argument error.
    ("Parameter '", "' expects uint8_t"),
    ("Parameter '", "' expects uint16_t"),
    ("Parameter '", "' expects uint32_t"),
    ("Parameter '", "' expects int8_t"),
    ("Parameter '", "' expects int16_t"),
    ("Parameter '", "' expects int32_t"),
];
const ARGUMENTS_NOT_AN_OBJECT: &str = "QMP input member 'arguments' must be an object";

/// What the input visitor says it expected in "Invalid parameter type" errors: a JSON type,
/// or the (CamelCase) name of a QAPI alternate. QOM link properties reuse the wording with a
/// QOM type name (`expected: thread-context`, lower case), for an object of the wrong type:
/// that is the command's own check, made after the arguments were accepted.
const JSON_TYPES: &[&str] = &["string", "integer", "number", "boolean", "null", "object", "array"];

/// QEMU's argument check refused a command, naming this parameter (if it named one).
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    parameter: Option<String>,
}

/// Whether QEMU refused at its argument check.
fn argument_error(desc: &str) -> Option<Refusal> {
    if desc == ARGUMENTS_NOT_AN_OBJECT {
        return Some(Refusal { parameter: None });
    }
    ARGUMENT_ERRORS.iter().find_map(|(prefix, after)| {
        let rest = desc.strip_prefix(prefix)?;
        let end = rest.find(after)?;
        if *after == "', expected: " {
            let expected = &rest[end + after.len()..];
            let visitor = JSON_TYPES.contains(&expected)
                || expected.starts_with(|c: char| c.is_ascii_uppercase());
            if !visitor {
                return None;
            }
        }
        // The parameter path itself has no quote.
        let parameter = &rest[..end];
        (!parameter.contains('\'')).then(|| Refusal { parameter: Some(parameter.to_owned()) })
    })
}

/// Union variants the generator may pick, by command and discriminator: the ones whose
/// effect touches nothing outside this QEMU (no files created, no sockets, no helpers).
const ALLOWED_VARIANTS: &[(&str, &str, &[&str])] = &[
    ("blockdev-add", "driver", &["null-co", "null-aio", "raw", "qcow2", "file"]),
    ("netdev_add", "type", &["user", "hubport"]),
    (
        "object-add",
        "qom-type",
        &[
            "iothread",
            "main-loop",
            "throttle-group",
            "authz-simple",
            "authz-list",
            "secret",
            "memory-backend-ram",
            // Not "cryptodev-backend-builtin": QEMU 7.2.22 dies on `"queues": 82` (over
            // its limit of 64) instead of refusing it.
            "can-bus",
        ],
    ),
    ("chardev-add", "type", &["null", "ringbuf", "memory", "msmouse", "wctablet", "testdev"]),
];

/// Strings the generator uses: ids, node names, paths that do not exist.
const STRINGS: &[&str] = &["q0", "q1", "/nonexistent/qmp-schema-agreement", ""];

/// Members whose strings must come from a fixed safe set.
const FIXED_STRINGS: &[(&str, &str, &[&str])] =
    &[("human-monitor-command", "command-line", &["info version", "info status"])];

/// Commands to test and how many cases each: every query, and commands whose effects on a
/// paused throwaway VM do not matter (adding and removing backends of the kinds above,
/// settings of a VM that never runs or migrates, input events, descriptor commands without
/// a descriptor).
fn safe_commands(schema: &Raw<'_>) -> Vec<(String, usize)> {
    const OTHERS: &[(&str, usize)] = &[
        ("qom-list", 40),
        ("qom-get", 40),
        ("qom-list-types", 40),
        ("qom-list-properties", 40),
        ("device-list-properties", 40),
        ("trace-event-get-state", 40),
        ("trace-event-set-state", 60),
        ("set-action", 80),
        ("watchdog-set-action", 40),
        ("migrate-set-capabilities", 150),
        ("migrate-set-parameters", 400),
        ("netdev_add", 500),
        ("netdev_del", 30),
        ("blockdev-add", 1500),
        ("blockdev-del", 30),
        ("object-add", 1000),
        ("object-del", 30),
        ("chardev-add", 400),
        ("chardev-remove", 30),
        ("send-key", 150),
        ("input-send-event", 200),
        ("getfd", 30),
        ("closefd", 30),
        ("add-fd", 40),
        ("remove-fd", 40),
        ("device_del", 30),
        ("set_link", 40),
        ("balloon", 30),
        ("ringbuf-write", 60),
        ("ringbuf-read", 60),
        ("block-dirty-bitmap-add", 80),
        ("block-dirty-bitmap-remove", 40),
        ("block_set_io_throttle", 300),
        ("human-monitor-command", 40),
        ("device_add", 20),
        ("qom-set", 20),
    ];
    let mut commands: Vec<(String, usize)> = schema
        .commands()
        .filter(|name| name.starts_with("query-") || name.starts_with("x-query-"))
        .map(|name| {
            let cases = if schema.members(schema.arg_type(name)).is_empty() { 12 } else { 200 };
            (name.to_owned(), cases)
        })
        .collect();
    commands.extend(OTHERS.iter().map(|&(name, cases)| (name.to_owned(), cases)));
    commands
}

#[test]
fn checker_and_qemu_agree() {
    // QEMU resolves relative names against its working directory, and some accepted
    // commands create files (a chardev's `logfile`): give it a scratch one, which QEMU
    // inherits from this process (no other test here uses the working directory).
    let scratch = Scratch::new();
    let qemu = qemu_launcher::qemu_or_skip!(qemu_launcher::Qemu::builder().paused(true));
    let mut qmp = Qmp::connect(&qemu);
    let raw_json: Value = serde_json::from_slice(SCHEMA).unwrap();
    let raw = Raw::new(&raw_json);
    let schema = Schema::from_slice(SCHEMA).unwrap();
    let seed = std::env::var("QMP_SCHEMA_AGREEMENT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026_u64);
    eprintln!("seed {seed} (QMP_SCHEMA_AGREEMENT_SEED)");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut tally = Tally::default();

    for (command, cases) in safe_commands(&raw) {
        assert!(schema.has_command(&command), "{command} is not in QEMU 7.2's schema");
        let mut generator = Generator { raw: &raw, command: &command, rng: &mut rng };
        for case in 0..cases {
            let (mutation, arguments) = generator.case(case);
            let report = schema.check(&command, arguments.as_ref());
            if let Verdict::NotChecked(_) = report.verdict {
                tally.not_checked += 1;
                continue;
            }
            let reply = qmp.execute(&command, arguments.as_ref(), &qemu);
            tally.record(&command, mutation, arguments.as_ref(), &report, &reply);
        }
    }
    let elapsed = started.elapsed();
    drop(qemu);
    eprintln!("{tally}");
    eprintln!("files QEMU created in its working directory: {:?}", scratch.files());
    eprintln!("{} cases sent in {:.1} s", tally.sent(), elapsed.as_secs_f64());
    assert!(
        tally.disagreements.is_empty(),
        "{} disagreements:\n{}",
        tally.disagreements.len(),
        tally.disagreements.join("\n")
    );
    assert!(tally.sent() >= 5_000, "only {} cases", tally.sent());
    assert!(tally.accepted >= 1_000 && tally.refused >= 1_000, "{tally}");
}

/// A fresh working directory for this process, removed again on drop.
struct Scratch {
    dir: std::path::PathBuf,
    previous: std::path::PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("qmp-schema-agreement.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let previous = std::env::current_dir().unwrap();
        std::env::set_current_dir(&dir).unwrap();
        Self { dir, previous }
    }

    fn files(&self) -> Vec<String> {
        let entries = std::fs::read_dir(&self.dir).unwrap();
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.previous);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What each case changes in a valid argument object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mutation {
    None,
    DropRequired,
    AddUnknown,
    WrongType,
    BadEnumValue,
    OtherVariant,
    NullOptional,
    NoArguments,
    NotAnObject,
}

const MUTATIONS: [Mutation; 8] = [
    Mutation::None,
    Mutation::DropRequired,
    Mutation::AddUnknown,
    Mutation::WrongType,
    Mutation::BadEnumValue,
    Mutation::OtherVariant,
    Mutation::NullOptional,
    Mutation::None,
];

#[derive(Default)]
struct Tally {
    accepted: usize,
    /// Of `accepted`: the command then failed for its own reasons (no such device, ...).
    failed_later: usize,
    refused: usize,
    not_checked: usize,
    paths_compared: usize,
    by_mutation: HashMap<Mutation, (usize, usize)>,
    disagreements: Vec<String>,
}

impl Tally {
    fn sent(&self) -> usize {
        self.accepted + self.refused + self.disagreements.len()
    }

    fn record(
        &mut self,
        command: &str,
        mutation: Mutation,
        arguments: Option<&Value>,
        report: &Report,
        reply: &Result<Value, String>,
    ) {
        let qemu_refused = match reply {
            Ok(_) => None,
            Err(desc) => argument_error(desc),
        };
        let entry = self.by_mutation.entry(mutation).or_default();
        let case = || {
            format!(
                "{command} {} ({mutation:?})",
                arguments.map_or("(no arguments)".into(), Value::to_string)
            )
        };
        match (&report.verdict, qemu_refused) {
            (Verdict::Valid, None) => {
                self.accepted += 1;
                self.failed_later += usize::from(reply.is_err());
                entry.0 += 1;
            }
            (Verdict::Invalid(problems), Some(Refusal { parameter: qemu_path })) => {
                self.refused += 1;
                entry.1 += 1;
                if let Some(qemu_path) = qemu_path {
                    if problems.len() < MAX_PROBLEMS {
                        self.paths_compared += 1;
                        // QEMU names the whole path, except for enum values and alternates,
                        // where it names the member alone.
                        let full = format!("arguments.{qemu_path}");
                        let member = format!(".{qemu_path}");
                        if !problems.iter().any(|p| p.path == full || p.path.ends_with(&member)) {
                            self.disagreements.push(format!(
                                "{}: QEMU refused {qemu_path:?}, the checker other paths: {:?}",
                                case(),
                                problems.iter().map(ToString::to_string).collect::<Vec<_>>()
                            ));
                        }
                    }
                }
            }
            (Verdict::Valid, Some(_)) => {
                self.disagreements.push(format!("{}: checker valid, QEMU: {reply:?}", case()));
            }
            (Verdict::Invalid(problems), None) => self.disagreements.push(format!(
                "{}: checker refused ({}), QEMU: {reply:?}",
                case(),
                problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            )),
            (other, _) => unreachable!("not sent: {other:?}"),
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "agreement: {} accepted by both ({} then failed in the command itself), {} refused by \
             both ({} with the same parameter path), {} disagreements; {} not checked (not sent)",
            self.accepted,
            self.failed_later,
            self.refused,
            self.paths_compared,
            self.disagreements.len(),
            self.not_checked
        )?;
        let mut rows: Vec<_> = self.by_mutation.iter().collect();
        rows.sort_by_key(|(m, _)| format!("{m:?}"));
        for (mutation, (accepted, refused)) in rows {
            writeln!(f, "  {mutation:?}: {accepted} accepted, {refused} refused")?;
        }
        Ok(())
    }
}

/// A blocking QMP connection, one command at a time.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(qemu: &qemu_launcher::Qemu) -> Self {
        let stream = UnixStream::connect(qemu.qmp_path()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut qmp = Self { writer: stream.try_clone().unwrap(), reader: BufReader::new(stream) };
        let greeting = qmp.read(qemu, &Value::Null);
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        qmp.execute("qmp_capabilities", None, qemu).unwrap();
        qmp
    }

    /// The return value, or the error's description.
    fn execute(
        &mut self,
        command: &str,
        arguments: Option<&Value>,
        qemu: &qemu_launcher::Qemu,
    ) -> Result<Value, String> {
        let mut message = json!({"execute": command});
        if let Some(arguments) = arguments {
            message["arguments"] = arguments.clone();
        }
        self.writer.write_all(format!("{message}\n").as_bytes()).unwrap();
        loop {
            let reply = self.read(qemu, &message);
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            let desc =
                reply["error"]["desc"].as_str().unwrap_or_else(|| panic!("{message} -> {reply}"));
            assert_ne!(reply["error"]["class"], "CommandNotFound", "{message} -> {reply}");
            return Err(desc.to_owned());
        }
    }

    fn read(&mut self, qemu: &qemu_launcher::Qemu, sent: &Value) -> Value {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).unwrap(),
            other => {
                panic!("QEMU went away after {sent} ({other:?}); its stderr: {}", qemu.stderr())
            }
        }
    }
}

/// xorshift64*: a tiny deterministic generator, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    /// Seeds through one splitmix64 step, so that nearby seeds give unrelated sequences.
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap()
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The schema as plain JSON, read independently of the crate under test.
struct Raw<'a> {
    by_name: HashMap<&'a str, &'a Value>,
}

impl<'a> Raw<'a> {
    fn new(reply: &'a Value) -> Self {
        let entries = reply["return"].as_array().unwrap();
        Self { by_name: entries.iter().map(|e| (e["name"].as_str().unwrap(), e)).collect() }
    }

    fn get(&self, name: &str) -> &'a Value {
        self.by_name[name]
    }

    fn commands(&self) -> impl Iterator<Item = &'a str> + '_ {
        let mut names: Vec<&str> = self
            .by_name
            .iter()
            .filter(|(_, e)| e["meta-type"] == "command")
            .map(|(n, _)| *n)
            .collect();
        names.sort_unstable();
        names.into_iter()
    }

    fn arg_type(&self, command: &str) -> &'a str {
        self.get(command)["arg-type"].as_str().unwrap()
    }

    fn members(&self, ty: &str) -> &'a [Value] {
        self.get(ty)["members"].as_array().map_or(&[], Vec::as_slice)
    }
}

/// One step of a path into a generated value.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// A place in a generated value that a mutation can change.
struct Site {
    path: Vec<Step>,
    ty: String,
    /// The root of an alternate's branch: a wrong type is judged against the alternate's
    /// own site at the same path.
    in_alternate: bool,
    /// For objects: the member names present (with whether they are optional), all member
    /// names of the object and its selected variant, and the union discriminator with the
    /// other cases allowed.
    object: Option<ObjectSite>,
}

struct ObjectSite {
    present: Vec<(String, bool)>,
    names: Vec<String>,
    union: Option<(String, Vec<String>)>,
}

struct Generator<'g, 'a> {
    raw: &'g Raw<'a>,
    command: &'g str,
    rng: &'g mut Rng,
}

impl Generator<'_, '_> {
    /// The mutation for case number `case` and the arguments it produced (`None`: no
    /// `arguments` member at all). A mutation that finds no place to apply becomes `None`.
    fn case(&mut self, case: usize) -> (Mutation, Option<Value>) {
        let arg_type = self.raw.arg_type(self.command);
        let mut sites = Vec::new();
        let mut value = self.valid(arg_type, 0, &mut Vec::new(), &mut sites);
        let mutation = match case % 10 {
            8 if self.rng.chance(50) => Mutation::NoArguments,
            8 => Mutation::NotAnObject,
            9 => Mutation::AddUnknown,
            _ => *self.rng.pick(&MUTATIONS),
        };
        let applied = match mutation {
            Mutation::None => true,
            Mutation::NoArguments => return (mutation, None),
            Mutation::NotAnObject => {
                return (
                    mutation,
                    Some(self.rng.pick(&[json!(null), json!([]), json!("x"), json!(1)]).clone()),
                );
            }
            _ => self.mutate(mutation, &mut value, &sites),
        };
        (if applied { mutation } else { Mutation::None }, Some(value))
    }

    fn valid(
        &mut self,
        ty: &str,
        depth: usize,
        path: &mut Vec<Step>,
        sites: &mut Vec<Site>,
    ) -> Value {
        let entry = self.raw.get(ty);
        let site = sites.len();
        sites.push(Site {
            path: path.clone(),
            ty: ty.to_owned(),
            in_alternate: false,
            object: None,
        });
        match entry["meta-type"].as_str().unwrap() {
            "builtin" => self.builtin(entry["json-type"].as_str().unwrap(), path),
            "enum" => {
                let values = entry["values"].as_array().unwrap();
                self.rng.pick(values).clone()
            }
            "array" => {
                let count = if depth > 3 { 0 } else { self.rng.below(3) };
                let element = entry["element-type"].as_str().unwrap();
                Value::Array(
                    (0..count)
                        .map(|i| {
                            path.push(Step::Index(i));
                            let item = self.valid(element, depth + 1, path, sites);
                            path.pop();
                            item
                        })
                        .collect(),
                )
            }
            "alternate" => {
                let branches: Vec<&str> = entry["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["type"].as_str().unwrap())
                    .collect();
                // Deep down, prefer a branch that does not nest further.
                let flat: Vec<&str> = branches
                    .iter()
                    .copied()
                    .filter(|b| self.raw.get(b)["meta-type"] != "object")
                    .collect();
                let branch = if depth > 2 && !flat.is_empty() {
                    *self.rng.pick(&flat)
                } else {
                    *self.rng.pick(&branches)
                };
                let value = self.valid(branch, depth + 1, path, sites);
                sites[site + 1].in_alternate = true;
                value
            }
            "object" => self.valid_object(ty, site, depth, path, sites),
            other => panic!("meta-type {other}"),
        }
    }

    /// An object with its mandatory members, some optional ones (fewer deeper down), and
    /// the members of the union variant its discriminator picks.
    fn valid_object(
        &mut self,
        ty: &str,
        site: usize,
        depth: usize,
        path: &mut Vec<Step>,
        sites: &mut Vec<Site>,
    ) -> Value {
        let mut map = Map::new();
        let mut names = Vec::new();
        let mut present = Vec::new();
        let mut union = None;
        let mut object = ty.to_owned();
        loop {
            let entry = self.raw.get(&object);
            for member in self.raw.members(&object) {
                let name = member["name"].as_str().unwrap();
                let optional = member.get("default").is_some();
                names.push(name.to_owned());
                if map.contains_key(name) || (optional && (depth > 2 || !self.rng.chance(35))) {
                    continue;
                }
                let member_type = member["type"].as_str().unwrap();
                path.push(Step::Key(name.to_owned()));
                let value = match self.fixed_string(name) {
                    Some(fixed) => json!(fixed),
                    None if entry.get("tag").and_then(Value::as_str) == Some(name) => {
                        // A site for the discriminator's own value (enum, types).
                        sites.push(Site {
                            path: path.clone(),
                            ty: member_type.to_owned(),
                            in_alternate: false,
                            object: None,
                        });
                        let cases = self.allowed_cases(name, entry);
                        let case = self.rng.pick(&cases).clone();
                        union = Some((
                            name.to_owned(),
                            cases.into_iter().filter(|c| *c != case).collect(),
                        ));
                        json!(case)
                    }
                    None => self.valid(member_type, depth + 1, path, sites),
                };
                path.pop();
                map.insert(name.to_owned(), value);
                present.push((name.to_owned(), optional));
            }
            // Follow the variant the discriminator picked.
            let Some(tag) = entry.get("tag").and_then(Value::as_str) else { break };
            let case = map[tag].as_str().unwrap();
            let Some(variant) =
                entry["variants"].as_array().unwrap().iter().find(|v| v["case"] == case)
            else {
                break;
            };
            object = variant["type"].as_str().unwrap().to_owned();
        }
        sites[site].object = Some(ObjectSite { present, names, union });
        Value::Object(map)
    }

    fn builtin(&mut self, json_type: &str, path: &[Step]) -> Value {
        match json_type {
            "string" => {
                let key = path
                    .iter()
                    .rev()
                    .find_map(|s| if let Step::Key(k) = s { Some(k.as_str()) } else { None });
                json!(
                    key.and_then(|k| self.fixed_string(k))
                        .unwrap_or_else(|| *self.rng.pick(STRINGS))
                )
            }
            // Small and non-negative: every integer type QEMU has takes these.
            "int" => json!(self.rng.below(101)),
            "number" => self.rng.pick(&[json!(0.5), json!(3)]).clone(),
            "boolean" => json!(self.rng.chance(50)),
            "null" => Value::Null,
            "value" => self.rng.pick(&[json!({}), json!(1), json!("q0")]).clone(),
            other => panic!("json-type {other}"),
        }
    }

    fn fixed_string(&self, member: &str) -> Option<&'static str> {
        FIXED_STRINGS
            .iter()
            .find(|(c, m, _)| *c == self.command && *m == member)
            .map(|(_, _, values)| values[0])
    }

    fn allowed_cases(&self, tag: &str, union: &Value) -> Vec<String> {
        let all = union["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["case"].as_str().unwrap().to_owned());
        match ALLOWED_VARIANTS.iter().find(|(c, t, _)| *c == self.command && *t == tag) {
            Some((_, _, allowed)) => all.filter(|c| allowed.contains(&c.as_str())).collect(),
            None => all.collect(),
        }
    }

    /// Applies `mutation` at a random fitting site; false when there is none.
    fn mutate(&mut self, mutation: Mutation, value: &mut Value, sites: &[Site]) -> bool {
        let fitting: Vec<&Site> = sites
            .iter()
            .filter(|site| match (mutation, &site.object) {
                (Mutation::DropRequired, Some(o)) => {
                    o.present.iter().any(|(_, optional)| !optional)
                }
                (Mutation::AddUnknown, Some(_)) => true,
                (Mutation::OtherVariant, Some(o)) => {
                    o.union.as_ref().is_some_and(|(_, others)| !others.is_empty())
                }
                (Mutation::NullOptional, Some(o)) => {
                    o.present.iter().any(|(_, optional)| *optional)
                }
                (Mutation::WrongType, _) => {
                    !site.in_alternate && !self.wrong_values(&site.ty).is_empty()
                }
                (Mutation::BadEnumValue, _) => self.raw.get(&site.ty)["meta-type"] == "enum",
                _ => false,
            })
            .collect();
        if fitting.is_empty() {
            return false;
        }
        let site = *self.rng.pick(&fitting);
        let target = locate(value, &site.path);
        match mutation {
            Mutation::DropRequired | Mutation::NullOptional => {
                let object = site.object.as_ref().unwrap();
                let wanted_optional = mutation == Mutation::NullOptional;
                let names: Vec<&String> = object
                    .present
                    .iter()
                    .filter(|(_, optional)| *optional == wanted_optional)
                    .map(|(n, _)| n)
                    .collect();
                let name = (*self.rng.pick(&names)).clone();
                let map = target.as_object_mut().unwrap();
                if wanted_optional {
                    map.insert(name, Value::Null);
                } else {
                    map.remove(&name);
                }
            }
            Mutation::AddUnknown => {
                let object = site.object.as_ref().unwrap();
                let name = if object.names.is_empty() || self.rng.chance(30) {
                    "bogus".to_owned()
                } else {
                    {
                        let original = self.rng.pick(&object.names).clone();
                        misspell(&original, self.rng)
                    }
                };
                if object.names.contains(&name) {
                    return false;
                }
                target.as_object_mut().unwrap().insert(name, json!(1));
            }
            Mutation::OtherVariant => {
                let (tag, others) = site.object.as_ref().unwrap().union.as_ref().unwrap();
                target[tag] = json!(self.rng.pick(others));
            }
            Mutation::WrongType => *target = self.rng.pick(&self.wrong_values(&site.ty)).clone(),
            Mutation::BadEnumValue => {
                let values = self.raw.get(&site.ty)["values"].as_array().unwrap();
                let valid = self.rng.pick(values).as_str().unwrap();
                let bad = misspell(valid, self.rng);
                if values.iter().any(|v| v == bad.as_str()) {
                    return false;
                }
                *target = json!(bad);
            }
            Mutation::None | Mutation::NoArguments | Mutation::NotAnObject => unreachable!(),
        }
        true
    }

    /// Values of a JSON kind that type `ty` does not take.
    fn wrong_values(&self, ty: &str) -> Vec<Value> {
        let candidates =
            [json!("q0"), json!(7), json!(1.5), json!(true), json!(null), json!([]), json!({})];
        candidates.into_iter().filter(|v| !self.takes(ty, v, 0)).collect()
    }

    /// Whether `ty` takes a value of `v`'s JSON kind (and, for `int`, an integer).
    fn takes(&self, ty: &str, v: &Value, depth: usize) -> bool {
        let entry = self.raw.get(ty);
        match entry["meta-type"].as_str().unwrap() {
            "builtin" => match entry["json-type"].as_str().unwrap() {
                "string" => v.is_string(),
                "int" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "null" => v.is_null(),
                _ => true,
            },
            // A string of another value is a wrong enum value, not a wrong type.
            "enum" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            "alternate" => {
                depth < 4
                    && entry["members"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|m| self.takes(m["type"].as_str().unwrap(), v, depth + 1))
            }
            _ => true,
        }
    }
}

/// A near miss of `name`: a letter dropped, doubled, or two swapped.
fn misspell(name: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    if chars.len() < 2 {
        return format!("{name}x");
    }
    let at = rng.below(chars.len() - 1);
    match rng.below(3) {
        0 => {
            chars.remove(at);
        }
        1 => chars.insert(at, chars[at]),
        _ => chars.swap(at, at + 1),
    }
    chars.into_iter().collect()
}

fn locate<'v>(value: &'v mut Value, path: &[Step]) -> &'v mut Value {
    path.iter().fold(value, |at, step| match step {
        Step::Key(key) => &mut at[key.as_str()],
        Step::Index(index) => &mut at[*index],
    })
}

#[test]
fn argument_errors_are_told_from_command_errors() {
    assert_eq!(
        argument_error("Parameter 'file.filename' is missing"),
        Some(Refusal { parameter: Some("file.filename".into()) })
    );
    assert_eq!(
        argument_error("Parameter 'bogus' is unexpected"),
        Some(Refusal { parameter: Some("bogus".into()) })
    );
    assert_eq!(
        argument_error("Invalid parameter type for 'keys[0].data', expected: integer"),
        Some(Refusal { parameter: Some("keys[0].data".into()) })
    );
    assert_eq!(
        argument_error("Parameter 'aio' does not accept value 'nativ'"),
        Some(Refusal { parameter: Some("aio".into()) })
    );
    assert_eq!(
        argument_error("Parameter 'compress-level' expects uint8_t"),
        Some(Refusal { parameter: Some("compress-level".into()) })
    );
    assert_eq!(argument_error(ARGUMENTS_NOT_AN_OBJECT), Some(Refusal { parameter: None }));
    assert_eq!(
        argument_error("Invalid parameter type for 'file', expected: BlockdevRef"),
        Some(Refusal { parameter: Some("file".into()) })
    );
    for semantic in [
        "Parameter 'compress_level' expects a value between 0 and 9",
        "Parameter 'cpu-index' expects a CPU number",
        "Could not open '/nonexistent/x': No such file or directory",
        "Duplicate ID 'q0' for netdev",
        "network backend 'nic' is not compiled into this binary",
        "Device 'q0' not found",
        "Invalid parameter type for 'prealloc-context', expected: thread-context",
    ] {
        assert_eq!(argument_error(semantic), None, "{semantic}");
    }
}
