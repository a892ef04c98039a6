"""The chain worker's decisions (`channel.core.settlement_policy`) as tables: chain state in, a move out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channel.core.settlement_policy import ChainView, Move, finalize_move, rank, settle_move, watchtower_move
from channel.runtime.chain_worker import Backoff


def view(
    status: str = "pending", disputed: int = 3, finalizes_at: int = 100, finalized: int = 1, now: int = 50
) -> ChainView:
    return ChainView(status, disputed, finalizes_at, finalized, now)


@pytest.mark.parametrize(
    ("chain", "newest", "move"),
    [
        (view(), 5, Move("challenge", 5)),  # older in dispute, window open
        (view(status="closing"), 5, Move("challenge", 5)),  # a close is disputed the same way
        (view(), 3, Move("none")),  # ours is the one in dispute
        (view(), 2, Move("none")),  # ours is older
        (view(status="open", disputed=0), 5, Move("none")),  # nothing in dispute
        (view(status="concluded"), 5, Move("none")),
        (view(now=100), 5, Move("none", 5, "too late: the dispute window has closed")),
    ],
)
def test_the_watchtower_challenges_an_older_checkpoint_while_its_window_is_open(
    chain: ChainView, newest: int, move: Move
) -> None:
    assert watchtower_move(chain, newest) == move


@given(st.sampled_from(["open", "pending", "closing", "concluded"]), st.integers(0, 9), st.integers(0, 200),
       st.integers(0, 9), st.integers(0, 200), st.integers(0, 9))
def test_the_watchtower_decides_from_the_chain_alone(status: str, disputed: int, deadline: int, finalized: int,
                                                   now: int, newest: int) -> None:
    """Same state, same move: nothing depends on which events arrived (audit F1)."""
    chain = ChainView(status, disputed, deadline, finalized, now)
    move = watchtower_move(chain, newest)
    assert move == watchtower_move(chain, newest)
    if move.kind == "challenge":
        assert status in ("pending", "closing")
        assert newest > disputed
        assert now < deadline


def test_settle_proposes_a_due_newer_checkpoint_only_when_nothing_is_in_dispute() -> None:
    assert settle_move(view(status="open", disputed=0, finalized=2), 4, 2) == Move("propose", 4)
    assert settle_move(view(status="open", disputed=0, finalized=2), 3, 2) == Move("none")  # not every 2nd
    assert settle_move(view(status="open", disputed=0, finalized=4), 4, 2) == Move("none")  # already final
    assert settle_move(view(status="pending", disputed=2), 4, 2) == Move("none")  # the watchtower's job
    assert settle_move(view(status="closing"), 4, 1) == Move("none")


def test_finalize_once_the_window_has_passed() -> None:
    assert finalize_move(view(now=99)) == Move("none")
    assert finalize_move(view(now=100)) == Move("finalize", 3)
    assert finalize_move(view(status="closing", now=150)) == Move("finalize", 3)
    assert finalize_move(view(status="open", disputed=0, now=150)) == Move("none")


def test_the_submitter_rota_gives_every_version_one_first_submitter() -> None:
    for version in range(1, 20):
        ranks = sorted(rank(version, 1, me, 4) for me in range(4))
        assert ranks == [0, 1, 2, 3]
    assert rank(8, 4, 2, 4) == 0  # version 8, every 4th: turn 2


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff()
    assert backoff.due(0)
    delays = []
    for now in range(10):
        backoff = backoff.failed(float(now))
        delays.append(backoff.delay)
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == 60.0
    assert not backoff.due(backoff.next_at - 0.5)
    assert backoff.due(backoff.next_at)
