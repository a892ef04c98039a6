"""Fixtures of the settlement tests: one anvil per session (started only when a test asks for
it), and a fresh chain-and-channel `World` per test on each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from settlement.chain import AnvilProcess, start_anvil
from tests.settlement.settlement_kit import World, build_world, make_chain, require_anvil

BACKENDS = ["embedded", "anvil"]


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilProcess]:
    require_anvil()
    process = start_anvil(extra=["--balance", "10000000"])
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def world(backend: str, request: pytest.FixtureRequest) -> World:
    process = request.getfixturevalue("anvil") if backend == "anvil" else None
    return build_world(make_chain(backend, process), salt=request.node.name.encode())


@pytest.fixture
def embedded_world(request: pytest.FixtureRequest) -> World:
    """A world on the embedded chain only, for tests one backend covers fully."""
    return build_world(make_chain("embedded", None), salt=request.node.name.encode())
