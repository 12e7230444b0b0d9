//! Device ids, the names qmp-hotplug reads back from QEMU (`query-pci`, `qom-list`, node
//! names) to tell its devices from everyone else's: `DeviceId` (Ganeti's
//! `<kind>-<name>-pci-<slot>` on pc's bus 0, `<kind>-<name>-<bus>-<slot>` elsewhere, and a
//! SCSI disk's `disk-<name>-<bus>-<slot>-<scsi-id>.<lun>` after its controller's place).
//!
//! Byte 0 even: the rest is an id read from QEMU. Whatever parses prints back as the same
//! text, is a QEMU id within `MAX_ID_LEN`, and is Ganeti's form exactly on pc's bus 0.
//! Byte 0 odd: the rest picks a kind, name, bus, slot and maybe a SCSI unit (from alphabets
//! that reach the rules' edges); whatever `new` accepts prints as an id that parses back to
//! it.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use qmp_hotplug::{DeviceId, DeviceKind, MAX_ID_LEN, MAX_SCSI_LUN, Place, PlaceBus, ScsiUnit};

/// QEMU's node-name buffer holds 31 characters; `<id>-file` is the longest name made.
const QEMU_NODE_NAME_MAX: usize = 31;

/// Characters of ids, the separator, a few QEMU forbids and one beyond ASCII.
const ALPHABET: &[char] = &[
    'a', 'z', 'A', 'Z', '0', '1', '9', '_', '-', '.', 'p', 'c', 'i', 'n', 'd', 's', 'k', ' ', '/',
    'é',
];

fn text(u: &mut Unstructured<'_>, max: usize) -> Result<String> {
    let len = u.int_in_range(0..=max)?;
    (0..len).map(|_| u.choose(ALPHABET).copied()).collect()
}

fn kind(u: &mut Unstructured<'_>) -> Result<DeviceKind> {
    Ok(*u.choose(&[DeviceKind::Disk, DeviceKind::Nic, DeviceKind::ScsiController])?)
}

/// What every id we make must be: a QEMU id that leaves room for its derived node names.
fn check_shape(id: &str) {
    assert!(id.len() <= MAX_ID_LEN, "{id} is longer than {MAX_ID_LEN}");
    assert!(id.len() + "-file".len() <= QEMU_NODE_NAME_MAX);
    assert!(id.starts_with(|c: char| c.is_ascii_alphabetic()), "{id}");
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')), "{id}");
}

fn read_back(text: &str) {
    if let Ok(id) = text.parse::<DeviceId>() {
        assert_eq!(id.to_string(), text);
        assert!(id.slot() < qmp_hotplug::PCI_SLOTS);
        check_shape(text);
        let made = match id.scsi_unit() {
            Some(unit) => DeviceId::scsi(id.name(), &id.place(), unit),
            None => DeviceId::at(id.kind(), id.name(), &id.place()),
        };
        assert_eq!(made.as_ref().ok(), Some(&id), "{text} parses but cannot be made");
        // Ganeti's form is exactly the pc bus 0 one; a SCSI disk's adds its unit after it.
        let mut ganeti_form = format!("{}-{}-pci-{}", id.kind().prefix(), id.name(), id.slot());
        if let Some(unit) = id.scsi_unit() {
            assert_eq!(id.kind(), DeviceKind::Disk, "{text}: only disks sit on SCSI buses");
            assert!(unit.lun <= MAX_SCSI_LUN, "{text}");
            ganeti_form = format!("{ganeti_form}-{}.{}", unit.scsi_id, unit.lun);
        }
        assert_eq!(id.place().bus == PlaceBus::PcRoot, text == ganeti_form, "{text}");
    }
}

fn made(u: &mut Unstructured<'_>) -> Result<()> {
    let kind = kind(u)?;
    let name = text(u, 16)?;
    let slot = if u.ratio(1, 8)? { u.arbitrary()? } else { u.int_in_range(0..=31)? };
    let bus = match u.int_in_range(0..=3)? {
        0 => PlaceBus::PcRoot,
        1 => PlaceBus::Named("pci".into()),
        _ => PlaceBus::Named(text(u, 14)?),
    };
    let place = Place { bus, slot };
    if u.ratio(1, 4)? {
        let unit = ScsiUnit { scsi_id: u.arbitrary()?, lun: u.int_in_range(0..=MAX_SCSI_LUN + 2)? };
        if let Ok(id) = DeviceId::scsi(&name, &place, unit) {
            let text = id.to_string();
            assert_eq!((id.kind(), id.name(), id.place()), (DeviceKind::Disk, name.as_str(), place));
            assert_eq!(id.scsi_unit(), Some(unit));
            assert!(unit.lun <= MAX_SCSI_LUN, "{text} made with an out-of-range LUN");
            assert_eq!(text.parse::<DeviceId>().as_ref().ok(), Some(&id), "{text}");
            read_back(&text);
            // Never the same text as a PCI id of the same name and place.
            assert_ne!(DeviceId::at(DeviceKind::Disk, &name, &id.place()).ok(), Some(id));
        }
        return Ok(());
    }
    let ganeti = DeviceId::new(kind, &name, slot);
    if let Ok(id) = &ganeti {
        assert_eq!((id.kind(), id.name(), id.slot()), (kind, name.as_str(), slot));
        assert_eq!(id.to_string().parse::<DeviceId>().as_ref().ok(), Some(id));
        check_shape(&id.to_string());
        assert!(id.file_node_name().len() <= QEMU_NODE_NAME_MAX);
    }
    match DeviceId::at(kind, &name, &place) {
        Ok(id) => {
            let text = id.to_string();
            assert_eq!((id.kind(), id.name(), id.place()), (kind, name.as_str(), place.clone()));
            assert_eq!(text.parse::<DeviceId>().as_ref().ok(), Some(&id), "{text}");
            assert!(ganeti.is_ok(), "{text} made with a name or slot DeviceId refuses");
            read_back(&text);
        }
        // Ganeti's ids always fit: on pc's bus 0 the two constructors agree.
        Err(error) => assert!(place.bus != PlaceBus::PcRoot || ganeti.is_err(), "{error}"),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            read_back(text);
        }
    } else {
        let _ = made(&mut Unstructured::new(rest));
    }
});
