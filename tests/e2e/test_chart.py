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
    "HA, network policy, dashboard": [
        "--set",
        "replicaCount=2,networkPolicy.enabled=true,grafanaDashboard.enabled=true,logging.format=text",
        "--set",
        "extraArgs={--batch-linger=0.1},env[0].name=EXTRA,podAnnotations.a=b",
        "--set-string",
        "env[0].value=1",
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
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    if variant == "defaults":
        assert {"ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount", "Service"} <= kinds
        assert {
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "Role",
        } <= kinds  # + the Lease
        assert "Job" not in kinds and "ServiceMonitor" not in kinds and "PodDisruptionBudget" not in kinds
        # probes and metrics on the pod's own address only, never 0.0.0.0
        assert "--health-address=[$(POD_IP)]:8080" in args and "--metrics-address=[$(POD_IP)]:8000" in args
        assert not any("0.0.0.0" in a for a in args)
        assert "--leader-elect" in args and "--log-format=json" in args
        role = next(d for d in docs if d["kind"] == "ClusterRole")
        # KEDA's CRD is not installed here (kubectl auth can-i cannot resolve it): check the rule itself
        assert {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["list"]} in role["rules"]
        probes = pod["containers"][0]
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    elif variant.startswith("HA"):
        assert {"PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= kinds and dep["spec"]["replicas"] == 2
        assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
        assert "--batch-linger=0.1" in args and "--log-format=text" in args
        assert {"name": "EXTRA", "value": "1"} in pod["containers"][0]["env"]
        assert dep["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}
        board = next(d for d in docs if d["kind"] == "ConfigMap")
        assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(board["data"]["burstpilot.json"])["uid"] == "burstpilot-servingpools"
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
        ("list", "horizontalpodautoscalers.autoscaling", "", True),
        ("get", "secrets", "", False),
        ("patch", "deployments.apps", "", False),
        ("delete", "pods", "", False),
        ("create", "servingpools.burstpilot.io", "", False),
        ("update", "servingpools.burstpilot.io", "status", False),
        ("patch", "horizontalpodautoscalers.autoscaling", "", False),
        ("update", "leases.coordination.k8s.io", "", False),  # in watched namespaces: only its own Lease
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


def sa_user(cluster) -> str:
    sa = cluster.get_json("serviceaccount", "-n", RELEASE_NS, "-l", f"app.kubernetes.io/instance={RELEASE}")[
        "items"
    ]
    return f"system:serviceaccount:{RELEASE_NS}:{sa[0]['metadata']['name']}"


def test_the_leader_lease_is_the_only_lease_the_operator_may_renew(cluster, chart_installed):
    who = f"--as={sa_user(cluster)}"
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, "-n", RELEASE_NS, who, check=False).stdout.strip()  # noqa: E731
    assert can("update", f"lease/{RELEASE}") == "yes" and can("get", f"lease/{RELEASE}") == "yes"
    assert can("update", "lease/kube-scheduler") == "no" and can("create", "leases") == "yes"
    assert can("list", "leases") == "no" and can("delete", f"lease/{RELEASE}") == "no"


def configmap(name: str, labels: dict | None = None) -> str:
    meta = {"name": name, "namespace": "default", **({"labels": labels} if labels else {})}
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}})


def test_the_operator_may_write_only_its_state_configmaps(cluster, chart_installed):
    """RBAC grants ConfigMap create/patch by verb only; the chart's ValidatingAdmissionPolicy narrows the writes
    to <pool>-burstpilot-state ConfigMaps labelled as policy state (checked by the API server, as the SA)."""
    who = f"--as={sa_user(cluster)}"
    state = {"app.kubernetes.io/component": "policy-state", "app.kubernetes.io/managed-by": "burstpilot"}

    def create(body: str):
        return cluster.kubectl("create", "--dry-run=server", "-f", "-", who, input=body, check=False)

    def policy_ready():
        res = create(configmap("app-config"))
        return res.returncode != 0 and "may write only its state ConfigMaps" in res.stderr

    wait_for("the ValidatingAdmissionPolicy to be in force", policy_ready, timeout=60)
    assert create(configmap("x-burstpilot-state", state)).returncode == 0
    denied = create(configmap("x-burstpilot-state"))  # the right name without the label
    assert denied.returncode != 0 and "may write only its state ConfigMaps" in denied.stderr
    cluster.kubectl("create", "-f", "-", input=configmap("someone-elses"))
    patch = cluster.kubectl(
        "patch",
        "configmap",
        "someone-elses",
        "-n",
        "default",
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"labels": state}}),
        who,
        check=False,
    )
    assert patch.returncode != 0 and "may write only its state ConfigMaps" in patch.stderr
    cluster.kubectl("delete", "configmap", "someone-elses", "-n", "default")
