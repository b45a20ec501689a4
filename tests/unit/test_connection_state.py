"""The connection state topic's pieces without a broker: encryption, the start-up checks, and
the lease decisions every replica must take the same way from the same log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from consumer.config import KafkaConfig, Secret, parse_config
from consumer.errors import ConfigError
from consumer.state.connection_state import (
    LEASE_PREFIX,
    ConnectionStateStore,
    Lease,
    StateCipher,
    TokenState,
    check,
)

REFRESH = "rt-SECRET-refresh-1234567890"
ACCESS = "at-SECRET-access-0987654321"


def state(version: int = 1) -> TokenState:
    return TokenState(REFRESH, ACCESS, 1000.0, 1030.0, version, "seed-digest")


def test_values_round_trip_encrypted_and_authenticated() -> None:
    key = Fernet.generate_key().decode()
    cipher = StateCipher(Secret(key))
    value = cipher.encrypt(state().to_document())
    for clear in (REFRESH, ACCESS, "seed-digest", "refresh_token"):
        assert clear.encode() not in value
    document = cipher.decrypt(value)
    assert document is not None and TokenState.from_document(document) == state()
    assert StateCipher(Fernet.generate_key().decode()).decrypt(value) is None  # another key
    tampered = value[:-4] + (b"AAAA" if not value.endswith(b"AAAA") else b"BBBB")
    assert cipher.decrypt(tampered) is None


def test_keys_rotate_the_first_encrypts_any_decrypts() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    written_before = StateCipher(old).encrypt({"a": 1})
    rotated = StateCipher(f"{new}, {old}")
    assert rotated.decrypt(written_before) == {"a": 1}
    assert StateCipher(new).decrypt(rotated.encrypt({"b": 2})) == {"b": 2}


def test_no_token_in_a_repr() -> None:
    text = repr(state())
    assert REFRESH not in text and ACCESS not in text and "seed-digest" not in text


@pytest.mark.parametrize("key", ["", "not-a-key", "c2hvcnQ=", "x" * 44, f"{'A' * 43}=,oops"])
def test_a_malformed_key_is_named_not_shown(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        StateCipher(Secret(key))
    assert "state.encryption_key" in str(caught.value)
    if key:
        assert key not in str(caught.value)


def config(**state_section: Any) -> Any:
    raw: dict[str, Any] = {
        "kafka": {"topic": "changes"},
        "connections": {
            "autodesk": {
                "default": {
                    "base_url": "https://developer.api.autodesk.com",
                    "client_id": "cid",
                    "client_secret": "cs",
                    "refresh_token": REFRESH,
                }
            }
        },
    }
    if state_section:
        raw["state"] = state_section
    return parse_config(raw, {})


def test_a_rotating_refresh_token_needs_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        check(config())
    message = str(caught.value)
    assert "state.encryption_key" in message and "is required" in message
    assert "connections.autodesk.default.refresh_token" in message
    assert REFRESH not in message
    check(config(encryption_key=Fernet.generate_key().decode()))
    with pytest.raises(ConfigError, match=r"state\.topic"):
        check(config(encryption_key=Fernet.generate_key().decode(), topic="changes"))


def test_static_tokens_need_no_state() -> None:
    raw = {
        "connections": {"autodesk": {"default": {"base_url": "https://x.example", "token": "t"}}}
    }
    check(parse_config(raw, {}))


def test_the_key_is_a_secret_and_can_come_from_a_file(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    (tmp_path / "key").write_text(key + "\n")
    loaded = config(encryption_key_file=str(tmp_path / "key"))
    assert loaded.state.encryption_key == Secret(key)
    assert key not in repr(loaded)


def test_run_without_the_key_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    raw = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "topic": "changes"},
        "connections": {
            "autodesk": {
                "default": {
                    "base_url": "https://developer.api.autodesk.com",
                    "client_id": "cid",
                    "client_secret": "cs",
                    "refresh_token": REFRESH,
                }
            }
        },
    }
    path.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "state.encryption_key" in lines[0], done.stderr
    assert REFRESH not in done.stderr


# --- leases: the same log gives the same decisions on every replica --------------------------
def replica(cipher: StateCipher, now: float = 100.0) -> ConnectionStateStore:
    return ConnectionStateStore(KafkaConfig(), "t.state", cipher, clock=lambda: now)


class Log:
    """Records written to partition 0, applied in order to every replica."""

    def __init__(self, cipher: StateCipher, *replicas: ConnectionStateStore) -> None:
        self.cipher, self.replicas, self.offset = cipher, replicas, 0

    def write(self, key: str, document: dict[str, Any]) -> None:
        value = self.cipher.encrypt(document)
        for r in self.replicas:
            r.apply(0, self.offset, key.encode(), value)
        self.offset += 1

    def claim(self, owner: ConnectionStateStore, base: int, at: float, nonce: str) -> None:
        lease = Lease(owner.owner, nonce, base, at, at + 15)
        self.write(LEASE_PREFIX + "autodesk/default", lease.to_document())


def test_the_first_claim_in_the_log_wins_on_every_replica() -> None:
    cipher = StateCipher(Fernet.generate_key().decode())
    a, b = replica(cipher), replica(cipher)
    log = Log(cipher, a, b)
    log.claim(a, 0, 100.0, "a1")
    log.claim(b, 0, 100.1, "b1")
    assert a._decisions == {"a1": True} and b._decisions == {"b1": False}
    lease = b.lease("autodesk/default")
    assert lease is not None and lease.owner == a.owner  # b waits for a
    log.write("autodesk/default", state(1).to_document())  # a saved: its lease is spent
    assert b.lease("autodesk/default") is None and b.version("autodesk/default") == 1
    log.claim(b, 0, 101.0, "b2")  # a claim on a version already replaced loses
    assert b._decisions["b2"] is False
    log.claim(b, 1, 101.0, "b3")
    assert b._decisions["b3"] is True and a.lease("autodesk/default") is not None


def test_a_dead_holders_lease_is_taken_over_once_it_ran_out() -> None:
    cipher = StateCipher(Fernet.generate_key().decode())
    a, b = replica(cipher), replica(cipher)
    log = Log(cipher, a, b)
    log.claim(a, 0, 100.0, "a1")
    log.claim(b, 0, 114.9, "b1")  # a's lease runs until 115
    log.claim(b, 0, 115.1, "b2")
    assert b._decisions == {"b1": False, "b2": True}


def test_a_record_of_another_key_is_ignored_and_a_stale_write_does_not_win() -> None:
    cipher = StateCipher(Fernet.generate_key().decode())
    a = replica(cipher)
    a.apply(0, 5, b"autodesk/default", cipher.encrypt(state(2).to_document()))
    a.apply(0, 3, b"autodesk/default", cipher.encrypt(state(1).to_document()))  # older
    assert a.version("autodesk/default") == 2
    a.apply(
        0, 6, b"autodesk/default", StateCipher(Fernet.generate_key().decode()).encrypt({"x": 1})
    )
    assert a.version("autodesk/default") == 2  # unreadable: ignored, with one warning
    a.apply(0, 7, b"autodesk/default", None)
    assert a.state("autodesk/default") is None
