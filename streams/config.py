"""``WorkerConfig``: every setting of the streaming worker, read once at the edge; ``KafkaSecurity``:
the SSL/SASL part, which ``streamrec replay`` and ``streamrec evaluate-live`` read the same way.

Each setting has a command-line flag (``streamrec worker --help``) and an environment variable;
a flag wins over the variable, the variable over the default. ``streamrec worker`` writes its
flags into the environment (``to_env``) before starting Faust, so that ``faust -A streamrec.streams.app
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
    STREAMREC_SESSION_TIMEOUT seconds Kafka waits for a silent worker before moving its partitions (60)
    STREAMREC_IN_FLIGHT       events stepped ahead of Kafka's acknowledgements at most (1000)
    STREAMREC_BATCH_MAX       records stepped together at most (256)
    STREAMREC_BATCH_WAIT      ms a batch waits for more records when fewer than --batch-max are ready (1)
    STREAMREC_PRODUCER_BATCH_BYTES  largest record batch per topic-partition      (262144)
    STREAMREC_CONSUMER        loop | thread: where the Kafka consumer runs       (loop)
    STREAMREC_STATE_TTL       expire users idle this long in event time, e.g. 30d (0 = never)
    STREAMREC_TTL_SWEEP       seconds between two expiry sweeps                  (60)
    STREAMREC_WARM_FROM       warm a new version's states up from this time, e.g. 7d (none)
    STREAMREC_SECURITY_PROTOCOL, STREAMREC_SASL_*, STREAMREC_SSL_*: how to connect (``streamrec worker --help``)

These last seven (``SECURITY_SETTINGS``) form ``KafkaSecurity``: one definition, one validation and the same flags
for every command that talks to Kafka (``cli/common.py`` adds them to a parser; ``streams/security.py`` hands them
to aiokafka and kafka-python). ``WorkerConfig.security`` is the worker's.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

GUARANTEES = {"at-least-once": "at_least_once", "exactly-once": "exactly_once"}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_EPOCH_MS = re.compile(r"^\d{11,}$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
LOG_LEVELS = ("debug", "info", "warning", "error")
CONSUMERS = ("loop", "thread")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_BROKER = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class ConfigError(ValueError):
    """A setting with an invalid value; the message names the flag and the variable."""


@dataclass(frozen=True)
class Setting:
    """How one ``WorkerConfig`` (or ``KafkaSecurity``) field is spelled on the command line and in the environment."""

    field: str
    flag: str
    env: str
    metavar: str
    help: str


SECURITY_SETTINGS = (  # KafkaSecurity's fields: shared by worker, replay and evaluate-live
    Setting("security_protocol", "--security-protocol", "STREAMREC_SECURITY_PROTOCOL", "|".join(SECURITY_PROTOCOLS),
            "how to talk to Kafka (passed to every Kafka client of the command)"),
    Setting("sasl_mechanism", "--sasl-mechanism", "STREAMREC_SASL_MECHANISM", "|".join(SASL_MECHANISMS),
            "SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)"),
    Setting("sasl_username", "--sasl-username", "STREAMREC_SASL_USERNAME", "USER", "SASL user name"),
    Setting("sasl_password", "--sasl-password", "STREAMREC_SASL_PASSWORD", "SECRET",
            "SASL password; prefer the environment variable (command lines are visible in ps)"),
    Setting("ssl_cafile", "--ssl-cafile", "STREAMREC_SSL_CAFILE", "PEM",
            "CA certificates that signed the brokers' (with SSL or SASL_SSL; default: the system's)"),
    Setting("ssl_certfile", "--ssl-certfile", "STREAMREC_SSL_CERTFILE", "PEM", "client certificate (mutual TLS)"),
    Setting("ssl_keyfile", "--ssl-keyfile", "STREAMREC_SSL_KEYFILE", "PEM", "the client certificate's private key"),
)

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
    Setting("session_timeout", "--session-timeout", "STREAMREC_SESSION_TIMEOUT", "SECONDS",
            "how long Kafka waits for a silent worker (crashed, stuck) before moving its partitions to the others; "
            "a worker restarted after a crash waits this long too (Kafka's group.min.session.timeout.ms: 6 s)"),
    Setting("in_flight", "--in-flight", "STREAMREC_IN_FLIGHT", "N",
            "how many events may be stepped and published before the writes of the earlier ones are "
            "acknowledged by Kafka; each event still counts as done (state stored, offset committable) only "
            "once its own writes are, in order (a batch larger than N still goes alone)"),
    Setting("batch_max", "--batch-max", "STREAMREC_BATCH_MAX", "N",
            "records taken, stepped (each user's run of events at once, ONNX calls of at most 256 events, fewer on large catalogs) and published "
            "together at most; "
            "1 steps every event alone (slow)"),
    Setting("batch_wait", "--batch-wait", "STREAMREC_BATCH_WAIT", "MS",
            "milliseconds a batch waits for more records when fewer than --batch-max are ready (a lone event is "
            "never delayed longer; under load batches fill by themselves); 0 = take what is ready"),
    Setting("producer_batch_bytes", "--producer-batch-bytes", "STREAMREC_PRODUCER_BATCH_BYTES", "BYTES",
            "largest record batch the producer builds per topic-partition (at-least-once, records join the batch "
            "queued behind the request in flight up to this size; keep it below the topics' max.message.bytes)"),
    Setting("consumer", "--consumer", "STREAMREC_CONSUMER", "|".join(CONSUMERS),
            "loop: the Kafka consumer fetches on the worker's event loop (the lowest latency); thread: on a thread "
            "of its own, as Faust runs it"),
    Setting("state_ttl", "--state-ttl", "STREAMREC_STATE_TTL", "DURATION",
            "delete the state of a user idle this long (e.g. 30d, 12h; 0 = never), measured in event time: "
            "against the newest event time the worker has seen (never later than its clock); deletions "
            "reach the changelog as tombstones"),
    Setting("ttl_sweep", "--ttl-sweep", "STREAMREC_TTL_SWEEP", "SECONDS", "seconds between two expiry sweeps"),
    Setting("warm_from", "--warm-from", "STREAMREC_WARM_FROM", "WHEN",
            "warm a new model version's states up before it answers: a consumer group that never committed "
            "starts reading the input topics at this time (7d = 7 days back, an ISO time or epoch ms) and steps "
            "every event already there without publishing; the events after them it serves (streams/warm.py; "
            "earliest = all the topics keep). "
            "Give the new version its own --app-id"),
) + SECURITY_SETTINGS


def parse_duration(name: str, text: str) -> float:
    """Seconds from ``90``, ``45s``, ``15m``, ``12h``, ``30d`` (or ``500ms``); ConfigError naming ``name``."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{name}: {text!r} is not a duration (a number with an optional unit ms, s, m, h, d; "
                          "e.g. 30d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_since(text: str, now_ms: int, name: str = "--warm-from/STREAMREC_WARM_FROM") -> int:
    """A point in time (epoch ms) from a duration back from now (``7d``, ``36h``, ``90m``), an ISO 8601
    time (``2026-12-01T00:00:00Z``; without a zone: UTC), epoch milliseconds (11 digits or more), or
    ``earliest`` (0: everything the topics keep). ``ConfigError`` naming ``name`` (the flag) otherwise."""
    text = text.strip()
    if text.lower() == "earliest":
        return 0
    if _EPOCH_MS.match(text):
        return int(text)
    try:
        return now_ms - int(1000 * parse_duration(name, text))
    except ConfigError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is neither a duration back from now (7d, 36h, 90m), an ISO 8601 time "
                          "(2026-12-01T00:00:00Z), epoch milliseconds nor earliest") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


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
class KafkaSecurity:
    """How a command's Kafka clients connect: protocol, SASL login, TLS files (``SECURITY_SETTINGS`` spells them).

    ``streamrec worker``, ``replay`` and ``evaluate-live`` build it from the same flags and variables
    (``from_env``) and refuse the same mistakes with the same messages.
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # never in a log line or a traceback
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"--security-protocol/STREAMREC_SECURITY_PROTOCOL: {self.security_protocol!r} is not "
                              f"one of {list(SECURITY_PROTOCOLS)}")
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"--sasl-mechanism/STREAMREC_SASL_MECHANISM: {self.sasl_mechanism!r} is not one of "
                              f"{list(SASL_MECHANISMS)}")
        if self.uses_sasl and not (self.sasl_username and self.sasl_password):
            raise ConfigError(f"--security-protocol {self.security_protocol} needs --sasl-username and a password "
                              "(STREAMREC_SASL_USERNAME, STREAMREC_SASL_PASSWORD)")
        for s in SECURITY_SETTINGS:
            path = getattr(self, s.field)
            if s.field.startswith("ssl_") and path is not None and not Path(path).is_file():
                raise ConfigError(f"{s.flag}/{s.env}: {path} is not a file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("--ssl-certfile and --ssl-keyfile go together (a client certificate and its key)")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> KafkaSecurity:
        """Settings from ``env`` (default ``os.environ``), then ``overrides`` (flags) that are not None."""
        env = os.environ if env is None else env
        raw: dict[str, object] = {s.field: env[s.env] for s in SECURITY_SETTINGS if env.get(s.env, "") != ""}
        raw.update({name: value for name, value in overrides.items() if value is not None})
        values: dict[str, object] = {}
        for name, value in raw.items():
            text = str(value).strip()
            if name == "security_protocol":  # sasl-plaintext, sasl_plaintext and SASL_PLAINTEXT alike
                values[name] = text.upper().replace("-", "_")
            elif name == "sasl_mechanism":
                values[name] = text.upper()
            elif name.startswith("ssl_"):
                values[name] = Path(text).expanduser()
            else:
                values[name] = text
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` rebuild these settings."""
        return {s.env: str(getattr(self, s.field)) for s in SECURITY_SETTINGS if getattr(self, s.field) is not None}


