"""Hostile bytes never crash a decoder (DESIGN.md, "What bad input gets"): each file of
tests/fuzz-crashers/ and arbitrary or mutated bytes give InvalidInput or a value, nothing else."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import cbor
from crdt.errors import InvalidInput
from crdt.ops import decode_op, sign_op

CORPUS = Path(__file__).parent.parent / "fuzz-crashers"
_spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
assert _spec is not None
assert _spec.loader is not None
make_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_corpus)
CTX = make_corpus.context()
FILES = sorted(CORPUS.glob("*.bin"))


def test_corpus_is_complete_and_reproducible() -> None:
    built = make_corpus.build()
    assert len(built) >= 25
    for name, data in built.items():
        assert (CORPUS / f"{name}.bin").read_bytes() == data, f"{name}.bin is stale: rerun make_corpus.py"


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_crasher_gives_invalid_input(path: Path) -> None:
    data = path.read_bytes()
    with pytest.raises(InvalidInput):
        decode_op(data, CTX)
    try:
        items = cbor.decode_sequence(data, max_item_bytes=CTX.limits.max_op_bytes)
    except InvalidInput:
        return
    assert b"".join(items) == data


def valid_op() -> bytes:
    body = {"to": make_corpus.address_of(make_corpus.KEYS[1]), "token": "USDC", "amount": 5}
    return sign_op(CTX, make_corpus.KEYS[0], 2, [bytes([7]) * 32], "transfer", body, 99).raw


VALID = valid_op()


def decode_or_invalid(data: bytes) -> None:
    try:
        op = decode_op(data, CTX)
    except InvalidInput:
        pass
    else:
        assert op.raw == data
    try:
        items = cbor.decode_sequence(data, max_item_bytes=CTX.limits.max_op_bytes)
    except InvalidInput:
        return
    assert b"".join(items) == data


@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_or_invalid(data)


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(VALID) - 1), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(VALID) - 1), st.just(0)),
    st.tuples(st.just("set"), st.integers(0, len(VALID) - 1), st.integers(0, 255)),
)


@given(st.lists(mutations, min_size=1, max_size=4))
def test_mutated_valid_ops(changes: list[tuple[str, int, int]]) -> None:
    data = bytearray(VALID)
    for kind, at, arg in changes:
        at = min(at, max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[at] ^= 1 << arg
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data.insert(at, arg)
        elif kind == "delete" and data:
            del data[at]
        elif kind == "set" and data:
            data[at] = arg
    mutated = bytes(data)
    if mutated == VALID:
        assert decode_op(mutated, CTX).raw == VALID
        return
    with pytest.raises(InvalidInput):  # one canonical encoding, and the signature covers the rest
        decode_op(mutated, CTX)
    decode_or_invalid(mutated)
