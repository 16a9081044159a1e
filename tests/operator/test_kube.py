"""Pod states as the operator counts them, and status conditions."""

from __future__ import annotations

import datetime as dt

from kubernetes import client

from burstpilot.operator.conditions import Condition, merge_conditions
from burstpilot.operator.kube import summarize_pods

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def pod(
    name, node=None, ready=False, scheduled=True, message="", deleting=False, phase="Running", ready_after=30
):
    conds = [
        client.V1PodCondition(
            type="PodScheduled",
            status="True" if scheduled else "False",
            reason=None if scheduled else "Unschedulable",
            message=message,
        )
    ]
    if ready:
        conds.append(
            client.V1PodCondition(
                type="Ready", status="True", last_transition_time=T0 + dt.timedelta(seconds=ready_after)
            )
        )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name, creation_timestamp=T0, deletion_timestamp=T0 if deleting else None
        ),
        spec=client.V1PodSpec(containers=[], node_name=node),
        status=client.V1PodStatus(phase=phase if scheduled else "Pending", conditions=conds),
    )


def test_pods_split_into_ready_starting_pending():
    msg = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    s = summarize_pods(
        [
            pod("a", "n0", ready=True, ready_after=42),
            pod("b", "n1", ready=False),
            pod("c", scheduled=False, message=msg),
            pod("d", "n0", ready=True, deleting=True),
            pod("e", "n0", phase="Succeeded"),
        ]
    )
    assert (s.ready, s.starting, s.pending) == (1, 1, 1)
    assert s.pending_message == msg
    assert [secs for _, secs in s.cold_starts] == [42.0]


def test_transition_time_moves_only_when_status_changes():
    first, changed = merge_conditions(None, [Condition("Ready", True, "Reconciled", "ok")], 1, "t1")
    assert [c.type for c in changed] == ["Ready"] and first[0]["lastTransitionTime"] == "t1"
    same, changed = merge_conditions(first, [Condition("Ready", True, "Reconciled", "still ok")], 2, "t2")
    assert changed == [] and same[0]["lastTransitionTime"] == "t1" and same[0]["observedGeneration"] == 2
    flipped, changed = merge_conditions(same, [Condition("Ready", False, "TargetNotFound", "gone")], 2, "t3")
    assert [c.reason for c in changed] == ["TargetNotFound"] and flipped[0]["lastTransitionTime"] == "t3"
    assert flipped[0]["status"] == "False"


def test_conditions_keep_a_stable_order_and_unknown():
    merged, _ = merge_conditions(
        [{"type": "BudgetLimited", "status": "False", "reason": "WithinBudget"}],
        [Condition("MetricsAvailable", None, "Probing"), Condition("Ready", True, "Reconciled")],
        1,
        "t",
    )
    assert [c["type"] for c in merged] == ["Ready", "MetricsAvailable", "BudgetLimited"]
    assert merged[1]["status"] == "Unknown"
