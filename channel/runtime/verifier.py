"""Signature recovery spread over worker processes.

The main process decodes operations with ``decode_op(..., verify=False)``, which checks the
encoding and computes each op id, and hands only (op id, signature) pairs to the workers, which
run the expensive secp256k1 recovery and return the signers. An operation is accepted only if
its signer is its author, exactly as ``decode_op(..., verify=True)`` would decide, so the pool
changes where the work runs, never what is accepted.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Sequence

from crdt.errors import BadSignature
from crdt.ops import SignedOp, recover_signer

CHUNK = 256


def _recover_chunk(pairs: Sequence[tuple[bytes, bytes]]) -> list[bytes | None]:
    signers: list[bytes | None] = []
    for digest, signature in pairs:
        try:
            signers.append(recover_signer(digest, signature))
        except BadSignature:
            signers.append(None)
    return signers


class VerifierPool:
    """A process pool that checks that each operation's signature recovers to its author."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=processes, mp_context=multiprocessing.get_context("forkserver")
        )

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def verify(self, ops: Sequence[SignedOp]) -> list[bool]:
        """For each operation, whether its signature recovers to its author."""
        pairs = [(op.op_id, op.signature) for op in ops]
        chunks = [pairs[i : i + CHUNK] for i in range(0, len(pairs), CHUNK)]
        signers = [signer for chunk in self._executor.map(_recover_chunk, chunks) for signer in chunk]
        return [signer == op.author for signer, op in zip(signers, ops, strict=True)]
