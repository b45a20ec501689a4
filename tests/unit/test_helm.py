"""The Helm chart (deploy/helm/asset-sync), checked offline like the Kustomize tree: helm lint,
helm template with the default values and with every switch on, the same strict Kubernetes
schemas, CRD structure and reference check, and that its alerts and dashboard are the
Kustomize base's files."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import subprocess
import tarfile
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any

import pytest
import yaml

from consumer import config as service_config
from tests.unit.test_deploy import (
    BASE,
    DEPLOY,
    ROOT,
    Key,
    assert_custom_resources_well_formed,
    assert_locked_down_and_probed,
    assert_strictly_valid,
    dangling_references,
    run,
    tool,
)

CHART = DEPLOY / "helm" / "asset-sync"
FULL = ROOT / "tests" / "unit" / "helm-values-full.yaml"
VALUES = {"default": [], "full": ["--values", str(FULL)]}
# What the full values name but leave to the operator (see that file).
FULL_EXTERNAL: set[Key] = {
    ("Secret", "asset-sync", "asset-sync-credentials"),
    ("Secret", "asset-sync", "asset-sync-kafka"),
    ("Secret", "asset-sync", "asset-sync-ingest-tls"),
    ("Secret", "asset-sync", "registry-example-com"),
}
# The Kubernetes version the strict schemas are for, also given to helm's capabilities.
KUBE_VERSION = [
    "--kube-version",
    str(importlib.import_module("kubernetes_validate.utils").latest_version()),  # untyped
]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, check=False)


def template_args(*args: str) -> list[str]:
    return ["template", "asset-sync", str(CHART), "--namespace", "asset-sync", *KUBE_VERSION, *args]


def render(*args: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart as release asset-sync in namespace asset-sync."""
    out = run(tool("helm"), *template_args(*args))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refusal(*args: str) -> str:
    """The error of a ``helm template`` that must fail."""
    done = helm(*template_args(*args))
    assert done.returncode != 0, done.stdout
    return done.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str = "asset-sync") -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("values", VALUES)
def test_helm_lint_passes_strictly(values: str) -> None:
    run(tool("helm"), "lint", "--strict", str(CHART), *KUBE_VERSION, *VALUES[values])


@pytest.mark.parametrize("values", VALUES)
def test_helm_output_passes_strict_kubernetes_schemas(values: str, tmp_path: Path) -> None:
    docs = render(*VALUES[values])
    assert_strictly_valid(docs, tmp_path)
    assert_custom_resources_well_formed(docs)
    assert_locked_down_and_probed(docs)


def test_every_reference_resolves_within_the_helm_output() -> None:
    assert dangling_references(render(), external=set()) == []
    assert dangling_references(render(*VALUES["full"]), external=FULL_EXTERNAL) == []


def test_default_values_install_on_any_cluster() -> None:
    """No CRD is needed, the chart makes the Secret the pods read, and the replica count is
    the chart's."""
    docs = render()
    assert {d["kind"] for d in docs} == {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "PodDisruptionBudget",
    }
    secret = one(docs, "Secret", "asset-sync-credentials")
    assert "stringData" not in secret and "data" not in secret
    assert one(docs, "Deployment")["spec"]["replicas"] == 2


