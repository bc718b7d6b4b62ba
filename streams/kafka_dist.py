"""Kafka's jars and configuration files, for ``streams.broker`` (which runs the processes).

``provision()`` runs ``mvn`` once per version to copy ``org.apache.kafka:kafka_2.13:<version>`` with
its runtime dependencies (plus a logging backend) into ``$STREAMREC_HOME/kafka-<version>/libs``;
a ``.complete`` marker makes later calls free.  ``write_node_config()`` writes a KRaft node's
``server.properties`` and its log configuration; ``format_storage()`` is ``kafka-storage format``.
Stdlib only.
"""
from __future__ import annotations

import base64
import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

DEFAULT_VERSION = "3.9.1"  # the 3.9 line still speaks every protocol version kafka-python and aiokafka use
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
LOG_PATTERN = "[%d] %p %m (%c)%n"
# Kafka's default is 10 MiB per offset index and per time index.  A partition maps both lazily, at
# its first index entry (after ~4 KiB of records), and the first touch of the sparse map reads the
# block device's readahead window (8 MiB on this project's VMs) into the page cache: on a fresh topic
# of 8 partitions that held its produce acks for 30-65 ms (benchmarks/first_writes.py).  256 KiB holds
# 32,768 offsets and 21,845 times: segments of at least ~85 MiB (a full index rolls its segment).
INDEX_MAX_BYTES = 256 * 1024


class BrokerError(RuntimeError):
    """Kafka could not be provisioned, started or stopped; the message says why."""


def streamrec_home() -> Path:
    return Path(os.environ.get("STREAMREC_HOME") or Path.home() / ".cache" / "streamrec")


def kafka_version() -> str:
    return os.environ.get("STREAMREC_KAFKA_VERSION") or DEFAULT_VERSION


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BrokerError(f"`{name}` not found on PATH: install a JDK 17+ and Maven "
                          "(Debian: apt-get install openjdk-17-jre-headless maven)")
    return path


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def uses_log4j2(version: str) -> bool:
    """Kafka 4 logs through log4j2; 3.x through reload4j (log4j 1)."""
    return int(version.split(".")[0]) >= 4


def provision(version: str | None = None, home: Path | None = None,
              progress: Callable[[str], None] | None = None) -> Path:
    """Copy the broker jars for ``version`` into the cache (once); return the ``libs`` folder."""
    version = version or kafka_version()
    root = (home or streamrec_home()) / f"kafka-{version}"
    libs, marker = root / "libs", root / ".complete"
    if marker.exists():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent provisioner finishes first, then we find the marker
        if marker.exists():
            return libs
        logging = ([("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3"), ("org.apache.logging.log4j", "log4j-core", "2.24.3")]
                   if uses_log4j2(version) else [("org.slf4j", "slf4j-reload4j", "1.7.36"), ("ch.qos.reload4j", "reload4j", "1.2.25")])
        deps = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
                       for g, a, v in [("org.apache.kafka", "kafka_2.13", version), *logging])
        (root / "pom.xml").write_text(
            '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>streamrec</groupId><artifactId>kafka-libs</artifactId><version>1</version>"
            f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>\n")
        if progress:
            progress(f"downloading Kafka {version} jars from Maven Central (once; log: {root / 'mvn.log'})")
        tmp = root / "libs.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        with open(root / "mvn.log", "wb") as out:
            rc = subprocess.call([require_tool("mvn"), "-B", "-q", "-f", str(root / "pom.xml"), DEPENDENCY_PLUGIN,
                                  f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root)
        if rc != 0 or not (tmp / f"kafka_2.13-{version}.jar").exists():
            raise BrokerError(f"mvn could not fetch Kafka {version} (exit {rc}); tail of {root / 'mvn.log'}:\n"
                              f"{tail(root / 'mvn.log')}")
        tmp.rename(libs)
        marker.write_text(f"{version}\n")
        if progress:
            progress(f"Kafka {version}: {len(list(libs.glob('*.jar')))} jars in {libs}")
    return libs


def random_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: 16 random bytes, base64url without padding."""
    while True:  # like Kafka's Uuid.randomUuid, avoid ids starting with '-' (they parse as options)
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(node_id: int, host: str, port: int, controller_port: int, voters: str, log_dir: Path,
                      nodes: int = 1, partitions: int = 8) -> dict[str, str]:
    """A combined broker+controller's settings; with ``nodes >= 3`` internal topics get rf=3, min.isr=2."""
    rf, isr = str(min(nodes, 3)), "2" if nodes >= 3 else "1"
    return {
        "process.roles": "broker,controller", "node.id": str(node_id), "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}", "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT", "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir), "num.partitions": str(partitions), "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": rf, "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": rf, "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": "8", "default.replication.factor": rf, "min.insync.replicas": isr,
        "group.initial.rebalance.delay.ms": "0", "log.index.size.max.bytes": str(INDEX_MAX_BYTES),
    }


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``streamrec kafka start --override``) as server.properties entries.

    ValueError names the first entry that is not ``KEY=VALUE`` with a non-empty key.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
            raise ValueError(f"{pair!r} is not KEY=VALUE (a server.properties entry, e.g. log.retention.hours=24)")
        out[key.strip()] = value.strip()
    return out


def write_node_config(node_dir: Path, props: dict[str, str], version: str, log_path: Path) -> None:
    """``server.properties`` plus a log configuration sending everything to ``log_path`` (10 MB x 3, rolling)."""
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    if uses_log4j2(version):
        (node_dir / "log4j2.properties").write_text(
            f"appender.f.type=RollingFile\nappender.f.name=F\nappender.f.fileName={log_path}\n"
            f"appender.f.filePattern={log_path}.%i\nappender.f.layout.type=PatternLayout\n"
            f"appender.f.layout.pattern={LOG_PATTERN}\nappender.f.policies.type=Policies\n"
            "appender.f.policies.size.type=SizeBasedTriggeringPolicy\nappender.f.policies.size.size=10MB\n"
            "appender.f.strategy.type=DefaultRolloverStrategy\nappender.f.strategy.max=2\n"
            "rootLogger.level=INFO\nrootLogger.appenderRef.f.ref=F\n"
            "logger.req.name=kafka.request.logger\nlogger.req.level=WARN\n"
            "logger.state.name=state.change.logger\nlogger.state.level=WARN\n")
    else:
        (node_dir / "log4j.properties").write_text(
            f"log4j.rootLogger=INFO, F\nlog4j.appender.F=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.F.File={log_path}\nlog4j.appender.F.MaxFileSize=10MB\nlog4j.appender.F.MaxBackupIndex=2\n"
            f"log4j.appender.F.layout=org.apache.log4j.PatternLayout\nlog4j.appender.F.layout.ConversionPattern={LOG_PATTERN}\n"
            "log4j.logger.kafka.request.logger=WARN\nlog4j.logger.state.change.logger=WARN\n")


def log_config_flag(node_dir: Path, version: str) -> str:
    """The JVM flag pointing at the file ``write_node_config`` wrote."""
    if uses_log4j2(version):
        return f"-Dlog4j2.configurationFile={node_dir / 'log4j2.properties'}"
    return f"-Dlog4j.configuration=file:{node_dir / 'log4j.properties'}"


def format_storage(libs: Path, cluster_id: str, properties: Path) -> None:
    """``kafka-storage format -t ID -c server.properties`` (done once per node before its first start)."""
    result = subprocess.run([require_tool("java"), "-Xmx256m", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
                             "-t", cluster_id, "-c", str(properties)], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise BrokerError(f"formatting the storage of {properties} failed:\n{result.stdout}{result.stderr}")
