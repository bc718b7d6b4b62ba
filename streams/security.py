"""Kafka SSL/SASL settings (``KafkaSecurity``), translated for each client library streamrec uses.

The worker talks to Kafka through Faust (aiokafka: consumer, producers, changelogs) and through
kafka-python (``ensure_topics``'s admin client); ``streamrec replay`` and ``streamrec evaluate-live``
through kafka-python alone (producer, consumers, admin client). All of them get their settings
from here, so one set of flags / ``STREAMREC_SECURITY_PROTOCOL``, ``STREAMREC_SASL_*`` and
``STREAMREC_SSL_*`` variables configures every connection of every command.

    app = faust.App(..., broker_credentials=faust_credentials(config.security))
    KafkaProducer(bootstrap_servers=..., **kafka_python_kwargs(security))

Both functions also take a whole ``WorkerConfig`` (and use its ``security``).
"""
from __future__ import annotations

import ssl
from typing import Any

from streamrec.streams.config import KafkaSecurity, WorkerConfig


def _security(settings: KafkaSecurity | WorkerConfig) -> KafkaSecurity:
    return settings.security if isinstance(settings, WorkerConfig) else settings


def ssl_context(settings: KafkaSecurity | WorkerConfig) -> ssl.SSLContext:
    """A client TLS context: the configured CA file (else the system's), and the client certificate if any."""
    s = _security(settings)
    context = ssl.create_default_context(cafile=str(s.ssl_cafile) if s.ssl_cafile else None)
    if s.ssl_certfile and s.ssl_keyfile:
        context.load_cert_chain(str(s.ssl_certfile), str(s.ssl_keyfile))
    return context


def faust_credentials(settings: KafkaSecurity | WorkerConfig) -> Any:
    """``broker_credentials`` for ``faust.App`` (None for PLAINTEXT)."""
    import faust

    s = _security(settings)
    if s.security_protocol == "PLAINTEXT":
        return None
    if s.security_protocol == "SSL":
        return faust.SSLCredentials(ssl_context(s))
    return faust.SASLCredentials(username=s.sasl_username, password=s.sasl_password, mechanism=s.sasl_mechanism,
                                 ssl_context=ssl_context(s) if s.uses_ssl else None)


def kafka_python_kwargs(settings: KafkaSecurity | WorkerConfig) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (``KafkaAdminClient``, ``KafkaProducer``, ``KafkaConsumer``)."""
    s = _security(settings)
    out: dict[str, Any] = {"security_protocol": s.security_protocol}
    if s.uses_sasl:
        out |= {"sasl_mechanism": s.sasl_mechanism, "sasl_plain_username": s.sasl_username,
                "sasl_plain_password": s.sasl_password}
    if s.uses_ssl:
        out |= {k: str(v) for k, v in (("ssl_cafile", s.ssl_cafile), ("ssl_certfile", s.ssl_certfile),
                                        ("ssl_keyfile", s.ssl_keyfile)) if v is not None}
    return out


def unreachable(brokers: str, settings: KafkaSecurity | WorkerConfig, exc: BaseException) -> str:
    """What to tell a user whose kafka-python client could not connect. kafka-python retries a refused
    login until its bootstrap timeout and then reports only the timeout, so with SSL or SASL the
    message points at the credentials too."""
    s = _security(settings)
    if s.security_protocol == "PLAINTEXT":
        return (f"cannot reach Kafka at {brokers} ({exc}): is it running? (start one with `streamrec kafka start`; "
                "pass its address with --brokers or STREAMREC_BROKERS)")
    return (f"cannot reach Kafka at {brokers} with {s.security_protocol} ({exc}): is it running with such a "
            "listener there? If so, check the credentials (--sasl-mechanism, --sasl-username, "
            "STREAMREC_SASL_PASSWORD, --ssl-cafile)")
