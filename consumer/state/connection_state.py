"""Connection state that must outlive a process and be shared by the replicas, kept on a
compacted Kafka topic (``state.topic``, default ``<kafka.topic>.state``): the changelog model
of Kafka Streams, on the broker users already run rather than in a new database.

Today that is Autodesk's refresh-token grant: the vendor rotates the refresh token on every use
(the old one dies at once), so the current one must survive a restart and be the same for every
replica; the access token and its expiry are shared too, so replicas do not each refresh.

Records are keyed ``<vendor>/<connection>``; values are JSON encrypted with Fernet
(``state.encryption_key``, from a Kubernetes Secret), so the topic never holds a credential in
clear. Every replica follows the topic into memory with a consumer of its own (no group, every
partition, from the beginning) and is ready once it has read it to its end.

At most one replica refreshes a connection at a time: all writes go to partition 0 with
acks=all, so the log orders them, and a replica first writes a lease claim (key
``lease/<vendor>/<connection>``). Every replica evaluates the claims in log order the same way,
using the times written in them: a claim wins when it is for the current state version and no
other replica holds a live lease on that version. Only the winner calls the token endpoint; the
others wait for the state it saves. A lease lasts ``LEASE_S``; a holder that dies is replaced
after that.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from kafka.errors import KafkaError

from consumer.broker.compacted_topic import STARTUP_TIMEOUT_S, CompactedTopic
from consumer.config import Config, Connection, KafkaConfig, Secret
from consumer.errors import ConfigError, RetryableError
from consumer.telemetry.logs import get_logger

log = get_logger("connection_state")

KEY_NAME = "state.encryption_key"
LEASE_PREFIX = "lease/"
LEASE_S = 15.0  # longer than a token call takes; a dead holder delays a refresh this long
READ_BACK_S = 10.0  # how long a replica waits to read its own write back
# Compacted: the latest record per key is kept for ever. Records stay uncompacted for a minute,
# so that replicas following the log see every lease claim in order.
TOPIC_SETTINGS = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
# Vendors whose refresh token rotates on every use: their refresh-token connections need state.
ROTATING_VENDORS = ("autodesk",)


def topic_name(config: Config) -> str:
    return config.state.topic or f"{config.kafka.topic}.state"


def needing_state(config: Config) -> list[Connection]:
    """Connections whose credentials change as they are used (a rotating refresh token)."""
    return [
        connection
        for vendor in ROTATING_VENDORS
        for connection in config.connections.get(vendor, {}).values()
        if not connection.get("token") and connection.get("refresh_token")
    ]


def check(config: Config) -> None:
    """At the start of ``asset-sync run``: a rotating refresh token needs the state topic, and
    the topic needs a key. A missing or malformed key stops the start naming the key."""
    needing = needing_state(config)
    if not needing:
        return
    if config.state.encryption_key is None:
        raise ConfigError(
            KEY_NAME,
            f"is required: {needing[0].key('refresh_token')} rotates on every use, and the "
            "current one is kept encrypted on the state topic (make a key with: python -c "
            '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")',
        )
    StateCipher(config.state.encryption_key)
    topic = topic_name(config)
    if topic in (config.kafka.topic, config.kafka.dead_letter_topic):
        raise ConfigError("state.topic", "must differ from kafka.topic and kafka.dead_letter_topic")


class StateCipher:
    """Fernet (AES-128-CBC and HMAC-SHA256, from ``cryptography``): each value is encrypted
    and authenticated. Keys are comma-separated so they can rotate: the first encrypts, any of
    them decrypts (add the new key first, wait until every state was rewritten, drop the old)."""

    def __init__(self, keys: Secret | str) -> None:
        text = keys.reveal() if isinstance(keys, Secret) else str(keys)
        parts = [k.strip() for k in text.split(",") if k.strip()]
        if not parts or not all(_is_fernet_key(k) for k in parts):
            raise ConfigError(
                KEY_NAME,
                "must be one or more comma-separated Fernet keys (32 bytes in url-safe base64, "
                "as Fernet.generate_key() makes)",
            )
        self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])

    def encrypt(self, document: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(document, separators=(",", ":")).encode())

    def decrypt(self, value: bytes) -> dict[str, Any] | None:
        """The document, or None when the value was not written with one of these keys."""
        try:
            document = json.loads(self._fernet.decrypt(value))
        except (InvalidToken, ValueError):
            return None
        return document if isinstance(document, dict) else None


def _is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True)
class TokenState:
    """One connection's tokens. Times are wall-clock (epoch seconds): replicas share them."""

    refresh_token: str = field(repr=False)
    access_token: str = field(repr=False)
    issued_at: float
    expires_at: float
    version: int  # +1 at every refresh: the lease claims name the version they replace
    # a digest of the configured refresh token this chain of rotations started from: a new
    # token in the Secret (the old chain was revoked) is told from the one already used up
    seed: str = field(repr=False)

    def to_document(self) -> dict[str, Any]:
        return {
            "kind": "token",
            "refresh_token": self.refresh_token,
            "access_token": self.access_token,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "version": self.version,
            "seed": self.seed,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> TokenState | None:
        try:
            state = cls(
                str(document["refresh_token"]),
                str(document["access_token"]),
                float(document["issued_at"]),
                float(document["expires_at"]),
                int(document["version"]),
                str(document["seed"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return state


@dataclass(frozen=True)
class Lease:
    """A replica's claim to refresh the state of version ``base`` until ``until``."""

    owner: str
    nonce: str
    base: int
    at: float
    until: float

    def to_document(self) -> dict[str, Any]:
        return {"kind": "lease", **self.__dict__}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Lease | None:
        try:
            return cls(
                str(document["owner"]),
                str(document["nonce"]),
                int(document["base"]),
                float(document["at"]),
                float(document["until"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


class ConnectionStateStore:
    """The state topic, followed into memory (consumer/broker/compacted_topic.py). Reads are plain
    dictionary look-ups on the event loop; writes wait for the broker's acknowledgement."""

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        cipher: StateCipher,
        client_id: str = "asset-sync",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.client_id = client_id
        self.owner = uuid.uuid4().hex  # this process, in its lease claims
        self._cipher = cipher
        self._clock = clock
        self._states: dict[str, TokenState] = {}
        self._leases: dict[str, Lease] = {}
        self._decisions: dict[str, bool] = {}  # own claims read back: nonce -> won
        self._offsets: dict[str, int] = {}  # partition-0 offset each state came from
        self._unreadable: set[str] = set()
        self._topic = CompactedTopic(
            kafka, topic, self.apply, client_id, role="state", settings=TOPIC_SETTINGS
        )

    @classmethod
    async def open(cls, config: Config, client_id: str) -> ConnectionStateStore:
        """Create the topic if missing, read it to its end, then follow it."""
        assert config.state.encryption_key is not None  # check() ran first
        store = cls(
            config.kafka, topic_name(config), StateCipher(config.state.encryption_key), client_id
        )
        await store.start()
        return store

    # --- reading ------------------------------------------------------------------------------
    def state(self, key: str) -> TokenState | None:
        return self._states.get(key)

    def version(self, key: str) -> int:
        state = self._states.get(key)
        return state.version if state is not None else 0

    def lease(self, key: str) -> Lease | None:
        """The live lease on the current version of ``key``, whoever holds it."""
        lease = self._leases.get(key)
        if lease is None or lease.base != self.version(key) or lease.until <= self._clock():
            return None
        return lease

    async def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate`` holds; it is checked after each read of the topic."""
        return await self._topic.wait(predicate, timeout_s)

    # --- writing ------------------------------------------------------------------------------
    async def claim(self, key: str, base: int) -> bool:
        """Claim the refresh of version ``base`` of ``key``; True when this replica won."""
        now = self._clock()
        lease = Lease(self.owner, uuid.uuid4().hex, base, now, now + LEASE_S)
        offset = await self._write(LEASE_PREFIX + key, lease.to_document())
        if not await self.wait(lambda: self._topic.read_to.get(0, 0) > offset, READ_BACK_S):
            raise RetryableError(
                f"state topic {self.topic!r} not read back within {READ_BACK_S:.0f}s",
                retry_reason="auth_endpoint",
            )
        return self._decisions.pop(lease.nonce, False)

    async def save(self, key: str, state: TokenState) -> None:
        """Write ``state`` and return once the broker acknowledged it (acks=all)."""
        offset = await self._write(key, state.to_document())
        if self._offsets.get(key, -1) < offset:  # unless a later record was read already
            self._states[key], self._offsets[key] = state, offset
            await self._topic.notify()

    async def _write(self, key: str, document: dict[str, Any]) -> int:
        try:
            return await self._topic.write(key, self._cipher.encrypt(document))
        except KafkaError as error:
            raise RetryableError(
                f"connection state not saved to {self.topic!r}: {type(error).__name__}",
                retry_reason="auth_endpoint",
            ) from None

    # --- following the topic ------------------------------------------------------------------
    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """One record, in log order (the follower calls this; tests may too)."""
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        if value is None:  # a tombstone: the state was removed by hand
            self._states.pop(name, None)
            self._leases.pop(name.removeprefix(LEASE_PREFIX), None)
            return
        document = self._cipher.decrypt(value)
        if document is None:
            if name not in self._unreadable:
                self._unreadable.add(name)
                log.warning(
                    "state record not readable with state.encryption_key; ignored",
                    extra={"fields": {"topic": self.topic, "key": name}},
                )
            return
        if name.startswith(LEASE_PREFIX):
            lease = Lease.from_document(document)
            if lease is not None:
                self._evaluate(name.removeprefix(LEASE_PREFIX), lease)
            return
        state = TokenState.from_document(document)
        if state is not None and (partition != 0 or self._offsets.get(name, -1) < offset):
            self._states[name] = state
            if partition == 0:
                self._offsets[name] = offset

    def _evaluate(self, key: str, claim: Lease) -> None:
        """The same decision on every replica: it uses only the log and the times in it."""
        held = self._leases.get(key)
        version = self.version(key)
        taken = (
            held is not None
            and held.owner != claim.owner
            and held.base == version
            and held.until > claim.at
        )
        won = claim.base == version and not taken
        if won:
            self._leases[key] = claim
        if claim.owner == self.owner:
            self._decisions[claim.nonce] = won

    async def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        await self._topic.start(timeout_s)
        log.info(
            "connection state read",
            extra={"fields": {"topic": self.topic, "connections": len(self._states)}},
        )

    async def close(self) -> None:
        await self._topic.close()


# The store of this process: set by ``asset-sync run`` once the topic was read; None elsewhere
# (``asset-sync dispatch`` keeps rotated tokens in memory, as it runs without Kafka).
_store: ConnectionStateStore | None = None


def use(store: ConnectionStateStore | None) -> None:
    global _store  # noqa: PLW0603 - one store per process, read by the vendor clients
    _store = store


def current() -> ConnectionStateStore | None:
    return _store
