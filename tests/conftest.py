"""Hypothesis profiles for the whole suite.

``dev`` (the default) is fast enough to run on every change; ``ci`` runs many more examples and
prints the blob of any failure so it can be replayed with ``@reproduce_failure``. Select one
with ``HYPOTHESIS_PROFILE=ci``. Neither has a deadline: this machine is shared, and no test may
depend on timing.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=500,
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_report_header() -> str:
    import crdt  # which build of the core the suite runs (setup.py, crdt/_build.py)

    return f"crdt core: {crdt.BUILD} build (PARLEY_PURE=1 runs the Python sources)"
