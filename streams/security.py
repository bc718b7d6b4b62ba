"""Kafka SSL/SASL settings of ``WorkerConfig``, translated for each client library the worker uses.

The worker talks to Kafka through Faust (aiokafka: consumer, producers, changelogs) and through
kafka-python (``ensure_topics``'s admin client). Both get the same settings from here, so one set
of flags / ``STREAMREC_SECURITY_PROTOCOL``, ``STREAMREC_SASL_*`` and ``STREAMREC_SSL_*`` variables
configures every connection.

    app = faust.App(..., broker_credentials=faust_credentials(config))
    KafkaAdminClient(bootstrap_servers=..., **kafka_python_kwargs(config))
"""
from __future__ import annotations

import ssl
from typing import Any

from streams.config import WorkerConfig


def ssl_context(config: WorkerConfig) -> ssl.SSLContext:
    """A client TLS context: the configured CA file (else the system's), and the client certificate if any."""
    context = ssl.create_default_context(cafile=str(config.ssl_cafile) if config.ssl_cafile else None)
    if config.ssl_certfile and config.ssl_keyfile:
        context.load_cert_chain(str(config.ssl_certfile), str(config.ssl_keyfile))
    return context


def faust_credentials(config: WorkerConfig) -> Any:
    """``broker_credentials`` for ``faust.App`` (None for PLAINTEXT)."""
    import faust

    protocol = config.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(config))
    return faust.SASLCredentials(username=config.sasl_username, password=config.sasl_password,
                                 mechanism=config.sasl_mechanism,
                                 ssl_context=ssl_context(config) if protocol == "SASL_SSL" else None)


def kafka_python_kwargs(config: WorkerConfig) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (``KafkaAdminClient``, ``KafkaProducer``, ...)."""
    out: dict[str, Any] = {"security_protocol": config.security_protocol}
    if config.security_protocol.startswith("SASL"):
        out |= {"sasl_mechanism": config.sasl_mechanism, "sasl_plain_username": config.sasl_username,
                "sasl_plain_password": config.sasl_password}
    if config.security_protocol in ("SSL", "SASL_SSL"):
        out |= {k: str(v) for k, v in (("ssl_cafile", config.ssl_cafile), ("ssl_certfile", config.ssl_certfile),
                                        ("ssl_keyfile", config.ssl_keyfile)) if v is not None}
    return out
