"""A real single-node Apache Kafka (KRaft, broker + controller) on 127.0.0.1.

The tests, CI and ``asset-sync demo`` all start Kafka through this module, so that every
"delivered" or "committed" claim is checked against the same real broker. The broker's jars
come from Maven Central through ``deploy/local-kafka/pom.xml`` and are cached under
``$ASSET_SYNC_CACHE`` (default ``~/.cache/asset-sync``), so only the first start downloads.

``python -m consumer.local.local_kafka start DIR`` / ``stop DIR`` drive it from a shell.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = WARN
"""


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, formatted or started."""


def _pom_path() -> Path:
    """Where the broker's pom is: inside an installed wheel, or in the source tree."""
    package = Path(__file__).resolve().parents[1]  # consumer/
    for candidate in (
        package / "_deploy" / "local-kafka" / "pom.xml",
        package.parent / "deploy" / "local-kafka" / "pom.xml",
    ):
        if candidate.is_file():
            return candidate
    raise LocalKafkaError("deploy/local-kafka/pom.xml not found")


def cache_dir() -> Path:
    return Path(os.environ.get("ASSET_SYNC_CACHE", Path.home() / ".cache" / "asset-sync"))


def fetch_jars(pom: Path | None = None) -> Path:
    """Resolve the broker's runtime jars once per pom content; later calls reuse the cache."""
    pom = pom or _pom_path()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    libs = cache_dir() / "kafka" / digest / "libs"
    if (libs / ".complete").exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise LocalKafkaError("mvn (Apache Maven) is needed to fetch Kafka; install it") from exc
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise LocalKafkaError(f"fetching Kafka with Maven failed:\n{done.stdout}{done.stderr}")
    (staging / ".complete").touch()
    try:
        staging.rename(libs)
    except OSError:  # another process won the race; its copy is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalKafka:
    """One broker whose state lives in ``workdir``; stop() then start() restarts it in place."""

    workdir: Path
    port: int = 0
    controller_port: int = 0
    heap: str = "768m"
    extra_properties: dict[str, str] | None = None
    scram_users: dict[str, str] | None = None  # adds a SASL_PLAINTEXT (SCRAM-SHA-512) listener
    ssl_keystore: Path | None = None  # PEM with key and chain: adds an SSL listener
    sasl_port: int = 0
    ssl_port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    def start(self, timeout_s: float = 60.0) -> str:
        """Fetch, format (first time only) and start the broker; return its bootstrap address."""
        libs = fetch_jars()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.workdir / "server.properties").exists():
            self.port = self.port or free_port()
            self.controller_port = self.controller_port or free_port()
            self._write_config()
            scram = [
                arg
                for user, password in (self.scram_users or {}).items()
                for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]")
            ]
            self._java(
                libs,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(self.workdir / "server.properties"),
                *scram,
                wait=True,
            )
        else:
            self._read_ports()
        self._proc = self._java(libs, "kafka.Kafka", str(self.workdir / "server.properties"))
        (self.workdir / "broker.pid").write_text(str(self._proc.pid))
        self._wait_ready(timeout_s)
        return self.bootstrap

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM, wait for a clean shutdown, then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for tests of an unclean broker death."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.messages": "9223372036854775807",
            "message.max.bytes": str(8 * 1024 * 1024),  # hostile-input tests send 2 MB values
        }
        listeners = {"PLAINTEXT": self.port}
        if self.scram_users:
            self.sasl_port = self.sasl_port or free_port()
            listeners["SASL_PLAINTEXT"] = self.sasl_port
            props["sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
            props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        if self.ssl_keystore:
            self.ssl_port = self.ssl_port or free_port()
            listeners["SSL"] = self.ssl_port
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.location"] = str(self.ssl_keystore)
            props["ssl.client.auth"] = "none"
        addresses = ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items())
        props["listeners"] = f"{addresses},CONTROLLER://127.0.0.1:{self.controller_port}"
        props["advertised.listeners"] = addresses
        props["listener.security.protocol.map"] = ",".join(
            [f"{name}:{name}" for name in listeners] + ["CONTROLLER:PLAINTEXT"]
        )
        props.update(self.extra_properties or {})
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        (self.workdir / "server.properties").write_text(text)
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file))

    def _read_ports(self) -> None:
        for line in (self.workdir / "server.properties").read_text().splitlines():
            if line.startswith("listeners="):
                for listener in line.split("=", 1)[1].split(","):
                    name, _, port = listener.rpartition(":")
                    name = name.split("://")[0]
                    if name == "PLAINTEXT":
                        self.port = int(port)
                    elif name == "CONTROLLER":
                        self.controller_port = int(port)
                    elif name == "SASL_PLAINTEXT":
                        self.sasl_port = int(port)
                    elif name == "SSL":
                        self.ssl_port = int(port)

    def _java(
        self, libs: Path, main: str, *args: str, wait: bool = False
    ) -> subprocess.Popen[bytes]:
        cmd = [
            "java",
            f"-Xmx{self.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]
        out = open(self.workdir / "java.out", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        if wait and proc.wait() != 0:
            raise LocalKafkaError(f"{main} failed: {self._tail()}")
        return proc

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready means a metadata request succeeds, not that some time has passed."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise LocalKafkaError(f"the broker exited during start-up: {self._tail()}")
            if not _port_open(self.port):  # cheap check first: the client backs off on refusals
                time.sleep(0.1)
                continue
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
                try:
                    admin.describe_cluster()
                    return
                finally:
                    admin.close()
            except (KafkaError, OSError):
                time.sleep(0.2)
        self.stop()
        raise LocalKafkaError(f"the broker was not ready within {timeout_s:.0f}s: {self._tail()}")

    def _tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("java.out", "broker.log"):
            path = self.workdir / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text or "(no output)"


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _cluster_id() -> str:
    """A random cluster id; one that starts with '-' would be read as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def stop_pidfile(workdir: Path, grace_s: float = 20.0) -> bool:
    """Stop a broker started by another process (``start --detach``) from its pid file."""
    pidfile = workdir / "broker.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text())
    pidfile.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return True


def is_running(workdir: Path) -> bool:
    pidfile = workdir / "broker.pid"
    if not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.local.local_kafka",
        description="Run a local single-node Kafka broker.",
    )
    parser.add_argument("action", choices=["fetch", "start", "stop"])
    parser.add_argument("dir", type=Path, nargs="?", default=Path(".local/kafka"))
    args = parser.parse_args(argv)
    try:
        if args.action == "fetch":
            print(fetch_jars())
        elif args.action == "stop":
            print("stopped" if stop_pidfile(args.dir) else "not running")
        else:
            broker = LocalKafka(args.dir)
            if is_running(args.dir):
                broker._read_ports()
            else:
                started = time.monotonic()
                broker.start()
                print(f"# ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
            print(broker.bootstrap)
    except LocalKafkaError as exc:
        print(f"asset-sync: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
