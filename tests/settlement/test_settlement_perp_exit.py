"""The emergency exit of a participant holding an open perpetual position, on the embedded chain
and on anvil: the certificate's payout leaves close every position at the checkpoint's oracle
price, and the contract pays exactly that."""

from __future__ import annotations

import pytest

from crdt.genesis import Role
from settlement.exit import run_exit
from tests.crdt.markets.test_perp_positions import WIDE
from tests.settlement.settlement_kit import E9, WINDOW, World, build_world, make_chain

ORACLE, LONG, SHORT, OTHER = range(4)


@pytest.fixture
def perp_world(backend: str, request: pytest.FixtureRequest) -> World:
    process = request.getfixturevalue("anvil") if backend == "anvil" else None
    return build_world(make_chain(backend, process), salt=request.node.name.encode(),
                       roles=[Role.ORACLE, Role.TRADER, Role.MARKET_MAKER, Role.TRADER], markets=(WIDE,))


def order(side: str, tif: str) -> dict[str, object]:
    return {"market": "ETH-PERP", "side": side, "type": "limit", "tif": tif, "price": 3000 * E9, "qty": E9,
            "reduce_only": False, "expires": 0}


def test_exit_pays_an_open_position_at_the_oracle_price(perp_world: World) -> None:
    world = perp_world
    world.deposit(LONG, 1000 * E9)
    world.deposit(SHORT, 1000 * E9)
    replica = world.replica()  # checkpoint 1 credits the deposits
    world.submit(replica, ORACLE, "oracle.price", {"market": "ETH-PERP", "price": 3000 * E9})
    world.checkpoint(replica)  # fixes the price: 3000
    world.submit(replica, SHORT, "order.place", order("sell", "gtc"))
    world.submit(replica, LONG, "order.place", order("buy", "ioc"))  # long 1 ETH at 3000
    world.submit(replica, ORACLE, "oracle.price", {"market": "ETH-PERP", "price": 3300 * E9})
    certificate = world.checkpoint(replica)  # at 3300 the long is 300 up, the short 300 down
    long_owed = 1000 * E9 - 6 * E9 + 300 * E9  # less its 0.2% taker fee on 3,000
    short_owed = 1000 * E9 - 3 * E9 - 300 * E9  # less its 0.1% maker fee
    ledger = replica.ledger
    assert ledger.entitlement(world.address(LONG), world.usdc.symbol) == long_owed
    assert ledger.entitlement(world.address(SHORT), world.usdc.symbol) == short_owed
    held = world.token.balance_of(world.accounts[LONG].address)

    def advance(_: float) -> None:
        world.chain.increase_time(WINDOW // 2)

    result = run_exit(world.client(LONG), world.genesis, [certificate], world.address(LONG), sleep=advance)
    assert result.finalized
    assert [leaf.amount for leaf in result.claimed] == [long_owed // 1000]  # 6 decimals: 1,294 USDC
    assert world.token.balance_of(world.accounts[LONG].address) == held + long_owed // 1000
    other = run_exit(world.client(SHORT), world.genesis, [certificate], world.address(SHORT), sleep=advance)
    assert [leaf.amount for leaf in other.claimed] == [short_owed // 1000]
    assert sum(replica.totals()) <= 2000 * 10**6  # never more than was deposited
