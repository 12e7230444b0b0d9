//! The PCI tree against a real QEMU 7.2: every place the tree offers, `device_add` accepts,
//! until the tree says there is none; places it calls taken, QEMU refuses. The machines
//! stay paused by `-S` (no guest is needed to add a device), which is also when `query-pci`
//! cannot see behind bridges and the tree must rely on QOM.

use std::collections::BTreeSet;

use qemu_launcher::{QemuBuilder, qemu_or_skip};
use qmp_client::Client;
use qmp_hotplug::{
    DeviceId, DeviceKind, PciTree, Peripheral, Place, PlaceBus, Preferences, TopologyInput,
    Unusable,
};
use serde_json::json;

/// Reads everything [`PciTree`] needs, the way a hotplug executor would.
async fn read_tree(client: &Client) -> PciTree {
    let machine_type =
        client.execute("qom-get", json!({"path": "/machine", "property": "type"})).await.unwrap();
    let query_pci = client.execute("query-pci", ()).await.unwrap();
    let list = client.execute("qom-list", json!({"path": "/machine/peripheral"})).await.unwrap();
    let mut peripherals = Peripheral::from_qom_list(&list).unwrap();
    for peripheral in &mut peripherals {
        for property in peripheral.wanted_properties() {
            let path = format!("/machine/peripheral/{}", peripheral.id);
            let value = client
                .execute("qom-get", json!({"path": path, "property": property}))
                .await
                .unwrap();
            peripheral.set_qom_property(property, &value).unwrap();
        }
    }
    let input = TopologyInput {
        machine_type: machine_type.as_str().map(ToOwned::to_owned),
        query_pci,
        peripherals,
    };
    PciTree::new(&input).unwrap()
}

/// `device_add` of a virtio-net-pci NIC with its own user netdev at `place`.
async fn add_nic(client: &Client, id: &str, place: &Place) -> Result<(), qmp_client::Error> {
    client.execute("netdev_add", json!({"type": "user", "id": id})).await.unwrap();
    let device = json!({"driver": "virtio-net-pci", "netdev": id, "id": id,
                        "bus": place.bus.device_add_name(), "addr": place.addr()});
    let result = client.execute("device_add", device).await.map(drop);
    if result.is_err() {
        client.execute("netdev_del", json!({"id": id})).await.unwrap();
    }
    result
}

/// Adds a NIC at every place the tree offers, re-reading QEMU after each: each add must
/// succeed, land where planned, and take exactly that place. Returns the ids added.
async fn fill(client: &Client) -> Vec<(String, Place)> {
    let mut added = Vec::new();
    let mut tree = read_tree(client).await;
    let mut free = tree.free_places(DeviceKind::Nic, "t", &Preferences::default());
    while let Ok(place) =
        tree.free_place(DeviceKind::Nic, &format!("t{}", added.len()), &Preferences::default())
    {
        let id = DeviceId::at(DeviceKind::Nic, &format!("t{}", added.len()), &place)
            .unwrap()
            .to_string();
        add_nic(client, &id, &place).await.unwrap_or_else(|error| {
            panic!("QEMU refused {id} at {place}, which the tree offered: {error}")
        });
        tree = read_tree(client).await;
        assert!(tree.has_device(&id, &place), "{id} is not at {place}");
        let now = tree.free_places(DeviceKind::Nic, "t", &Preferences::default());
        assert_eq!(now, free[1..], "adding at {place} changed more than that place");
        free = now;
        added.push((id, place));
    }
    added
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q35_root_ports_take_one_device_each_and_pcie_0_none() {
    let qemu = qemu_or_skip!(QemuBuilder::new().machine("q35").paused(true).root_ports(3).args([
        "-netdev",
        "user,id=cold",
        "-device",
        "virtio-net-pci,netdev=cold,id=cold0,bus=rp2,addr=0",
    ]));
    let client = Client::connect(qemu.qmp_path()).await.unwrap();
    let tree = read_tree(&client).await;
    // Paused: query-pci cannot see cold0 behind rp2; QOM can.
    let places = tree.free_places(DeviceKind::Nic, "t", &Preferences::default());
    let rp = |name: &str| Place { bus: PlaceBus::Named(name.into()), slot: 0 };
    assert_eq!(places, [rp("rp1"), rp("rp3")]);

    let added = fill(&client).await;
    assert_eq!(
        added.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["nic-t0-rp1-0", "nic-t1-rp3-0"]
    );

    let tree = read_tree(&client).await;
    let error = tree.free_place(DeviceKind::Nic, "late", &Preferences::default()).unwrap_err();
    let text = error.to_string();
    for expected in [
        "rp1: a root port holding nic-t0-rp1-0 at 00.0",
        "rp2: a root port holding cold0 at 00.0",
        "pcie.0: q35's root complex takes no hotplug",
        "more empty root ports",
    ] {
        assert!(text.contains(expected), "{text}\nlacks: {expected}");
    }
    // QEMU agrees: the taken port and the root complex refuse.
    let refused = add_nic(&client, "late0", &rp("rp2")).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("not available for virtio-net-pci, in use by virtio-net-pci,id=cold0"),
        "{refused}"
    );
    let root = Place { bus: PlaceBus::Named("pcie.0".into()), slot: 0x10 };
    assert!(matches!(error.checked.last().map(|c| &c.why), Some(Unusable::RootComplex { .. })));
    let refused = add_nic(&client, "late1", &root).await.unwrap_err();
    assert!(refused.to_string().contains("Bus 'pcie.0' does not support hotplugging"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pc_bus_0_and_a_bridge_take_what_the_tree_offers() {
    let qemu = qemu_or_skip!(
        QemuBuilder::new()
            .paused(true)
            .args(["-device", "pci-bridge,id=br1,chassis_nr=1,bus=pci.0,addr=5",])
    );
    let client = Client::connect(qemu.qmp_path()).await.unwrap();
    let tree = read_tree(&client).await;
    let taken: BTreeSet<Place> = tree
        .buses()
        .iter()
        .filter_map(|bus| Some((bus.name.clone()?, bus)))
        .flat_map(|(name, bus)| {
            bus.functions
                .iter()
                .map(move |f| Place { bus: PlaceBus::Named(name.clone()), slot: f.slot })
        })
        .collect();

    let added = fill(&client).await;
    // 29 on bus 0 (all but the host bridge's 0, PIIX's 1 and the bridge's 5), 32 on br1.
    assert_eq!(added.len(), 29 + 32);
    assert_eq!(added[0], ("nic-t0-pci-2".to_owned(), Place { bus: PlaceBus::PcRoot, slot: 2 }));
    assert_eq!(added[29].0, "nic-t29-br1-0", "slot 0 of a bridge is used");
    for (id, place) in &added {
        let parsed: DeviceId = id.parse().unwrap();
        assert_eq!(&parsed.place(), place);
    }
    let error = read_tree(&client)
        .await
        .free_place(DeviceKind::Nic, "late", &Preferences::default())
        .unwrap_err();
    assert!(
        error.to_string().contains(
            "pci.0: no free slot (32 used, 0 reserved); br1: no free slot (32 used, 0 reserved)"
        ),
        "{error}"
    );
    // What the tree called taken before the fill, QEMU refuses.
    assert_eq!(taken.len(), 3, "slots 0, 1 and 5 of bus 0: {taken:?}");
    for (n, place) in taken.iter().enumerate() {
        let refused = add_nic(&client, &format!("late{n}"), place).await.unwrap_err();
        assert!(
            refused.to_string().contains("not available for virtio-net-pci"),
            "{place}: {refused}"
        );
    }
}
