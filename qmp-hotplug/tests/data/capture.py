#!/usr/bin/env python3
"""Captures the replies under tests/data/ from a real QEMU (stdlib only).

    python3 capture.py [OUTDIR]

Each scenario starts `qemu-system-x86_64 -machine M -accel tcg -nodefaults -nographic
-display none -monitor none -serial none -m 64 -S -qmp unix:SOCK,server=on,wait=off`
plus the scenario's arguments, and writes two files: NAME-prelaunch.json (still in -S,
before the firmware ran) and NAME-running.json (after `cont`, once SeaBIOS gave every
bridge a secondary bus number). Each file holds the command line, the machine type
(`qom-get /machine type`), `query-pci`, `qom-list /machine/peripheral`, and per
peripheral `qom-get` of `type`, `parent_bus`, `addr` and (where it exists) `hotplug`.
"""
import json, os, socket, subprocess, sys, tempfile, time

BASE = ["-accel", "tcg", "-nodefaults", "-nographic", "-display", "none",
        "-monitor", "none", "-serial", "none", "-m", "64", "-S"]

SCENARIOS = {
    "pc-empty": ("pc", []),
    "pc-bridge": ("pc", ["-device", "pci-bridge,id=br1,chassis_nr=1,bus=pci.0,addr=5"]),
    "pc-nested-bridges": ("pc", [
        "-device", "pci-bridge,id=br1,chassis_nr=1,bus=pci.0,addr=5",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,id=nic0,bus=br1,addr=3",
        "-device", "pci-bridge,id=br2,chassis_nr=2,bus=br1,addr=4",
        "-netdev", "user,id=n1", "-device", "virtio-net-pci,netdev=n1,id=nic1,bus=br2,addr=0",
    ]),
    "q35-empty": ("q35", []),
    "q35-root-ports": ("q35", [
        "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2",
        "-device", "pcie-root-port,id=rp2,bus=pcie.0,chassis=1,slot=2,addr=0x3.0x0,multifunction=on",
        "-device", "pcie-root-port,id=rp3,bus=pcie.0,chassis=1,slot=3,addr=0x3.0x1",
        "-device", "pcie-root-port,id=rp4,bus=pcie.0,chassis=1,slot=4,addr=0x3.0x2",
        "-device", "pcie-root-port,id=rp5,bus=pcie.0,chassis=1,slot=5,addr=0x4,hotplug=off",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,id=nic0,bus=rp3,addr=0",
    ]),
    "q35-pcie-pci-bridge": ("q35", [
        "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2",
        "-device", "pcie-root-port,id=rp2,bus=pcie.0,chassis=1,slot=2,addr=0x3",
        "-device", "pcie-pci-bridge,id=pb1,bus=rp2,addr=0",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,id=nic0,bus=pb1,addr=1",
    ]),
}


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.greeting = json.loads(self.file.readline())
        self.next_id = 0
        self.execute("qmp_capabilities")

    def raw(self, name, arguments=None):
        self.next_id += 1
        message = {"execute": name, "id": self.next_id}
        if arguments is not None:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = json.loads(self.file.readline())
            if reply.get("id") == self.next_id:
                del reply["id"]
                return reply

    def execute(self, name, arguments=None):
        reply = self.raw(name, arguments)
        if "error" in reply:
            raise RuntimeError(f"{name} {arguments}: {reply['error']}")
        return reply["return"]


def snapshot(qmp, command_line, state):
    peripherals = qmp.execute("qom-list", {"path": "/machine/peripheral"})
    qom_get = {}
    for entry in peripherals:
        if not entry["type"].startswith("child<"):
            continue
        props = {}
        for prop in ["type", "parent_bus", "addr", "hotplug"]:
            reply = qmp.raw("qom-get", {"path": f"/machine/peripheral/{entry['name']}",
                                        "property": prop})
            if "return" in reply:
                props[prop] = reply["return"]
        qom_get[entry["name"]] = props
    version = qmp.greeting["QMP"]["version"]
    return {
        "qemu": "{major}.{minor}.{micro}".format(**version["qemu"]) + f" ({version['package']})",
        "command_line": command_line,
        "state": state,
        "machine_type": qmp.execute("qom-get", {"path": "/machine", "property": "type"}),
        "query_pci": qmp.execute("query-pci"),
        "qom_list_peripheral": peripherals,
        "qom_get": qom_get,
    }


def bridges_numbered(pci):
    """True once every bridge that query-pci shows has a secondary bus number."""
    def walk(devices):
        for device in devices:
            bridge = device.get("pci_bridge")
            if bridge is None:
                continue
            if bridge["bus"]["secondary"] == 0 or "devices" not in bridge:
                return False
            if not walk(bridge["devices"]):
                return False
        return True
    return all(walk(bus["devices"]) for bus in pci)


def capture(name, machine, extra, outdir):
    workdir = tempfile.mkdtemp(prefix="qmp-capture-")
    path = os.path.join(workdir, "qmp.sock")
    args = ["qemu-system-x86_64", "-machine", machine] + BASE + \
        ["-qmp", f"unix:{path},server=on,wait=off"] + extra
    shown = " ".join(a if a != path else "unix:SOCK,server=on,wait=off" for a in args)
    shown = shown.replace(f"unix:{path},server=on,wait=off", "unix:SOCK,server=on,wait=off")
    proc = subprocess.Popen(args)
    try:
        for _ in range(400):
            try:
                qmp = Qmp(path)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"{name}: no QMP socket")
        out = snapshot(qmp, shown, "prelaunch (-S, before the firmware ran)")
        with open(os.path.join(outdir, f"{name}-prelaunch.json"), "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
            f.write("\n")
        qmp.execute("cont")
        deadline = time.time() + 20
        while not bridges_numbered(qmp.execute("query-pci")):
            if time.time() > deadline:
                raise SystemExit(f"{name}: SeaBIOS never numbered the bridges")
            time.sleep(0.1)
        out = snapshot(qmp, shown, "running (after `cont`; SeaBIOS numbered the buses)")
        with open(os.path.join(outdir, f"{name}-running.json"), "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
            f.write("\n")
        print(name, "ok")
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for name, (machine, extra) in SCENARIOS.items():
        capture(name, machine, extra, outdir)
