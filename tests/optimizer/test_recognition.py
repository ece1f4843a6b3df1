"""Workload recognition: the four demo workloads on >= 9 of 10 runs, and four test-only programs.

The demo workloads (examples/workloads) are the programs the rules were designed from; the
programs/ modules were written afterwards, only for this test, to check that the rules carry over.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from memscope_otel.optimizer import classify

CHILD = Path(__file__).resolve().parent / "recognize_child.py"

# Short runs keep the suite fast; the frame loop needs more frames for its clock to stand out.
# The particle sandbox allocates little (about 15k/s), so it needs longer to yield MIN_RECORDS.
DEMO = [("workloads.web_server", "web_server", 0.3), ("workloads.data_pipeline", "data_processing", 0.3),
        ("workloads.game_loop", "game_loop", 0.6), ("workloads.ml_training", "ml_training", 0.3)]
FIFTH = [("programs.web_api", "web_server", 0.4), ("programs.log_analytics", "data_processing", 0.4),
         ("programs.particle_sim", "game_loop", 1.5), ("programs.logistic_regression", "ml_training", 0.4)]


def recognize(programs, runs):
    """{module: [(workload, reasons, features)] * runs} for (module, _, seconds) in ``programs``, all
    run in one fresh process."""
    specs = [f"{name}:{seconds}:{runs}" for name, _, seconds in programs]
    done = subprocess.run([sys.executable, str(CHILD), *specs], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("["):
            name, kind, reasons, features = json.loads(line)
            results.setdefault(name, []).append((kind, reasons, features))
    return results


@pytest.fixture(scope="module")
def demo_results():
    return recognize(DEMO, 10)


@pytest.fixture(scope="module")
def fifth_results():
    return recognize(FIFTH, 3)


@pytest.mark.parametrize("name,expected,seconds", DEMO, ids=[d[1] for d in DEMO])
def test_demo_workload_recognized_on_9_of_10_runs(demo_results, name, expected, seconds):
    results = demo_results.get(name, [])
    assert len(results) == 10
    hits = sum(kind == expected for kind, _, _ in results)
    misses = [r for r in results if r[0] != expected]
    assert hits >= 9, f"{name}: {hits}/10 recognized as {expected}; misses: {misses}"


@pytest.mark.parametrize("name,expected,seconds", FIFTH, ids=[f[1] for f in FIFTH])
def test_unseen_program_recognized(fifth_results, name, expected, seconds):
    results = fifth_results.get(name, [])
    assert len(results) == 3
    hits = sum(kind == expected for kind, _, _ in results)
    assert hits >= 2, f"{name}: {hits}/3 recognized as {expected}: {results}"


def test_too_few_records_is_generic():
    kind, reasons = classify({"records": 10, "network_site_fraction": 1.0, "threads_active": 9})
    assert kind == "generic" and "only 10 sampled records" in reasons[0]


def test_classify_names_the_conditions_that_held():
    features = {"records": 1000, "network_site_fraction": 0.5, "threads_active": 4}
    kind, reasons = classify(features)
    assert kind == "web_server" and reasons == ["network_site_fraction 0.5 >= 0.25"]
    kind, reasons = classify({"records": 1000, "alloc_rate": 10})
    assert kind == "generic"
