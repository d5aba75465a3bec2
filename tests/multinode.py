"""A real multi-node Ray cluster on this machine: one ``ray start --head`` and worker nodes.

    with LocalCluster(tmp_path, worker_cpus=[1, 1]) as cluster:
        subprocess.run([sys.executable, "tune.py", "--address", cluster.address, ...], env=cluster.env)
        cluster.kill_worker(0)                  # SIGKILL the node's raylet and its workers

Each node is its own ``ray start --block`` session with its own temp dir and
ports, so one node can be killed on its own and teardown never touches Ray
processes it did not start (``ray stop`` would stop every Ray on the machine).
The cluster runs with token authentication, the token given through the
environment (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), so nothing is prompted
or read from ``~/.ray``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    temp_dir: Path
    log: Path
    killed: bool = False  # stopped on purpose (a dead node is then not an error)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> set[int]:
        """Every live process of this node: its session (Ray workers get their own process groups)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.process.pid:
                        found.add(int(entry.name))
                except (ProcessLookupError, PermissionError):
                    continue
        return found

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node (SIGTERM lets ``ray start --block`` shut it down), then SIGKILL what is left."""
        self.killed = True
        self._signal_all(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self._signal_all(signal.SIGKILL)
        self.process.wait(timeout=30)

    def _signal_all(self, sig: int) -> None:
        targets = [self.process.pid] if sig != signal.SIGKILL else sorted(self.pids() | {self.process.pid})
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


@dataclass
class LocalCluster:
    """A head with ``head_cpus`` logical CPUs and one worker node per entry of ``worker_cpus``."""

    root: Path
    worker_cpus: list[int]
    head_cpus: int = 0
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Ray's Unix sockets live in the temp dir and their paths must stay under ~100 characters.
        self.base = Path(tempfile.mkdtemp(prefix="tlray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }

    def __enter__(self) -> LocalCluster:
        try:
            self._start_node(
                "head",
                [
                    "--head",
                    f"--port={self.port}",
                    f"--num-cpus={self.head_cpus}",
                    "--include-dashboard=false",
                    f"--dashboard-port={free_port()}",
                ],
            )
            self._wait_started(self.nodes[0])
            workers = [self.add_worker(cpus) for cpus in self.worker_cpus]  # start together: seconds each
            for node in workers:
                self._wait_started(node)
            self.wait_for_nodes(1 + len(self.worker_cpus))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_worker(self, cpus: int = 1) -> Node:
        index = sum(n.name.startswith("worker") for n in self.nodes)
        return self._start_node(f"worker{index}", [f"--address={self.address}", f"--num-cpus={cpus}"])

    def _start_node(self, name: str, args: list[str]) -> Node:
        temp_dir = self.base / name
        temp_dir.mkdir()
        log = self.base / f"{name}.log"
        command = [
            RAY,
            "start",
            "--block",
            "--disable-usage-stats",
            "--num-gpus=0",
            f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--object-store-memory=200000000",
            *args,
        ]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )  # own process group: killable alone
        node = Node(name, process, temp_dir, log)
        self.nodes.append(node)
        return node

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.name.startswith("worker") and n.alive]

    def alive_node_count(self) -> int:
        code = (
            f"import ray; ray.init(address={self.address!r}, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env, timeout=60)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0

    def _wait_started(self, node: Node, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not node.alive:
                raise RuntimeError(f"ray node {node.name} exited:\n{node.log.read_text()[-3000:]}")
            if "Ray runtime started" in node.log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"ray node {node.name} did not start in {timeout_s:.0f}s:\n{node.log.read_text()[-3000:]}")

    def wait_for_nodes(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.alive and not node.killed:
                    raise RuntimeError(f"ray node {node.name} exited:\n{node.log.read_text()[-3000:]}")
            if self.alive_node_count() >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"fewer than {count} Ray nodes came up in {timeout_s:.0f}s")

    def node_of_pid(self, pid: int) -> Node | None:
        try:
            session = os.getsid(pid)
        except ProcessLookupError:
            return None
        return next((n for n in self.nodes if n.process.pid == session), None)

    def stop(self) -> None:
        """Stop every node this cluster started, workers first; never touches other Ray instances."""
        for node in reversed(self.nodes):
            node.kill(signal.SIGTERM if node.alive else signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
