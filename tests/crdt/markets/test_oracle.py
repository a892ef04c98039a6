"""Oracle prices (crdt/markets/oracle.py, the ledger's oracle.price and close_epoch): every
rejection reason, the lower median fixed at a checkpoint, staleness in checkpoint time, the
state hash, the quorum of fresh posts a price needs, and the property that f lying oracles out
of 2f + 1 cannot move the price outside the honest range."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt import testing
from crdt.genesis import Genesis, Role
from crdt.ledger import Ledger, Reason
from crdt.markets.oracle import MarkPrice, is_fresh, lower_median, oracle_quorum
from crdt.ops import sign_op
from tests.crdt.crdt_support import ADJUDICATOR, KEYS, TOKENS
from tests.crdt.markets.test_perp_genesis import ETH_PERP
from tests.crdt.test_markets_core import WETH_USDC

E9 = 10**9
ORACLES = 5
STALENESS = 60_000  # ETH_PERP.perp.oracle_staleness


def genesis() -> Genesis:
    roles = [Role.ORACLE] * ORACLES + [Role.TRADER]
    return testing.make_genesis(KEYS[: len(roles)], TOKENS, roles=roles, initial=100 * E9, adjudicator=ADJUDICATOR,
                                markets=(ETH_PERP, WETH_USDC))


class Feed:
    def __init__(self) -> None:
        self.ledger = Ledger(genesis())
        self.seqs = [0] * len(self.ledger.genesis.participants)

    def post(self, who: int, price: int, market: str = "ETH-PERP") -> Reason | None:
        self.seqs[who] += 1
        op = sign_op(self.ledger.genesis.context(), KEYS[who], self.seqs[who], [], "oracle.price",
                     {"market": market, "price": price})
        return self.ledger.apply(op)


def test_oracle_price_reasons() -> None:
    feed = Feed()
    assert feed.post(ORACLES, 10 * E9) == Reason.NOT_PERMITTED  # a trader
    assert feed.post(0, 10 * E9, "BTC-PERP") == Reason.UNKNOWN_MARKET
    assert feed.post(0, 10 * E9, WETH_USDC.symbol) == Reason.NOT_PERP
    assert feed.post(0, 0) == Reason.PRICE_OUT_OF_RANGE
    assert feed.post(0, 10**7 * E9) == Reason.PRICE_OUT_OF_RANGE
    assert feed.ledger.oracle_posts == {}


def test_the_lower_median_is_fixed_at_the_checkpoint() -> None:
    feed = Feed()
    for who, price in enumerate((3000, 3100, 2900, 3050, 3020)):  # sorted: 2900 3000 3020 3050 3100
        assert feed.post(who, price * E9) is None
    assert feed.ledger.marks == {}  # nothing is fixed before a checkpoint
    before = feed.ledger.state_hash()
    feed.ledger.close_epoch(1, 1_000)
    assert feed.ledger.marks == {"ETH-PERP": MarkPrice(3020 * E9, 1_000)}
    assert feed.ledger.state_hash() != before
    assert feed.post(0, 3200 * E9) is None  # a later post replaces that oracle's: 2900 3020 3050 3100 3200
    feed.ledger.close_epoch(2, 2_000)
    assert feed.ledger.marks["ETH-PERP"] == MarkPrice(3050 * E9, 2_000)
    feed.ledger.check_conservation()


def test_the_quorum_is_2f_plus_1_posts() -> None:
    assert [oracle_quorum(m) for m in range(1, 8)] == [1, 1, 3, 3, 5, 5, 7]


def test_fewer_posts_than_the_quorum_fix_no_price() -> None:
    """Regression (the simulator, `oracle_outlier` at the first checkpoint): a price was fixed
    from any number of fresh posts, so one lying oracle whose post came in first set the price
    alone. Four of five oracles' posts fix nothing; the fifth makes the quorum."""
    feed = Feed()
    assert feed.post(0, 30_000 * E9) is None  # the liar, alone
    feed.ledger.close_epoch(1, 1_000)
    assert feed.ledger.marks == {}
    for who in (1, 2, 3):
        assert feed.post(who, 3000 * E9) is None
    feed.ledger.close_epoch(2, 2_000)
    assert feed.ledger.marks == {}  # four fresh posts of five
    assert feed.post(4, 3010 * E9) is None
    feed.ledger.close_epoch(3, 3_000)
    assert feed.ledger.marks["ETH-PERP"] == MarkPrice(3000 * E9, 3_000)  # 3000 3000 3000 3010 30000


