"""Leader election on a Lease, against an in-memory Lease API with optimistic concurrency and a fake clock."""

from __future__ import annotations

import copy

import pytest
from kubernetes import client

from burstpilot.operator.leader import LeaderElector, LeaseConfig


class FakeLeases:
    """read/create/replace of one Lease, with resourceVersion conflicts (409) as the API server has them."""

    def __init__(self) -> None:
        self.lease: client.V1Lease | None = None
        self.version = 0
        self.down = False

    def _check(self):
        if self.down:
            raise client.ApiException(status=503, reason="Service Unavailable")

    def read_namespaced_lease(self, name, namespace, **_):
        self._check()
        if self.lease is None:
            raise client.ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace, body, **_):
        self._check()
        if self.lease is not None:
            raise client.ApiException(status=409, reason="AlreadyExists")
        self.version += 1
        body.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)

    def replace_namespaced_lease(self, name, namespace, body, **_):
        self._check()
        if body.metadata.resource_version != self.lease.metadata.resource_version:
            raise client.ApiException(status=409, reason="Conflict")
        self.version += 1
        body.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)


@pytest.fixture
def world():
    now = [0.0]
    api = FakeLeases()

    def elector(identity):
        cfg = LeaseConfig(
            "ops", "burstpilot", identity, lease_duration_s=15, renew_deadline_s=10, retry_period_s=2
        )
        return LeaderElector(api, cfg, clock=lambda: now[0])

    return now, api, elector


def test_one_holder_at_a_time_and_takeover_only_after_the_lease_duration(world):
    now, api, elector = world
    a, b = elector("a"), elector("b")
    assert a._try() and a.valid()
    assert not b._try()  # held, and b has just seen the record
    now[0] = 10.0
    assert a._try()  # a renews
    now[0] = 20.0
    assert not b._try()  # renewed 10 s ago as b saw it change: not expired
    now[0] = 40.0  # a stopped renewing at 10 (a crash): b has seen the same record since 20
    assert not a.valid()  # a stopped acting 10 s after its last renew, before anyone may take over
    assert b._try() and b.valid() and api.lease.spec.holder_identity == "b"
    assert api.lease.spec.lease_transitions == 1


def test_a_racing_update_loses_on_the_resource_version(world):
    now, api, elector = world
    a, b, c = elector("a"), elector("b"), elector("c")
    assert a._try()
    b._try(), c._try()
    now[0] = 100.0
    stale = api.read_namespaced_lease("burstpilot", "ops")
    assert b._try()
    stale.spec.holder_identity = "c"
    with pytest.raises(client.ApiException):
        api.replace_namespaced_lease("burstpilot", "ops", stale)
    assert api.lease.spec.holder_identity == "b"


def test_an_unreachable_api_server_ends_leadership_within_the_renew_deadline(world):
    now, api, elector = world
    a = elector("a")
    assert a._try()
    api.down = True
    now[0] = 9.0
    assert not a._try() and a.valid()
    now[0] = 10.5
    assert not a.valid()


def test_release_lets_a_standby_take_over_at_once(world):
    now, api, elector = world
    a, b = elector("a"), elector("b")
    assert a._try()
    assert not b._try()
    a.release()
    assert not a.valid() and api.lease.spec.holder_identity is None
    assert b._try() and api.lease.spec.holder_identity == "b"


def test_timings_must_nest():
    with pytest.raises(ValueError):
        LeaseConfig("ops", "x", "a", lease_duration_s=10, renew_deadline_s=10, retry_period_s=2)
