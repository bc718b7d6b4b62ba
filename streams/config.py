"""``WorkerConfig``: every setting of the streaming worker, read once at the edge.

Each setting has a command-line flag (``streamrec worker --help``) and an environment variable;
a flag wins over the variable, the variable over the default. ``streamrec worker`` writes its
flags into the environment (``to_env``) before starting Faust, so that ``faust -A streams.app
worker`` (which can only read the environment) and the CLI see the same configuration.

    STREAMREC_BUNDLE          the exported bundle directory (required)
    STREAMREC_BROKERS         Kafka bootstrap servers, host:port[,host:port...]   (127.0.0.1:9092)
    STREAMREC_CLICKS_TOPIC    input topic of clicks                              (clicks)
    STREAMREC_BROWSES_TOPIC   input topic of browses                             (browses)
    STREAMREC_OUTPUT_TOPIC    output topic of recommendations                    (recommendations)
    STREAMREC_DLQ_TOPIC       dead-letter topic                                  (events.dlq)
    STREAMREC_PARTITIONS      partitions of the input topics and the state table (8)
    STREAMREC_REPLICATION     replication factor of the topics the worker creates (1)
    STREAMREC_GUARANTEE       at-least-once | exactly-once                       (at-least-once)
    STREAMREC_K               recommendations per list, at most the bundle's k   (the bundle's k)
    STREAMREC_DATA_DIR        where RocksDB keeps the state table                (streamrec-data)
    STREAMREC_WEB_HOST        address the HTTP endpoint binds to                 (0.0.0.0)
    STREAMREC_WEB_PORT        port of the HTTP endpoint                          (6066)
    STREAMREC_APP_ID          Faust app id = consumer group                      (streamrec-worker)
    STREAMREC_THREADS         ONNX Runtime intra-op threads                      (1)
    STREAMREC_LOG_LEVEL       debug | info | warning | error                     (info)
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

GUARANTEES = {"at-least-once": "at_least_once", "exactly-once": "exactly_once"}
LOG_LEVELS = ("debug", "info", "warning", "error")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_BROKER = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class ConfigError(ValueError):
    """A setting with an invalid value; the message names the flag and the variable."""


@dataclass(frozen=True)
class Setting:
    """How one ``WorkerConfig`` field is spelled on the command line and in the environment."""

    field: str
    flag: str
    env: str
    metavar: str
    help: str


SETTINGS = (
    Setting("bundle", "--bundle", "STREAMREC_BUNDLE", "DIR", "the exported model bundle (streamrec export --out DIR)"),
    Setting("brokers", "--brokers", "STREAMREC_BROKERS", "HOST:PORT[,..]", "Kafka bootstrap servers"),
    Setting("clicks_topic", "--clicks-topic", "STREAMREC_CLICKS_TOPIC", "TOPIC",
            "input topic whose events default to event_type 'click'"),
    Setting("browses_topic", "--browses-topic", "STREAMREC_BROWSES_TOPIC", "TOPIC",
            "input topic whose events default to event_type 'browse'"),
    Setting("output_topic", "--output-topic", "STREAMREC_OUTPUT_TOPIC", "TOPIC", "where recommendations go"),
    Setting("dlq_topic", "--dlq-topic", "STREAMREC_DLQ_TOPIC", "TOPIC", "where malformed events go, with a reason"),
    Setting("partitions", "--partitions", "STREAMREC_PARTITIONS", "N",
            "partitions of the input topics and of the state table (missing topics are created with N; "
            "existing input topics must have N)"),
    Setting("replication", "--replication", "STREAMREC_REPLICATION", "N",
            "replication factor of the topics the worker creates"),
    Setting("guarantee", "--guarantee", "STREAMREC_GUARANTEE", "|".join(GUARANTEES),
            "at-least-once: a crash may re-emit a recommendation; exactly-once: Kafka transactions "
            "(read the output with isolation.level=read_committed)"),
    Setting("k", "--k", "STREAMREC_K", "K", "recommendations per list, 1 .. the bundle's k"),
    Setting("data_dir", "--data-dir", "STREAMREC_DATA_DIR", "DIR", "where RocksDB keeps the per-user state"),
    Setting("web_host", "--web-host", "STREAMREC_WEB_HOST", "ADDR", "address the HTTP endpoint binds to"),
    Setting("web_port", "--web-port", "STREAMREC_WEB_PORT", "PORT",
            "port of GET /recommendations/{user_id} (and /health)"),
    Setting("app_id", "--app-id", "STREAMREC_APP_ID", "ID",
            "Faust app id: the consumer group, and the prefix of the state table's changelog topic"),
    Setting("threads", "--threads", "STREAMREC_THREADS", "N", "ONNX Runtime threads per step"),
    Setting("log_level", "--log-level", "STREAMREC_LOG_LEVEL", "|".join(LOG_LEVELS), "log verbosity"),
)


def _positive(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {text!r}") from None
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
        return value
    return parse


@dataclass(frozen=True)
class WorkerConfig:
    """The worker's settings (see the module docstring for their flags and variables)."""

    bundle: Path
    brokers: str = "127.0.0.1:9092"
    clicks_topic: str = "clicks"
    browses_topic: str = "browses"
    output_topic: str = "recommendations"
    dlq_topic: str = "events.dlq"
    partitions: int = 8
    replication: int = 1
    guarantee: str = "at_least_once"  # Faust's spelling
    k: int | None = None
    data_dir: Path = Path("streamrec-data")
    web_host: str = "0.0.0.0"
    web_port: int = 6066
    app_id: str = "streamrec-worker"
    threads: int = 1
    log_level: str = "info"

    def __post_init__(self) -> None:
        names = (self.clicks_topic, self.browses_topic, self.output_topic, self.dlq_topic)
        for s, name in zip(SETTINGS[2:6], names):
            if not _TOPIC.match(name):
                raise ConfigError(f"{s.flag}/{s.env}: {name!r} is not a valid Kafka topic name "
                                  "(letters, digits, '.', '_', '-')")
        if len(set(names)) != len(names):
            raise ConfigError(f"the input, output and dead-letter topics must differ, got {names}")
        for b in self.brokers.split(","):
            if not _BROKER.match(b.strip()):
                raise ConfigError(f"--brokers/STREAMREC_BROKERS: {b!r} is not HOST:PORT")
        if self.guarantee not in GUARANTEES.values():
            raise ConfigError(f"--guarantee/STREAMREC_GUARANTEE: {self.guarantee!r} is not one of {list(GUARANTEES)}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level/STREAMREC_LOG_LEVEL: {self.log_level!r} is not one of {list(LOG_LEVELS)}")
        if not _TOPIC.match(self.app_id):
            raise ConfigError(f"--app-id/STREAMREC_APP_ID: {self.app_id!r} may use letters, digits, '.', '_', '-'")
        if not 0 < self.web_port < 65536:
            raise ConfigError(f"--web-port/STREAMREC_WEB_PORT: {self.web_port} is not a port")

    @property
    def broker_urls(self) -> list[str]:
        """The bootstrap servers as Faust wants them (``kafka://host:port``)."""
        return [f"kafka://{b.strip()}" for b in self.brokers.split(",")]

    @property
    def kinds(self) -> dict[str, str]:
        """Input topic -> the event type its events default to."""
        return {self.clicks_topic: "click", self.browses_topic: "browse"}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> WorkerConfig:
        """Settings from ``env`` (default ``os.environ``), then ``overrides`` that are not None."""
        env = os.environ if env is None else env
        raw: dict[str, object] = {s.field: env[s.env] for s in SETTINGS if env.get(s.env, "") != ""}
        raw.update({name: value for name, value in overrides.items() if value is not None})
        if not raw.get("bundle"):
            raise ConfigError("no bundle: pass --bundle DIR or set STREAMREC_BUNDLE "
                              "(make one with: streamrec export --model RUN --out DIR)")
        values: dict[str, object] = {}
        for name, value in raw.items():
            text = str(value).strip()
            if name in ("partitions", "replication", "k", "web_port", "threads"):
                values[name] = _positive(_describe(name))(text)
            elif name in ("bundle", "data_dir"):
                values[name] = Path(text)
            elif name == "guarantee":
                values[name] = GUARANTEES.get(text.replace("_", "-"), text)
            elif name == "log_level":
                values[name] = text.lower()
            else:
                values[name] = text
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` rebuild this config."""
        out = {}
        for s in SETTINGS:
            value = getattr(self, s.field)
            if value is not None:
                out[s.env] = {v: k for k, v in GUARANTEES.items()}[value] if s.field == "guarantee" else str(value)
        return out


def _describe(field_name: str) -> str:
    s = next(s for s in SETTINGS if s.field == field_name)
    return f"{s.flag}/{s.env}"


assert [s.field for s in SETTINGS] == [f.name for f in fields(WorkerConfig)], "SETTINGS must list every field"