def test_stale_posts_do_not_count_and_a_market_without_fresh_ones_goes_stale() -> None:
    feed = Feed()
    for who in range(ORACLES):
        assert feed.post(who, 3000 * E9) is None  # posted at time 0
    feed.ledger.close_epoch(1, 10_000)
    assert feed.ledger.marks["ETH-PERP"] == MarkPrice(3000 * E9, 10_000)
    for who in range(1, ORACLES):
        assert feed.post(who, 3300 * E9) is None  # posted at time 10 000
    feed.ledger.close_epoch(2, STALENESS + 5_000)  # oracle 0's post is stale now: 4 fresh, no quorum
    assert feed.ledger.marks["ETH-PERP"] == MarkPrice(3000 * E9, 10_000)
    assert feed.post(0, 3300 * E9) is None
    feed.ledger.close_epoch(3, STALENESS + 6_000)
    assert feed.ledger.marks["ETH-PERP"] == MarkPrice(3300 * E9, STALENESS + 6_000)
    feed.ledger.close_epoch(4, 2 * STALENESS + 20_000)  # no fresh post: the price and its time stay
    mark = feed.ledger.marks["ETH-PERP"]
    assert mark == MarkPrice(3300 * E9, STALENESS + 6_000)
    assert is_fresh(mark, 2 * STALENESS + 6_000, STALENESS)
    assert not is_fresh(mark, 2 * STALENESS + 20_000, STALENESS)
    assert not is_fresh(None, 0, STALENESS)


def test_lower_median_of_odd_and_even_counts() -> None:
    assert lower_median([5]) == 5
    assert lower_median([4, 1, 3]) == 3
    assert lower_median([4, 1, 3, 2]) == 2


@given(
    f=st.integers(0, 3),
    honest=st.lists(st.integers(1, 10**15), min_size=7, max_size=7),
    liars=st.lists(st.integers(-(10**18), 10**18), min_size=3, max_size=3),
)
def test_f_liars_of_2f_plus_1_cannot_leave_the_honest_range(f: int, honest: list[int], liars: list[int]) -> None:
    good = honest[: f + 1]
    median = lower_median(good + liars[:f])
    assert min(good) <= median <= max(good)


@given(
    honest=st.lists(st.integers(1, 10**6), min_size=3, max_size=3),
    liars=st.lists(st.sampled_from([1, 10**6]), min_size=2, max_size=2),
)
def test_two_liars_of_five_oracles_in_the_ledger(honest: list[int], liars: list[int]) -> None:
    feed = Feed()
    for who, price in enumerate(honest + liars):
        assert feed.post(who, price * 10**7) is None
    feed.ledger.close_epoch(1, 1)
    assert min(honest) * 10**7 <= feed.ledger.marks["ETH-PERP"].price <= max(honest) * 10**7


def test_a_post_in_the_epoch_a_checkpoint_closes_is_fresh_whatever_the_clock() -> None:
    """Regression: a post applied before a node's first checkpoint is kept with checkpoint time 0,
    and the first checkpoint is at wall-clock time (ms since 1970): with staleness counted from
    the post's time alone no price was ever fixed (`parley demo --perps` waited forever)."""
    feed = Feed()
    for who in range(ORACLES):
        assert feed.post(who, 3000 * E9) is None
    feed.ledger.close_epoch(1, 1_764_700_000_000)
    assert feed.ledger.marks["ETH-PERP"] == MarkPrice(3000 * E9, 1_764_700_000_000)
    feed.ledger.close_epoch(2, 1_764_700_000_000 + STALENESS + 1)  # no post since: the price goes stale
    assert not is_fresh(feed.ledger.marks["ETH-PERP"], feed.ledger.time, STALENESS)
