"""Every shell block of the README runs somewhere: here, in CI, or (cluster) is built here.

Each block is preceded by ``<!-- readme: KIND -->``: ``run`` blocks are executed by this test
against the session's broker, ``demo`` runs ``make demo``, ``ci`` is ``make test`` itself
(``.ci/run``), and ``cluster`` blocks (kubectl, helm) name overlays that tests/unit/test_deploy.py
builds and validates, and install the chart with values this test renders and checks.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from tests.kafka_helpers import consume_all
from tests.unit.test_deploy import dangling_references, run, tool
from tests.unit.test_helm import KUBE_VERSION

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- readme: (\w+) -->\n```sh\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for k, body in BLOCK.findall((ROOT / "README.md").read_text()) if k == kind]


def test_every_shell_block_is_accounted_for() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.count("```sh") == len(BLOCK.findall(text))
    assert {k for k, _ in BLOCK.findall(text)} <= {"run", "demo", "ci", "cluster"}
    assert blocks("ci") == [
        "make test    # lint, type-check and run every test against a real local Kafka broker\n"
    ]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_cluster_blocks_apply_overlays_that_exist() -> None:
    for body in blocks("cluster"):
        for path in re.findall(r"apply -k (\S+)", body):
            assert (ROOT / path / "kustomization.yaml").is_file()


def test_cluster_blocks_install_the_chart_with_values_that_render() -> None:
    """Each ``helm install`` of the README, as ``helm template`` with the same arguments: the
    values pass the chart's schema and every object the output names exists or is a Secret the
    README creates by hand."""
    commands = [
        shlex.split(line, comments=True)
        for body in blocks("cluster")
        for line in body.replace("\\\n", " ").splitlines()
        if line.startswith("helm ")
    ]
    assert commands, "the README shows the Helm install"
    for command in commands:
        assert command[1] == "install", command
        out = run(tool("helm"), "template", *command[2:], *KUBE_VERSION, cwd=ROOT)
        docs = [doc for doc in yaml.safe_load_all(out) if doc]
        assert "Deployment" in {d["kind"] for d in docs}
        assert dangling_references(docs) == []


def test_run_blocks_work_against_the_broker(kafka_bootstrap: str, tmp_path: Path) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic("asset-changes", 1, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    before = len(consume_all(kafka_bootstrap, "asset-changes", expected=10**6, timeout_s=3))
    for name in ("examples", "schemas"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"kafka": {"bootstrap_servers": kafka_bootstrap, "topic": "asset-changes"}})
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    for body in blocks("run"):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, f"{body}\n{done.stdout}\n{done.stderr}"
    records = consume_all(kafka_bootstrap, "asset-changes", expected=before + 6, timeout_s=20)
    assert len(records) == before + 6  # 5 published + 1 from the console producer
    assert records[-1].key == b"webflow:580e63fc8c9a982ac9b8b745"


def test_demo_block_runs(tmp_path: Path) -> None:
    [body] = blocks("demo")
    assert body.split("#")[0].strip() == "make demo"
    env = {**os.environ, "DEMO_ARGS": f"--events 3 --quiet --workdir {tmp_path}"}
    if not (ROOT / ".venv" / "bin" / "asset-sync").exists():  # outside `make test`
        command = [sys.executable, "-m", "consumer", "demo", *env["DEMO_ARGS"].split()]
    else:
        command = ["make", "demo"]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "records handled" in done.stdout and "dead-letter records" in done.stdout
