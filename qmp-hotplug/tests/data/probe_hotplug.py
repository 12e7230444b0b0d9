#!/usr/bin/env python3
"""Hot-plugs into root ports, bridges and refused places of a booted test guest and prints
what QEMU and the guest say (stdlib only; the results are written down in README.md).

    python3 probe_hotplug.py [GUEST_DIR]   # default: the one under ~/.cache/qmp-rs/guest
"""
import glob, json, os, socket, subprocess, sys, tempfile, time

from capture import Qmp


def guest_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    return glob.glob(os.path.expanduser("~/.cache/qmp-rs/guest/*/"))[0]


class Guest:
    def __init__(self, machine, extra):
        work = tempfile.mkdtemp(prefix="qmp-probe-")
        self.serial = os.path.join(work, "serial.log")
        sock = os.path.join(work, "qmp.sock")
        image = guest_dir()
        args = ["qemu-system-x86_64", "-machine", machine, "-accel", "tcg", "-nodefaults",
                "-nographic", "-display", "none", "-monitor", "none", "-m", "256",
                "-no-reboot", "-serial", f"file:{self.serial}",
                "-qmp", f"unix:{sock},server=on,wait=off",
                "-kernel", os.path.join(image, "vmlinuz"),
                "-initrd", os.path.join(image, "initramfs.gz"),
                "-append", "console=ttyS0 quiet panic=1"] + extra
        self.proc = subprocess.Popen(args)
        for _ in range(400):
            try:
                self.qmp = Qmp(sock)
                break
            except OSError:
                time.sleep(0.05)
        self.serial_wait("GUEST-READY")

    def log(self):
        try:
            with open(self.serial) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def serial_wait(self, text, after=0, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            log = self.log()
            at = log.find(text, after)
            if at >= 0:
                return log[at:log.find("\n", at)]
            time.sleep(0.05)
        return None

    def add(self, label, arguments, expect_guest=True):
        offset = len(self.log())
        reply = self.qmp.raw("device_add", arguments)
        if "error" in reply:
            print(f"{label}: device_add {json.dumps(arguments)}\n    -> ERROR {reply['error']}")
            return False
        seen = self.serial_wait("GUEST: +eth", offset, 10) if expect_guest else None
        print(f"{label}: device_add {json.dumps(arguments)}\n    -> {{}}; guest: {seen}")
        return True

    def delete(self, device_id):
        offset = len(self.log())
        start = time.time()
        self.qmp.execute("device_del", {"id": device_id})
        self.qmp.sock.settimeout(15)
        while True:
            event = json.loads(self.qmp.file.readline())
            if event.get("event") == "DEVICE_DELETED" and event["data"].get("device") == device_id:
                break
        took = time.time() - start
        seen = self.serial_wait("GUEST: -eth", offset, 10)
        print(f"device_del {device_id}: DEVICE_DELETED after {took:.2f} s; guest: {seen}")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def nic(device_id, netdev, **where):
    return dict({"driver": "virtio-net-pci", "netdev": netdev, "id": device_id}, **where)


def pc():
    print("== pc: -device pci-bridge,id=br1,chassis_nr=1,bus=pci.0,addr=5")
    g = Guest("pc", ["-device", "pci-bridge,id=br1,chassis_nr=1,bus=pci.0,addr=5"])
    q = g.qmp
    print("qom-get br1 shpc:", q.raw("qom-get", {"path": "/machine/peripheral/br1", "property": "shpc"}))
    for n in range(6):
        q.execute("netdev_add", {"type": "user", "id": f"n{n}"})
    g.add("bridge slot 0", nic("a", "n0", bus="br1", addr="0"))
    g.add("bridge slot 0 again (occupied)", nic("b", "n1", bus="br1", addr="0"))
    g.add("bridge slot 3", nic("b", "n1", bus="br1", addr="3"))
    g.add("bridge slot 31", nic("c", "n2", bus="br1", addr="0x1f"))
    g.add("bridge slot 32", nic("d", "n3", bus="br1", addr="0x20"))
    g.add("bus 0 slot 0 (host bridge)", nic("d", "n3", bus="pci.0", addr="0"))
    g.add("bus 0 slot 5 (the bridge)", nic("d", "n3", bus="pci.0", addr="5"))
    g.add("unknown bus", nic("d", "n3", bus="nope", addr="1"))
    for device_id in ["a", "b", "c"]:
        g.delete(device_id)
    g.close()


def q35():
    extra = [
        "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x2",
        "-device", "pcie-root-port,id=rp2,bus=pcie.0,chassis=1,slot=2,addr=0x3.0x0,multifunction=on",
        "-device", "pcie-root-port,id=rp3,bus=pcie.0,chassis=1,slot=3,addr=0x3.0x1",
        "-device", "pcie-root-port,id=rp4,bus=pcie.0,chassis=1,slot=4,addr=0x3.0x2",
        "-device", "pcie-root-port,id=rp5,bus=pcie.0,chassis=1,slot=5,addr=0x4,hotplug=off",
        "-device", "pcie-root-port,id=rp6,bus=pcie.0,chassis=1,slot=6,addr=0x5",
        "-device", "pcie-pci-bridge,id=pb1,bus=rp6,addr=0",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,id=nic0,bus=rp3,addr=0",
    ]
    print("== q35: " + " ".join(extra))
    g = Guest("q35", extra)
    q = g.qmp
    for n in range(1, 12):
        q.execute("netdev_add", {"type": "user", "id": f"n{n}"})
    print("-- accepted, seen by the guest, unplugged")
    g.add("empty root port, addr 0", nic("a", "n1", bus="rp1", addr="0"))
    g.add("pcie-pci-bridge slot 0", nic("c", "n3", bus="pb1", addr="0"))
    g.add("pcie-pci-bridge slot 1", nic("d", "n4", bus="pb1", addr="1"))
    g.add("pcie-pci-bridge slot 31", nic("e", "n5", bus="pb1", addr="0x1f"))
    print("-- refused")
    g.add("root port holding nic0, addr 0", nic("x", "n2", bus="rp3", addr="0"))
    g.add("root port holding a, addr 0", nic("x", "n2", bus="rp1", addr="0"))
    g.add("pcie.0 slot 0x10", nic("x", "n2", bus="pcie.0", addr="0x10"))
    g.add("pcie.0, no addr", nic("x", "n2", bus="pcie.0"))
    g.add("no bus at all", nic("x", "n2"))
    g.add("root port with hotplug=off", nic("x", "n2", bus="rp5", addr="0"))
    g.add("pcie-root-port itself", {"driver": "pcie-root-port", "id": "rp9", "bus": "pcie.0",
                                     "chassis": 1, "slot": 9, "addr": "0x6"}, expect_guest=False)
    g.add("pcie-pci-bridge slot 1 again (occupied)", nic("x", "n6", bus="pb1", addr="1"))
    g.add("the root port holding the pcie-pci-bridge", nic("x", "n6", bus="rp6", addr="0"))
    for device_id in ["a", "c", "d", "e"]:
        g.delete(device_id)
    print("-- accepted by QEMU, never seen by the guest (PCIe ports have only device 0)")
    g.add("root port holding nic0, no addr", nic("s1", "n7", bus="rp3"))
    print("   s1 addr (devfn):", q.raw("qom-get", {"path": "/machine/peripheral/s1", "property": "addr"}))
    g.add("empty root port, addr 1", nic("s2", "n8", bus="rp4", addr="1"))
    g.add("empty root port, addr 0.1", nic("s3", "n9", bus="rp1", addr="0.1"))
    g.add("root port holding s3 at 0.1, no addr", nic("s4", "n10", bus="rp1"))
    start = time.time()
    q.execute("device_del", {"id": "s2"})
    q.sock.settimeout(8)
    try:
        while True:
            event = json.loads(q.file.readline())
            if event.get("event") == "DEVICE_DELETED":
                print(f"device_del s2: {event} after {time.time() - start:.2f} s")
                break
    except socket.timeout:
        print(f"device_del s2: no DEVICE_DELETED within {time.time() - start:.1f} s")
    g.close()


def nested():
    print("== pc: br1 at pci.0 slot 5, br2 at br1 slot 4")
    g = Guest("pc", ["-device", "pci-bridge,id=br1,chassis_nr=1,bus=pci.0,addr=5",
                     "-device", "pci-bridge,id=br2,chassis_nr=2,bus=br1,addr=4"])
    for n in range(2):
        g.qmp.execute("netdev_add", {"type": "user", "id": f"n{n}"})
    g.add("nested bridge br2 slot 0", nic("a", "n0", bus="br2", addr="0"))
    g.add("nested bridge br2 slot 7", nic("b", "n1", bus="br2", addr="7"))
    g.delete("a")
    g.delete("b")
    g.close()
    print("== q35: -device pci-bridge,id=qb1,chassis_nr=1,bus=pcie.0,addr=6")
    g = Guest("q35", ["-device", "pci-bridge,id=qb1,chassis_nr=1,bus=pcie.0,addr=6"])
    for n in range(2):
        g.qmp.execute("netdev_add", {"type": "user", "id": f"n{n}"})
    g.add("pci-bridge on pcie.0, slot 0", nic("a", "n0", bus="qb1", addr="0"))
    g.add("pci-bridge on pcie.0, slot 2", nic("b", "n1", bus="qb1", addr="2"))
    g.delete("a")
    g.delete("b")
    g.close()


if __name__ == "__main__":
    pc()
    q35()
    nested()
