//! A model of QEMU 7.2 on the mock server: the hotplug objects and the rules measured on
//! the real thing (named descriptors that survive disconnects, fdsets that stay listed and
//! usable after `remove-fd` until the VM runs, unused fdsets closed when the last monitor
//! client leaves a running VM, unplugs that need a running guest and wedge in prelaunch,
//! `info network` text, `qom-get` properties), and a way to make its N-th changing command
//! fail, go unanswered, or hang up the connection.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use hostdev::image::ImageIdentity;
use qmp_client::mock::{MockConnection, MockRequest, MockServer};
use serde_json::{Value, json};

/// What the fake does with the N-th command that changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with an error and change nothing.
    Refuse,
    /// Carry it out but never answer (a timeout whose outcome is unknown).
    DoButStaySilent,
    /// Carry it out, then hang up before answering (the manager's connection dies).
    DoThenDisconnect,
    /// Hang up without carrying it out.
    Disconnect,
    /// From this change on, answer nothing at all (a frozen QEMU).
    Freeze,
}

/// How the running guest answers `device_del` (QEMU 7.2 with this project's guest always
/// lets go; these are the answers it cannot be made to give).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestUnplug {
    /// The device goes, with `DEVICE_DELETED`.
    #[default]
    Releases,
    /// The guest refuses: `DEVICE_UNPLUG_GUEST_ERROR`, and the device stays.
    Refuses,
    /// The guest takes its time: no event yet; a repeated `device_del` is refused with
    /// "already in the process of unplug", after which the guest lets go.
    Slow,
}

/// Another manager's device, put into a slot right before a change of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Squat {
    /// Before every `device_add`, into the slot it asks for.
    EveryDeviceAdd,
    /// Before the first `device_add` only.
    FirstDeviceAdd,
}

/// A descriptor QEMU holds in an fdset.
#[derive(Debug)]
pub struct FdsetFd {
    pub number: i64,
    pub opaque: Option<String>,
    /// What the descriptor really is, if an image.
    pub identity: Option<ImageIdentity>,
    pub removed: bool,
    _fd: Option<OwnedFd>,
}

#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // QEMU state flags of one device, as QEMU keeps them
pub struct Device {
    pub driver: String,
    /// The bus: `pci.0`, or a bridge's or root port's id.
    pub bus: String,
    pub slot: u8,
    pub netdev: Option<String>,
    pub drive: Option<String>,
    pub mac: Option<String>,
    pub mq: bool,
    /// The link state (`set_link`).
    pub link_up: bool,
    /// `device_del` sent while paused: completes at `cont`.
    pub unplug_pending: bool,
    /// `device_del` sent in prelaunch: never completes (QEMU 7.2).
    pub wedged: bool,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub driver: String,
    pub read_only: bool,
    pub protocol: String,
    pub file: String,
    pub fdset: Option<u64>,
    /// The identity of the image the node opened (through its fdset).
    pub image: Option<ImageIdentity>,
}

#[derive(Debug)]
pub struct State {
    pub status: &'static str,
    /// `qom-get /machine type`.
    pub machine: &'static str,
    /// The machine's bridges (pc: `pci-bridge`, at bus 0 slots 20 on) or root ports (q35:
    /// `pcie-root-port`, at pcie.0 slots 2 on), by id, as started with `-device`.
    pub bridges: Vec<String>,
    pub fd_names: BTreeMap<String, Option<OwnedFd>>,
    /// netdev -> queue count
    pub netdevs: BTreeMap<String, usize>,
    pub devices: BTreeMap<String, Device>,
    pub nodes: BTreeMap<String, Node>,
    pub fdsets: BTreeMap<u64, Vec<FdsetFd>>,
    pub objects: BTreeSet<String>,
    pub changes: usize,
    pub fault: Option<(usize, Fault)>,
    pub squat: Option<Squat>,
    /// A device whose unplug (requested by an earlier client) the guest acknowledges right
    /// when its first property is read: listed by `qom-list`, gone by `qom-get`.
    pub vanishes_on_qom_get: Option<String>,
    /// How many more `blockdev-del`s find their node still in use (a device QEMU has taken
    /// out of QOM but not yet finalized keeps its drive).
    pub node_busy: usize,
    pub guest_unplug: GuestUnplug,
    pub log: Vec<String>,
    frozen: bool,
    next_fd: i64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            status: "running",
            machine: "pc-i440fx-7.2-machine",
            bridges: Vec::new(),
            fd_names: BTreeMap::new(),
            netdevs: BTreeMap::new(),
            devices: BTreeMap::new(),
            nodes: BTreeMap::new(),
            fdsets: BTreeMap::new(),
            objects: BTreeSet::new(),
            changes: 0,
            fault: None,
            squat: None,
            vanishes_on_qom_get: None,
            node_busy: 0,
            guest_unplug: GuestUnplug::default(),
            log: Vec::new(),
            frozen: false,
            next_fd: 20,
        }
    }
}