def test_full_values_switch_everything_on() -> None:
    docs = render(*VALUES["full"])
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ConfigMap", "asset-sync-config"),
        ("ConfigMap", "asset-sync-dashboard"),
        ("Deployment", "asset-sync"),
        ("Deployment", "asset-sync-ingest"),
        ("Ingress", "asset-sync-ingest"),
        ("PodDisruptionBudget", "asset-sync"),
        ("PrometheusRule", "asset-sync"),
        ("ScaledObject", "asset-sync"),
        ("Service", "asset-sync-ingest"),
        ("Service", "asset-sync-metrics"),
        ("ServiceAccount", "asset-sync"),
        ("ServiceMonitor", "asset-sync"),
        ("TriggerAuthentication", "asset-sync-kafka"),
    ]  # no Secret: existingSecret
    consumer = one(docs, "Deployment")["spec"]
    assert "replicas" not in consumer  # KEDA owns the count
    for name in ("asset-sync", "asset-sync-ingest"):
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["envFrom"] == [{"secretRef": {"name": "asset-sync-credentials"}}]
        assert {"name": "kafka", "mountPath": "/var/run/secrets/kafka", "readOnly": True} in (
            container["volumeMounts"]
        )
        assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == 9000
    ingest_ports = one(docs, "Deployment", "asset-sync-ingest")["spec"]["template"]["spec"]
    assert {"name": "http", "containerPort": 8081, "protocol": "TCP"} in (
        ingest_ports["containers"][0]["ports"]
    )
    config = yaml.safe_load(one(docs, "ConfigMap", "asset-sync-config")["data"]["config.yaml"])
    assert config["kafka"]["security_protocol"] == "SASL_SSL"
    assert config["connections"]["enos"]["default"]["app_key"] == "${ENOS_APP_KEY}"  # merged


def test_keda_trigger_authenticates_with_sasl_and_tls() -> None:
    """The trigger reads the cluster, group and topic from config.kafka and authenticates
    with every SASL and TLS parameter, each from its key of one Secret."""
    docs = render(*VALUES["full"])
    [trigger] = one(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"] == {
        "bootstrapServers": "kafka.example.com:9093",
        "consumerGroup": "asset-sync",
        "topic": "asset-changes",
        "lagThreshold": "500",
        "offsetResetPolicy": "latest",
        "allowIdleConsumers": "false",
    }
    assert trigger["authenticationRef"] == {"name": "asset-sync-kafka"}
    refs = one(docs, "TriggerAuthentication", "asset-sync-kafka")["spec"]["secretTargetRef"]
    assert {(r["parameter"], r["name"], r["key"]) for r in refs} == {
        (p, "asset-sync-kafka", p)
        for p in ("sasl", "username", "password", "tls", "ca", "cert", "key")
    }


def test_hpa_instead_of_keda() -> None:
    docs = render("--set", "autoscaling.kind=hpa", "--set", "autoscaling.maxReplicas=4")
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "asset-sync"
    assert hpa["spec"]["maxReplicas"] == 4
    assert "ScaledObject" not in {d["kind"] for d in docs}
    assert "replicas" not in one(docs, "Deployment")["spec"]
    assert dangling_references(docs, external=set()) == []


def test_chart_values_make_the_secret() -> None:
    docs = render("--set", "secret.stringData.LEXFUL_TOKEN=t0ken")
    assert one(docs, "Secret", "asset-sync-credentials")["stringData"] == {"LEXFUL_TOKEN": "t0ken"}
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["checksum/secret"]
        != (
            one(render(), "Deployment")["spec"]["template"]["metadata"]["annotations"][
                "checksum/secret"
            ]
        )
    )  # new credentials roll the pods


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicas=3"], "additional properties 'replicas' not allowed"),
        (["--set", "autoscaling.kind=both"], "value must be one of 'none', 'hpa', 'keda'"),
        (["--set", "config.kafka.sasl_mechansim=PLAIN"], "'sasl_mechansim' not allowed"),
        (["--set", "config.metrics.port=http"], "/config/metrics/port"),
        (["--set", "keda.auth.secretKeys.saslMechanism=x"], "'saslMechanism' not allowed"),
        (
            ["--set", "existingSecret=mine", "--set", "secret.stringData.A=b"],
            "give existingSecret or secret.stringData, not both",
        ),
        (
            ["--set", "terminationGracePeriodSeconds=20"],
            "terminationGracePeriodSeconds (20) must exceed config.dispatch.shutdown_grace_s (20)",
        ),
        (["--set", "keda.auth.enabled=true"], "keda.auth.enabled needs autoscaling.kind: keda"),
        (
            ["--set", "autoscaling.kind=keda", "--set", "keda.auth.enabled=true"],
            "keda.auth.secretName is required when keda.auth.enabled",
        ),
        (
            [*VALUES["full"], "--set", "keda.auth.secretKeys.key="],
            "keda.auth.secretKeys: give cert and key together, or neither",
        ),
        (
            ["--set", "ingest.enabled=true", "--set", "ingest.ingress.host="],
            "ingest.ingress.host is required",
        ),
    ],
)
def test_bad_values_are_refused_with_the_key(args: list[str], message: str) -> None:
    assert message in refusal(*args)


