"""A user-space stand-in for ``tc netem``: two TUN devices bridged with loss, delay and jitter.

    python tests/netem_relay.py --dev-a tunA --dev-b tunB --loss 5 --delay 20 --jitter 40

Some kernels (e.g. the minimal ones of micro-VMs) are built without ``sch_netem``. This relay
creates two TUN devices (IFF_TUN, no packet information) and copies every IP packet from one
to the other, in both directions, the way ``netem loss L% delay D J`` would: each packet is
dropped with probability L (seeded), else delivered after ``D + uniform(-J, J)`` ms (at least
0; like netem without a rate limit, packets may be reordered). It prints ``ready`` once the
devices exist; the caller then moves each into its namespace (``ip link set DEV netns NS``),
which keeps the open file descriptors working. It runs until SIGTERM/SIGINT or ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import random
import signal
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    """Create TUN device ``name``; return its non-blocking file descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


async def main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    fds = {"a": open_tun(args.dev_a), "b": open_tun(args.dev_b)}
    counts = {"a": [0, 0], "b": [0, 0]}  # [forwarded, dropped] of packets read from the side
    done = asyncio.Event()

    def deliver(fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError:  # the device is down or gone: the packet is lost
            pass

    def readable(side: str) -> None:
        src = fds[side]
        dst = fds["b" if side == "a" else "a"]
        while True:
            try:
                packet = os.read(src, 65535)
            except BlockingIOError:
                return
            except OSError:
                done.set()
                return
            if rng.random() < args.loss / 100:
                counts[side][1] += 1
                continue
            counts[side][0] += 1
            delay = max(0.0, args.delay + rng.uniform(-args.jitter, args.jitter)) / 1000
            loop.call_later(delay, deliver, dst, packet)

    for side, fd in fds.items():
        loop.add_reader(fd, readable, side)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(done.wait(), args.seconds)
    except TimeoutError:
        pass
    for fd in fds.values():
        loop.remove_reader(fd)
        os.close(fd)
    print(f"a->b forwarded={counts['a'][0]} dropped={counts['a'][1]}", flush=True)
    print(f"b->a forwarded={counts['b'][0]} dropped={counts['b'][1]}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dev-a", required=True)
    parser.add_argument("--dev-b", required=True)
    parser.add_argument("--loss", type=float, default=0.0, help="percent")
    parser.add_argument("--delay", type=float, default=0.0, help="ms")
    parser.add_argument("--jitter", type=float, default=0.0, help="ms")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=120.0, help="stop after this long")
    sys.exit(asyncio.run(main(parser.parse_args())))
