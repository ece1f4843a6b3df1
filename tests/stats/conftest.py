"""Fixtures of the statistical tests: the C workload helper (built once per session) and the
size-class runs, each run once and judged by several tests."""
import pytest

from .class_runs import CASES, run_case
from .workload import Workload, build


@pytest.fixture(scope="session")
def workload(tmp_path_factory):
    return Workload(*build(tmp_path_factory.mktemp("stats_workload")))


@pytest.fixture(scope="session", params=CASES, ids=str)
def class_run(request, workload):
    return run_case(workload, request.param)
