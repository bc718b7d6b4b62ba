"""A real Apache Kafka broker (KRaft, no ZooKeeper), provisioned from Maven Central and run locally.

Command line: ``streamrec kafka start|status|stop`` (see ``cli/kafka_cmd.py``).  From Python::

    from streamrec.streams.broker import start_broker, start_cluster
    broker = start_broker()                # one combined broker+controller on a free port
    print(broker.bootstrap)                # "127.0.0.1:PORT"
    broker.stop()
    cluster = start_cluster(3)             # three processes, a 3-voter quorum, rf=3 defaults
    cluster.stop()

The first call runs ``mvn`` once to copy ``org.apache.kafka:kafka_2.13:<version>`` and its runtime
dependencies into ``$STREAMREC_HOME/kafka-<version>/libs`` (default ``~/.cache/streamrec``); later
calls find the ``.complete`` marker and do nothing.  ``java`` (17+) and ``mvn`` must be on PATH.
Environment: ``STREAMREC_HOME``, ``STREAMREC_KAFKA_VERSION`` (default 3.9.1), ``STREAMREC_KAFKA_PORT``,
``KAFKA_HEAP_OPTS`` (default ``-Xmx512m -Xms256m``).  Stdlib only, so this imports without kafka-python.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamrec.streams.kafka_dist import (
    DEFAULT_VERSION,
    BrokerError,
    format_storage,
    kafka_version,
    log_config_flag,
    parse_overrides,
    provision,
    random_cluster_id,
    require_tool,
    server_properties,
    streamrec_home,
    tail,
    write_node_config,
)

__all__ = ["DEFAULT_VERSION", "Broker", "BrokerError", "Cluster", "free_port", "free_ports", "kafka_version", "load", "metadata",
           "parse_overrides", "provision", "start_broker", "start_cluster", "state_file", "streamrec_home"]
HOST = "127.0.0.1"
_LIBC = ctypes.CDLL(None, use_errno=True)


def free_ports(n: int, exclude: tuple[int, ...] = ()) -> list[int]:
    """``n`` distinct free ports on ``HOST`` (none in ``exclude``).

    All sockets stay bound until every port is chosen: ports taken one at a time can repeat,
    because the kernel may hand a just-released port out again.
    """
    held: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < n:
            s = socket.socket()
            held.append(s)
            s.bind((HOST, 0))
            p = int(s.getsockname()[1])
            if p not in exclude:
                ports.append(p)
        return ports
    finally:
        for s in held:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def metadata(host: str, port: int, timeout: float = 2.0) -> tuple[list[int], int]:
    """A raw Metadata v4 request: (ids of the live brokers, controller id). Raises OSError if unreachable."""
    client = b"streamrec-probe"
    req = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", -1, 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(req)) + req)
        buf = _recv(sock, struct.unpack(">i", _recv(sock, 4))[0])
    (count,), off, ids = struct.unpack_from(">i", buf, 8), 12, []  # after correlation id + throttle ms
    for _ in range(count):
        node, host_len = struct.unpack_from(">ih", buf, off)
        off += 6 + host_len + 4  # node id, host, port
        (rack_len,) = struct.unpack_from(">h", buf, off)
        off += 2 + max(rack_len, 0)
        ids.append(node)
    (cid_len,) = struct.unpack_from(">h", buf, off)
    return ids, struct.unpack_from(">i", buf, off + 2 + max(cid_len, 0))[0]


def _die_with_parent() -> None:  # runs in the child between fork and exec: one syscall, no imports or locks
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@dataclass
class Broker:
    """One Kafka process (combined broker+controller). ``bootstrap`` is what clients connect to."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path  # this node's folder: server.properties, log4j config, logs, data/
    version: str
    libs: Path
    expected_brokers: int = 1
    pid: int = 0
    host: str = HOST
    die_with_parent: bool = False  # for test fixtures: the JVM gets SIGTERM if the process that launched it dies
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    cluster: Cluster | None = field(default=None, repr=False, compare=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "kafka.log"

    @property
    def properties(self) -> Path:
        return self.data_dir / "server.properties"

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        if not self.pid or not _alive(self.pid):
            return False
        try:  # a pid from a state file may have been reused: check it is our JVM
            return str(self.properties).encode() in Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False

    def launch(self) -> None:
        """Start the JVM detached (own session and process group); does not wait for readiness."""
        if self.is_running():
            raise BrokerError(f"Kafka node {self.node_id} already runs (pid {self.pid})")
        # PDEATHSIG follows the launching *thread*: only tie the JVM to the main thread's lifetime.
        pdeathsig = self.die_with_parent and threading.current_thread() is threading.main_thread()
        heap = (os.environ.get("KAFKA_HEAP_OPTS") or "-Xmx512m -Xms256m").split()
        cmd = [require_tool("java"), *heap, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               log_config_flag(self.data_dir, self.version), "-cp", f"{self.libs}/*", "kafka.Kafka", str(self.properties)]
        with open(self.data_dir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          cwd=self.data_dir, start_new_session=True,
                                          preexec_fn=_die_with_parent if pdeathsig else None)  # noqa: PLW1509
        self.pid = self._proc.pid

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until a Metadata request to this node lists it as a live broker; BrokerError with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise BrokerError(f"Kafka node {self.node_id} exited during startup; tail of its logs:\n{self._logs()}")
            try:
                ids, controller = metadata(self.host, self.port)
                if self.node_id in ids and controller >= 0:
                    return
            except (OSError, struct.error):
                pass
            time.sleep(0.2)
        raise BrokerError(f"Kafka node {self.node_id} on {self.bootstrap} not ready after {timeout:.0f}s; tail of its logs:\n{self._logs()}")

    def _logs(self) -> str:
        return f"--- {self.log_path}\n{tail(self.log_path)}\n--- {self.data_dir / 'stdout.log'}\n{tail(self.data_dir / 'stdout.log', 15)}"

    def signal(self, sig: int) -> None:
        if self.is_running():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.is_running()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Kafka's clean shutdown), then SIGKILL after ``timeout`` seconds."""
        self.signal(signal.SIGTERM)
        if not self.wait_stopped(timeout):
            self.signal(signal.SIGKILL)
            self.wait_stopped(10.0)
        if self.cluster and not any(b.is_running() for b in self.cluster.brokers) and self.cluster.state_file:
            self.cluster.state_file.unlink(missing_ok=True)

    def restart(self, timeout: float = 120.0) -> None:
        """Stop, then start again on the same ports and data dir (topics and offsets survive)."""
        self.stop()
        self.launch()
        self.wait_ready(timeout)
        if self.cluster:
            self.cluster.save()

    def to_dict(self) -> dict[str, object]:
        return {"node_id": self.node_id, "port": self.port, "controller_port": self.controller_port,
                "data_dir": str(self.data_dir), "version": self.version, "libs": str(self.libs),
                "expected_brokers": self.expected_brokers, "pid": self.pid, "host": self.host}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Broker:
        return cls(**{**d, "data_dir": Path(d["data_dir"]), "libs": Path(d["libs"])})


@dataclass
class Cluster:
    """The handle ``start_broker``/``start_cluster`` return: one or more nodes, plus an optional state file."""

    brokers: list[Broker]
    name: str | None = None
    state_file: Path | None = None

    def __post_init__(self) -> None:
        for b in self.brokers:
            b.cluster = self

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def is_running(self) -> bool:
        return all(b.is_running() for b in self.brokers)

    def save(self) -> None:
        if self.state_file:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"name": self.name, "bootstrap": self.bootstrap,
                                       "brokers": [b.to_dict() for b in self.brokers]}, indent=2))
            tmp.replace(self.state_file)

    def stop(self, timeout: float = 30.0) -> None:
        for b in self.brokers:  # all at once: a lone survivor of a quorum could not finish its shutdown
            b.signal(signal.SIGTERM)
        for b in self.brokers:
            if not b.wait_stopped(timeout):
                b.signal(signal.SIGKILL)
                b.wait_stopped(10.0)
        if self.state_file:
            self.state_file.unlink(missing_ok=True)

    def restart(self, timeout: float = 120.0) -> None:
        self.stop()
        for b in self.brokers:
            b.launch()
        for b in self.brokers:
            b.wait_ready(timeout)
        self.save()