impl State {
    /// Nothing of a hotplug is left.
    pub fn is_clean(&self) -> bool {
        self.fd_names.is_empty()
            && self.netdevs.is_empty()
            && self.devices.is_empty()
            && self.nodes.is_empty()
            && self.fdsets.is_empty()
            && self.objects.is_empty()
    }

    /// A q35 machine with empty root ports `ports`.
    pub fn q35(&mut self, ports: &[&str]) {
        self.machine = "pc-q35-7.2-machine";
        self.bridges = ports.iter().map(|port| (*port).to_owned()).collect();
    }

    /// A pc machine with empty pci-bridges `bridges`.
    pub fn pc_bridges(&mut self, bridges: &[&str]) {
        self.bridges = bridges.iter().map(|bridge| (*bridge).to_owned()).collect();
    }

    fn is_q35(&self) -> bool {
        self.machine.contains("q35")
    }

    fn root_bus(&self) -> &'static str {
        if self.is_q35() { "pcie.0" } else { "pci.0" }
    }

    /// A bridge's QOM type, PCI device id and bus 0 slot.
    fn bridge(&self, index: usize) -> (&'static str, u16, u8) {
        let index = u8::try_from(index).unwrap();
        if self.is_q35() {
            ("pcie-root-port", 0x000c, 2 + index)
        } else {
            ("pci-bridge", 0x0001, 20 + index)
        }
    }

    /// The devices on `bus`, as `query-pci` lists them.
    fn functions_on(&self, bus: &str) -> Vec<Value> {
        self.devices
            .iter()
            .filter(|(_, device)| device.bus == bus)
            .map(
                |(id, device)| json!({"bus": 0, "slot": device.slot, "function": 0, "qdev_id": id}),
            )
            .collect()
    }

    fn running(&self) -> bool {
        self.status == "running"
    }

    fn fdset_in_use(&self, id: u64) -> bool {
        self.nodes.values().any(|node| node.fdset == Some(id))
    }

    /// `monitor_fdset_cleanup` of every set: removed descriptors close while the VM runs
    /// and no node uses the set; with no monitor client (`no_monitor`), unused ones too.
    fn fdset_cleanup(&mut self, no_monitor: bool) {
        let running = self.running();
        let ids: Vec<u64> = self.fdsets.keys().copied().collect();
        for id in ids {
            let in_use = self.fdset_in_use(id);
            let fds = self.fdsets.get_mut(&id).unwrap();
            fds.retain(|fd| !(running && !in_use && (fd.removed || no_monitor)));
            if fds.is_empty() && !in_use {
                self.fdsets.remove(&id);
            }
        }
    }

    /// The client hung up: QEMU cleans fdsets as if no monitor were connected.
    pub fn client_gone(&mut self) {
        self.fdset_cleanup(true);
    }

    fn info_network(&self) -> String {
        let mut text = String::new();
        let mut fd = 100;
        let mut used = BTreeSet::new();
        for (id, device) in &self.devices {
            let Some(netdev) = &device.netdev else { continue };
            let queues = self.netdevs.get(netdev).copied().unwrap_or(1);
            for index in 0..queues {
                if index == 0 {
                    let mac = device.mac.clone().unwrap_or_else(|| "52:54:00:12:34:56".into());
                    let _ = write!(
                        text,
                        "{id}: index=0,type=nic,model={},macaddr={mac}\r\n",
                        device.driver
                    );
                } else {
                    let _ = write!(text, "{id}: index={index},type=nic,\r\n");
                }
                if self.netdevs.contains_key(netdev) {
                    let _ = write!(text, " \\ {netdev}: index={index},type=tap,fd={fd}\r\n");
                    fd += 1;
                }
            }
            used.insert(netdev.clone());
        }
        for (netdev, queues) in &self.netdevs {
            if !used.contains(netdev) {
                for index in 0..*queues {
                    let _ = write!(text, "{netdev}: index={index},type=tap,fd={fd}\r\n");
                    fd += 1;
                }
            }
        }
        text
    }
}

