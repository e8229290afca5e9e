"""The Kubernetes manifests: valid for the API server and the Prometheus Operator, generated parts in step.

Core kinds are checked against the Kubernetes OpenAPI schemas that kubernetes-validate ships; the
ServiceMonitor and PrometheusRule against the operator's published CRDs (tests/data), read offline,
with unknown fields refused (the API server would drop them silently). The overlays are rendered with
kustomize: the version the test command installs, else whichever is installed.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.kustomize import kustomize
from tests.support.paths import DATA, ROOT, RULE_FILES

KUBERNETES = ROOT / "deploy" / "kubernetes"
CRDS = DATA / "prometheus-operator-crds"
#: The oldest Kubernetes still commonly run, and the newest the schemas know.
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version() + ".0")


def load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def base_documents() -> list[dict[str, Any]]:
    """The base's resources as listed in its kustomization, without kustomize."""
    kustomization = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    return [doc for name in kustomization["resources"] for doc in documents(KUBERNETES / "base" / name)]


def closed(schema: Any) -> Any:
    """A CRD schema that refuses fields it does not declare, as a strict apply would."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = documents(path)[0]
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            schema = closed(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server
            schemas[(api_version, crd["spec"]["names"]["kind"])] = schema
    return schemas


def validate(doc: dict[str, Any]) -> None:
    custom = crd_schemas().get((doc["apiVersion"], doc["kind"]))
    if custom is not None:
        # Not checked against the metaschema: the CRDs' patterns are Go's (RE2), e.g. a mid-pattern (?i).
        jsonschema.Draft7Validator(custom).validate(doc)
        return
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_the_generated_manifests_are_what_the_generator_writes_now() -> None:
    build = load_module(KUBERNETES / "build.py", "kubernetes_build")

    for path, text in build.outputs().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} drifted: run python deploy/kubernetes/build.py"


def test_the_prometheusrule_holds_exactly_the_groups_of_both_rules_files() -> None:
    (rule,) = documents(KUBERNETES / "base" / "prometheusrule.yaml")
    groups = [group for path in RULE_FILES for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]]

    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == groups


def test_a_prometheusrule_with_a_deployments_links_differs_only_in_the_links() -> None:
    rules = load_module(ROOT / "alerting-rules" / "build.py", "alerting_rules_build")
    default = yaml.safe_load(rules.prometheus_rule())
    linked = yaml.safe_load(rules.prometheus_rule("https://runbooks.example.com/calabi", "https://grafana.example.com"))

    alerts = [r for g in linked["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert {r["annotations"]["runbook_url"].split("#")[0] for r in alerts} == {"https://runbooks.example.com/calabi"}
    assert all(r["annotations"]["dashboard_url"].startswith("https://grafana.example.com/d/") for r in alerts)
    validate(linked)
    for rule in (r for g in linked["spec"]["groups"] for r in g["rules"]):
        rule.get("annotations", {}).pop("runbook_url", None)
        rule.get("annotations", {}).pop("dashboard_url", None)
    for rule in (r for g in default["spec"]["groups"] for r in g["rules"]):
        rule.get("annotations", {}).pop("runbook_url", None)
        rule.get("annotations", {}).pop("dashboard_url", None)
    assert linked["spec"] == default["spec"]


def test_every_base_manifest_validates_against_the_kubernetes_and_operator_schemas() -> None:
    docs = base_documents()

    assert sorted(doc["kind"] for doc in docs) == [
        "ConfigMap", "ConfigMap", "ConfigMap", "Deployment", "PersistentVolumeClaim", "PrometheusRule",
        "Service", "ServiceAccount", "ServiceMonitor",
    ]  # fmt: skip
    for doc in docs:
        validate(doc)


def test_a_field_the_schemas_do_not_know_is_refused() -> None:
    monitor = by_kind(base_documents(), "ServiceMonitor")[0]
    deployment = by_kind(base_documents(), "Deployment")[0]
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}

    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate(monitor)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


@pytest.mark.parametrize("overlay", ["base", "overlays/postgres"])
def test_the_rendered_manifests_validate(overlay: str) -> None:
    for doc in kustomize(KUBERNETES / overlay):
        validate(doc)


def test_the_exporter_runs_non_root_read_only_with_probes_resources_and_secret_tokens() -> None:
    deployment = by_kind(base_documents(), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item for item in container["env"]}

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["enableServiceLinks"] is False  # the exporter ignores them too (tests/integration/test_environment.py)
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (10001, 10001)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/var/lib/calabi-exporter", "/tmp"}
    assert env["CALABI_INGEST_TOKENS"]["valueFrom"]["secretKeyRef"] == {
        "name": "calabi-exporter",
        "key": "ingest-token",
    }
    assert env["CALABI_SERVICE_INSTANCE_ID"]["value"] == "calabi-exporter"  # one Loki stream across restarts
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not by_kind(base_documents(), "Secret")  # no token ships; docs/deploy.md creates the Secret


def test_prometheus_scrapes_the_service_as_the_job_the_alerts_and_dashboards_expect() -> None:
    docs = base_documents()
    service, monitor = by_kind(docs, "Service")[0], by_kind(docs, "ServiceMonitor")[0]
    pod_labels = by_kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    rules = RULE_FILES[0].read_text(encoding="utf-8")

    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "http"
    # The operator names the job after the Service.
    assert f'up{{job="{service["metadata"]["name"]}"}} == 0' in rules


def test_every_dashboard_is_a_configmap_for_grafanas_sidecar() -> None:
    configmaps = by_kind(base_documents(), "ConfigMap")
    files = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "dashboards").glob("*.json")}

    assert {name: text for cm in configmaps for name, text in cm["data"].items()} == files
    for configmap in configmaps:
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        (text,) = configmap["data"].values()
        assert configmap["metadata"]["name"] == f"grafana-dashboard-{json.loads(text)['uid']}"


def test_the_postgres_overlay_runs_two_replicas_on_the_database_with_a_disruption_budget() -> None:
    docs = kustomize(KUBERNETES / "overlays" / "postgres")
    deployment = by_kind(docs, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    env = {item["name"]: item for item in pod["containers"][0]["env"]}
    budget = by_kind(docs, "PodDisruptionBudget")[0]

    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env["CALABI_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "calabi-exporter", "key": "database-url"}
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert next(v for v in pod["volumes"] if v["name"] == "data") == {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def readme_overlay() -> str:
    """The ``my-calabi/kustomization.yaml`` of the Kubernetes section of docs/deploy.md."""
    readme = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Kubernetes") :]
    after = section[section.index("`my-calabi/kustomization.yaml`") :]
    block = after[after.index("```yaml\n") + len("```yaml\n") : after.index("```\n", after.index("```yaml\n") + 8)]
    return textwrap.dedent(block).rstrip() + "\n"  # the block is indented under its list item


def test_the_readmes_overlay_renders_to_valid_manifests_with_the_users_settings(tmp_path: Path) -> None:
    (tmp_path / "calabi-connect-exporter").symlink_to(ROOT, target_is_directory=True)
    overlay = tmp_path / "my-calabi"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(readme_overlay(), encoding="utf-8")
    rules = load_module(ROOT / "alerting-rules" / "build.py", "alerting_rules_build")
    runbook, grafana = "https://wiki.example.com/ops/calabi-runbook", "https://grafana.example.com"
    (overlay / "prometheusrule.yaml").write_text(rules.prometheus_rule(runbook, grafana), encoding="utf-8")

    docs = kustomize(overlay)

    for doc in docs:
        validate(doc)
        assert doc["metadata"]["namespace"] == "calabi"
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["image"] == "registry.example.com/calabi-connect-exporter:0.1.0"
    assert env["CALABI_OTLP_LOGS_ENDPOINT"] == "http://loki-gateway.loki.svc/otlp/v1/logs"
    assert len(env) == len(container["env"]) == 6
    alerts = [r for g in by_kind(docs, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) == 23  # 20 alerts, CalabiSyncErrorBudgetBurn with a rule per window pair
    assert all(r["annotations"]["runbook_url"] == f"{runbook}#{r['alert'].lower()}" for r in alerts)
    assert all(r["annotations"]["dashboard_url"].startswith(f"{grafana}/d/") for r in alerts)