def state_file(name: str = "default", home: Path | None = None) -> Path:
    return (home or streamrec_home()) / "kafka-run" / name / "state.json"


def load(name: str = "default", home: Path | None = None) -> Cluster | None:
    """The handle a ``start`` in another process recorded under ``name``, or None."""
    path = state_file(name, home)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return Cluster([Broker.from_dict(b) for b in state["brokers"]], name=name, state_file=path)


def start_cluster(n: int = 3, *, port: int | None = None, data_dir: Path | None = None, name: str | None = "default",
                  version: str | None = None, home: Path | None = None, partitions: int = 8, timeout: float = 120.0,
                  record_state: bool = True, extra_config: dict[str, str] | None = None, die_with_parent: bool = False,
                  progress: Callable[[str], None] | None = None) -> Cluster:
    """Start ``n`` local combined broker+controller nodes (an ``n``-voter quorum) and wait until all serve.

    Ports: ``port``, ``port+1``... if given (else ``STREAMREC_KAFKA_PORT``, else free ones).  Data:
    ``data_dir/node-<id>`` (default ``<home>/kafka-run/<name>``); an already formatted node keeps its data.
    With ``n >= 3`` internal topics get replication factor 3 and min.insync.replicas 2.  ``extra_config``
    adds or overrides server.properties entries (in ``listeners`` and
    ``advertised.listeners``, ``{port}`` and ``{controller_port}`` stand for the node's ports).  ``die_with_parent`` (test fixtures) makes the JVMs
    exit with the calling process; otherwise they stay up after it exits (``streamrec kafka start``).
    """
    home, version = home or streamrec_home(), version or kafka_version()
    require_tool("java")
    running = load(name, home) if (record_state and name) else None
    if running and any(b.is_running() for b in running.brokers):
        raise BrokerError(f"Kafka {name!r} already runs on {running.bootstrap} (stop it first)")
    libs = provision(version, home, progress)
    env_port = os.environ.get("STREAMREC_KAFKA_PORT")
    port = port or (int(env_port) if env_port else None)
    run_dir = Path(data_dir or home / "kafka-run" / (name or f"anon-{os.getpid()}")).resolve()
    for attempt in range(3):
        try:
            return _start_once(n, port, run_dir, name, version, home, libs, partitions, timeout, record_state,
                               extra_config, die_with_parent, progress)
        except BrokerError as e:
            # Free ports are only reserved until the JVM binds them: another process may take one
            # meanwhile.  Then try again on other free ones (a port the caller chose is not retried).
            if port or attempt == 2 or "Address already in use" not in str(e):
                raise
            if progress:
                progress("a chosen port was taken before Kafka bound it: retrying on other ports")
    raise AssertionError("unreachable")


