//! What the schema cannot say, known from QEMU's sources (checked against QEMU 7.2).

/// Commands QEMU declares with `'gen': false`: its dispatcher hands their arguments to the
/// handler unvisited, so the members listed in the schema are neither all nor checked the
/// way the schema says. Returns what QEMU does with them instead.
///
/// In QEMU 7.2 this is `device_add` alone (qapi/qdev.json: its schema lists `driver`, `bus`
/// and `id`, and the device's own properties come on top). `netdev_add` and `object-add`,
/// once free-form too, are typed since QEMU 6.0 and are checked like any command.
pub(crate) fn free_form(command: &str) -> Option<&'static str> {
    match command {
        "device_add" => Some(
            "device_add takes free-form device properties ('gen': false); QEMU checks them \
             only when it creates the device",
        ),
        _ => None,
    }
}
