"""The image and the Kubernetes deployment, checked offline: hadolint, kustomize builds,
strict Kubernetes schemas, CRD structure, promtool rules and unit tests, dashboard queries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from consumer import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kustomize" / "base"
OVERLAYS = ["keda", "hpa"]


def tool(name: str) -> str:
    """A tool the checks need; `make tools` installs the ones not from PyPI."""
    venv_bin = Path(sys.executable).parent
    path = shutil.which(
        name,
        path=os.pathsep.join(
            [str(venv_bin), str(ROOT / ".local" / "bin"), os.environ.get("PATH", "")]
        ),
    )
    assert path, f"{name} is not installed: run `make tools`"
    return path


def run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def build(overlay: str) -> list[dict[str, Any]]:
    out = run(tool("kustomize"), "build", str(DEPLOY / "kustomize" / "overlays" / overlay))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_dockerfile_passes_hadolint() -> None:
    run(tool("hadolint"), str(ROOT / "Dockerfile"))


def test_dockerfile_runs_as_non_root_with_the_service_as_entry_point() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text.rsplit("FROM ", 1)[1]
    assert final.startswith("python:3.11-slim")
    assert "USER 10001" in final
    assert 'ENTRYPOINT ["asset-sync"]' in final and '"run"' in final
    assert "apt-get" not in final and "gcc" not in final  # no build tools in the final image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_output_passes_strict_kubernetes_schemas(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / "out.yaml"
    rendered.write_text(yaml.safe_dump_all(build(overlay)))
    out = run(tool("kubernetes-validate"), "--strict", "--quiet", str(rendered))
    assert "ERROR" not in out


def test_strict_validation_can_fail(tmp_path: Path) -> None:
    docs = build("hpa")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProb"] = {}
    rendered = tmp_path / "bad.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    done = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0


def test_deployment_is_locked_down_and_probed() -> None:
    docs = build("keda")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(container["resources"])
    config = yaml.safe_load(
        next(
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("asset-sync-config")
        )["data"]["config.yaml"]
    )
    assert pod["terminationGracePeriodSeconds"] > config["dispatch"]["shutdown_grace_s"]
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "Namespace",
    }


def test_shipped_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.config import load_config

    secret = yaml.safe_load((BASE / "secret.example.yaml").read_text())["stringData"]
    config = load_config(BASE / "config.yaml", environ=secret)
    assert set(config.connections) == {"lexful", "webflow", "autodesk", "trelica", "enos"}


CRD_REQUIRED = {
    "ScaledObject": lambda spec: (
        spec["scaleTargetRef"]["name"] == "asset-sync"
        and spec["triggers"][0]["type"] == "kafka"
        and {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"}
        <= set(spec["triggers"][0]["metadata"])
    ),
    "ServiceMonitor": lambda spec: (
        spec["endpoints"][0]["port"] == "metrics" and spec["selector"]["matchLabels"]
    ),
    "PrometheusRule": lambda spec: all(
        {"alert", "expr", "labels", "annotations"} <= set(rule)
        for group in spec["groups"]
        for rule in group["rules"]
    ),
}


def test_custom_resources_are_well_formed() -> None:
    docs = build("keda")
    service = next(d for d in docs if d["kind"] == "Service")
    for doc in docs:
        if doc["kind"] in CRD_REQUIRED:
            assert doc["apiVersion"] in ("keda.sh/v1alpha1", "monitoring.coreos.com/v1")
            assert CRD_REQUIRED[doc["kind"]](doc["spec"]), doc["kind"]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())


def rules_file(tmp_path: Path) -> Path:
    rule = yaml.safe_load((BASE / "prometheusrule.yaml").read_text())
    path = tmp_path / "alerts.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_alert_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    run(tool("promtool"), "check", "rules", str(rules_file(tmp_path)))
    shutil.copy(DEPLOY / "prometheus" / "alerts.test.yaml", tmp_path)
    out = run(tool("promtool"), "test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert "SUCCESS" in out


def declared_metrics() -> set[str]:
    """Metric family names declared in consumer.metrics (counters without ``_total``)."""
    assert metrics.EVENTS_DELIVERED  # declared on import, into the default registry
    return {family.name for family in REGISTRY.collect()}


METRIC_NAME = re.compile(r"\b(asset_sync_[a-z_]+)")


def test_dashboard_queries_are_valid_promql_over_real_metrics(tmp_path: Path) -> None:
    dashboard = json.loads((BASE / "asset-sync-dashboard.json").read_text())
    known = declared_metrics()
    rules: list[dict[str, str]] = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")
            for name in METRIC_NAME.findall(expr):
                base = re.sub(r"_(bucket|count|sum|total)$", "", name)
                assert name in known or base in known, f"{panel['title']}: unknown {name}"
            rules.append({"record": f"dashboard:check_{len(rules)}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(tool("promtool"), "check", "rules", str(path))
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("delivered", "latency", "errors", "retries", "dead-letters", "lag", "in-flight"):
        assert topic in titles


def test_compose_file_matches_the_compose_spec() -> None:
    run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(DEPLOY / "compose.yaml"),
    )


def test_secret_example_holds_no_real_secret() -> None:
    values = yaml.safe_load((BASE / "secret.example.yaml").read_text())["stringData"].values()
    assert all(v in ("replace-me", "apigw.example.com") for v in values)


def test_ingest_manifests_pass_strict_kubernetes_schemas() -> None:
    out = run(
        tool("kubernetes-validate"), "--strict", "--quiet", str(DEPLOY / "ingest" / "ingest.yaml")
    )
    assert "ERROR" not in out
