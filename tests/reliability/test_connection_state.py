"""Autodesk's rotating refresh token on the connection state topic: real broker, the fake that
enforces single-use refresh tokens and short-lived access tokens, real service processes.

The targets at full length (3 replicas, 5 minutes, 30-second access tokens) are this module's
process tests with the figures set from the environment, for example::

    STATE_SOAK_S=300 STATE_TOKEN_S=30 .venv/bin/pytest -s \\
        tests/reliability/test_connection_state.py -k "three_replicas or killed"

By default they run for 40 s with 5-second access tokens: a refresh every 2.5 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet
from kafka import KafkaProducer

from consumer.config import DispatchConfig, KafkaConfig, parse_config
from consumer.delivery.http import HttpClient
from consumer.local.samples import event
from consumer.state.connection_state import ConnectionStateStore, StateCipher, TokenState
from consumer.vendors.auth import SharedRefreshToken
from consumer.vendors.autodesk import AutodeskClient
from tests.fakes import FakeVendors
from tests.integration.conftest import StartService
from tests.kafka_helpers import consume_all, unique_topic
from tests.reliability.helpers import delivered, dlq_reasons
from tests.service_helpers import ServiceProcess, wait_until

SOAK_S = float(os.environ.get("STATE_SOAK_S", "40"))
TOKEN_S = float(os.environ.get("STATE_TOKEN_S", "5"))
RATE = 10  # Autodesk updates a second
KEY = "autodesk/default"


# --- in process: two stores ("replicas") on one topic ----------------------------------------
def client(vendors: FakeVendors, http: HttpClient) -> AutodeskClient:
    config = parse_config({"connections": vendors.connections(autodesk_refresh=True)}, {})
    return AutodeskClient(config.connections["autodesk"]["default"], http)


def version_is(store: ConnectionStateStore, version: int) -> Callable[[], bool]:
    return lambda: store.version(KEY) == version


def test_replicas_refresh_once_and_share_the_tokens(
    kafka_bootstrap: str, vendors: FakeVendors
) -> None:
    fake = vendors.autodesk
    fake.access_lifetime_s = 4
    configured = vendors.secrets["autodesk_refresh_token"]
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    cipher = StateCipher(Fernet.generate_key().decode())
    topic = unique_topic("state")

    async def run() -> None:
        http = HttpClient(DispatchConfig())
        stores = [ConnectionStateStore(kafka, topic, cipher, f"r{i}") for i in range(3)]
        try:
            for store in stores:
                await store.start()
            grant = client(vendors, http)._grant
            sources = [SharedRefreshToken(s, KEY, configured, grant) for s in stores]
            # Given three replicas that all need a token at once
            tokens = await asyncio.gather(*(s.get(http) for s in sources for _ in range(20)))
            # Then one refreshed (with the Secret's token) and all use its access token
            assert len(set(tokens)) == 1 and fake.token_requests == 1
            assert fake.used[configured] == 1 and fake.reuses == 0
            # When the access token nears its expiry, again one refreshes for all
            await asyncio.sleep(2.5)
            for source in sources:
                await source.get(http)
            for store in stores:
                assert await store.wait(version_is(store, 2), 5)
            state = stores[0].state(KEY)
            assert state is not None
            assert {await s.get(http) for s in sources} == {state.access_token}
            assert fake.token_requests == 2 and fake.reuses == 0
            # And a replica whose refresh token was used first (invalid_grant) takes the
            # tokens its peer saves, instead of failing
            fake.used[fake.refresh_token] += 1  # a peer rotated it, outside the lease
            fake.refresh_token = f"{configured}.rt-peer"

            async def peer() -> None:
                await asyncio.sleep(1)
                now = time.time()
                rotated = TokenState(
                    fake.refresh_token, fake.issue_token(), now, now + 4, 3, state.seed
                )
                await stores[2].save(KEY, rotated)

            saving = asyncio.create_task(peer())
            sources[1].invalidate(state.access_token)  # as after a 401
            token = await sources[1].get(http)
            await saving
            assert stores[1].version(KEY) == 3 and fake.reuses == 1
            assert token == stores[2].state(KEY).access_token  # type: ignore[union-attr]
            # And a new replica reads the stored chain, not the Secret's used-up token
            late = ConnectionStateStore(kafka, topic, cipher, "late")
            stores.append(late)
            await late.start()
            assert await SharedRefreshToken(late, KEY, configured, grant).get(http)
            assert fake.used[configured] == 1
        finally:
            for store in stores:
                await store.close()
            await http.close()

    asyncio.run(run())
    assert fake.violations == []
    assert_no_clear_secret(kafka_bootstrap, topic, vendors)


def test_a_new_refresh_token_in_the_secret_replaces_the_stored_chain(
    kafka_bootstrap: str, vendors: FakeVendors
) -> None:
    fake = vendors.autodesk
    old = vendors.secrets["autodesk_refresh_token"]
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    cipher = StateCipher(Fernet.generate_key().decode())
    topic = unique_topic("state")

    async def run() -> None:
        http = HttpClient(DispatchConfig())
        stores = [ConnectionStateStore(kafka, topic, cipher, f"r{i}") for i in range(2)]
        try:
            for store in stores:
                await store.start()
            grant = client(vendors, http)._grant
            await SharedRefreshToken(stores[0], KEY, old, grant).get(http)
            # Given the stored chain was revoked and the operator got a new refresh token
            new = fake.refresh_token = f"{old}.pasted-by-the-operator"
            # When a replica starts with the new Secret, it uses the new token
            updated = SharedRefreshToken(stores[1], KEY, new, grant)
            await updated.get(http)
            assert fake.used[new] == 1
            await stores[0].wait(version_is(stores[0], 2), 5)
            # And a replica still on the old Secret follows the new chain (one refusal first)
            outdated = SharedRefreshToken(stores[0], KEY, old, grant)
            assert await outdated.get(http) == await updated.get(http)
        finally:
            for store in stores:
                await store.close()
            await http.close()

    asyncio.run(run())
    assert fake.violations == []


def assert_no_clear_secret(bootstrap: str, topic: str, vendors: FakeVendors) -> None:
    """Read the raw topic: no token, refresh token or client secret in any key or value."""
    records = consume_all(bootstrap, topic, expected=10**6, timeout_s=4)
    assert any(r.key == KEY.encode() for r in records)
    secrets = [*vendors.autodesk.issued(), *vendors.secrets.values()]
    assert len(secrets) > len(vendors.secrets)
    for record in records:
        raw = (record.key or b"") + (record.value or b"")
        leaked = [s[:20] for s in secrets if s.encode() in raw]
        assert not leaked, f"{record.key!r} holds {leaked}"


# --- real processes ---------------------------------------------------------------------------
def sections(vendors: FakeVendors, key: str) -> dict[str, Any]:
    return {
        "connections": vendors.connections(autodesk_refresh=True),
        "state": {"encryption_key": key},
        "retry": {"max_attempts": 6, "max_elapsed_s": 60},
    }


class Traffic:
    """Steady Autodesk updates, ``RATE`` a second, each with its own marker."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.topic = topic
        self.sent: set[tuple[str, str]] = set()

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            for _ in range(RATE):
                n = len(self.sent)
                ev = event("autodesk", n, assets=200)
                key = f"autodesk:{ev['data']['asset_id']}".encode()
                self.producer.send(self.topic, key=key, value=json.dumps(ev).encode())
                self.sent.add(("autodesk", f"update {n}"))
            self.producer.flush(10)
            time.sleep(max(0.0, 1 - (time.monotonic() - started)))

    def close(self) -> None:
        self.producer.close()


