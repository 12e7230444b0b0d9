//! `qmp pci`: the whole PCI tree, every bus with its devices and its room for hotplug (or
//! JSON with `--json`).

use qmp_hotplug::{Hotplug, MachineKind, PciView, Preferences, Unusable};

use crate::cli::GlobalArgs;
use crate::exit::Failure;
use crate::output::{self, escape_for_terminal};

/// Prints the PCI tree.
///
/// # Errors
/// As [`Failure::from_hotplug`].
pub(crate) async fn run(global: &GlobalArgs) -> Result<(), Failure> {
    let hotplug = Hotplug::new(crate::connect::connect(global).await?);
    let view = hotplug.pci_tree().await?.view(&Preferences::default());
    if global.json {
        let value = serde_json::to_value(&view)
            .map_err(|e| Failure::connection(format!("cannot encode the PCI view: {e}")))?;
        output::print_line(&output::Style { pretty: false }.render(&value))
    } else {
        output::print_raw(&tree_text(&view))
    }
}

/// The view as text, with every string QEMU gave (bus names, ids, descriptions) escaped
/// first, so that none can move the cursor or start a line of its own.
pub(crate) fn tree_text(view: &PciView) -> String {
    let escape = |text: &mut String| *text = escape_for_terminal(text).into_owned();
    let mut view = view.clone();
    if let Some(machine_type) = &mut view.machine_type {
        escape(machine_type);
    }
    if let MachineKind::Other(name) = &mut view.machine {
        escape(name);
    }
    for bus in &mut view.buses {
        bus.name.as_mut().map(escape);
        escape(&mut bus.label);
        escape(&mut bus.kind);
        bus.bridge_at.as_mut().map(escape);
        if let Some(
            Unusable::PortTaken { by: text }
            | Unusable::UnknownMachine { machine: text }
            | Unusable::NotPlanned { what: text }
            | Unusable::BadId { reason: text },
        ) = &mut bus.unusable
        {
            escape(text);
        }
        for function in &mut bus.functions {
            function.id.as_mut().map(escape);
            escape(&mut function.what);
            function.bus_behind.as_mut().map(escape);
        }
    }
    view.to_string()
}

#[cfg(test)]
mod tests {
    use qmp_hotplug::PciTree;
    use serde_json::json;

    use super::*;

    fn view(qdev_id: &str, desc: &str) -> PciView {
        let reply = json!([{"bus": 0, "devices": [
            {"bus": 0, "slot": 0, "function": 0, "qdev_id": "",
             "class_info": {"class": 1536, "desc": "Host bridge"},
             "id": {"vendor": 32902, "device": 4663}, "regions": []},
            {"bus": 0, "slot": 5, "function": 0, "qdev_id": qdev_id,
             "class_info": {"class": 512, "desc": desc},
             "id": {"vendor": 6900, "device": 4096}, "regions": []}]}]);
        PciTree::from_query_pci("pc", &reply).unwrap().view(&Preferences::default())
    }

    #[test]
    fn ordinary_names_print_as_the_library_prints_them() {
        let view = view("nic-web1-pci-5", "Ethernet controller");
        let text = tree_text(&view);
        assert_eq!(text, view.to_string());
        assert!(text.contains("nic-web1-pci-5") && text.contains("pci.0"), "{text}");
    }

    #[test]
    fn server_strings_in_the_tree_are_escaped() {
        let text = tree_text(&view("nic\u{1b}[2J", "Ether\u{9b}31mnet\nFAKE ROW"));
        assert!(!text.contains(['\u{1b}', '\u{9b}']), "{text:?}");
        assert!(text.contains("nic\\u{1b}[2J"), "{text}");
        assert!(!text.lines().any(|line| line.starts_with("FAKE ROW")), "{text}");
    }
}
