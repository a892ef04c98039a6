"""Checkpoint consensus: codec, signatures, the rules one at a time, and whole runs in the
deterministic harness (safety with Byzantine nodes, liveness after GST, certificates)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from channel.core.consensus import (
    Broadcast,
    CheckpointProposal,
    CheckpointSignature,
    Consensus,
    Decide,
    Decision,
    Evidence,
    Fetch,
    InvalidProposal,
    Message,
    NeedOperations,
    NotProposer,
    Precommit,
    Prevote,
    Proposal,
    ScheduleTimeout,
    SigningRecord,
    Step,
    Timeout,
    TimeoutConfig,
    TimeoutKind,
    Validity,
    ValueId,
    decode_message,
    decode_signing_record,
    encode_message,
    encode_signing_record,
    proposer,
    sign_checkpoint_signature,
    sign_precommit,
    sign_prevote,
    sign_proposal,
    signer_of,
)
from crdt.eip712 import Checkpoint
from crdt.errors import BadSignature, InvalidInput, UnknownAuthor
from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.ops import address_of, sign_op
from crdt.replica import Cut, Replica
from crdt.types import OpId, Symbol
from tests.channel.core.consensus_harness import (
    TOKEN,
    Byzantine,
    Simulation,
    make_genesis,
    synthetic_value,
)

PROFILE_EXAMPLES = settings.default.max_examples  # 40 at "dev", 500 at "ci"


def examples(share: int) -> int:
    """A fraction of the profile's examples: whole simulations cost ~0.1-0.5 s each."""
    return max(8, PROFILE_EXAMPLES // share)


# -- a single machine, driven by hand -----------------------------------------------------------------


class FixedApp:
    def __init__(self, value: CheckpointProposal | None, validity: Validity | NeedOperations = Validity.VALID) -> None:
        self.value = value
        self.validity = validity
        self.asked = 0

    def get_value(self, height: int, round_: int) -> CheckpointProposal | None:
        return self.value

    def validate(self, height: int, value: CheckpointProposal) -> Validity | NeedOperations:
        self.asked += 1
        return self.validity


def broadcasts(outputs: list[object]) -> list[Message]:
    return [o.message for o in outputs if isinstance(o, Broadcast)]


def machine(index: int, app: FixedApp, n: int = 4) -> tuple[Genesis, tuple[bytes, ...], Consensus]:
    genesis, keys = make_genesis(n)
    return genesis, keys, Consensus(genesis, keys[index], app, TimeoutConfig(100, 10, 200, 20, 300, 30))


def test_proposer_rotates_in_genesis_order_and_timeouts_grow() -> None:
    genesis, _ = make_genesis(4)
    assert [proposer(genesis, 1, r) for r in range(5)] == [genesis.addresses[(1 + r) % 4] for r in range(5)]
    config = TimeoutConfig(100, 10, 200, 20, 300, 30)
    assert [config.duration(TimeoutKind.PROPOSE, r) for r in range(3)] == [100, 110, 120]
    assert config.duration(TimeoutKind.PREVOTE, 2) == 240
    assert config.duration(TimeoutKind.PRECOMMIT, 1) == 330


def test_non_proposer_waits_then_prevotes_nil_on_timeout() -> None:
    _, _, node = machine(0, FixedApp(None))  # height 1 round 0: proposer is index 1
    out = node.start_height(1)
    assert out == [ScheduleTimeout(Timeout(TimeoutKind.PROPOSE, 1, 0), 100)]
    out = node.on_timeout(Timeout(TimeoutKind.PROPOSE, 1, 0))  # lines 57-60
    assert [(type(m), m.value_id) for m in broadcasts(out)] == [(Prevote, None)]  # type: ignore[union-attr]
    assert node.step is Step.PREVOTE
    assert node.on_timeout(Timeout(TimeoutKind.PROPOSE, 1, 0)) == []  # stale: nothing twice


def test_not_yet_waits_for_data_then_prevotes_the_value() -> None:
    genesis, keys, node = machine(0, FixedApp(None, Validity.NOT_YET))
    node.start_height(1)
    value = synthetic_value(genesis, 1, 0)
    assert broadcasts(node.on_message(sign_proposal(genesis, keys[1], 1, 0, value))) == []
    assert node.step is Step.PROPOSE
    node.app.validity = Validity.VALID  # type: ignore[attr-defined]
    votes = broadcasts(node.on_data_arrived())
    assert votes == [sign_prevote(genesis, keys[0], 1, 0, value.value_id)]  # lines 22-27


def test_need_operations_becomes_one_fetch_output_and_the_vote_waits_for_the_data() -> None:
    genesis, keys, node = machine(0, FixedApp(None))
    node.start_height(1)
    value = synthetic_value(genesis, 1, 0)
    need = NeedOperations.of(reversed((*value.heads, OpId(b"\x00" * 32))))
    node.app.validity = need  # type: ignore[attr-defined]
    out = node.on_message(sign_proposal(genesis, keys[1], 1, 0, value))
    assert out == [Fetch(tuple(sorted((*value.heads, OpId(b"\x00" * 32)))))]  # sorted, and once
    assert node.step is Step.PROPOSE
    assert node.on_data_arrived() == [Fetch(need.op_ids)]  # still missing: asked again
    node.app.validity = Validity.VALID  # type: ignore[attr-defined]
    assert broadcasts(node.on_data_arrived()) == [sign_prevote(genesis, keys[0], 1, 0, value.value_id)]


def test_full_round_by_hand_locks_decides_and_certifies() -> None:
    genesis, keys, node = machine(0, FixedApp(None))
    value = synthetic_value(genesis, 1, 3)
    node.start_height(1)
    node.on_message(sign_proposal(genesis, keys[1], 1, 0, value))
    for i in (1, 2):
        node.on_message(sign_prevote(genesis, keys[i], 1, 0, value.value_id))
    assert (node.locked_round, node.locked_value) == (0, value)  # lines 36-43
    assert node.step is Step.PRECOMMIT
    out = []
    for i in (1, 2):
        out += node.on_message(sign_precommit(genesis, keys[i], 1, 0, value.value_id))
    decide = next(o for o in out if isinstance(o, Decide))
    assert decide.value == value
    assert decide.height == 1
    assert len({signer_of(genesis, p) for p in decide.proof.precommits()}) == 3
    commit = next(m for m in broadcasts(out) if isinstance(m, CheckpointSignature))
    assert commit == sign_checkpoint_signature(genesis, keys[0], value.checkpoint)
    out = []
    for i in (3, 1):
        out += node.on_message(sign_checkpoint_signature(genesis, keys[i], value.checkpoint))
    certified = [o for o in out if type(o).__name__ == "Certified"]
    assert len(certified) == 1
    certificate = certified[0].certificate  # type: ignore[attr-defined]
    certificate.verify(genesis)
    digest = value.checkpoint.digest(genesis.domain)
    signers = {Account._recover_hash(digest, signature=sig) for sig in certificate.signatures}
    assert {s.lower() for s in signers} == {"0x" + genesis.addresses[i].hex() for i in (0, 1, 3)}
    # a node that is behind gets the proof and decides from it
    _, _, late = machine(2, FixedApp(None))
    late.start_height(1)
    out = late.on_message(decode_message(encode_message(decide.proof)))
    assert any(isinstance(o, Decide) and o.value == value for o in out)


def test_an_abstaining_node_signs_no_vote_or_proposal_but_follows_and_commits() -> None:
    """A node that lost its signing log abstains below `abstain_below`: it may have voted there
    before, so it signs nothing but the commit of what the others decided."""
    genesis, keys, node = machine(0, FixedApp(None))  # the proposer of (1, 0) is index 1
    node.abstain_below = 2
    value = synthetic_value(genesis, 1, 3)
    signed = broadcasts(node.start_height(1))
    signed += broadcasts(node.on_message(sign_proposal(genesis, keys[1], 1, 0, value)))
    for i in (1, 2, 3):
        signed += broadcasts(node.on_message(sign_prevote(genesis, keys[i], 1, 0, value.value_id)))
    assert signed == []  # it would have prevoted and precommitted
    out = []
    for i in (1, 2, 3):
        out += node.on_message(sign_precommit(genesis, keys[i], 1, 0, value.value_id))
    assert [o.value for o in out if isinstance(o, Decide)] == [value]  # it follows
    assert broadcasts(out) == [sign_checkpoint_signature(genesis, keys[0], value.checkpoint)]  # and signs only that
    node.start_height(2)  # from abstain_below on it votes again
    assert [type(m) for m in broadcasts(node.on_timeout(Timeout(TimeoutKind.PROPOSE, 2, 0)))] == [Prevote]
    _, _, proposer_node = machine(1, FixedApp(value))
    proposer_node.abstain_below = 2
    assert broadcasts(proposer_node.start_height(1)) == []  # an abstaining proposer proposes nothing


def test_locked_node_prevotes_nil_for_another_value_until_a_newer_proof_of_lock() -> None:
    genesis, keys, node = machine(0, FixedApp(None))
    v, w = synthetic_value(genesis, 1, 1), synthetic_value(genesis, 1, 2)
    node.start_height(1)
    node.on_message(sign_proposal(genesis, keys[1], 1, 0, v))
    for i in (1, 2):
        node.on_message(sign_prevote(genesis, keys[i], 1, 0, v.value_id))
    assert node.locked_value == v
    node.on_timeout(Timeout(TimeoutKind.PRECOMMIT, 1, 0))  # lines 65-67
    assert node.round == 1
    # round 1 (proposer 2) proposes w fresh: the lock wins (line 23)
    out = node.on_message(sign_proposal(genesis, keys[2], 1, 1, w))
    assert [m.value_id for m in broadcasts(out)] == [None]  # type: ignore[union-attr]
    node.on_timeout(Timeout(TimeoutKind.PREVOTE, 1, 1))
    node.on_timeout(Timeout(TimeoutKind.PRECOMMIT, 1, 1))
    # round 2 (proposer 3) re-proposes w with a proof of lock from round 1: unlock (lines 28-33)
    for i in (1, 2, 3):
        node.on_message(sign_prevote(genesis, keys[i], 1, 1, w.value_id))
    out = node.on_message(sign_proposal(genesis, keys[3], 1, 2, w, valid_round=1))
    assert [m.value_id for m in broadcasts(out)] == [w.value_id]  # type: ignore[union-attr]


def test_round_skip_on_f_plus_one_messages_from_a_later_round() -> None:
    genesis, keys, node = machine(0, FixedApp(None))
    node.start_height(1)
    node.on_message(sign_prevote(genesis, keys[1], 1, 5, None))
    assert node.round == 0
    node.on_message(sign_precommit(genesis, keys[2], 1, 5, None))  # lines 55-56: f + 1 = 2
    assert node.round == 5


UPON_RULES = (  # Consensus's upon-rule methods (Algorithm 1's line numbers)
    "_decide_on_precommit_quorum",  # 49-54
    "_prevote_on_proposal",  # 22-27
    "_prevote_on_proof_of_lock",  # 28-33
    "_schedule_prevote_timeout",  # 34-35
    "_lock_on_prevote_quorum",  # 36-43
    "_precommit_nil_on_nil_quorum",  # 44-46
    "_schedule_precommit_timeout",  # 47-48
    "_skip_to_later_round",  # 55-56
)


def spy_on_rules(node: Consensus) -> list[str]:
    """Record, in order, each upon-rule method of `node` that fires (returns True)."""
    fired: list[str] = []
    for name in UPON_RULES:
        method = getattr(node, name)

        def spy(at: object, method: Callable[[object], bool] = method, name: str = name) -> bool:
            result = method(at)
            if result:
                fired.append(name)
            return result

        setattr(node, name, spy)
    return fired


def test_each_upon_rule_fires_on_exactly_its_trigger() -> None:
    """Feed one machine (node 0 of 4: quorum 3, f + 1 = 2) one input at a time and check which
    rule methods fire: each exactly when the last message of its trigger arrives, never one
    message earlier."""
    genesis, keys = make_genesis(4)
    v, w = synthetic_value(genesis, 1, 1), synthetic_value(genesis, 1, 2)
    seen: set[str] = set()

    def fresh() -> tuple[Consensus, list[str]]:
        node = machine(0, FixedApp(None))[2]
        fired = spy_on_rules(node)
        node.start_height(1)
        assert fired == []  # not the proposer of (1, 0): it waits
        return node, fired

    def step(node: Consensus, fired: list[str], message: Message | Timeout, expected: list[str]) -> None:
        fired.clear()
        if isinstance(message, Timeout):
            node.on_timeout(message)
        else:
            node.on_message(message)
        assert fired == expected, (message, fired)
        seen.update(fired)

    # a fresh proposal, a quorum of prevotes for it, then a quorum of precommits
    node, fired = fresh()
    step(node, fired, sign_proposal(genesis, keys[1], 1, 0, v), ["_prevote_on_proposal"])
    assert node.step is Step.PREVOTE
    step(node, fired, sign_prevote(genesis, keys[1], 1, 0, v.value_id), [])  # 2 of 3
    step(
        node, fired, sign_prevote(genesis, keys[2], 1, 0, v.value_id),
        ["_schedule_prevote_timeout", "_lock_on_prevote_quorum"],
    )
    assert (node.locked_value, node.locked_round, node.step) == (v, 0, Step.PRECOMMIT)
    assert (node.valid_value, node.valid_round) == (v, 0)
    step(node, fired, sign_precommit(genesis, keys[1], 1, 0, v.value_id), [])  # 2 of 3
    step(node, fired, sign_precommit(genesis, keys[2], 1, 0, v.value_id), ["_decide_on_precommit_quorum"])
    assert node.decision == v

    # nil: a quorum of nil prevotes, then of nil precommits
    node, fired = fresh()
    step(node, fired, Timeout(TimeoutKind.PROPOSE, 1, 0), [])  # lines 57-60, not an upon-rule
    step(node, fired, sign_prevote(genesis, keys[1], 1, 0, None), [])
    step(
        node, fired, sign_prevote(genesis, keys[2], 1, 0, None),
        ["_schedule_prevote_timeout", "_precommit_nil_on_nil_quorum"],
    )
    assert node.step is Step.PRECOMMIT
    step(node, fired, sign_precommit(genesis, keys[1], 1, 0, None), [])
    step(node, fired, sign_precommit(genesis, keys[2], 1, 0, None), ["_schedule_precommit_timeout"])
    assert node.decision is None

    # a re-proposal with a proof of lock from an earlier round
    node, fired = fresh()
    step(node, fired, Timeout(TimeoutKind.PROPOSE, 1, 0), [])
    step(node, fired, sign_prevote(genesis, keys[1], 1, 0, w.value_id), [])
    step(node, fired, sign_prevote(genesis, keys[2], 1, 0, w.value_id), ["_schedule_prevote_timeout"])
    step(node, fired, Timeout(TimeoutKind.PREVOTE, 1, 0), [])  # lines 61-64: precommit nil
    step(node, fired, sign_precommit(genesis, keys[1], 1, 0, None), [])
    step(node, fired, sign_precommit(genesis, keys[2], 1, 0, None), ["_schedule_precommit_timeout"])
    step(node, fired, Timeout(TimeoutKind.PRECOMMIT, 1, 0), [])  # lines 65-67: round 1
    too_early = sign_proposal(genesis, keys[2], 1, 1, w, valid_round=0)  # w has 2 prevotes of 3 in round 0
    step(node, fired, too_early, [])
    assert node.step is Step.PROPOSE
    step(node, fired, sign_prevote(genesis, keys[3], 1, 0, w.value_id), ["_prevote_on_proof_of_lock"])
    assert [m.value_id for m in broadcasts(node.on_data_arrived())] == []  # nothing twice
    assert node.step is Step.PREVOTE

    # f + 1 participants in a later round
    node, fired = fresh()
    step(node, fired, sign_prevote(genesis, keys[1], 1, 5, None), [])
    step(node, fired, sign_precommit(genesis, keys[2], 1, 5, None), ["_skip_to_later_round"])
    assert node.round == 5

    assert seen == set(UPON_RULES)


def test_double_votes_and_double_signs_become_evidence() -> None:
    genesis, keys, node = machine(0, FixedApp(None))
    node.start_height(1)
    a, b = synthetic_value(genesis, 1, 1), synthetic_value(genesis, 1, 2)
    first = sign_prevote(genesis, keys[3], 1, 0, a.value_id)
    second = sign_prevote(genesis, keys[3], 1, 0, b.value_id)
    node.on_message(first)
    out = node.on_message(second)
    assert out == [Evidence(genesis.addresses[3], first, second)]
    assert out[0].kind == "double_vote"  # type: ignore[union-attr]
    assert node.on_message(second) == []  # reported once
    p1, p2 = sign_proposal(genesis, keys[1], 1, 0, a), sign_proposal(genesis, keys[1], 1, 0, b)
    node.on_message(p1)
    assert [o.kind for o in node.on_message(p2) if isinstance(o, Evidence)] == ["double_proposal"]
    c1 = sign_checkpoint_signature(genesis, keys[2], a.checkpoint)
    c2 = sign_checkpoint_signature(genesis, keys[2], b.checkpoint)
    node.on_message(c1)
    evidence = node.on_message(c2)
    assert len(evidence) == 1
    assert isinstance(evidence[0], Evidence)
    assert evidence[0].kind == "double_sign"
    # exactly what slashDoubleSign needs: one signer, one version, two checkpoints
    for commit in (c1, c2):
        signer = Account._recover_hash(commit.checkpoint.digest(genesis.domain), signature=commit.signature)
        assert signer.lower() == "0x" + genesis.addresses[2].hex()


def test_forged_and_misplaced_messages_are_refused() -> None:
    genesis, keys, node = machine(0, FixedApp(None))
    node.start_height(1)
    value = synthetic_value(genesis, 1, 0)
    outsider = keccak256(b"not a participant")
    with pytest.raises(UnknownAuthor):
        node.on_message(sign_prevote(genesis, outsider, 1, 0, None))
    with pytest.raises(NotProposer):
        node.on_message(sign_proposal(genesis, keys[2], 1, 0, value))  # round 0's proposer is 1
    vote = sign_prevote(genesis, keys[1], 1, 0, value.value_id)
    with pytest.raises(InvalidInput):
        node.on_message(replace(vote, signature=vote.signature[:64] + b"\x05"))
    forged = replace(vote, value_id=ValueId(b"\x01" * 32))  # another value under 1's signature
    with pytest.raises((BadSignature, UnknownAuthor)):
        node.on_message(forged)
    bad_root = replace(value, leaves=value.leaves[1:])
    with pytest.raises(InvalidProposal):
        node.on_message(sign_proposal(genesis, keys[1], 1, 0, bad_root))
    too_few = Decision(
        1, 0, value, tuple(sign_precommit(genesis, keys[i], 1, 0, value.value_id).signature for i in (1, 2))
    )
    with pytest.raises(InvalidInput):
        node.on_message(too_few)
    assert node.step is Step.PROPOSE
    assert node.decision is None


def test_catch_up_decides_from_a_stored_proof_skipping_heights_and_signs_its_commit() -> None:
    genesis, keys, node = machine(0, FixedApp(None))
    node.start_height(1)
    value = synthetic_value(genesis, 3, 0)  # two versions ahead of ours
    signatures = tuple(sign_precommit(genesis, keys[i], 3, 2, value.value_id).signature for i in (1, 2, 3))
    with pytest.raises(InvalidInput):
        node.catch_up(Decision(3, 2, value, signatures[:2]))
    assert node.height == 1
    outputs = node.catch_up(Decision(3, 2, value, signatures))
    decided = [o for o in outputs if isinstance(o, Decide)]
    assert [(d.height, d.round, d.value) for d in decided] == [(3, 2, value)]
    commits = [o.message for o in outputs if isinstance(o, Broadcast) and isinstance(o.message, CheckpointSignature)]
    assert [c.checkpoint for c in commits] == [value.checkpoint]
    assert (node.height, node.decision) == (3, value)
    assert node.catch_up(Decision(3, 2, value, signatures)) == []  # already decided
    assert node.catch_up(Decision(2, 0, synthetic_value(genesis, 2, 0), signatures)) == []  # older
    node.start_height(4)  # and the machine goes on from there


def test_a_restarted_node_re_sends_what_it_signed_and_keeps_its_lock() -> None:
    genesis, keys, node = machine(0, FixedApp(None))
    v, w = synthetic_value(genesis, 1, 0), synthetic_value(genesis, 1, 1)
    outputs = node.start_height(1)
    outputs += node.on_message(sign_proposal(genesis, keys[1], 1, 0, v))  # round 0's proposer is 1
    for i in (1, 2):
        outputs += node.on_message(sign_prevote(genesis, keys[i], 1, 0, v.value_id))
    records = [o for o in outputs if isinstance(o, SigningRecord)]  # what the driver stores first
    assert [(type(r.message), r.message.value_id, r.value) for r in records] == [  # type: ignore[union-attr]
        (Prevote, v.value_id, v), (Precommit, v.value_id, v)
    ]
    assert [decode_signing_record(encode_signing_record(r)) for r in records] == records

    def after_a_restart(restored: list[SigningRecord]) -> list[Message]:
        """Round 0 times out with nil precommits from the others, then round 1's proposer (2)
        proposes w: what does node 0 send?"""
        _, _, restarted = machine(0, FixedApp(None))
        restarted.restore(restored)
        sent = restarted.start_height(1)
        sent += restarted.on_timeout(Timeout(TimeoutKind.PROPOSE, 1, 0))
        for i in (1, 2, 3):
            sent += restarted.on_message(sign_precommit(genesis, keys[i], 1, 0, None))
        sent += restarted.on_timeout(Timeout(TimeoutKind.PRECOMMIT, 1, 0))
        sent += restarted.on_message(sign_proposal(genesis, keys[2], 1, 1, w))
        return [m for m in broadcasts(sent) if isinstance(m, Prevote | Precommit)]

    votes = after_a_restart(records)
    assert [m for m in votes if m.round == 0] == [records[0].message]  # the same prevote, re-sent
    assert [(type(m), m.value_id) for m in votes if m.round == 1] == [(Prevote, None)]  # locked on v
    # without its records the same node would sign a conflicting prevote and give up its lock
    forgetful = after_a_restart([])
    assert [m.value_id for m in forgetful if m.round == 0] == [None]
    assert [m.value_id for m in forgetful if m.round == 1] == [w.value_id]


def test_a_restarted_proposer_proposes_the_same_value_again() -> None:
    genesis, keys, proposer_node = machine(1, FixedApp(synthetic_value(make_genesis(4)[0], 1, 0)))
    records = [o for o in proposer_node.start_height(1) if isinstance(o, SigningRecord)]
    assert [type(r.message) for r in records] == [Proposal, Prevote]  # it prevotes its own proposal
    _, _, restarted = machine(1, FixedApp(synthetic_value(genesis, 1, 5)))  # its app now offers another
    restarted.restore(records)
    assert broadcasts(restarted.start_height(1)) == [r.message for r in records]
    with pytest.raises(InvalidInput):
        restarted.restore([SigningRecord(1, sign_prevote(genesis, keys[2], 1, 0, None), None)])  # not its own


# -- codec ----------------------------------------------------------------------------------------------


@st.composite
def messages(draw: st.DrawFn) -> Message:
    genesis, keys = make_genesis(4)
    key = keys[draw(st.integers(0, 3))]
    height = draw(st.integers(1, 2**64 - 1))
    round_ = draw(st.integers(0, 2**32 - 1))
    value = synthetic_value(genesis, draw(st.integers(1, 5)), draw(st.integers(0, 20)))
    value_id = draw(st.sampled_from([None, value.value_id]))
    kind = draw(st.sampled_from(["proposal", "prevote", "precommit", "checkpoint_signature", "decision"]))
    if kind == "proposal":
        return sign_proposal(genesis, key, height, round_, value, draw(st.integers(-1, round_ - 1)))
    if kind == "prevote":
        return sign_prevote(genesis, key, height, round_, value_id)
    if kind == "precommit":
        return sign_precommit(genesis, key, height, round_, value_id)
    if kind == "checkpoint_signature":
        return sign_checkpoint_signature(genesis, key, value.checkpoint)
    return Decision(height, round_, value, tuple(keccak256(b"%d" % i) * 2 + b"\x1b" for i in range(3)))


@given(messages())
def test_encoding_round_trips(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


@given(messages(), st.data())
def test_mutated_bytes_are_an_error_or_another_message(message: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_message(message))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_message(bytes(raw))
    except InvalidInput:
        return
    assert encode_message(decoded) == bytes(raw)  # strict: only canonical encodings decode


@given(st.binary(max_size=300))
def test_garbage_is_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        decode_message(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",  # []
        b"\x81\x09",  # [9]
        b"\x85\x01\x01\x00\x41\x00" + b"\x58\x41" + b"\x00" * 65,  # value id of 1 byte
        b"\x85\xf5\x01\x00\x40" + b"\x58\x41" + b"\x00" * 65,  # kind True
        b"\x86\x00\x01\x00\x00\x80" + b"\x58\x41" + b"\x00" * 65,  # valid_round not < round
        b"\x9f\x01\xff",  # indefinite length
        b"\x85\x01\x01\x00\x40" + b"\x58\x41" + b"\x00" * 65 + b"\x00",  # trailing byte
    ],
)
def test_crafted_garbage(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_message(data)


def test_wire_formats_are_pinned() -> None:
    """Messages and signing-log records encode to exactly the bytes they did before the package
    split and the renames (Commit -> CheckpointSignature, Signed -> SigningRecord): stored logs
    and peers running the older code still decode them."""
    genesis, keys = make_genesis(4)
    value = synthetic_value(genesis, 2, 3)
    precommits = tuple(sign_precommit(genesis, keys[i], 2, 1, value.value_id).signature for i in (1, 2, 3))
    pinned: list[tuple[Message | SigningRecord, str]] = [
        (
            sign_proposal(genesis, keys[1], 2, 1, value, 0),
            "599b776484206fc7f198bbd8af4006115da1ca8f7b4700024e8b05e7e1aa42a6",
        ),
        (
            sign_prevote(genesis, keys[2], 2, 1, value.value_id),
            "098a97d9be5b77085a3966d508f5dff7171f4ab9f34aed2aad4a105e77ae0485",
        ),
        (
            sign_precommit(genesis, keys[3], 2, 1, None),
            "f456b22a6d3a2ce90b3f5c74499a32c0b91f1009b69cc7f0fde5cce226f9d6fd",
        ),
        (
            sign_checkpoint_signature(genesis, keys[0], value.checkpoint),
            "45110001707c27fcf66d2f4f4ca724dec3856c4937f4348c9f87ac028d4a9ac3",
        ),
        (Decision(2, 1, value, precommits), "7d4c8e42af8f335212026277711ae71d516e62ba0b3a6c704783c5fa46c20d61"),
        (
            SigningRecord(2, sign_precommit(genesis, keys[0], 2, 1, value.value_id), value),
            "bcef0d49ae4da51cebe58535191f2a33b6154a742b0a67ffd461ac45bb8bc473",
        ),
        (
            SigningRecord(2, sign_prevote(genesis, keys[0], 2, 0, None), None),
            "0163599bd7d868a75f1e0c46df14bf52f3d84d43f9c43a7b86d854230ee94494",
        ),
    ]
    for item, digest in pinned:
        if isinstance(item, SigningRecord):
            data = encode_signing_record(item)
            assert decode_signing_record(data) == item
        else:
            data = encode_message(item)
            assert decode_message(data) == item
        assert keccak256(data).hex() == digest, type(item).__name__


def test_the_package_exports_every_public_class_and_function_of_its_modules() -> None:
    from channel.core import consensus
    from channel.core.consensus import codec, machine, messages, signing

    for module in (messages, signing, codec, machine):
        own = {
            name
            for name, item in vars(module).items()
            if not name.startswith("_") and getattr(item, "__module__", None) == module.__name__
        }
        assert own <= set(consensus.__all__), (module.__name__, own - set(consensus.__all__))
    assert all(getattr(consensus, name) is not None for name in consensus.__all__)


# -- whole runs in the harness ----------------------------------------------------------------------------

behaviours = st.builds(Byzantine, st.booleans(), st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=examples(1))
@given(
    n=st.sampled_from([4, 7]),
    seed=st.integers(0, 2**32 - 1),
    faults=st.lists(st.one_of(st.none(), behaviours), min_size=2, max_size=2),
    gst=st.integers(0, 30_000),
    drop=st.sampled_from([0.0, 0.2, 0.5]),
    lossy=st.booleans(),
    not_yet=st.sampled_from([0.0, 0.3]),
    data=st.data(),
)
def test_safety_with_f_byzantine(
    n: int,
    seed: int,
    faults: list[Byzantine | None],
    gst: int,
    drop: float,
    lossy: bool,
    not_yet: float,
    data: st.DataObject,
) -> None:
    f = (n - 1) // 3
    who = data.draw(st.lists(st.integers(0, n - 1), min_size=f, max_size=f, unique=True), label="faulty")
    byzantine = {i: b for i, b in zip(who, faults, strict=False) if b is not None}
    crashed = {i for i, b in zip(who, faults, strict=False) if b is None}  # silent
    sim = Simulation(
        n,
        seed=seed,
        heights=2,
        byzantine=byzantine,
        crashed=crashed,
        gst=gst,
        drop=drop,
        lossy=lossy,
        not_yet=not_yet,
    )
    sim.run(gst + 120_000)
    sim.check_safety()
    if not lossy:  # after GST the non-faulty nodes get there, whatever the faulty ones did
        for i in sim.honest:
            assert set(sim.logs[i].certificates) == {1, 2}, (i, sorted(sim.logs[i].decisions))


def test_regression_equivocated_prevote_still_counts_towards_a_proof_of_lock() -> None:
    """Shrunk by hypothesis: a double-voter's prevote for v was seen by two nodes (which locked
    on v) while the third kept its nil prevote; when only the first vote of an equivocator was
    kept, the third could never check the proof of lock, and the height stalled forever."""
    sim = Simulation(4, seed=1, heights=2, byzantine={1: Byzantine(double_vote=True)}, gst=0, not_yet=0.3)
    sim.run(120_000)
    sim.check_safety()
    for i in sim.honest:
        assert set(sim.logs[i].certificates) == {1, 2}


@pytest.mark.parametrize("seed", range(30))
def test_safety_seeds_with_aggressive_byzantines(seed: int) -> None:
    everything = Byzantine(True, True, True, True)
    n = 7 if seed % 2 else 4
    byzantine = {seed % n: everything, (seed + 3) % n: everything} if n == 7 else {seed % n: everything}
    sim = Simulation(
        n, seed=seed, heights=3, byzantine=byzantine, gst=15_000, drop=0.3, lossy=seed % 3 == 0, not_yet=0.2
    )
    sim.run(200_000)
    sim.check_safety()
    evidence = [e for i in sim.honest for e in sim.logs[i].evidence]
    assert evidence, "double votes to two halves are relayed, so someone sees both"


@settings(max_examples=examples(2))
@given(n=st.sampled_from([4, 7]), seed=st.integers(0, 2**32 - 1), gst=st.integers(0, 20_000), data=st.data())
def test_liveness_after_gst_with_f_crashed(n: int, seed: int, gst: int, data: st.DataObject) -> None:
    f = (n - 1) // 3
    crashed = set(data.draw(st.lists(st.integers(0, n - 1), min_size=f, max_size=f, unique=True), label="crashed"))
    timeouts = TimeoutConfig(1000, 500, 1000, 500, 1000, 500)
    delta = 100
    sim = Simulation(n, seed=seed, heights=3, crashed=crashed, gst=gst, delta=delta, drop=0.3, timeouts=timeouts)
    sim.run(gst + 200_000)
    sim.check_safety()
    for i in sim.honest:
        log = sim.logs[i]
        assert set(log.certificates) == {1, 2, 3}
        for height, decide in log.decisions.items():
            started = min(sim.logs[j].started[height] for j in sim.honest)
            if started > gst + delta:
                # all correct nodes start together after GST: at most f crashed proposers in a row
                assert decide.round <= f, (height, decide.round)
    # and quickly: every height certified within a bounded time after GST
    last = max(c for i in sim.honest for c in [max(sim.logs[i].started.values())])
    assert last <= gst + 3 * (f + 2) * 6_000 + 60_000


@pytest.mark.parametrize("n", [4, 7])
def test_nothing_is_certified_with_f_plus_one_crashed(n: int) -> None:
    f = (n - 1) // 3
    sim = Simulation(n, seed=n, heights=2, crashed=set(range(f + 1)), gst=5_000, drop=0.2)
    sim.run(300_000)
    sim.check_safety()
    for i in sim.honest:
        assert sim.logs[i].decisions == {}
        assert sim.logs[i].certificates == {}
        # Without a quorum of votes, lines 34 and 47 never schedule the next timeout: the node
        # waits in round 0 after its nil prevote, as in the paper, and emits nothing unsafe.
        assert sim.nodes[i].decision is None
        assert sim.nodes[i].round == 0
        assert sim.nodes[i].step is Step.PREVOTE
        assert sim.logs[i].evidence == []


def test_certificates_are_what_the_contract_recovers() -> None:
    sim = Simulation(7, seed=11, heights=2, gst=0)
    sim.run(60_000)
    genesis = sim.genesis
    for i in sim.honest:
        for certified in sim.logs[i].certificates.values():
            certificate = certified.certificate
            certificate.verify(genesis)
            checkpoint = certificate.checkpoint
            typed = checkpoint.typed_data(genesis.domain)
            signable = encode_typed_data(full_message=typed)
            digest = keccak256(b"\x19" + signable.version + signable.header + signable.body)
            assert digest == checkpoint.digest(genesis.domain)
            recovered = [Account._recover_hash(digest, signature=s).lower() for s in certificate.signatures]
            assert recovered == ["0x" + a.hex() for a in certificate.signers(genesis)]
            assert len(recovered) >= genesis.threshold


# -- real values from replicas ------------------------------------------------------------------------------


def test_real_checkpoint_from_replica_state_is_decided_and_applies() -> None:
    keys = [keccak256(b"parley-consensus-test-%d" % i) for i in range(4)]
    addresses = [address_of(k) for k in keys]
    genesis = Genesis.create(
        chain_id=31337,
        adjudicator=b"\x01" * 20,
        participants=[Participant(a, Role.TRADER) for a in addresses],
        tokens=[Token(Symbol("USDC"), TOKEN, 6)],
        initial_balances=[InitialBalance(a, Symbol("USDC"), 100 * 10**9) for a in addresses],
    )
    ctx = genesis.context()
    ops = [
        sign_op(ctx, keys[0], 1, [], "transfer", {"to": addresses[1], "token": "USDC", "amount": 5 * 10**9}),
        sign_op(ctx, keys[2], 1, [], "transfer", {"to": addresses[3], "token": "USDC", "amount": 7 * 10**9}),
    ]
    replicas = []
    for _ in range(4):
        replica = Replica(genesis)
        replica.receive_many(ops)
        replicas.append(replica)

    def build(height: int) -> CheckpointProposal:
        scratch = Replica(genesis)
        scratch.receive_many(ops)
        heads = tuple(sorted(scratch.graph.heads))
        scratch.certify(Cut(height, heads, 1_000 * height, ()))
        checkpoint = Checkpoint(
            channel=genesis.channel_id,
            version=height,
            payout_root=scratch.payout_root(),
            state_hash=scratch.state_hash(),
            totals=scratch.totals(),
            withdrawn=scratch.withdrawn_totals(),
            deposit_nonce=0,
            time=1_000 * height,
        )
        return CheckpointProposal(checkpoint, heads, (), tuple(scratch.payout_tree().leaves))

    class ReplicaApp:
        def get_value(self, height: int, round_: int) -> CheckpointProposal | None:
            return build(height)

        def validate(self, height: int, value: CheckpointProposal) -> Validity:
            return Validity.VALID if value == build(height) else Validity.INVALID

    sim = Simulation(4, seed=5, heights=1, app_factory=lambda _sim, _i: ReplicaApp())
    sim.run(30_000)
    sim.check_safety()
    for i, replica in enumerate(replicas):
        certified = sim.logs[i].certificates[1]
        replica.certify(certified.value.cut())
        assert replica.payout_root() == certified.certificate.checkpoint.payout_root
        assert replica.state_hash() == certified.certificate.checkpoint.state_hash
        assert replica.status(ops[0].op_id) == "final"
        certified.certificate.verify(genesis)
