//! A fake QEMU on the mock server: enough hotplug state to tell whether a rollback left
//! anything behind, and a way to make its N-th changing command fail or go unanswered.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use qmp_client::mock::{MockConnection, MockRequest, MockServer};
use serde_json::{Value, json};

/// What the fake does with the N-th command that changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with an error and change nothing.
    Refuse,
    /// Carry it out but never answer (a timeout whose outcome is unknown).
    DoButStaySilent,
}

#[derive(Debug, Default)]
pub struct State {
    pub fd_names: BTreeSet<String>,
    pub netdevs: BTreeSet<String>,
    /// id -> (slot, netdev or drive it uses)
    pub devices: BTreeMap<String, (u8, String)>,
    /// node -> fdset it reads, if any
    pub nodes: BTreeMap<String, Option<u64>>,
    /// fdset -> (opaques of its fds, removed by remove-fd)
    pub fdsets: BTreeMap<u64, (Vec<String>, bool)>,
    pub changes: usize,
    pub fault: Option<(usize, Fault)>,
    pub log: Vec<String>,
}

impl State {
    /// Nothing of a hotplug is left.
    pub fn is_clean(&self) -> bool {
        self.fd_names.is_empty()
            && self.netdevs.is_empty()
            && self.devices.is_empty()
            && self.nodes.is_empty()
            && self.fdsets.is_empty()
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
            .handler(move |conn, request| handle(&shared, conn, &request))
            .commands(
                qmp_client::mock::DEFAULT_COMMANDS
                    .iter()
                    .copied()
                    .chain(["qom-list", "query-named-block-nodes"]),
            )
            .start();
        Self { server, state }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn handle(state: &Mutex<State>, conn: &MockConnection, request: &MockRequest) {
    let command = &request.command;
    let args = command.arguments.clone().map(Value::Object).unwrap_or(json!({}));
    let mut state = state.lock().unwrap();
    let name = command.name.as_str();
    let changes = !name.starts_with("query") && name != "qom-list";
    let mut silent = false;
    if changes {
        state.changes += 1;
        state.log.push(name.to_owned());
        match state.fault {
            Some((n, Fault::Refuse)) if n + 1 == state.changes => {
                return conn.error(command, "GenericError", "injected failure");
            }
            Some((n, Fault::DoButStaySilent)) if n + 1 == state.changes => silent = true,
            _ => {}
        }
    }
    let mut events = Vec::new();
    let result = apply(&mut state, name, &args, request.fds.len(), &mut events);
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

#[allow(clippy::too_many_lines)]
fn apply(
    state: &mut State,
    name: &str,
    args: &Value,
    fds: usize,
    events: &mut Vec<(&'static str, Value)>,
) -> Reply {
    match name {
        "query-pci" => {
            let mut devices = vec![
                json!({"bus": 0, "slot": 0, "function": 0, "qdev_id": ""}),
                json!({"bus": 0, "slot": 1, "function": 0, "qdev_id": ""}),
            ];
            for (id, (slot, _)) in &state.devices {
                devices.push(json!({"bus": 0, "slot": slot, "function": 0, "qdev_id": id}));
            }
            Ok(json!([{"bus": 0, "devices": devices}]))
        }
        "qom-list" => {
            let mut list = vec![json!({"name": "type", "type": "string"})];
            list.extend(
                state.devices.keys().map(|id| json!({"name": id, "type": "child<virtio-net-pci>"})),
            );
            Ok(Value::Array(list))
        }
        "query-named-block-nodes" => Ok(state
            .nodes
            .keys()
            .flat_map(|node| {
                [json!({"node-name": node}), json!({"node-name": format!("{node}-file")})]
            })
            .collect()),
        "query-fdsets" => Ok(state
            .fdsets
            .iter()
            .map(|(id, (opaques, _))| {
                let fds: Vec<Value> = opaques
                    .iter()
                    .enumerate()
                    .map(|(n, o)| json!({"fd": 20 + n, "opaque": o}))
                    .collect();
                json!({"fdset-id": id, "fds": fds})
            })
            .collect()),
        "getfd" => {
            if fds != 1 {
                return generic("No file descriptor supplied via SCM_RIGHTS".into());
            }
            state.fd_names.insert(text(args, "fdname").into());
            Ok(json!({}))
        }
        "closefd" => {
            if state.fd_names.remove(text(args, "fdname")) {
                Ok(json!({}))
            } else {
                generic(format!("File descriptor named '{}' not found", text(args, "fdname")))
            }
        }
        "netdev_add" => {
            let id = text(args, "id");
            if state.netdevs.contains(id) {
                return generic(format!("Duplicate ID '{id}' for netdev"));
            }
            let names: Vec<&str> = args["fd"]
                .as_str()
                .into_iter()
                .chain(args["fds"].as_str().into_iter().flat_map(|f| f.split(':')))
                .collect();
            if let Some(missing) = names.iter().find(|n| !state.fd_names.contains(**n)) {
                return generic(format!("File descriptor named '{missing}' has not been found"));
            }
            for n in names {
                state.fd_names.remove(n);
            }
            state.netdevs.insert(id.into());
            Ok(json!({}))
        }
        "netdev_del" => {
            if state.netdevs.remove(text(args, "id")) {
                Ok(json!({}))
            } else {
                Err(("DeviceNotFound", format!("Device '{}' not found", text(args, "id"))))
            }
        }
        "add-fd" => {
            if fds != 1 {
                return generic("No file descriptor supplied via SCM_RIGHTS".into());
            }
            let id = args["fdset-id"].as_u64().unwrap();
            let set = state.fdsets.entry(id).or_default();
            set.0.push(text(args, "opaque").into());
            Ok(json!({"fdset-id": id, "fd": 20}))
        }
        "remove-fd" => {
            let id = args["fdset-id"].as_u64().unwrap();
            let in_use = state.nodes.values().any(|set| *set == Some(id));
            match state.fdsets.get_mut(&id) {
                None => generic(format!("File descriptor named 'fdset-id:{id}' not found")),
                Some(set) => {
                    set.0.clear();
                    set.1 = true;
                    if !in_use {
                        state.fdsets.remove(&id);
                    }
                    Ok(json!({}))
                }
            }
        }
        "blockdev-add" => {
            let node = text(args, "node-name");
            if state.nodes.contains_key(node) {
                return generic(format!("Duplicate nodes with node-name='{node}'"));
            }
            let filename = args["file"]["filename"].as_str();
            let fdset = match filename.and_then(|f| f.strip_prefix("/dev/fdset/")) {
                Some(id) => {
                    let id: u64 = id.parse().unwrap();
                    if state.fdsets.get(&id).is_none_or(|set| set.0.is_empty()) {
                        return generic(format!(
                            "Could not dup FD for /dev/fdset/{id} flags 2: No such file or directory"
                        ));
                    }
                    Some(id)
                }
                None => None,
            };
            state.nodes.insert(node.into(), fdset);
            Ok(json!({}))
        }
        "blockdev-del" => {
            let node = text(args, "node-name");
            if state.devices.values().any(|(_, used)| used == node) {
                return generic(format!("Node {node} is in use"));
            }
            match state.nodes.remove(node) {
                None => generic(format!("Failed to find node with node-name='{node}'")),
                Some(fdset) => {
                    if let Some(id) = fdset {
                        if state.fdsets.get(&id).is_some_and(|set| set.1) {
                            state.fdsets.remove(&id);
                        }
                    }
                    Ok(json!({}))
                }
            }
        }
        "device_add" => {
            let id = text(args, "id");
            if state.devices.contains_key(id) {
                return generic(format!("Duplicate device ID '{id}'"));
            }
            let backend = args
                .get("netdev")
                .or_else(|| args.get("drive"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !state.netdevs.contains(backend) && !state.nodes.contains_key(backend) {
                return generic(format!("Property can't find value '{backend}'"));
            }
            let slot = u8::from_str_radix(text(args, "addr").trim_start_matches("0x"), 16).unwrap();
            if state.devices.values().any(|(s, _)| *s == slot) {
                return generic(format!("PCI: slot {slot} function 0 not available"));
            }
            state.devices.insert(id.into(), (slot, backend.into()));
            Ok(json!({}))
        }
        "device_del" => {
            let id = text(args, "id");
            if state.devices.remove(id).is_none() {
                return Err(("DeviceNotFound", format!("Device '{id}' not found")));
            }
            events.push((
                "DEVICE_DELETED",
                json!({"path": format!("/machine/peripheral/{id}/virtio-backend")}),
            ));
            events.push((
                "DEVICE_DELETED",
                json!({"device": id, "path": format!("/machine/peripheral/{id}")}),
            ));
            Ok(json!({}))
        }
        other => Err(("CommandNotFound", format!("The command {other} has not been found"))),
    }
}
