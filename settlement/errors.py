"""Errors of the settlement layer.

There is one root, `SettlementError`. A transaction or call the contract rejected is a
`ContractReverted` whose ``name`` is the custom error decoded from the revert data (for example
``"NotEnoughSignatures"``) and whose ``args`` are its decoded arguments, so callers branch on
names, never on message text. A node that cannot reach its RPC endpoint after the retries gets
`RpcUnavailable`; an account that cannot pay for the transactions it must be able to send gets
`InsufficientGas`. Bad data from the chain (an event that does not decode, a reorg deeper than
the watcher keeps) is a `ChainDataError`.
"""

from __future__ import annotations

from typing import Any


class SettlementError(Exception):
    """Root of every error raised by `settlement`."""


class ContractReverted(SettlementError):
    """The contract reverted; ``name`` is its custom error (or ``Error``/``Panic``/``unknown``)."""

    def __init__(self, name: str, args: tuple[Any, ...] = (), data: bytes = b"") -> None:
        shown = ", ".join(_show(arg) for arg in args)
        super().__init__(f"{name}({shown})")
        self.name = name
        self.args_ = args
        self.data = data


class InsufficientGas(SettlementError):
    """The account's native balance cannot pay for what it must be able to send; ``account``
    is its address (checksummed), when known."""

    def __init__(self, message: str, account: str | None = None) -> None:
        super().__init__(message)
        self.account = account


class NoContract(SettlementError):
    """There is no code at the address a contract is expected at (a wrong chain or address, or a
    dev chain restarted since the deployment)."""


class RpcUnavailable(SettlementError):
    """The JSON-RPC endpoint kept failing after every retry."""


class ChainDataError(SettlementError):
    """The chain returned something this client cannot interpret."""


class NoCertificate(SettlementError):
    """The exit has no certificate that verifies for this channel and participant."""


class NotYourLeaf(SettlementError):
    """The certificate has no payout leaf for this account."""


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)
