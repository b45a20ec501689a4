"""Configuration (SPEC section 3): YAML, ``${ENV}`` substitution, ``ASSET_SYNC_*`` overrides,
and secrets read from files (``<secret key>_file: /var/run/secrets/...``, a mounted Secret).

Everything wrong with a configuration is a ``ConfigError`` that names the key, raised at start.
Secret values are wrapped in ``Secret`` as soon as they are read, so that no ``repr`` of a
config object, exception or log line can show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from consumer.errors import ConfigError

ENV_PREFIX = "ASSET_SYNC_"
SECRET_KEYS = frozenset(
    {
        "token",
        "api_key_secret",
        "client_secret",
        "refresh_token",
        "app_secret",
        "sasl_plain_password",
        "ssl_password",
        "secrets",
        "encryption_key",
    }
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Secret:
    """A credential. ``reveal()`` is the only way to read it; repr and str hide it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    topic: str = "asset-changes"
    group_id: str = "asset-sync"
    dead_letter_topic: str = "asset-changes.dlq"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: Secret | None = None
    ssl_check_hostname: bool = True
    max_poll_records: int = 500
    session_timeout_ms: int = 45_000
    max_poll_interval_ms: int = 300_000


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 8
    max_elapsed_s: float = 300.0
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 8000


@dataclass(frozen=True)
class BreakerConfig:
    """Each connection's circuit breaker (consumer/delivery/breaker.py): when to stop calling
    a vendor that fails, and how often to try it again."""

    failure_threshold: int = 10  # failures in a row (5xx, timeouts, connection errors); 0: off
    open_s: float = 1.0  # the first wait before a probe; doubles after each failed probe
    max_open_s: float = 30.0  # the longest wait between probes


class _Default(int):
    """A default that can be told from the same number written in the configuration."""


@dataclass(frozen=True)
class DispatchConfig:
    """How hard the service pushes: concurrency, timeouts, batching."""

    max_in_flight: int = 1024
    max_in_flight_per_connection: int = _Default(256)
    # Deprecated alias, from when the share was per vendor: sets max_in_flight_per_connection
    # unless that is given too.
    max_in_flight_per_vendor: int | None = None
    max_buffered: int = 20_000
    max_uncommitted: int = 200_000
    commit_interval_s: float = 1.0
    dedup_window_s: float = 600.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    batch_max: int = 100
    batch_linger_s: float = 0.02
    shutdown_grace_s: float = 20.0

    def __post_init__(self) -> None:
        share = self.max_in_flight_per_connection
        if isinstance(share, _Default) and self.max_in_flight_per_vendor is not None:
            share = self.max_in_flight_per_vendor
        object.__setattr__(self, "max_in_flight_per_connection", int(share))


@dataclass(frozen=True)
class IngestConfig:
    """``asset-sync ingest``: signed webhooks in, events on the topic."""

    port: int = 8080
    secrets: Secret | None = None  # comma-separated Standard Webhooks secrets (whsec_...)
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 100
    tolerance_s: float = 300.0
    publish_timeout_s: float = 10.0
    ids_topic: str | None = None  # webhook ids shared by replicas; None: <kafka.topic>.ingest-ids


@dataclass(frozen=True)
class StateConfig:
    """Connection state that must outlive a process (consumer/state/connection_state.py): Autodesk's
    rotating refresh token, encrypted on a compacted topic shared by the replicas."""

    topic: str | None = None  # None: <kafka.topic>.state
    encryption_key: Secret | None = None  # Fernet keys, comma-separated: the first encrypts


@dataclass(frozen=True)
class ControlConfig:
    """Runtime control (consumer/state/control.py): ``asset-sync ctl`` pauses and resumes a
    connection through a compacted topic every replica follows; its ACLs say who may."""

    topic: str | None = None  # None: <kafka.topic>.control


@dataclass(frozen=True)
class FreshnessConfig:
    """Per-field last-writer-wins (consumer/state/freshness.py): what a replica remembers of the
    fields it delivered, kept in a compacted changelog topic and a local store."""

    enabled: bool = True
    changelog_topic: str | None = None  # None: <kafka.topic>.freshness
    store_dir: str | None = None  # None: a directory under the system's temporary directory
    cache_mb: int = 64  # memory for the field maps of the assets used last, and SQLite's cache


