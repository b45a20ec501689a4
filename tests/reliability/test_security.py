"""Security: Kafka over SASL/SCRAM-SHA-512 and over TLS against a broker configured that way,
and no secret in logs, dead-letter records, metrics or error texts."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization

from consumer.broker.kafka_clients import create_topic
from consumer.local.local_kafka import LocalKafka, free_port
from tests.fakes import FakeVendors, Reply
from tests.kafka_helpers import consume_all, produce, unique_topic
from tests.samples import encode, marked
from tests.service_helpers import ServiceProcess, service_config, wait_until

SASL_USER = "asset-sync"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, Any]]:
    """A broker with SASL_PLAINTEXT (SCRAM-SHA-512) and SSL listeners, a throwaway CA."""
    workdir = tmp_path_factory.mktemp("secure-kafka")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(  # Kafka's PEM keystore reads PKCS#8 keys only
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    keystore = workdir / "server.pem"
    keystore.write_bytes(pkcs8 + b"".join(blob.bytes() for blob in server.cert_chain_pems))
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    password = f"SECRET-sasl-{secrets.token_hex(8)}"
    broker = LocalKafka(workdir / "kafka", scram_users={SASL_USER: password}, ssl_keystore=keystore)
    broker.start()
    yield broker, {"password": password, "cafile": str(workdir / "ca.pem")}
    broker.stop()


def run_service(
    tmp_path: Path,
    broker: LocalKafka,
    fakes: FakeVendors,
    topic: str,
    kafka: dict[str, Any],
    env: dict[str, str],
) -> ServiceProcess:
    config = service_config(broker.bootstrap, topic, fakes, kafka=kafka)
    service = ServiceProcess(config, tmp_path, "secure")
    os.environ.update(env)
    try:
        return service.start()
    finally:
        for key in env:
            os.environ.pop(key, None)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SSL"])
def test_service_works_over_sasl_scram_and_tls(
    secure_kafka: tuple[LocalKafka, Any], vendors: FakeVendors, tmp_path: Path, protocol: str
) -> None:
    broker, creds = secure_kafka
    topic = create_topic(broker.bootstrap, unique_topic("secure"))
    if protocol == "SASL_PLAINTEXT":
        kafka = {
            "bootstrap_servers": broker.sasl_bootstrap,
            "security_protocol": protocol,
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": SASL_USER,
            "sasl_plain_password": "${KAFKA_PASSWORD}",
        }
    else:
        kafka = {
            "bootstrap_servers": broker.ssl_bootstrap,
            "security_protocol": protocol,
            "ssl_cafile": creds["cafile"],
        }
    # Vendors that fail and echo credentials back must not leak them anywhere either
    vendors.webflow.always = Reply(400, body={"error": f"bad {vendors.secrets['webflow_token']}"})
    vendors.lexful.revoke_tokens()
    service = run_service(
        tmp_path, broker, vendors, topic, kafka, {"KAFKA_PASSWORD": creds["password"]}
    )
    events = [
        marked("trelica", f"secure-{protocol}"),
        marked("webflow", "x"),
        marked("lexful", "y"),
    ]
    produce(broker.bootstrap, topic, [(b"k", encode(e), []) for e in events])
    wait_until(
        lambda: any(
            r.body.get("notes") == f"secure-{protocol}" for r in vendors.trelica.succeeded()
        ),
        message="delivered",
    )
    dlq = consume_all(broker.bootstrap, f"{topic}.dlq", expected=2, timeout_s=30)
    assert {dict(r.headers)["dlq.reason"] for r in dlq} == {b"vendor_rejected", b"auth_failed"}
    _, metrics_text = service.get("/metrics")
    assert service.terminate() == 0
    # No secret anywhere: logs, dead-letter records (headers and all), metrics
    haystacks = [service.logs(), metrics_text, yaml.safe_dump(service.config)] + [
        repr(r.headers) + repr(r.value) for r in dlq
    ]
    for secret in [*vendors.secrets.values(), creds["password"]]:
        for text in haystacks[:2] + haystacks[3:]:
            assert secret not in text
    vendors.lexful.violations.clear()


def test_wrong_sasl_password_is_refused(secure_kafka: tuple[LocalKafka, Any]) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    broker, _ = secure_kafka
    with pytest.raises(KafkaError):
        KafkaAdminClient(
            bootstrap_servers=broker.sasl_bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username=SASL_USER,
            sasl_plain_password="wrong",
            request_timeout_ms=5000,
        ).list_topics()
    assert free_port()  # the broker is still serving
