"""The stress test reuses the core tests' compiled helper (tests/core/testhook.c)."""
import importlib.util
import pathlib
import sys

import pytest

CORE = pathlib.Path(__file__).resolve().parent.parent / "core"


def _load_testhook():
    if "testhook" in sys.modules:
        return sys.modules["testhook"]
    spec = importlib.util.spec_from_file_location("testhook", CORE / "testhook.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["testhook"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def testhook():
    """tests/core/testhook.py, with its compiled module loaded (``testhook.load()``)."""
    module = _load_testhook()
    module.load()
    return module
