"""docs/ray's manifests parse, and the inf2 RayService has what a deployment on KubeRay needs (none of it has
run on a cluster: these tests check the text, not a deployment)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

RAY = Path(__file__).resolve().parent.parent / "docs" / "ray"


def documents(name: str) -> dict[str, dict[str, Any]]:
    """The manifests of one file, by kind."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all((RAY / name).read_text()) if doc}


@pytest.mark.parametrize("path", sorted(RAY.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_parses(path: Path) -> None:
    assert [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_rayservice_can_deploy_on_inf2() -> None:
    manifests = documents("rayservice-inf2.yaml")
    spec = manifests["RayService"]["spec"]
    assert "not run" in (RAY / "rayservice-inf2.yaml").read_text().lower()
    # The operator reaches the dashboard from outside the head pod; clients do not reach the head at all.
    head = spec["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["serviceType"] == "ClusterIP"
    # Model loads: 60-120 artifacts per replica before it is healthy.
    assert (
        spec["serviceUnhealthySecondThreshold"] >= 900 and spec["deploymentUnhealthySecondThreshold"] >= 900
    )
    serve = yaml.safe_load(spec["serveConfigV2"])["applications"][0]
    assert serve["args"]["target"] == "neuron" and serve["args"]["stack"] == "neuron"

    (workers,) = spec["rayClusterConfig"]["workerGroupSpecs"]
    assert json.loads(yaml.safe_load(workers["rayStartParams"]["resources"])) == {"neuron_cores": 24}
    pod = workers["template"]["spec"]
    assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    (container,) = pod["containers"]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["resources"]["limits"]["aws.amazon.com/neuron"] == "12"  # 12 devices: 24 NeuronCores
    shm = {v["name"]: v for v in pod["volumes"]}["dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_network_policy_admits_the_dashboard_from_the_operator_only() -> None:
    manifests = documents("rayservice-inf2.yaml")
    policy = manifests["NetworkPolicy"]["spec"]
    head_labels = manifests["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]
    selected = policy["podSelector"]["matchLabels"]
    assert selected["ray.io/node-type"] == "head"
    assert {k: v for k, v in selected.items() if k != "ray.io/node-type"}.items() <= head_labels[
        "labels"
    ].items()
    assert policy["policyTypes"] == ["Ingress"]
    dashboard = [
        rule for rule in policy["ingress"] if {"protocol": "TCP", "port": 8265} in rule.get("ports", [])
    ]
    assert len(dashboard) == 1 and [*dashboard[0]["from"][0]] == ["namespaceSelector"]
    open_rules = [rule for rule in policy["ingress"] if "from" not in rule]
    assert all(rule["ports"] == [{"protocol": "TCP", "port": 8000}] for rule in open_rules)