# One source of truth: the chart's alert rules and dashboard are the Kustomize base's files,
# linked into the chart (helm template, lint and package read through the links).
SHARED = ["prometheusrule.yaml", "asset-sync-dashboard.json"]


@pytest.mark.parametrize("name", SHARED)
def test_chart_links_to_the_kustomize_file(name: str) -> None:
    link = CHART / "files" / name
    assert link.is_symlink(), f"{link} must link to {BASE / name}, not copy it"
    assert link.resolve() == (BASE / name).resolve()


def test_chart_renders_the_kustomize_alerts_and_dashboard() -> None:
    docs = render(*VALUES["full"])
    rules = yaml.safe_load((BASE / "prometheusrule.yaml").read_text())["spec"]
    assert one(docs, "PrometheusRule")["spec"] == rules
    dashboard = one(docs, "ConfigMap", "asset-sync-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((BASE / "asset-sync-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["asset-sync.json"]) == shipped


def test_packaged_chart_holds_the_files_not_links(tmp_path: Path) -> None:
    run(tool("helm"), "package", str(CHART), "--destination", str(tmp_path))
    [package] = tmp_path.glob("asset-sync-*.tgz")
    with tarfile.open(package) as archive:
        for name in SHARED:
            member = archive.getmember(f"asset-sync/files/{name}")
            assert member.isfile()
            content = archive.extractfile(member)
            assert content is not None and content.read() == (BASE / name).read_bytes()


def test_default_config_is_the_kustomize_config() -> None:
    rendered = one(render(), "ConfigMap", "asset-sync-config")["data"]["config.yaml"]
    assert yaml.safe_load(rendered) == yaml.safe_load((BASE / "config.yaml").read_text())


def _json_type(hint: Any) -> str | list[str]:
    if isinstance(hint, UnionType):
        args = typing.get_args(hint)
        return [typing.cast(str, _json_type(a)) for a in args if a is not type(None)] + ["null"]
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    return "string" if hint is service_config.Secret else names[hint]


# Every section of the service's configuration (a dataclass field of Config): a section
# added there and not to the chart's schema fails here.
SECTIONS = {
    f.name: hint
    for f in fields(service_config.Config)
    if is_dataclass(hint := typing.get_type_hints(service_config.Config)[f.name])
}


def test_values_schema_knows_every_config_key_of_the_service() -> None:
    """values.schema.json refuses unknown config keys, so it must list exactly the keys the
    service reads (and <secret>_file), with their types: a key added to consumer/config.py
    and not here could not be set through the chart."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert config["additionalProperties"] is False
    assert set(config["properties"]) == {*SECTIONS, "connections", "log_level"}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        properties = config["properties"][section]["properties"]
        assert config["properties"][section]["additionalProperties"] is False
        expected = {f.name for f in fields(cls)}
        expected |= {f"{name}_file" for name in expected if name in service_config.SECRET_KEYS}
        assert set(properties) == expected, section
        for field in fields(cls):
            declared = properties[field.name].get("type")
            if declared is not None:  # else an enum of the allowed values
                assert declared == _json_type(hints[field.name]), f"{section}.{field.name}"


def test_chart_app_version_is_the_package_version() -> None:
    """The image tag the chart deploys by default is the release of this code."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == importlib.metadata.version("asset-sync")
