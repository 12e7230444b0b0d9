//! `qmp pci`: PCI bus 0 as a table of slots (or JSON with `--json`).

use std::fmt::Write as _;

use qmp_hotplug::{Hotplug, Slot, SlotMap};
use serde_json::{Value, json};

use crate::cli::GlobalArgs;
use crate::exit::Failure;
use crate::output::{self, escape_for_terminal};

/// Prints the slot table of bus 0.
///
/// # Errors
/// As [`Failure::from_hotplug`].
pub(crate) async fn run(global: &GlobalArgs) -> Result<(), Failure> {
    let hotplug = Hotplug::new(crate::connect::connect(global).await?);
    let slots = hotplug.pci_slots().await?;
    if global.json {
        output::print_line(&output::Style { pretty: false }.render(&slots_json(&slots)))
    } else {
        output::print_raw(&table(&slots, true))
    }
}

/// Bus 0 as a table: a header, then one line per slot, or per function of a used slot, with
/// its qdev id (`-` for devices the machine made) and description (else vendor:device).
/// Free slots only when `with_free`. Ids and descriptions come from the server: escaped.
pub(crate) fn table(slots: &SlotMap, with_free: bool) -> String {
    let mut text = format!("{:<6}{:<10}{:<32}DEVICE\n", "SLOT", "STATE", "ID");
    for (number, slot) in slots.iter() {
        // Writing to a String cannot fail.
        let _ = match slot {
            Slot::Free if !with_free => Ok(()),
            Slot::Free => writeln!(text, "{number:02}    free"),
            Slot::Reserved => writeln!(text, "{number:02}    reserved"),
            _ => slot.functions().iter().try_for_each(|function| {
                let id = escape_for_terminal(function.qdev_id.as_deref().unwrap_or("-"));
                let what = match &function.description {
                    Some(description) => escape_for_terminal(description).into_owned(),
                    None => format!("{:04x}:{:04x}", function.vendor, function.device),
                };
                let at = format!("{number:02}.{}", function.function);
                writeln!(text, "{at:<6}{:<10}{id:<32}{what}", "used")
            }),
        };
    }
    text
}

/// One object per slot: `{"slot": N, "state": "free"|"reserved"|"used", "functions": [...]}`,
/// strings exactly as QEMU gave them (escaped as JSON, see [`output::Style::render`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_map(qdev_id: &str, desc: &str) -> SlotMap {
        SlotMap::from_query_pci(&json!([{"bus": 0, "devices": [
            {"bus": 0, "slot": 0, "function": 0, "qdev_id": "",
             "class_info": {"class": 1536, "desc": "Host bridge"},
             "id": {"vendor": 32902, "device": 4663}, "regions": []},
            {"bus": 0, "slot": 5, "function": 0, "qdev_id": qdev_id,
             "class_info": {"class": 512, "desc": desc},
             "id": {"vendor": 6900, "device": 4096}, "regions": []}]}]))
        .unwrap()
    }

    #[test]
    fn the_table_matches_the_library_table_for_ordinary_names() {
        let slots = slot_map("nic-web1-pci-5", "Ethernet controller");
        assert_eq!(table(&slots, true), slots.to_string());
        let used_only = table(&slots, false);
        assert_eq!(used_only.lines().count(), 3, "{used_only}");
        assert!(!used_only.contains("free"), "{used_only}");
    }

    #[test]
    fn server_strings_in_the_table_are_escaped() {
        let slots = slot_map("nic\u{1b}[2J", "Ether\u{9b}31mnet\nFAKE ROW");
        let text = table(&slots, true);
        assert!(!text.contains(['\u{1b}', '\u{9b}']), "{text:?}");
        assert!(text.contains("nic\\u{1b}[2J") && text.contains("Ether\\u{9b}31mnet\\nFAKE ROW"));
        assert_eq!(text.lines().count(), 33, "a header and one line per slot: {text}");
    }
}
