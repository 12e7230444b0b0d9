#!/usr/bin/env python3
"""Python side of bench/run: one measurement on one QMP socket, one JSON line on stdout.

    bench_qemu_qmp.py roundtrip --socket PATH --client qemu.qmp|raw|raw-oob [--count N]
    bench_qemu_qmp.py pipelined --socket PATH --client qemu.qmp|raw-oob [--in-flight 64]
    bench_qemu_qmp.py events    --socket PATH --client qemu.qmp|raw [--count 100000]

`qemu.qmp` is qemu.qmp.QMPClient (asyncio), which negotiates `oob` when the server offers
it. `pipelined` keeps --in-flight execute() calls outstanding (that many tasks, each
running commands one after the other). `events` sends `x-bench-events` (bench/ mock server
only) and reads every event from the client's default listener (`client.events`).

`raw*` are minimal blocking loops on a plain socket (no JSON parsing), the Python floor.
The output has the same fields as the Rust driver's (`qmp-bench`).
"""

import argparse
import asyncio
import json
import socket
import sys
import time


def line(bench, client, count, seconds, **extra):
    out = {"bench": bench, "client": client, "impl": "python", "count": count,
           "seconds": seconds, "us_per_op": seconds * 1e6 / max(count, 1),
           "ops_per_s": count / seconds}
    out.update(extra)
    print(json.dumps(out, sort_keys=True))


class Raw:
    """write a line, read lines; a reply is a line with `"return"`."""

    def __init__(self, path, oob):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb", buffering=65536)
        greeting = self.reader.readline()
        if not greeting.startswith(b'{"QMP"'):
            raise RuntimeError(f"not a QMP greeting: {greeting!r}")
        caps = (b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\r\n' if oob
                else b'{"execute":"qmp_capabilities"}\r\n')
        self.sock.sendall(caps)
        self.read_reply()
        self.next_id = 0

    def read(self):
        """True for a reply, False for an event."""
        data = self.reader.readline()
        if not data:
            raise EOFError("the server closed the QMP socket")
        if data.startswith(b'{"event"') or data.startswith(b'{"timestamp"'):
            return False
        if b'"return"' in data:
            return True
        if b'"event"' in data:
            return False
        raise RuntimeError(f"unexpected QMP message: {data!r}")

    def read_reply(self):
        while not self.read():
            pass

    def query_status(self):
        self.next_id += 1
        return b'{"execute":"query-status","id":%d}\r\n' % self.next_id

    def round_trips(self, n):
        for _ in range(n):
            self.sock.sendall(self.query_status())
            self.read_reply()

    def pipelined(self, n, k):
        sent = min(n, k)
        self.sock.sendall(b"".join(self.query_status() for _ in range(sent)))
        for _ in range(n):
            self.read_reply()
            if sent < n:
                self.sock.sendall(self.query_status())
                sent += 1

    def events(self, count):
        self.next_id += 1
        self.sock.sendall(b'{"execute":"x-bench-events","arguments":{"count":%d},"id":%d}\r\n'
                          % (count, self.next_id))
        received = 0
        while not self.read():
            received += 1
        return received

    def close(self):
        self.reader.close()
        self.sock.close()


def raw_bench(args):
    raw = Raw(args.socket, args.client == "raw-oob" or args.bench != "roundtrip")
    try:
        if args.bench == "roundtrip":
            raw.round_trips(args.warmup)
            start = time.perf_counter()
            raw.round_trips(args.count)
            line("roundtrip", args.client, args.count, time.perf_counter() - start)
        elif args.bench == "pipelined":
            raw.pipelined(args.warmup, args.in_flight)
            start = time.perf_counter()
            raw.pipelined(args.count, args.in_flight)
            line("pipelined", args.client, args.count, time.perf_counter() - start,
                 in_flight=args.in_flight, oob=True)
        else:
            raw.events(args.warmup)
            start = time.perf_counter()
            received = raw.events(args.count)
            line("events", args.client, args.count, time.perf_counter() - start,
                 received=received, lost=args.count - received)
    finally:
        raw.close()


async def qmp_bench(args):
    from qemu.qmp import QMPClient

    client = QMPClient("qmp-bench")
    await client.connect(args.socket)
    try:
        if args.bench == "roundtrip":
            for _ in range(args.warmup):
                await client.execute("query-status")
            start = time.perf_counter()
            for _ in range(args.count):
                await client.execute("query-status")
            line("roundtrip", args.client, args.count, time.perf_counter() - start)
        elif args.bench == "pipelined":
            async def run(n):
                async def worker(share):
                    for _ in range(share):
                        await client.execute("query-status")
                k = args.in_flight
                await asyncio.gather(*(worker(n // k + (1 if i < n % k else 0))
                                       for i in range(k)))
            await run(args.warmup)
            start = time.perf_counter()
            await run(args.count)
            seconds = time.perf_counter() - start
            oob = "oob" in client.greeting.QMP.capabilities
            line("pipelined", args.client, args.count, seconds, in_flight=args.in_flight,
                 oob=oob)
        else:
            async def run(n):
                async def consume():
                    got = 0
                    while got < n:
                        event = await client.events.get()
                        if event["event"] == "BENCH":
                            got += 1
                    return got
                consumer = asyncio.ensure_future(consume())
                await client.execute("x-bench-events", {"count": n})
                return await consumer
            await run(args.warmup)
            start = time.perf_counter()
            received = await run(args.count)
            line("events", args.client, args.count, time.perf_counter() - start,
                 received=received, lost=args.count - received)
    finally:
        await client.disconnect()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    for name, clients, count, warmup in [
        ("roundtrip", ["qemu.qmp", "raw", "raw-oob"], 2000, 200),
        ("pipelined", ["qemu.qmp", "raw-oob"], 4096, 512),
        ("events", ["qemu.qmp", "raw"], 100_000, 2000),
    ]:
        p = sub.add_parser(name)
        p.add_argument("--socket", required=True)
        p.add_argument("--client", required=True, choices=clients)
        p.add_argument("--count", type=int, default=count)
        p.add_argument("--warmup", type=int, default=warmup)
        if name == "pipelined":
            p.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()
    if args.client == "qemu.qmp":
        asyncio.run(qmp_bench(args))
    else:
        raw_bench(args)


if __name__ == "__main__":
    sys.exit(main())
