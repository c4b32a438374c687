"""An emulated cluster on one host: Linux network namespaces joined by a bridge, egress shaped by tc.

    with EmulatedCluster(4) as c:         # namespaces ldes<pid>-n0..n3 + ldes<pid>-sw (the bridge)
        c.set_rate("1gbit")               # tbf on every node's interface; None = unlimited
        c.popen(0, ["python", "-c", "..."], env={...})

Node i is the namespace ``<prefix>-n<i>`` with one interface ``eth0`` at ``10.99.0.<i+1>/24``;
its peer sits in ``<prefix>-sw`` and is enslaved to the bridge ``br0``. Every byte between two
nodes leaves through a shaped ``eth0``. ``netem`` is not in this kernel, so there is no added
latency: only a token-bucket rate (``tbf rate R burst 256kb latency 100ms``, the set-up measured
at 125 MB/s for 1gbit). Needs root (``ip netns``). Everything is deleted on exit, on an exception
and on SIGINT/SIGTERM; traffic never leaves the namespaces created here.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

SUBNET = "10.99.0"
IFACE = "eth0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class EmulatedCluster:
    """``n`` network namespaces on one bridge (see the module docstring)."""

    def __init__(self, n: int, prefix: str | None = None) -> None:
        self.n = n
        self.prefix = prefix or f"ldes{os.getpid()}"
        self.switch = f"{self.prefix}-sw"
        self.nodes = [f"{self.prefix}-n{i}" for i in range(n)]
        self._made: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._old_handlers: dict[int, object] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "EmulatedCluster":
        if os.geteuid() != 0:
            raise PermissionError("EmulatedCluster needs root (ip netns, tc)")
        atexit.register(self.close)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _on_signal(self, signum, frame) -> None:
        self.close()
        raise KeyboardInterrupt(f"signal {signum}")

    def _create(self) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, ns in enumerate(self.nodes):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", IFACE, "type", "veth", "peer", "name", f"p{i}", "netns", self.switch)
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", self.switch, "link", "set", f"p{i}", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", IFACE)
            _ip("-n", ns, "link", "set", IFACE, "up")

    def close(self) -> None:
        """Stop the processes started here and delete the namespaces (idempotent)."""
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self._procs.clear()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()
        for sig, h in self._old_handlers.items():
            signal.signal(sig, h)
        self._old_handlers.clear()
        atexit.unregister(self.close)

    # -- use -----------------------------------------------------------------------------
    def addr(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def set_rate(self, rate: str | None) -> None:
        """Shape every node's egress to ``rate`` (tc syntax, e.g. ``"200mbit"``); None removes it."""
        for ns in self.nodes:
            if rate is None:
                subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", IFACE, "root"], capture_output=True)
            else:
                subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", IFACE, "root", "tbf", "rate", rate,
                                "burst", "256kb", "latency", "100ms"], check=True, capture_output=True, text=True)

    def tx_bytes(self, i: int) -> int:
        """Bytes node ``i`` has sent through its interface (read from the host side)."""
        out = subprocess.run(["ip", "netns", "exec", self.nodes[i], "cat", f"/sys/class/net/{IFACE}/statistics/tx_bytes"],
                             check=True, capture_output=True, text=True).stdout
        return int(out)

    def throughput(self, src: int = 1, dst: int = 0, seconds: float = 2.0) -> float:
        """TCP goodput in bytes/s from node ``src`` to node ``dst`` (one stream, ``seconds`` long)."""
        port = 29500 + src
        server = ("import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                  f"s.bind(('{self.addr(dst)}',{port}));s.listen(1);c,_=s.accept();n=0\n"
                  "while True:\n b=c.recv(1<<20)\n if not b: break\n n+=len(b)\nprint(n)")
        client = ("import socket,time;c=socket.create_connection"
                  f"(('{self.addr(dst)}',{port}));b=bytes(1<<20);t=time.time()\n"
                  f"while time.time()-t<{seconds}: c.sendall(b)\nc.shutdown(socket.SHUT_WR);c.recv(1);print(time.time()-t)")
        srv = subprocess.Popen(["ip", "netns", "exec", self.nodes[dst], sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(50):  # wait for the listener
                if subprocess.run(["ip", "netns", "exec", self.nodes[dst], "ss", "-ltn", f"sport = :{port}"],
                                  capture_output=True, text=True).stdout.count("LISTEN"):
                    break
                time.sleep(0.1)
            took = float(subprocess.run(["ip", "netns", "exec", self.nodes[src], sys.executable, "-c", client],
                                        check=True, capture_output=True, text=True).stdout)
            return int(srv.communicate(timeout=30)[0]) / took
        finally:
            if srv.poll() is None:
                srv.kill()

    def popen(self, i: int, cmd: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
        """Start ``cmd`` inside node ``i`` (its own process group, so :meth:`close` can stop it)."""
        out = open(log, "w") if log is not None else None
        p = subprocess.Popen(["ip", "netns", "exec", self.nodes[i], *cmd], env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                             start_new_session=True)
        self._procs.append(p)
        return p