def _start_once(n: int, port: int | None, run_dir: Path, name: str | None, version: str, home: Path, libs: Path,
                partitions: int, timeout: float, record_state: bool, extra_config: dict[str, str] | None,
                die_with_parent: bool, progress: Callable[[str], None] | None) -> Cluster:
    client_ports = [port + i for i in range(n)] if port else free_ports(n)
    controller_ports = free_ports(n, exclude=tuple(client_ports))
    brokers = [Broker(i + 1, client_ports[i], controller_ports[i], run_dir / f"node-{i + 1}", version, libs, n,
                      die_with_parent=die_with_parent) for i in range(n)]
    for b in brokers:
        with socket.socket() as s:
            try:
                s.bind((HOST, b.port))
            except OSError:
                raise BrokerError(f"port {b.port} on {HOST} is in use: choose another (--port / STREAMREC_KAFKA_PORT)") from None
    voters = ",".join(f"{b.node_id}@{b.host}:{b.controller_port}" for b in brokers)
    cluster_id = random_cluster_id()
    for b in brokers:
        props = server_properties(b.node_id, b.host, b.port, b.controller_port, voters, b.data_dir / "data", n, partitions)
        extra = {k: v.format(port=b.port, controller_port=b.controller_port) if k.endswith("listeners") else v
                 for k, v in (extra_config or {}).items()}
        write_node_config(b.data_dir, {**props, **extra}, version, b.log_path)
        if not (b.data_dir / "data" / "meta.properties").exists():  # formatted before: keep its data and id
            format_storage(libs, cluster_id, b.properties)
    cluster = Cluster(brokers, name=name, state_file=state_file(name, home) if (record_state and name) else None)
    if progress:
        progress(f"starting Kafka {version} ({n} node{'s' if n > 1 else ''}) on {cluster.bootstrap}")
    try:
        for b in brokers:
            b.launch()
        cluster.save()  # at once, so that `stop` finds the processes even if this caller dies while waiting
        for b in brokers:
            b.wait_ready(timeout)
    except BaseException:
        cluster.stop(timeout=10.0)
        raise
    return cluster


def start_broker(port: int | None = None, data_dir: Path | None = None, name: str | None = "default",
                 **kwargs: object) -> Broker:
    """Start one combined broker+controller and wait until it serves; returns its handle (``.bootstrap``).

    Keyword arguments are those of ``start_cluster``.  With ``name`` (and ``record_state``) the
    state file ``<home>/kafka-run/<name>/state.json`` lets ``streamrec kafka status|stop`` find it.
    """
    return start_cluster(1, port=port, data_dir=data_dir, name=name, **kwargs).brokers[0]  # type: ignore[arg-type]