def check_outcome(
    bootstrap: str, topic: str, vendors: FakeVendors, traffic: Traffic, procs: list[ServiceProcess]
) -> None:
    wait_until(
        lambda: set(delivered(vendors)) >= traffic.sent,
        timeout_s=120,
        message="every update delivered",
    )
    dlq = consume_all(bootstrap, f"{topic}.dlq", expected=1, timeout_s=3)
    fake = vendors.autodesk
    print(
        f"\nstate: {len(traffic.sent)} updates, {fake.token_requests} refreshes, "
        f"{fake.reuses} refresh-token reuses, {fake.expired} expired-token 401s, "
        f"dead-letters {dict(dlq_reasons(dlq))}"
    )
    assert dlq_reasons(dlq)["auth_failed"] == 0
    assert not dlq
    assert fake.violations == []
    issued = fake.issued()
    for proc in procs:
        logs = proc.logs()
        assert not [t for t in issued if t in logs], f"{proc.log_path} holds a token"


def test_three_replicas_with_rotating_tokens_give_no_auth_failed(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    fake = vendors.autodesk
    fake.access_lifetime_s = TOKEN_S
    configured = vendors.secrets["autodesk_refresh_token"]
    key = Fernet.generate_key().decode()
    # Given three replicas in one group, Autodesk by the refresh-token grant
    procs = [start_service(f"replica-{i}", **sections(vendors, key)) for i in range(3)]
    traffic = Traffic(kafka_bootstrap, source_topic)
    try:
        # When updates flow steadily while the access token expires every TOKEN_S seconds
        traffic.run(SOAK_S)
    finally:
        traffic.close()
    # Then no update is dead-lettered, the refresh token is never presented twice, and the
    # replicas refreshed about once per token lifetime between them, not each
    check_outcome(kafka_bootstrap, source_topic, vendors, traffic, procs)
    assert fake.reuses == 0
    assert SOAK_S / TOKEN_S <= fake.token_requests <= 3 + 2.5 * SOAK_S / TOKEN_S
    assert fake.used[configured] == 1
    assert_no_clear_secret(kafka_bootstrap, f"{source_topic}.state", vendors)
    assert all(p.terminate() == 0 for p in procs)


def test_every_replica_killed_and_restarted_still_gives_no_auth_failed(
    kafka_bootstrap: str, source_topic: str, vendors: FakeVendors, start_service: StartService
) -> None:
    fake = vendors.autodesk
    fake.access_lifetime_s = TOKEN_S
    configured = vendors.secrets["autodesk_refresh_token"]
    key = Fernet.generate_key().decode()
    procs = [start_service(f"before-{i}", **sections(vendors, key)) for i in range(3)]
    traffic = Traffic(kafka_bootstrap, source_topic)
    try:
        traffic.run(SOAK_S / 2)
        # Given the Secret's refresh token was used up (rotated) while they ran
        assert fake.used[configured] == 1 and fake.token_requests >= 2
        # When every replica is killed with SIGKILL and restarted
        for proc in procs:
            proc.kill()
        procs += [start_service(f"after-{i}", **sections(vendors, key)) for i in range(3)]
        traffic.run(SOAK_S / 2)
    finally:
        traffic.close()
    # Then nothing fails for auth, and the Secret's token was never needed again
    check_outcome(kafka_bootstrap, source_topic, vendors, traffic, procs)
    assert fake.used[configured] == 1
    assert all(p.terminate() == 0 for p in procs[3:])