pub struct FakeQemu {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
}

impl FakeQemu {
    pub fn start(fault: Option<(usize, Fault)>) -> Self {
        let state = Arc::new(Mutex::new(State { fault, ..State::default() }));
        let shared = Arc::clone(&state);
        let server = MockServer::builder()
            .handler(move |conn, request| handle(&shared, conn, request))
            .commands(qmp_client::mock::DEFAULT_COMMANDS.iter().copied().chain([
                "qom-list",
                "qom-get",
                "query-named-block-nodes",
                "query-block",
                "object-add",
                "object-del",
                "set_link",
            ]))
            .start();
        Self { server, state }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn handle(state: &Mutex<State>, conn: &MockConnection, request: MockRequest) {
    let command = &request.command;
    let args = command.arguments.clone().map(Value::Object).unwrap_or(json!({}));
    let mut state = state.lock().unwrap();
    if state.frozen {
        return;
    }
    let name = command.name.as_str();
    let reads = name.starts_with("query")
        || matches!(name, "qom-list" | "qom-get")
        || (name == "human-monitor-command" && args["command-line"] == "info network");
    let changes = !reads;
    let mut silent = false;
    let mut hang_up = false;
    if changes {
        state.changes += 1;
        state.log.push(name.to_owned());
        match state.fault {
            Some((n, fault)) if n + 1 == state.changes => match fault {
                Fault::Refuse => return conn.error(command, "GenericError", "injected failure"),
                Fault::DoButStaySilent => silent = true,
                Fault::DoThenDisconnect => hang_up = true,
                Fault::Disconnect => {
                    state.client_gone();
                    return conn.disconnect();
                }
                Fault::Freeze => {
                    state.frozen = true;
                    return;
                }
            },
            _ => {}
        }
        if name == "device_add" {
            if let Some(rule) = state.squat {
                if rule == Squat::FirstDeviceAdd {
                    state.squat = None;
                }
                let slot = u8::from_str_radix(text(&args, "addr").trim_start_matches("0x"), 16)
                    .unwrap_or_default();
                let bus = args["bus"].as_str().unwrap_or(state.root_bus()).to_owned();
                let id = format!("squatter{slot}");
                state.devices.entry(id).or_insert(Device {
                    driver: "virtio-net-pci".into(),
                    bus,
                    slot,
                    netdev: Some(String::new()),
                    drive: None,
                    mac: None,
                    mq: false,
                    link_up: true,
                    unplug_pending: false,
                    wedged: false,
                });
            }
        }
    }
    let mut events = Vec::new();
    let result = apply(&mut state, name, &args, request.fds, &mut events);
    if hang_up {
        state.client_gone();
        return conn.disconnect();
    }
    if silent {
        return;
    }
    match result {
        Ok(value) => conn.reply(command, value),
        Err((class, desc)) => conn.error(command, class, &desc),
    }
    for (event, data) in events {
        conn.event(event, Some(data));
    }
}

type Reply = Result<Value, (&'static str, String)>;

fn generic(desc: String) -> Reply {
    Err(("GenericError", desc))
}

fn text<'a>(args: &'a Value, key: &str) -> &'a str {
    args[key].as_str().unwrap_or_default()
}

fn deleted(events: &mut Vec<(&'static str, Value)>, id: &str) {
    events.push((
        "DEVICE_DELETED",
        json!({"path": format!("/machine/peripheral/{id}/virtio-backend")}),
    ));
    events.push((
        "DEVICE_DELETED",
        json!({"device": id, "path": format!("/machine/peripheral/{id}")}),
    ));
}

#[allow(clippy::too_many_lines)]
fn apply(
    state: &mut State,
    name: &str,
    args: &Value,
    mut fds: Vec<OwnedFd>,
    events: &mut Vec<(&'static str, Value)>,
) -> Reply {
    match name {
        "query-status" => Ok(json!({"status": state.status, "running": state.running()})),
        "stop" => {
            if state.running() {
                state.status = "paused";
            }
            Ok(json!({}))
        }
        "cont" => {
            state.status = "running";
            let pending: Vec<String> = state
                .devices
                .iter()
                .filter(|(_, device)| device.unplug_pending)
                .map(|(id, _)| id.clone())
                .collect();
            for id in pending {
                state.devices.remove(&id);
                deleted(events, &id);
            }
            state.fdset_cleanup(false);
            Ok(json!({}))
        }
        "query-pci" => {
            let (host, isa) = if state.is_q35() { (0x29c0, (31, 0x2918)) } else { (0x1237, (1, 0x7000)) };
            let mut devices = vec![
                json!({"bus": 0, "slot": 0, "function": 0, "qdev_id": "", "id": {"vendor": 0x8086, "device": host}}),
                json!({"bus": 0, "slot": isa.0, "function": 0, "qdev_id": "", "id": {"vendor": 0x8086, "device": isa.1}}),
            ];
            devices.extend(state.functions_on(state.root_bus()));
            for (index, id) in state.bridges.iter().enumerate() {
                let (_, device, slot) = state.bridge(index);
                devices.push(json!({"bus": 0, "slot": slot, "function": 0, "qdev_id": id,
                    "class_info": {"class": 0x0604}, "id": {"vendor": 0x1b36, "device": device},
                    "pci_bridge": {"bus": {"number": 0, "secondary": index + 1, "subordinate": index + 1},
                                   "devices": state.functions_on(id)}}));
            }
            Ok(json!([{"bus": 0, "devices": devices}]))
        }
        "qom-list" => {
            let mut list = vec![json!({"name": "type", "type": "string"})];
            match text(args, "path") {
                "/machine/peripheral" => {
                    list.extend(state.devices.iter().map(|(id, device)| {
                        json!({"name": id, "type": format!("child<{}>", device.driver)})
                    }));
                    list.extend(state.bridges.iter().enumerate().map(|(index, id)| {
                        json!({"name": id, "type": format!("child<{}>", state.bridge(index).0)})
                    }));
                }
                "/objects" => list.extend(
                    state.objects.iter().map(|id| json!({"name": id, "type": "child<secret>"})),
                ),
                other => return Err(("DeviceNotFound", format!("Device '{other}' not found"))),
            }
            Ok(Value::Array(list))
        }
        "qom-get" => {
            let path = text(args, "path");
            let property = text(args, "property");
            if path == "/machine" && property == "type" {
                return Ok(json!(state.machine));
            }
            let id = path.strip_prefix("/machine/peripheral/").unwrap_or_default();
            if state.vanishes_on_qom_get.as_deref() == Some(id) {
                state.vanishes_on_qom_get = None;
                state.devices.remove(id);
                deleted(events, id);
            }
            let root_path =
                if state.is_q35() { "/machine/q35/pcie.0" } else { "/machine/i440fx/pci.0" };
            if let Some(index) = state.bridges.iter().position(|bridge| bridge == id) {
                let (qom_type, _, slot) = state.bridge(index);
                return match property {
                    "parent_bus" => Ok(json!(root_path)),
                    "addr" => Ok(json!(u32::from(slot) * 8)),
                    "hotplug" if state.is_q35() => Ok(json!(true)),
                    _ => generic(format!("Property '{qom_type}.{property}' not found")),
                };
            }
            let Some(device) = state.devices.get(id) else {
                return Err(("DeviceNotFound", format!("Device '{path}' not found")));
            };
            let is_nic = device.driver.contains("net") || device.driver == "e1000";
            match (property, is_nic) {
                ("parent_bus", _) if device.bus == state.root_bus() => Ok(json!(root_path)),
                ("parent_bus", _) => Ok(json!(format!("/machine/peripheral/{0}/{0}", device.bus))),
                ("addr", _) => Ok(json!(u32::from(device.slot) * 8)),
                ("netdev", true) => Ok(json!(device.netdev.clone().unwrap_or_default())),
                ("mac", true) => {
                    Ok(json!(device.mac.clone().unwrap_or_else(|| "52:54:00:12:34:56".into())))
                }
                ("mq", true) => Ok(json!(device.mq)),
                ("drive", false) => Ok(json!(device.drive.clone().unwrap_or_default())),
                _ => generic(format!("Property '{}.{property}' not found", device.driver)),
            }
        }
        "query-named-block-nodes" => Ok(state
            .nodes
            .iter()
            .flat_map(|(node, info)| {
                [
                    json!({"node-name": node, "drv": info.driver, "ro": info.read_only, "file": info.file}),
                    json!({"node-name": format!("{node}-file"), "drv": info.protocol,
                           "ro": info.read_only, "file": info.file}),
                ]
            })
            .collect()),
        "query-block" => Ok(state
            .devices
            .iter()
            .filter_map(|(id, device)| {
                let drive = device.drive.as_ref()?;
                Some(json!({"device": "", "qdev": format!("/machine/peripheral/{id}/virtio-backend"),
                            "inserted": {"node-name": drive, "file": state.nodes.get(drive).map(|n| n.file.clone())}}))
            })
            .collect()),
        "query-fdsets" => Ok(state
            .fdsets
            .iter()
            .map(|(id, fds)| {
                let fds: Vec<Value> =
                    fds.iter().map(|fd| json!({"fd": fd.number, "opaque": fd.opaque})).collect();
                json!({"fdset-id": id, "fds": fds})
            })
            .collect()),
        "human-monitor-command" => match text(args, "command-line") {
            "info network" => Ok(json!(state.info_network())),
            other => Ok(json!(format!("unknown command: '{other}'\r\n"))),
        },
        "object-add" => {
            let id = text(args, "id");
            if !state.objects.insert(id.into()) {
                return generic(format!(
                    "attempt to add duplicate property '{id}' to object (type 'container')"
                ));
            }
            Ok(json!({}))
        }
        "object-del" => {
            let id = text(args, "id");
            if state.objects.remove(id) {
                Ok(json!({}))
            } else {
                generic(format!("object '{id}' not found"))
            }
        }
        "getfd" => {
            let Some(fd) = fds.pop().filter(|_| fds.is_empty()) else {
                return generic("No file descriptor supplied via SCM_RIGHTS".into());
            };
            // getfd of an existing name replaces it.
            state.fd_names.insert(text(args, "fdname").into(), Some(fd));
            Ok(json!({}))
        }
        "closefd" => {
            if state.fd_names.remove(text(args, "fdname")).is_some() {
                Ok(json!({}))
            } else {
                generic(format!("File descriptor named '{}' not found", text(args, "fdname")))
            }
        }
        "netdev_add" => {
            let id = text(args, "id");
            if state.netdevs.contains_key(id) {
                return generic(format!("Duplicate ID '{id}' for netdev"));
            }
            let names: Vec<&str> = args["fd"]
                .as_str()
                .into_iter()
                .chain(args["fds"].as_str().into_iter().flat_map(|f| f.split(':')))
                .collect();
            if let Some(missing) = names.iter().find(|n| !state.fd_names.contains_key(**n)) {
                return generic(format!("File descriptor named '{missing}' has not been found"));
            }
            for n in &names {
                state.fd_names.remove(*n);
            }
            state.netdevs.insert(id.into(), names.len());
            Ok(json!({}))
        }
        "netdev_del" => {
            if state.netdevs.remove(text(args, "id")).is_some() {
                Ok(json!({}))
            } else {
                Err(("DeviceNotFound", format!("Device '{}' not found", text(args, "id"))))
            }
        }
        "add-fd" => {
            let Some(fd) = fds.pop().filter(|_| fds.is_empty()) else {
                return generic("No file descriptor supplied via SCM_RIGHTS".into());
            };
            let identity = hostdev::image::identify(&fd).ok();
            let id = match args["fdset-id"].as_u64() {
                Some(id) => id,
                // The first id no listed set has, as QEMU picks it.
                None => (0..=state.fdsets.len() as u64)
                    .find(|id| !state.fdsets.contains_key(id))
                    .unwrap(),
            };
            let number = state.next_fd;
            state.next_fd += 1;
            let opaque = args["opaque"].as_str().map(str::to_owned);
            state.fdsets.entry(id).or_default().push(FdsetFd {
                number,
                opaque,
                identity,
                removed: false,
                _fd: Some(fd),
            });
            Ok(json!({"fdset-id": id, "fd": number}))
        }
        "remove-fd" => {
            let id = args["fdset-id"].as_u64().unwrap();
            let Some(fds) = state.fdsets.get_mut(&id) else {
                return generic(format!("File descriptor named 'fdset-id:{id}' not found"));
            };
            for fd in fds {
                fd.removed = true;
            }
            state.fdset_cleanup(false);
            Ok(json!({}))
        }
        "blockdev-add" => {
            let node = text(args, "node-name");
            if state.nodes.contains_key(node) {
                return generic(format!("Duplicate nodes with node-name='{node}'"));
            }
            let file = &args["file"];
            let protocol = text(file, "driver").to_owned();
            let (path, fdset, image) = if protocol == "nbd" {
                let socket = file["server"]["path"].as_str().unwrap_or_default();
                let export = file["export"].as_str().unwrap_or_default();
                (format!("nbd+unix:///{export}?socket={socket}"), None, None)
            } else {
                {
                    let path = text(file, "filename").to_owned();
                    let Some(id) = path.strip_prefix("/dev/fdset/").and_then(|id| id.parse().ok())
                    else {
                        return generic(format!("Could not open '{path}'"));
                    };
                    // Removed descriptors stay usable until QEMU closes them.
                    let Some(first) = state.fdsets.get(&id).and_then(|fds| fds.first()) else {
                        return generic(format!(
                            "Could not dup FD for /dev/fdset/{id} flags 2: No such file or directory"
                        ));
                    };
                    let image = first.identity;
                    let block = matches!(image, Some(ImageIdentity::BlockDevice(_)));
                    if protocol == "file" && block {
                        return generic(format!("'file' driver requires '{path}' to be a regular file"));
                    }
                    if protocol == "host_device" && !block {
                        return generic(format!("'host_device' driver requires '{path}' to be either a character or block device"));
                    }
                    (path, Some(id), image)
                }
            };
            let read_only = args["read-only"].as_bool().unwrap_or(false);
            state.nodes.insert(
                node.into(),
                Node {
                    driver: text(args, "driver").into(),
                    read_only,
                    protocol,
                    file: path,
                    fdset,
                    image,
                },
            );
            Ok(json!({}))
        }
        "blockdev-del" => {
            let node = text(args, "node-name");
            if state.node_busy > 0 && state.nodes.contains_key(node) {
                state.node_busy -= 1;
                return generic(format!("Node {node} is in use"));
            }
            if state.devices.values().any(|device| device.drive.as_deref() == Some(node)) {
                return generic(format!("Node {node} is in use"));
            }
            if state.nodes.remove(node).is_none() {
                return generic(format!("Failed to find node with node-name='{node}'"));
            }
            state.fdset_cleanup(false);
            Ok(json!({}))
        }
        "device_add" => {
            let id = text(args, "id");
            if state.devices.contains_key(id) {
                return generic(format!("Duplicate device ID '{id}'"));
            }
            let netdev = args.get("netdev").and_then(Value::as_str).map(str::to_owned);
            let drive = args.get("drive").and_then(Value::as_str).map(str::to_owned);
            match (&netdev, &drive) {
                (Some(netdev), _) if !state.netdevs.contains_key(netdev) => {
                    return generic(format!("Property 'virtio-net-device.netdev' can't find value '{netdev}'"));
                }
                (_, Some(drive)) if !state.nodes.contains_key(drive) => {
                    return generic(format!("Property 'virtio-blk-device.drive' can't find value '{drive}'"));
                }
                (_, Some(drive))
                    if state.devices.values().any(|d| d.drive.as_deref() == Some(drive.as_str())) =>
                {
                    return generic(format!("Permission conflict on node '{drive}'"));
                }
                _ => {}
            }
            let driver = text(args, "driver").to_owned();
            if driver.starts_with("no-such") {
                return generic(format!("'{driver}' is not a valid device model name"));
            }
            let slot = u8::from_str_radix(text(args, "addr").trim_start_matches("0x"), 16).unwrap();
            let bus = args["bus"].as_str().unwrap_or(state.root_bus()).to_owned();
            if bus == "pcie.0" {
                return generic("Bus 'pcie.0' does not support hotplugging".into());
            }
            if bus != state.root_bus() && !state.bridges.contains(&bus) {
                return generic(format!("Bus '{bus}' not found"));
            }
            if state.is_q35() && slot != 0 {
                return generic(format!(
                    "PCI: slot {slot} function 0 not available for {driver}, in use by nothing \
                     (a root port has slot 0 only)"
                ));
            }
            if let Some((other, used)) =
                state.devices.iter().find(|(_, d)| d.slot == slot && d.bus == bus)
            {
                return generic(format!(
                    "PCI: slot {slot} function 0 not available for {driver}, in use by {},id={other}",
                    used.driver
                ));
            }
            state.devices.insert(
                id.into(),
                Device {
                    driver,
                    bus,
                    slot,
                    netdev,
                    drive,
                    mac: args.get("mac").and_then(Value::as_str).map(str::to_lowercase),
                    mq: args.get("mq").and_then(Value::as_bool).unwrap_or(false),
                    link_up: true,
                    unplug_pending: false,
                    wedged: false,
                },
            );
            Ok(json!({}))
        }
        "set_link" => match state.devices.get_mut(text(args, "name")) {
            Some(device) => {
                device.link_up = args["up"].as_bool().unwrap_or(true);
                Ok(json!({}))
            }
            None => Err(("DeviceNotFound", format!("Device '{}' not found", text(args, "name")))),
        },
        "device_del" => {
            let id = text(args, "id");
            let running = state.running();
            let prelaunch = state.status == "prelaunch";
            let Some(device) = state.devices.get_mut(id) else {
                return Err(("DeviceNotFound", format!("Device '{id}' not found")));
            };
            if device.wedged || device.unplug_pending {
                if running && !device.wedged && state.guest_unplug == GuestUnplug::Slow {
                    // The guest finishes the first request now; the event follows the reply.
                    state.devices.remove(id);
                    deleted(events, id);
                }
                return generic(format!("Device {id} is already in the process of unplug"));
            }
            if running && state.guest_unplug == GuestUnplug::Refuses {
                let path = format!("/machine/peripheral/{id}");
                events.push(("DEVICE_UNPLUG_GUEST_ERROR", json!({"device": id, "path": path})));
            } else if running && state.guest_unplug == GuestUnplug::Slow {
                device.unplug_pending = true;
            } else if running {
                state.devices.remove(id);
                deleted(events, id);
            } else if prelaunch {
                device.wedged = true;
            } else {
                device.unplug_pending = true;
            }
            Ok(json!({}))
        }
        other => Err(("CommandNotFound", format!("The command {other} has not been found"))),
    }
}