SECURITY_FIELDS = tuple(s.field for s in SECURITY_SETTINGS)
assert SECURITY_FIELDS == tuple(f.name for f in fields(KafkaSecurity)), "SECURITY_SETTINGS must list every field"


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
    session_timeout: float = 60.0  # Kafka consumer-group session timeout, seconds
    in_flight: int = 1000  # events whose writes may be under way at once (streams/pipeline.py)
    batch_max: int = 256  # records per micro-batch at most (streams/inbox.py)
    batch_wait: float = 0.001  # seconds a micro-batch waits for more records (flag and variable: ms)
    producer_batch_bytes: int = 256 * 1024  # Faust's producer_max_batch_size (aiokafka's max_batch_size)
    consumer: str = "loop"  # where aiokafka's consumer runs (streams/faust_adapter.py install_batch_drain)
    state_ttl: float = 0.0  # seconds of event time; 0 = states never expire
    ttl_sweep: float = 60.0  # seconds between expiry sweeps
    warm_from: str | None = None  # streams/warm.py: a duration back from now, an ISO time or epoch ms
    # KafkaSecurity's fields, flat, so that each has its own flag and variable (``security`` bundles them)
    security_protocol: str = KafkaSecurity.security_protocol
    sasl_mechanism: str = KafkaSecurity.sasl_mechanism
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

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
        for name, allowed in (("log_level", LOG_LEVELS), ("consumer", CONSUMERS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{_describe(name)}: {getattr(self, name)!r} is not one of {list(allowed)}")
        if not _TOPIC.match(self.app_id):
            raise ConfigError(f"--app-id/STREAMREC_APP_ID: {self.app_id!r} may use letters, digits, '.', '_', '-'")
        if not 0 < self.web_port < 65536:
            raise ConfigError(f"--web-port/STREAMREC_WEB_PORT: {self.web_port} is not a port")
        if self.session_timeout < 6:
            raise ConfigError(f"--session-timeout/STREAMREC_SESSION_TIMEOUT: {self.session_timeout} s is below "
                              "Kafka's default minimum of 6 s")
        if self.state_ttl < 0 or self.ttl_sweep <= 0:
            raise ConfigError("--state-ttl must be >= 0 and --ttl-sweep > 0")
        if self.warm_from is not None:
            parse_since(self.warm_from, 0)  # refuses what it cannot read
        KafkaSecurity(**{name: getattr(self, name) for name in SECURITY_FIELDS})  # refuses what it cannot use

    @property
    def security(self) -> KafkaSecurity:
        """The worker's Kafka security settings, as ``replay`` and ``evaluate-live`` hold theirs."""
        return KafkaSecurity(**{name: getattr(self, name) for name in SECURITY_FIELDS})

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
        flags = {name: overrides.pop(name) for name in SECURITY_FIELDS if name in overrides}
        raw: dict[str, object] = {s.field: env[s.env] for s in SETTINGS
                                  if s.field not in SECURITY_FIELDS and env.get(s.env, "") != ""}
        raw.update({name: value for name, value in overrides.items() if value is not None})
        if not raw.get("bundle"):
            raise ConfigError("no bundle: pass --bundle DIR or set STREAMREC_BUNDLE "
                              "(make one with: streamrec export --model RUN --out DIR)")
        security = KafkaSecurity.from_env(env, **flags)
        values: dict[str, object] = {}
        for name, value in raw.items():
            text = str(value).strip()
            if name in ("partitions", "replication", "k", "web_port", "threads", "in_flight", "batch_max",
                        "producer_batch_bytes"):
                values[name] = _positive(_describe(name))(text)
            elif name in ("bundle", "data_dir"):
                values[name] = Path(text)
            elif name in ("state_ttl", "ttl_sweep", "session_timeout"):
                values[name] = parse_duration(_describe(name), text)
            elif name == "guarantee":
                values[name] = GUARANTEES.get(text.replace("_", "-"), text)
            elif name == "batch_wait":
                try:
                    values[name] = float(text) / 1000
                except ValueError:
                    raise ConfigError(f"{_describe(name)} must be a number of milliseconds, got {text!r}") from None
                if not 0 <= values[name] <= 1:  # type: ignore[operator]
                    raise ConfigError(f"{_describe(name)} must be between 0 and 1000 ms, got {text}")
            elif name in ("log_level", "consumer"):
                values[name] = text.lower()
            else:
                values[name] = text
        return cls(**values, **{name: getattr(security, name) for name in SECURITY_FIELDS})  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` rebuild this config."""
        out = {}
        for s in SETTINGS:
            value = getattr(self, s.field)
            if value is not None:
                out[s.env] = ({v: k for k, v in GUARANTEES.items()}[value] if s.field == "guarantee" else
                              repr(1000 * value) if s.field == "batch_wait" else str(value))
        return out


def _describe(field_name: str) -> str:
    s = next(s for s in SETTINGS if s.field == field_name)
    return f"{s.flag}/{s.env}"


assert [s.field for s in SETTINGS] == [f.name for f in fields(WorkerConfig)], "SETTINGS must list every field"
