import pytest

from tests.support.workloads import make_workload


@pytest.fixture
def workload_factory():
    return make_workload
