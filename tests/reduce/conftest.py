"""Lets the tests in this folder import their helpers (c_reducer, ...) by plain name."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
