"""The container image and the Kubernetes manifests (deploy/kubernetes): every manifest is valid for the
Kubernetes versions in use (kubernetes-validate's bundled schemas, strict, offline), the config they mount loads
and passes check-config as the gateway would read it, and image and Deployment agree on user, ports, probes and
paths."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from agentgw.cli import main

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
VERSIONS = ["1.31.0", "1.34.0", "1.37.0"]


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        out += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    return out


def of_kind(kind: str) -> dict[str, Any]:
    [doc] = [d for d in documents() if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_versions_in_use(version: str) -> None:
    kinds = []
    for doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any unknown or wrong field
        kinds.append(doc["kind"])
    assert sorted(kinds) == sorted(
        ["ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    )


def test_the_mounted_config_loads_and_passes_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Laid out as the pod sees /etc/agentgw: the ConfigMap's files, the image's policies, the Secret as env."""
    for name, text in of_kind("ConfigMap")["data"].items():
        (tmp_path / name).write_text(text)
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    for name, value in of_kind("Secret")["stringData"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AGENT_KEY_SHA256", "0" * 64)
    result = CliRunner().invoke(main, ["check-config", "--config", str(tmp_path / "agentgw.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:")


def test_the_image_and_the_deployment_agree_on_user_port_probes_and_config_path() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pod = of_kind("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user is not None and user.group(1) != "0"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user.group(1)
    assert re.search(r"^EXPOSE 8080$", dockerfile, re.M)
    assert container["ports"][0]["containerPort"] == 8080
    assert 'CMD ["serve", "--config", "/etc/agentgw/agentgw.yaml"]' in dockerfile
    assert container["args"] == ["serve", "--config", "/etc/agentgw/agentgw.yaml"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {
        "/etc/agentgw/agentgw.yaml",
        "/var/lib/agentgw",
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "/healthz" in dockerfile
    # streams in flight finish before the kubelet kills the pod
    graceful = re.search(r"graceful_shutdown_s: (\d+)", of_kind("ConfigMap")["data"]["agentgw.yaml"])
    assert graceful is not None and pod["terminationGracePeriodSeconds"] > int(graceful.group(1))
