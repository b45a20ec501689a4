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

from consumer.telemetry import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kustomize" / "base"
OVERLAYS = ["keda", "hpa", "keda-ingest", "hpa-ingest", "keda-sasl-tls"]
RENDERS = ["base", *OVERLAYS]  # every kustomization one can build and apply


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


def build(target: str) -> list[dict[str, Any]]:
    """``kustomize build`` of the base (``"base"``) or of an overlay, as documents."""
    path = BASE if target == "base" else DEPLOY / "kustomize" / "overlays" / target
    out = run(tool("kustomize"), "build", str(path))
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


def assert_strictly_valid(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """Every built-in kind against the Kubernetes schemas, unknown properties rejected."""
    rendered = tmp_path / "out.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    out = run(tool("kubernetes-validate"), "--strict", "--quiet", str(rendered))
    assert "ERROR" not in out


@pytest.mark.parametrize("target", RENDERS)
def test_kustomize_output_passes_strict_kubernetes_schemas(target: str, tmp_path: Path) -> None:
    assert_strictly_valid(build(target), tmp_path)


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


def assert_locked_down_and_probed(docs: list[dict[str, Any]]) -> None:
    """The consumer runs non-root, read-only, without privileges, probed, with limits, and is
    given longer than its shutdown grace to stop."""
    deployment = next(
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "consumer"
    )
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


def test_deployment_is_locked_down_and_probed() -> None:
    docs = build("keda")
    assert_locked_down_and_probed(docs)
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


# The authentication parameters of KEDA's kafka scaler (keda.sh/docs/latest/scalers/apache-kafka).
KEDA_KAFKA_AUTH = {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}

CRD_REQUIRED = {
    "ScaledObject": lambda spec: (
        spec["scaleTargetRef"]["name"] == "asset-sync"
        and spec["triggers"][0]["type"] == "kafka"
        and {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"}
        <= set(spec["triggers"][0]["metadata"])
        and all(isinstance(v, str) for v in spec["triggers"][0]["metadata"].values())
        and set(spec["triggers"][0].get("authenticationRef", {"name": ""})) == {"name"}
    ),
    "TriggerAuthentication": lambda spec: (
        bool(spec["secretTargetRef"])
        and all(
            set(ref) == {"parameter", "name", "key"} and ref["parameter"] in KEDA_KAFKA_AUTH
            for ref in spec["secretTargetRef"]
        )
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


def assert_custom_resources_well_formed(docs: list[dict[str, Any]]) -> None:
    """What KEDA and the Prometheus Operator need of their objects (no schema is at hand)."""
    for doc in docs:
        if doc["apiVersion"].rpartition("/")[0] in ("keda.sh", "monitoring.coreos.com"):
            assert doc["apiVersion"] in ("keda.sh/v1alpha1", "monitoring.coreos.com/v1")
            assert doc["kind"] in CRD_REQUIRED, f"teach CRD_REQUIRED {doc['kind']}"
            assert CRD_REQUIRED[doc["kind"]](doc["spec"]), doc["kind"]


@pytest.mark.parametrize("target", ["keda", "keda-sasl-tls"])
def test_custom_resources_are_well_formed(target: str) -> None:
    docs = build(target)
    assert_custom_resources_well_formed(docs)
    service = next(d for d in docs if d["kind"] == "Service")
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())


def test_keda_authenticates_to_sasl_tls_clusters_with_the_component() -> None:
    """The keda-sasl-tls overlay: the trigger names a TriggerAuthentication that reads SASL
    and TLS settings from one Secret; the keda overlay alone has no authentication."""
    plain = next(d for d in build("keda") if d["kind"] == "ScaledObject")
    assert "authenticationRef" not in plain["spec"]["triggers"][0]
    docs = build("keda-sasl-tls")
    [scaled] = [d for d in docs if d["kind"] == "ScaledObject"]
    [auth] = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert scaled["spec"]["triggers"][0]["authenticationRef"] == {"name": auth["metadata"]["name"]}
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"sasl", "username", "password", "tls", "ca"}
    assert {ref["name"] for ref in refs.values()} == {"asset-sync-kafka"}


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
    """Metric family names declared in consumer.telemetry.metrics (counters without ``_total``)."""
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


# References between objects. The API server accepts a Deployment whose ConfigMap does not
# exist; its pods then hang in ContainerCreating. So every name a manifest refers to must be an
# object of the same rendered output (names hashed by a generator included), or one the
# operator creates outside the tree, listed here with where that is said.
Key = tuple[str, str, str]  # kind, namespace, name

_CREDENTIALS = yaml.safe_load((BASE / "secret.example.yaml").read_text())["metadata"]
EXTERNAL: set[Key] = {
    # README "Deploy to Kubernetes": `kubectl create secret generic asset-sync-credentials`.
    ("Secret", _CREDENTIALS["namespace"], _CREDENTIALS["name"]),
    # The webhook ingress's TLS certificate, from cert-manager or the operator
    # (components/ingest/kustomization.yaml).
    ("Secret", "asset-sync", "asset-sync-ingest-tls"),
    # KEDA's SASL/TLS settings for the kafka trigger (components/keda-sasl-tls/kustomization.yaml).
    ("Secret", "asset-sync", "asset-sync-kafka"),
}


def _pod_template(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod (metadata and spec) a workload runs, or None for other kinds."""
    if doc["kind"] == "Pod":
        return doc
    spec: dict[str, Any] = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return template if isinstance(template, dict) and "spec" in template else None


def _pod_refs(pod: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, where) of every ConfigMap, Secret and ServiceAccount a pod spec names."""
    refs: list[tuple[str, str, str]] = []
    for volume in pod.get("volumes", []):
        where = f"volume {volume['name']}"
        if "configMap" in volume:
            refs.append(("ConfigMap", volume["configMap"]["name"], where))
        if "secret" in volume:
            refs.append(("Secret", volume["secret"]["secretName"], where))
        for source in (volume.get("projected") or {}).get("sources", []):
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if key in source:
                    refs.append((kind, source[key]["name"], where))
    containers = [
        *pod.get("initContainers", []),
        *pod.get("containers", []),
        *pod.get("ephemeralContainers", []),
    ]
    for container in containers:
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    refs.append((kind, source[key]["name"], f"{container['name']} envFrom"))
        for var in container.get("env", []):
            value_from = var.get("valueFrom") or {}
            where = f"{container['name']} env {var['name']}"
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in value_from:
                    refs.append((kind, value_from[key]["name"], where))
    for secret in pod.get("imagePullSecrets", []):
        refs.append(("Secret", secret["name"], "imagePullSecrets"))
    account = pod.get("serviceAccountName") or pod.get("serviceAccount")
    if account and account != "default":  # every namespace has "default"
        refs.append(("ServiceAccount", account, "serviceAccountName"))
    return refs


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert "matchExpressions" not in selector, "teach the reference check matchExpressions"
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def _ingress_backends(spec: dict[str, Any]) -> list[dict[str, Any]]:
    backends = [spec.get("defaultBackend") or {}] + [
        path["backend"]
        for rule in spec.get("rules", [])
        for path in (rule.get("http") or {}).get("paths", [])
    ]
    return [backend["service"] for backend in backends if "service" in backend]


def _named_refs(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, where) of every object, in its own namespace, that ``doc`` names."""
    kind, spec = doc["kind"], doc.get("spec") or {}
    template = _pod_template(doc)
    refs = _pod_refs(template["spec"]) if template else []
    if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        target = spec["scaleTargetRef"]
        refs.append((target.get("kind", "Deployment"), target["name"], "scaleTargetRef"))
    for trigger in spec.get("triggers", []) if kind == "ScaledObject" else []:
        if auth := trigger.get("authenticationRef"):
            assert auth.get("kind", "TriggerAuthentication") == "TriggerAuthentication", (
                "teach the reference check ClusterTriggerAuthentication"
            )
            refs.append(("TriggerAuthentication", auth["name"], "authenticationRef"))
    if kind == "TriggerAuthentication":
        refs += [("Secret", ref["name"], "secretTargetRef") for ref in spec["secretTargetRef"]]
    if kind == "Ingress":
        refs += [("Service", backend["name"], "backend") for backend in _ingress_backends(spec)]
        refs += [("Secret", tls["secretName"], "tls") for tls in spec.get("tls", [])]
    return refs


def _ports(service: dict[str, Any]) -> set[str | int]:
    ports = service["spec"].get("ports", [])
    return {p["name"] for p in ports if "name" in p} | {p["port"] for p in ports}


def dangling_references(docs: list[dict[str, Any]], external: set[Key] = EXTERNAL) -> list[str]:
    """What the objects of one rendered output refer to but it does not contain, nor
    ``external``: objects named (volumes, envFrom, env, scale targets, KEDA authentication and
    its Secrets, Ingress backends and TLS), ports named, and Services, pods and ports chosen by
    a label selector."""
    objects: dict[Key, dict[str, Any]] = {}
    for doc in docs:
        meta = doc["metadata"]
        objects[(doc["kind"], meta.get("namespace", "default"), meta["name"])] = doc
    pods = [
        (k[1], t.get("metadata", {}).get("labels", {}))
        for k, d in objects.items()
        if (t := _pod_template(d))
    ]
    problems: list[str] = []
    for (kind, namespace, name), doc in objects.items():
        spec = doc.get("spec") or {}
        for ref_kind, ref_name, where in _named_refs(doc):
            ref = (ref_kind, namespace, ref_name)
            if ref not in objects and ref not in external:
                problems.append(f"{kind}/{name} ({where}) refers to missing {ref_kind}/{ref_name}")
        for backend in _ingress_backends(spec) if kind == "Ingress" else []:
            service = objects.get(("Service", namespace, backend["name"]))
            port = backend["port"].get("name") or backend["port"].get("number")
            if service and port not in _ports(service):
                problems.append(f"{kind}/{name}: Service {backend['name']} has no port {port}")
        if kind == "ServiceMonitor":
            scope = spec.get("namespaceSelector") or {}
            assert not scope.get("any"), "teach the reference check namespaceSelector.any"
            selected = [
                service
                for (k, ns, _), service in objects.items()
                if k == "Service"
                and ns in scope.get("matchNames", [namespace])
                and _selects(spec["selector"], service["metadata"].get("labels", {}))
            ]
            ports = {port for service in selected for port in _ports(service)}
            if not selected:
                problems.append(f"{kind}/{name} selects no Service")
            for endpoint in spec["endpoints"] if selected else []:
                if endpoint["port"] not in ports:
                    problems.append(
                        f"{kind}/{name}: no selected Service has port {endpoint['port']}"
                    )
        selector = spec.get("selector") if kind in ("Service", "PodDisruptionBudget") else None
        if selector and not any(ns == namespace and _selects(selector, lbl) for ns, lbl in pods):
            problems.append(f"{kind}/{name} selects no pod template")
    return problems


@pytest.mark.parametrize("target", RENDERS)
def test_every_reference_resolves_within_the_rendered_output(target: str) -> None:
    assert dangling_references(build(target)) == []


def test_reference_check_can_fail() -> None:
    """The unhashed name of a generated ConfigMap, as a manifest beside the tree would write it."""
    docs = build("keda")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "asset-sync-config"
    next(d for d in docs if d["kind"] == "ScaledObject")["spec"]["scaleTargetRef"]["name"] = "x"
    assert sorted(dangling_references(docs)) == [
        "Deployment/asset-sync (volume config) refers to missing ConfigMap/asset-sync-config",
        "ScaledObject/asset-sync (scaleTargetRef) refers to missing Deployment/x",
    ]


def test_reference_check_follows_keda_authentication() -> None:
    docs = build("keda-sasl-tls")
    assert dangling_references(docs) == []
    without_secret = EXTERNAL - {("Secret", "asset-sync", "asset-sync-kafka")}
    missing = "TriggerAuthentication/asset-sync-kafka (secretTargetRef) refers to missing Secret"
    assert dangling_references(docs, without_secret) == [f"{missing}/asset-sync-kafka"] * 5
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    scaled["spec"]["triggers"][0]["authenticationRef"]["name"] = "sasl"
    assert dangling_references(docs) == [
        "ScaledObject/asset-sync (authenticationRef) refers to missing TriggerAuthentication/sasl"
    ]
