"""What one message to N sockets costs the kernel here, before any chat server.

    .venv/bin/python -m bench.socket_fanout [--sockets 2500] [--rounds 20]
    .venv/bin/python -m bench.socket_fanout --floor [--sockets 2500] [--rounds 20]

The big-room scenario sends each message to 2,500 sockets per node. This probe
does only that: one `send()` of a 100-byte frame to each of N loopback TCP
sockets, from a plain Python loop, and reports the milliseconds per round.
The receiving process either reads with epoll ("reading", as a load
generator does) or is stopped ("stopped": no wake-up, no reader competing
for the cores), so the second figure is the sender's own kernel cost.

A send to one socket, again and again, is much cheaper than a send to each
of many: the kernel's per-socket state is then in cache. The figure that
bounds a fan-out is the one over distinct sockets. With `--shuffle` the
sockets are written in a random order instead of the order they were
accepted: what a fan-out over a set (hash order) paid before the hub kept a
room's sessions in join order.

`--floor` is the big room's whole socket work with nothing else: 2 writer
processes (the two nodes) send one frame to each of their N sockets at the
same instant, and 4 reader processes (the load generator's) read all 2N with
epoll. It reports the time from the writers' start to the last read: what no
chat server on this machine can beat, before its broker and its own code.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import socket
import statistics
import struct
import time

FRAME = b"\x81\x62" + b"x" * 98  # an unmasked 100-byte text frame
WRITERS = 2
READERS = 4


def connected(
    addrs: list[tuple[str, int]], ready_w: int
) -> tuple[list[socket.socket], select.epoll]:
    """One non-blocking connection to each address, in an epoll; then say so on `ready_w`."""
    conns = [socket.create_connection(addr) for addr in addrs]
    poller = select.epoll()
    for conn in conns:
        conn.setblocking(False)
        poller.register(conn.fileno(), select.EPOLLIN)
    os.write(ready_w, b"r")
    return conns, poller


def receiver(port: int, n: int, stop_self: bool, ready_w: int) -> None:
    _conns, poller = connected([("127.0.0.1", port)] * n, ready_w)
    if stop_self:
        os.kill(os.getpid(), signal.SIGSTOP)
    while True:
        for fd, _ in poller.poll():
            if not os.read(fd, 65536):
                os._exit(0)


def one_mode(n: int, rounds: int, stop_receiver: bool, shuffle: bool) -> list[float]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        receiver(port, n, stop_receiver, ready_w)
    senders = [listener.accept()[0] for _ in range(n)]
    for s in senders:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
    if shuffle:
        random.shuffle(senders)
    os.read(ready_r, 1)
    time.sleep(0.5)
    per_round: list[float] = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            for s in senders:
                s.send(FRAME)
            per_round.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for s in senders:
            s.close()
        listener.close()
    return per_round


def floor_reader(addrs: list[tuple[str, int]], mine: range, results_w: int) -> None:
    """Connect to socket i's writer for each i of `mine`; after each round, the last read's time."""
    conns, poller = connected([addrs[i % WRITERS] for i in mine], results_w)
    while True:
        got, last = 0, 0.0
        while got < len(conns):
            for fd, _ in poller.poll():
                data = os.read(fd, 65536)
                if not data:
                    os._exit(0)
                got += len(data) // len(FRAME)
                last = time.time()
        os.write(results_w, struct.pack("d", last))


def floor_writer(listener: socket.socket, n: int, results_w: int, go_r: int) -> None:
    senders = [listener.accept()[0] for _ in range(n)]
    for s in senders:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
    os.write(results_w, b"w")
    while True:
        start = struct.unpack("d", os.read(go_r, 8))[0]
        while time.time() < start:
            pass
        for s in senders:
            s.send(FRAME)


def floor(per_writer: int, rounds: int) -> list[float]:
    """Milliseconds from the writers' common start to the last read, per round."""
    listeners = []
    for _ in range(WRITERS):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        listeners.append(listener)
    addrs = [lst.getsockname() for lst in listeners]
    total = WRITERS * per_writer
    results_r, results_w = os.pipe()
    pids, gos = [], []
    for r in range(READERS):
        pid = os.fork()
        if pid == 0:
            floor_reader(addrs, range(r, total, READERS), results_w)
        pids.append(pid)
    for _ in range(READERS):
        os.read(results_r, 1)
    for w in range(WRITERS):
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            floor_writer(listeners[w], per_writer, results_w, go_r)
        pids.append(pid)
        gos.append(go_w)
    for _ in range(WRITERS):
        os.read(results_r, 1)
    time.sleep(0.5)
    per_round: list[float] = []
    try:
        for _ in range(rounds):
            start = time.time() + 0.01
            for go in gos:
                os.write(go, struct.pack("d", start))
            lasts = [struct.unpack("d", os.read(results_r, 8))[0] for _ in range(READERS)]
            per_round.append((max(lasts) - start) * 1000)
            time.sleep(0.3)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for listener in listeners:
            listener.close()
    return per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--shuffle", action="store_true", help="write in a random order")
    parser.add_argument("--floor", action="store_true", help="the big room's sockets alone")
    args = parser.parse_args()
    if args.floor:
        ms = floor(args.sockets, args.rounds)
        print(
            f"{WRITERS} writers x {args.sockets} sockets, {READERS} readers: from the first "
            f"write to the last read, median {statistics.median(ms):.1f} ms, "
            f"min {min(ms):.1f}, max {max(ms):.1f}",
            flush=True,
        )
        return
    order = "random order" if args.shuffle else "accept order"
    for name, stop in (("reading", False), ("stopped", True)):
        ms = one_mode(args.sockets, args.rounds, stop, args.shuffle)
        med = statistics.median(ms)
        print(
            f"receiver {name}, {order}: one send to each of {args.sockets} sockets: "
            f"median {med:.1f} ms per round ({med * 1000 / args.sockets:.1f} µs per send), "
            f"min {min(ms):.1f}, max {max(ms):.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