@dataclass(frozen=True)
class ParkingConfig:
    """Parking (consumer/delivery/parking.py): the events of a connection that is down or
    paused, beyond ``backlog`` waiting, move to a parking topic of that connection and come
    back, in order, once it is available again; memory and the other connections are then
    unaffected by an outage of any length."""

    enabled: bool = True
    backlog: int = 1000  # waiting events of an unavailable connection before it parks
    # a connection with that many waiting, the oldest this long, parks too: its vendor
    # rate-limits it far below what comes in
    max_wait_s: float = 300.0
    max_age_s: float = 7 * 86400.0  # a parked event older than this is dead-lettered: expired
    topic_prefix: str | None = None  # None: <kafka.topic>.parked (+ .<vendor>.<connection>)


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry spans (consumer/telemetry/tracing.py), off by default; ``OTEL_TRACES_EXPORTER``
    switches them on as well, and the other ``OTEL_*`` variables tune them."""

    enabled: bool = False


@dataclass(frozen=True)
class Connection:
    """One named set of credentials and a base URL for one vendor."""

    vendor: str
    name: str
    base_url: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    def require(self, key: str) -> Any:
        value = self.settings.get(key)
        if value in (None, ""):
            raise ConfigError(self.key(key), "is required")
        return value

    def secret(self, key: str) -> str:
        value = self.require(key)
        return value.reveal() if isinstance(value, Secret) else str(value)

    def key(self, key: str) -> str:
        return f"connections.{self.vendor}.{self.name}.{key}"


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    freshness: FreshnessConfig = field(default_factory=FreshnessConfig)
    parking: ParkingConfig = field(default_factory=ParkingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    connections: Mapping[str, Mapping[str, Connection]] = field(default_factory=dict)
    log_level: str = "INFO"

    def connection(self, vendor: str, name: str) -> Connection | None:
        return self.connections.get(vendor, {}).get(name)


def load_config(
    path: Path, environ: Mapping[str, str] | None = None, *, credentials: bool = True
) -> Config:
    """Read, substitute, override and check a configuration file. ``credentials=False``:
    the vendors' credentials (``${NAME}`` and ``<key>_file`` under ``connections``) need not
    be at hand, and are then a placeholder: for ``asset-sync ctl``, which needs only Kafka and
    the connections' names, so an operator who may pause need not hold every vendor secret."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            str(path), f"cannot read: {exc.strerror or exc}", what="config file"
        ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(str(path), f"is not valid YAML{where}", what="config file") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "must be a mapping of sections", what="config file")
    return parse_config(raw, environ, credentials=credentials)


UNSET_CREDENTIAL = "(not needed here)"


def parse_config(
    raw: dict[str, Any], environ: Mapping[str, str], *, credentials: bool = True
) -> Config:
    tree = _apply_overrides(raw, environ)
    tree = _substitute(tree, environ, "", credentials)
    tree = _read_secret_files(tree, "", credentials)
    known = {
        "kafka",
        "retry",
        "breaker",
        "metrics",
        "dispatch",
        "ingest",
        "freshness",
        "parking",
        "state",
        "control",
        "tracing",
        "connections",
        "log_level",
    }
    for key in tree:
        if key not in known:
            raise ConfigError(str(key), f"unknown section (known: {', '.join(sorted(known))})")
    log_level = str(tree.get("log_level", "INFO")).upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level", "must be DEBUG, INFO, WARNING or ERROR")
    config = Config(
        kafka=_section(KafkaConfig, tree, "kafka"),
        retry=_section(RetryConfig, tree, "retry"),
        breaker=_section(BreakerConfig, tree, "breaker"),
        metrics=_section(MetricsConfig, tree, "metrics"),
        dispatch=_section(DispatchConfig, tree, "dispatch"),
        ingest=_section(IngestConfig, tree, "ingest"),
        freshness=_section(FreshnessConfig, tree, "freshness"),
        parking=_section(ParkingConfig, tree, "parking"),
        state=_section(StateConfig, tree, "state"),
        control=_section(ControlConfig, tree, "control"),
        tracing=_section(TracingConfig, tree, "tracing"),
        connections=_connections(tree.get("connections") or {}),
        log_level=log_level,
    )
    _check_ranges(config)
    return config


