"""The chart against the real API server: lint, template validated server-side, install, least privilege."""

from __future__ import annotations

import json

import pytest
import yaml
from e2e_harness import RELEASE, RELEASE_NS, REPO, wait_for

pytestmark = pytest.mark.e2e
CHART = str(REPO / "charts" / "burstpilot")
VARIANTS = {
    "defaults": [],
    "namespaced, secrets, monitor, replay job": [
        "--set",
        "watchNamespaces={serving,batch}",
        "--set",
        "rbac.metricsSecrets.serving={prometheus-token}",
        "--set",
        "replayJob.enabled=true,replayJob.workloadConfigMap=workload,replayJob.target=http://llm:8000",
    ],
}


def test_helm_lint_is_clean(cluster):
    res = cluster.helm("lint", "--strict", CHART)
    assert "0 chart(s) failed" in res.stdout
    assert "[WARNING]" not in res.stdout and "[ERROR]" not in res.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_template_output_is_valid_for_the_api_server(cluster, chart_installed, variant):
    res = cluster.helm("template", "probe", CHART, "--namespace", RELEASE_NS, *VARIANTS[variant])
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    for ns in {d["metadata"].get("namespace") for d in docs} - {None}:
        cluster.namespace(ns)
    checked = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=res.stdout)
    assert checked.stdout.count("(server dry run)") == len(docs)
    kinds = {d["kind"] for d in docs}
    if variant == "defaults":
        assert {"ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount", "Service"} <= kinds
        assert "Job" not in kinds and "ServiceMonitor" not in kinds
    else:
        assert "ClusterRole" not in kinds and {"Role", "RoleBinding", "Job"} <= kinds
        job = next(d for d in docs if d["kind"] == "Job")
        assert job["spec"]["completionMode"] == "Indexed"
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--shard=$(SHARD)/4" in args and args[0] == "replay"


def test_values_schema_rejects_bad_values(cluster):
    res = cluster.helm("template", "bad", CHART, "--set", "operator.metricsPort=80", check=False)
    assert res.returncode != 0 and "metricsPort" in res.stderr


def test_installed_operator_pod_is_hardened(cluster, chart_installed):
    dep = cluster.get_json("deployment", "-n", RELEASE_NS, "-l", f"app.kubernetes.io/instance={RELEASE}")[
        "items"
    ][0]
    pod = dep["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["containers"][0]["resources"]["limits"]
    assert dep["status"].get("readyReplicas") == 1  # kwok runs it as Ready on a fake node


@pytest.mark.parametrize(
    ("verb", "resource", "subresource", "allowed"),
    [
        ("watch", "servingpools.burstpilot.io", "", True),
        ("patch", "servingpools.burstpilot.io", "status", True),
        ("patch", "deployments.apps", "scale", True),
        ("patch", "statefulsets.apps", "scale", True),
        ("list", "pods", "", True),
        ("create", "events", "", True),
        ("get", "secrets", "", False),
        ("patch", "deployments.apps", "", False),
        ("delete", "pods", "", False),
        ("create", "servingpools.burstpilot.io", "", False),
        ("update", "servingpools.burstpilot.io", "status", False),
    ],
)
def test_service_account_has_least_privilege(cluster, chart_installed, verb, resource, subresource, allowed):
    sa = cluster.get_json("serviceaccount", "-n", RELEASE_NS, "-l", f"app.kubernetes.io/instance={RELEASE}")[
        "items"
    ][0]
    who = f"system:serviceaccount:{RELEASE_NS}:{sa['metadata']['name']}"
    extra = [f"--subresource={subresource}"] if subresource else []
    res = cluster.kubectl(
        "auth", "can-i", verb, resource, *extra, "-n", "default", f"--as={who}", check=False
    )
    assert res.stdout.strip() == ("yes" if allowed else "no"), res.stderr


def test_crd_in_chart_is_the_crd_installed(cluster, chart_installed):
    crd = cluster.get_json("crd", "servingpools.burstpilot.io")
    source = yaml.safe_load((REPO / "crds" / "servingpool.yaml").read_text())
    assert crd["spec"]["versions"][0]["schema"] == source["spec"]["versions"][0]["schema"]
    assert json.dumps(crd["spec"]["names"]["shortNames"]) == json.dumps(source["spec"]["names"]["shortNames"])


def test_metrics_secrets_are_readable_by_name_only(cluster, chart_installed):
    """rbac.metricsSecrets grants get on exactly the named Secrets, in their namespace."""
    res = cluster.helm(
        "template",
        "scoped",
        CHART,
        "--namespace",
        RELEASE_NS,
        *VARIANTS["namespaced, secrets, monitor, replay job"],
        "--show-only",
        "templates/rbac.yaml",
    )
    for ns in ("serving", "batch"):
        cluster.namespace(ns)
    cluster.kubectl("apply", "-f", "-", input=res.stdout)
    who = f"--as=system:serviceaccount:{RELEASE_NS}:scoped-burstpilot"
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, who, check=False).stdout.strip()  # noqa: E731
    assert can("get", "secret/prometheus-token", "-n", "serving") == "yes"
    assert can("get", "secret/other", "-n", "serving") == "no"
    assert can("list", "secrets", "-n", "serving") == "no"
    assert can("get", "secret/prometheus-token", "-n", "batch") == "no"
    assert can("patch", "deployments.apps", "--subresource=scale", "-n", "batch") == "yes"
    assert can("patch", "deployments.apps", "--subresource=scale", "-n", "default") == "no"


def test_replay_job_runs_one_indexed_pod_per_shard(cluster, chart_installed):
    """The Indexed Job the chart renders, run by the real Job controller (kwok completes its pods)."""
    ns = cluster.namespace("e2e-replay")
    cluster.kubectl(
        "create", "configmap", "workload", "-n", ns, "--from-literal=workload.csv=Timestamp,Model\n"
    )
    res = cluster.helm(
        "template",
        "load",
        CHART,
        "--namespace",
        ns,
        "--show-only",
        "templates/replay-job.yaml",
        "--set",
        "replayJob.enabled=true,replayJob.workloadConfigMap=workload,replayJob.shards=3",
        "--set",
        "replayJob.target=http://llm.serving:8000",
    )
    cluster.kubectl("apply", "-f", "-", input=res.stdout)
    job = wait_for(
        "the replay Job to complete",
        lambda: (
            (j := cluster.get_json("job", "load-burstpilot-replay", "-n", ns))
            .get("status", {})
            .get("succeeded")
            == 3
            and j
        ),
        timeout=90,
    )
    assert job["status"]["completedIndexes"] == "0-2"
    pods = cluster.get_json("pods", "-n", ns, "-l", "app.kubernetes.io/component=replay")["items"]
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1", "2"]
    args = pods[0]["spec"]["containers"][0]["args"]
    assert args[:2] == ["replay", "/workload/workload.csv"] and "--shard=$(SHARD)/3" in args
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
