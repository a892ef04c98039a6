"""The committed contract artifacts are exactly what the pinned solcjs builds from the sources.

Runs whenever solcjs is installed (``npm install`` in contracts/); under CI=true a missing solcjs
is a failure, not a skip, so stale artifacts can never pass CI.
"""

from __future__ import annotations

import json
import os

import pytest

from settlement import solc


def test_artifacts_are_committed_and_self_describing() -> None:
    for _, name in solc.TARGETS:
        artifact = json.loads((solc.BUILD / f"{name}.json").read_text())
        assert artifact["abi"], name
        assert artifact["bytecode"].startswith("0x6"), name
        assert len(artifact["bytecode"]) > 1000, name
        assert artifact["compiler"]["version"].startswith("0.8.28+"), name
        assert artifact["settings"]["optimizer"] == {"enabled": True, "runs": 200}
        metadata = json.loads(artifact["metadata"])
        assert metadata["compiler"]["version"].startswith("0.8.28+")
        assert metadata["settings"]["optimizer"]["enabled"] is True


def test_package_json_pins_exact_versions() -> None:
    package = json.loads((solc.CONTRACTS / "package.json").read_text())
    pins = {**package["dependencies"], **package["devDependencies"]}
    assert pins["solc"] == "0.8.28"
    assert pins["@openzeppelin/contracts"] == "5.7.0"
    for name, version in pins.items():
        assert version[0].isdigit(), f"{name} is not pinned exactly: {version}"


@pytest.mark.slow
def test_committed_artifacts_are_not_stale() -> None:
    if solc.solcjs_path() is None:
        message = "solcjs not installed (npm install in contracts/)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert solc.check() == [], "run `python -m settlement.solc` and commit contracts/build/"
