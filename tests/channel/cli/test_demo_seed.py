"""``parley demo --seed N`` is reproducible: the seed derives the participants' keys as well as
the workload, so two runs with one seed make the same channel and the same state."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from channel.cli.main import app
from channel.runtime.keystore import SECP256K1_ORDER, seeded_keys
from crdt.ops import address_of


def offline(seed: int) -> dict[str, object]:
    result = CliRunner().invoke(app, ["demo", "--offline", "--transfers", "60", "--seed", str(seed), "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_one_seed_one_state() -> None:
    first, again, other = offline(7), offline(7), offline(8)
    assert first["converged"]
    assert (first["state_hash"], first["payout_root"]) == (again["state_hash"], again["payout_root"])
    assert first["state_hash"] != other["state_hash"]


def test_seeded_keys_are_valid_distinct_and_a_function_of_the_seed() -> None:
    keys = seeded_keys(5, 16)
    assert [k.private_key for k in keys] == [k.private_key for k in seeded_keys(5, 16)]
    assert len({k.address for k in keys}) == 16
    assert all(0 < int.from_bytes(k.private_key, "big") < SECP256K1_ORDER for k in keys)
    assert all(k.address == address_of(k.private_key) for k in keys)
    assert {k.address for k in keys}.isdisjoint(k.address for k in seeded_keys(6, 16))