def _apply_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``ASSET_SYNC_KAFKA__BOOTSTRAP_SERVERS=x`` sets ``kafka.bootstrap_servers``."""
    tree: dict[str, Any] = _deep_copy(raw)
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return tree


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _substitute(value: Any, environ: Mapping[str, str], key: str, credentials: bool = True) -> Any:
    if isinstance(value, dict):
        return {
            k: _substitute(v, environ, f"{key}.{k}" if key else k, credentials)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, environ, f"{key}[{i}]", credentials) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            if not credentials and key.startswith("connections."):
                return UNSET_CREDENTIAL
            raise ConfigError(key, f"environment variable {name} is not set")
        return environ[name]

    resolved = _ENV_REF.sub(replace, value)
    return Secret(resolved) if key.rsplit(".", 1)[-1] in SECRET_KEYS else resolved


def _read_secret_files(value: Any, key: str, credentials: bool = True) -> Any:
    """``client_secret_file: PATH`` becomes ``client_secret`` with the file's content (one
    trailing newline dropped), the way Kubernetes users mount Secrets as files."""
    if not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for name, child in value.items():
        path = f"{key}.{name}" if key else name
        base = name.removesuffix("_file")
        if base == name or base not in SECRET_KEYS:
            result[name] = _read_secret_files(child, path, credentials)
            continue
        if base in value:
            raise ConfigError(path, f"give {base} or {name}, not both")
        if not isinstance(child, str) or not child:
            raise ConfigError(path, "must be the path of a file")
        if not credentials and path.startswith("connections."):
            result[base] = Secret(UNSET_CREDENTIAL)
            continue
        try:
            text = Path(child).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(path, f"cannot read {child}: {reason}") from None
        result[base] = Secret(text.removesuffix("\n").removesuffix("\r"))
    return result


def _section(cls: Any, tree: dict[str, Any], name: str) -> Any:
    raw = tree.get(name) or {}
    if not isinstance(raw, dict):
        raise ConfigError(name, "must be a mapping")
    kinds = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in kinds:
            raise ConfigError(f"{name}.{key}", f"unknown key (known: {', '.join(kinds)})")
        values[key] = _coerce(f"{name}.{key}", kinds[key].type, value)
    return cls(**values)


def _coerce(key: str, kind: Any, value: Any) -> Any:
    kind = str(kind)
    if (value is None and "None" in kind) or isinstance(value, Secret):
        return value
    for prefix, convert in (("int", _to_int), ("float", _to_float), ("bool", _to_bool)):
        if kind.startswith(prefix):
            try:
                return convert(value)
            except (TypeError, ValueError, KeyError):
                raise ConfigError(key, f"must be {prefix}, got {value!r}") from None
    if isinstance(value, (dict, list)):
        raise ConfigError(key, "must be a single value")
    return str(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    return words[str(value).lower()]


# --- connections ---------------------------------------------------------------------------
# What a connection of each vendor may and must say: its keys and their kinds (str, int, float,
# bool, secret, rate, statuses), and which keys it needs. Kept here, with the rest of what a
# user may write, rather than on the vendor clients: the configuration is read and checked
# without importing them (they import it), so the two modules form no import circle.
# tests/unit/test_layout.py checks that every vendor has an entry and that no module imports
# itself round.


def _nothing_required(connection: Connection) -> None:
    return None


def _lexful(connection: Connection) -> None:
    connection.require("account_id")
    if not connection.get("token") and not (
        connection.get("api_key_id") and connection.get("api_key_secret")
    ):
        raise ConfigError(connection.key("token"), "is required (or api_key_id and api_key_secret)")


def _autodesk(connection: Connection) -> None:
    if connection.get("token"):
        return
    for key in ("client_id", "client_secret", "refresh_token"):
        if not connection.get(key):
            raise ConfigError(
                connection.key("token"),
                "is required (or client_id, client_secret and refresh_token)",
            )


def _requires(*keys: str) -> Callable[[Connection], None]:
    def check(connection: Connection) -> None:
        for key in keys:
            connection.require(key)

    return check


@dataclass(frozen=True)
class VendorKeys:
    """The connection keys one vendor reads, and the check that it has what it needs."""

    keys: Mapping[str, str]
    check: Callable[[Connection], None] = _nothing_required


COMMON_CONNECTION_KEYS: Mapping[str, str] = {
    "base_url": "str",
    "rate_window_s": "float",
    "rate_limit": "rate",
    "retry_statuses": "statuses",
    "coalesce": "bool",
}
VENDOR_KEYS: Mapping[str, VendorKeys] = {
    "lexful": VendorKeys(
        {"account_id": "str", "token": "secret", "api_key_id": "str", "api_key_secret": "secret"},
        _lexful,
    ),
    "webflow": VendorKeys({"token": "secret"}, _requires("token")),
    "autodesk": VendorKeys(
        {
            "token": "secret",
            "client_id": "str",
            "client_secret": "secret",
            "refresh_token": "secret",
        },
        _autodesk,
    ),
    "trelica": VendorKeys(
        {"client_id": "str", "client_secret": "secret", "scope": "str"},
        _requires("client_id", "client_secret"),
    ),
    "enos": VendorKeys(
        {"app_key": "str", "app_secret": "secret"}, _requires("app_key", "app_secret")
    ),
}


def _connections(raw: Any) -> dict[str, dict[str, Connection]]:
    if not isinstance(raw, dict):
        raise ConfigError("connections", "must map vendor -> connection name -> settings")
    result: dict[str, dict[str, Connection]] = {}
    for vendor, named in raw.items():
        rules = VENDOR_KEYS.get(vendor)
        if rules is None:
            raise ConfigError(
                f"connections.{vendor}", f"unknown vendor (known: {', '.join(VENDOR_KEYS)})"
            )
        if not isinstance(named, dict) or not named:
            raise ConfigError(f"connections.{vendor}", "must map connection names to settings")
        result[vendor] = {}
        for name, settings in named.items():
            key = f"connections.{vendor}.{name}"
            if not isinstance(settings, dict):
                raise ConfigError(key, "must be a mapping of settings")
            base_url = settings.get("base_url")
            if not isinstance(base_url, str) or not _is_base_url(base_url):
                raise ConfigError(f"{key}.base_url", "must be an http(s) URL without query")
            checked = _connection_settings(key, vendor, rules, settings)
            connection = Connection(vendor, str(name), base_url.rstrip("/"), checked)
            rules.check(connection)
            result[vendor][str(name)] = connection
    return result


def _connection_settings(
    key: str, vendor: str, rules: VendorKeys, settings: dict[str, Any]
) -> dict[str, Any]:
    """Every key known to the vendor and of its kind: a typo (``scopes`` for ``scope``) or a
    bad value stops the start, instead of failing at the first event of the connection."""
    kinds = {**COMMON_CONNECTION_KEYS, **rules.keys}
    checked: dict[str, Any] = {}
    for name, value in settings.items():
        kind = kinds.get(name)
        if kind is None:
            known = ", ".join(sorted(kinds))
            raise ConfigError(f"{key}.{name}", f"unknown key for {vendor} (known: {known})")
        if value is None:
            continue  # an empty key is an unset one
        if kind == "secret":
            checked[name] = value if isinstance(value, Secret) else Secret(str(value))
            continue
        if kind == "statuses":
            checked[name] = _to_statuses(f"{key}.{name}", value)
            continue
        if kind == "rate":
            checked[name] = _to_rate(f"{key}.{name}", value)
            continue
        checked[name] = _coerce(f"{key}.{name}", kind, value)
        if kind in ("int", "float") and checked[name] <= 0:
            raise ConfigError(f"{key}.{name}", "must be positive")
    return checked


def _to_rate(key: str, value: Any) -> float:
    """A rate such as ``60/min`` or ``20/s``, in requests per second."""
    try:
        return parse_rate_limit(str(value))
    except ValueError as error:
        raise ConfigError(key, str(error)) from None


_RATE_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600.0),
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")


def parse_rate_limit(text: str) -> float:
    """Requests per second from ``60/min``, ``20/s``, ``100/minute``, ``1000/10min``...
    Raises ValueError saying what is wrong."""
    match = _RATE.match(str(text).lower())
    unit = _RATE_UNITS.get(match.group(3)) if match else None
    if match is None or unit is None:
        raise ValueError(f"must be requests per period like 60/min or 20/s, got {text!r}")
    count, period = float(match.group(1)), float(match.group(2) or 1) * unit
    if count <= 0 or period <= 0:
        raise ValueError(f"must be positive, got {text!r}")
    return count / period


def _to_statuses(key: str, value: Any) -> frozenset[int]:
    """HTTP statuses to retry: a list of codes and classes, e.g. ``[429, 409, 408, 5xx]``."""
    items = value if isinstance(value, list) else str(value).split(",")
    statuses: set[int] = set()
    for item in items:
        text = str(item).strip().lower()
        if len(text) == 3 and text[0] in "45" and text.endswith("xx"):
            base = int(text[0]) * 100
            statuses.update(range(base, base + 100))
        elif text.isdigit() and 400 <= int(text) <= 599 and int(text) != 401:
            statuses.add(int(text))
        else:
            raise ConfigError(
                key,
                f"{item!r} is not a 4xx/5xx status or class (e.g. [429, 409, 408, 5xx]; "
                "401 always refreshes the token)",
            )
    return frozenset(statuses)


def _is_base_url(url: str) -> bool:
    parts = urlsplit(url)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and not (parts.query or parts.fragment)
    )


def _check_ranges(config: Config) -> None:
    checks = [
        ("retry.max_attempts", config.retry.max_attempts >= 1, "must be at least 1"),
        ("retry.max_elapsed_s", config.retry.max_elapsed_s > 0, "must be positive"),
        ("retry.base_delay_s", config.retry.base_delay_s >= 0, "must not be negative"),
        (
            "retry.max_delay_s",
            config.retry.max_delay_s >= config.retry.base_delay_s,
            "must be at least retry.base_delay_s",
        ),
        (
            "breaker.failure_threshold",
            config.breaker.failure_threshold >= 0,
            "must not be negative",
        ),
        ("breaker.open_s", config.breaker.open_s > 0, "must be positive"),
        (
            "breaker.max_open_s",
            config.breaker.max_open_s >= config.breaker.open_s,
            "must be at least breaker.open_s",
        ),
        ("metrics.port", 0 <= config.metrics.port <= 65535, "must be a TCP port"),
        ("dispatch.max_in_flight", config.dispatch.max_in_flight >= 1, "must be at least 1"),
        (
            "dispatch.max_in_flight_per_vendor",
            config.dispatch.max_in_flight_per_vendor is None
            or config.dispatch.max_in_flight_per_vendor >= 1,
            "must be at least 1",
        ),
        (
            "dispatch.max_in_flight_per_connection",
            config.dispatch.max_in_flight_per_connection >= 1,
            "must be at least 1",
        ),
        ("dispatch.batch_max", 1 <= config.dispatch.batch_max <= 100, "must be 1..100"),
        ("dispatch.max_buffered", config.dispatch.max_buffered >= 1, "must be at least 1"),
        (
            "dispatch.max_uncommitted",
            config.dispatch.max_uncommitted >= config.dispatch.max_buffered,
            "must be at least dispatch.max_buffered",
        ),
        ("dispatch.commit_interval_s", config.dispatch.commit_interval_s > 0, "must be positive"),
        ("dispatch.read_timeout_s", config.dispatch.read_timeout_s > 0, "must be positive"),
        ("dispatch.connect_timeout_s", config.dispatch.connect_timeout_s > 0, "must be positive"),
        (
            "kafka.security_protocol",
            config.kafka.security_protocol in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
            "must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        ),
        ("kafka.bootstrap_servers", bool(config.kafka.bootstrap_servers.strip()), "is required"),
        ("kafka.topic", bool(config.kafka.topic.strip()), "is required"),
        ("freshness.cache_mb", config.freshness.cache_mb >= 1, "must be at least 1"),
        ("parking.backlog", config.parking.backlog >= 1, "must be at least 1"),
        ("parking.max_age_s", config.parking.max_age_s > 0, "must be positive"),
        ("parking.max_wait_s", config.parking.max_wait_s > 0, "must be positive"),
        (
            "freshness.changelog_topic",
            config.freshness.changelog_topic
            not in (config.kafka.topic, config.kafka.dead_letter_topic),
            "must differ from kafka.topic and kafka.dead_letter_topic",
        ),
        (
            "kafka.dead_letter_topic",
            config.kafka.dead_letter_topic != config.kafka.topic,
            "must differ from kafka.topic",
        ),
        (
            "control.topic",
            config.control.topic not in (config.kafka.topic, config.kafka.dead_letter_topic),
            "must differ from kafka.topic and kafka.dead_letter_topic",
        ),
    ]
    for key, ok, problem in checks:
        if not ok:
            raise ConfigError(key, problem)
