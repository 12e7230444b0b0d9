//! `qmp pci`: PCI bus 0 as a table of slots (or JSON with `--json`).

use qmp_hotplug::{Slot, SlotMap};
use serde_json::{Value, json};

use crate::cli::GlobalArgs;
use crate::exit::Failure;
use crate::output;

/// Prints the slot table of bus 0.
///
/// # Errors
/// As [`super::hotplug::failure`].
pub(crate) async fn run(global: &GlobalArgs) -> Result<(), Failure> {
    let client = super::connect(global).await?;
    let reply = client.execute("query-pci", ()).await?;
    let slots = SlotMap::from_query_pci(&reply).map_err(|e| super::hotplug::failure(&e))?;
    if global.json {
        output::print_line(&slots_json(&slots).to_string())
    } else {
        output::print_raw(&slots.to_string())
    }
}

/// One object per slot: `{"slot": N, "state": "free"|"reserved"|"used", "functions": [...]}`.
fn slots_json(slots: &SlotMap) -> Value {
    slots
        .iter()
        .map(|(number, slot)| {
            let state = match slot {
                Slot::Free => "free",
                Slot::Reserved => "reserved",
                _ => "used",
            };
            let functions: Vec<Value> = slot
                .functions()
                .iter()
                .map(|f| {
                    json!({"function": f.function, "id": f.qdev_id, "vendor": f.vendor,
                           "device": f.device, "class": f.class, "description": f.description})
                })
                .collect();
            json!({"slot": number, "state": state, "functions": functions})
        })
        .collect()
}
