"""Configuration: YAML, ${ENV}, ASSET_SYNC_ overrides, errors that name the key, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config import Secret, load_config
from consumer.errors import ConfigError

BASE = """
kafka:
  bootstrap_servers: localhost:9092
  topic: asset-changes
retry:
  max_attempts: 5
connections:
  webflow:
    default: {base_url: https://api.webflow.com, token: "${WEBFLOW_TOKEN}"}
    eu: {base_url: https://eu.example, token: literal-token-value}
  trelica:
    default: {base_url: https://app.trelica.com, client_id: cid, client_secret: "${TS}"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_env_substitution_and_overrides(tmp_path: Path) -> None:
    env = {
        "WEBFLOW_TOKEN": "wf-secret-1",
        "TS": "ts-secret-2",
        "ASSET_SYNC_KAFKA__BOOTSTRAP_SERVERS": "broker:9093",
        "ASSET_SYNC_RETRY__MAX_ATTEMPTS": "9",
    }
    config = load_config(write(tmp_path, BASE), env)
    assert config.kafka.bootstrap_servers == "broker:9093"
    assert config.retry.max_attempts == 9
    webflow = config.connection("webflow", "default")
    assert webflow is not None and webflow.secret("token") == "wf-secret-1"
    assert config.connection("webflow", "eu") is not None
    assert config.connections["trelica"]["default"].secret("client_secret") == "ts-secret-2"


def test_secrets_never_show_in_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), {"WEBFLOW_TOKEN": "wf-secret-1", "TS": "ts-2x"})
    text = repr(config) + str(config)
    for secret in ("wf-secret-1", "ts-2x", "literal-token-value"):
        assert secret not in text
    assert isinstance(config.connections["webflow"]["eu"].settings["token"], Secret)


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        (BASE, {"TS": "x"}, "connections.webflow.default.token"),
        (
            BASE.replace("max_attempts: 5", "max_attempts: many"),
            {"WEBFLOW_TOKEN": "a", "TS": "b"},
            "retry.max_attempts",
        ),
        (
            BASE.replace("max_attempts: 5", "max_attempts: 0"),
            {"WEBFLOW_TOKEN": "a", "TS": "b"},
            "retry.max_attempts",
        ),
        (
            BASE.replace("topic: asset-changes", "topik: x"),
            {"WEBFLOW_TOKEN": "a", "TS": "b"},
            "kafka.topik",
        ),
        (
            BASE.replace("https://api.webflow.com", "ftp://x"),
            {"WEBFLOW_TOKEN": "a", "TS": "b"},
            "connections.webflow.default.base_url",
        ),
        (
            BASE.replace("client_id: cid, ", ""),
            {"WEBFLOW_TOKEN": "a", "TS": "b"},
            "connections.trelica.default.client_id",
        ),
        (
            BASE + "  acme:\n    default: {base_url: https://x}\n",
            {"WEBFLOW_TOKEN": "a", "TS": "b"},
            "connections.acme",
        ),
        ("kafka: [1, 2]\n", {}, "kafka"),
        ("log_level: LOUD\n", {}, "log_level"),
        (
            BASE + "dispatch: {max_buffered: 500, max_uncommitted: 100}\n",
            {"WEBFLOW_TOKEN": "a", "TS": "b"},
            "dispatch.max_uncommitted",
        ),
    ],
    ids=[
        "missing-env",
        "not-int",
        "zero",
        "unknown-key",
        "bad-url",
        "missing-client-id",
        "unknown-vendor",
        "not-mapping",
        "log-level",
        "uncommitted-below-buffered",
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env)
    assert caught.value.key == key
    assert key in str(caught.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", {})
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(write(tmp_path, "a: 1\nb: [\n"), {})


def test_secret_value_is_not_in_the_error_for_a_bad_secret_key(tmp_path: Path) -> None:
    text = BASE.replace("client_id: cid, ", "")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {"WEBFLOW_TOKEN": "wf-secret-1", "TS": "ts-secret"})
    assert "ts-secret" not in str(caught.value) and "wf-secret-1" not in str(caught.value)


TRELICA = """
connections:
  trelica:
    default: {base_url: https://app.trelica.com, client_id: cid, client_secret: s3cr3t-value%s}
"""


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        (", scopes: assets.write", "connections.trelica.default.scopes", "unknown key"),
        (", rate_window_s: abc", "connections.trelica.default.rate_window_s", "must be float"),
        (", rate_window_s: 0", "connections.trelica.default.rate_window_s", "must be positive"),
        (", scope: {a: 1}", "connections.trelica.default.scope", "single value"),
        (", coalesce: maybe", "connections.trelica.default.coalesce", "must be bool"),
    ],
)
def test_every_connection_key_is_checked_at_start(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    """A mistyped connection key once loaded quietly and froze a partition at its first event."""
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, TRELICA % extra), {})
    assert error.value.key == key
    assert problem in str(error.value)
    assert "s3cr3t" not in str(error.value)


def test_secrets_are_read_from_mounted_files(tmp_path: Path) -> None:
    (tmp_path / "client-secret").write_text("from-a-file\n")
    (tmp_path / "sasl").write_text("sasl-pass")
    text = f"""
kafka: {{sasl_plain_password_file: {tmp_path / "sasl"}}}
connections:
  trelica:
    default:
      base_url: https://app.trelica.com
      client_id: cid
      client_secret_file: {tmp_path / "client-secret"}
"""
    config = load_config(write(tmp_path, text), {})
    assert config.connections["trelica"]["default"].secret("client_secret") == "from-a-file"
    assert config.kafka.sasl_plain_password == Secret("sasl-pass")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ("client_secret_file: /nonexistent/secret", "cannot read /nonexistent/secret"),
        ("client_secret_file: /etc/hostname, client_secret: x", "not both"),
        ("client_secret_file: ''", "must be the path of a file"),
    ],
)
def test_a_bad_secret_file_names_its_key(tmp_path: Path, settings: str, problem: str) -> None:
    text = f"""
connections:
  trelica:
    default: {{base_url: https://app.trelica.com, client_id: cid, {settings}}}
"""
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), {})
    assert error.value.key == "connections.trelica.default.client_secret_file"
    assert problem in str(error.value)
