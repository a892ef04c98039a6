"""Write the hostile inputs of this folder, deterministically: `python make_corpus.py`.

Each entry is a real attack or edge case against `crdt.ops.decode_op` and
`crdt.cbor.decode_sequence`; tests/crdt/test_fuzz_crashers.py asserts that every ``*.bin`` file
here makes them raise a subclass of `InvalidInput` and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from eth_utils import keccak

from crdt import cbor
from crdt.genesis import Genesis, Token
from crdt.ops import SECP256K1_N, Context, address_of, sign_op
from crdt.testing import forge, make_genesis

HERE = Path(__file__).parent
KEYS = [keccak(b"parley-fuzz/key/%d" % i) for i in range(4)]


def genesis(nonce: int = 0) -> Genesis:
    usdc = Token("USDC", bytes.fromhex("a0" * 20), 6)  # type: ignore[arg-type]
    return make_genesis(KEYS, [usdc], chain_id=1, adjudicator=bytes.fromhex("22" * 20), nonce=nonce)


def context() -> Context:
    return genesis().context()


def head(major: int, argument: int, width: int) -> bytes:
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + argument.to_bytes(width, "big")


def build() -> dict[str, bytes]:
    ctx = context()
    author = address_of(KEYS[0])
    body = {"to": address_of(KEYS[1]), "token": "USDC", "amount": 5}
    valid = sign_op(ctx, KEYS[0], 1, [], "transfer", body, 0)
    raw = valid.raw
    channel = ctx.channel
    sig = valid.signature
    s = int.from_bytes(sig[32:64], "big")

    def fields(**changes: object) -> bytes:
        """An op array encoded canonically, with some fields replaced by arbitrary values."""
        value = {
            "channel": channel,
            "author": author,
            "seq": 1,
            "parents": [],
            "kind": "transfer",
            "body": body,
            "ts": 0,
            "signature": sig,
        }
        value.update(changes)
        return cbor.encode(list(value.values()))

    other = sign_op(genesis(nonce=1).context(), KEYS[0], 1, [], "transfer", body, 0).raw
    seq_at = raw.index(b"\x01\x80htransfer")  # seq 1, then the empty parents array, then the kind
    ts_at = raw.index(b"\x00\x58\x41")  # ts 0, then the 65-byte signature head
    return {
        "empty": b"",
        "truncated-op": raw[: len(raw) // 2],
        "truncated-last-byte": raw[:-1],
        "huge-declared-bytes": b"\x5b" + (2**63).to_bytes(8, "big"),
        "huge-declared-array": b"\x9b" + (2**63 - 1).to_bytes(8, "big") + b"\x00",
        "huge-declared-map": b"\xbb" + (2**62).to_bytes(8, "big"),
        "deep-array-10000": b"\x81" * 10_000 + b"\x00",
        "deep-indefinite-10000": b"\x9f" * 10_000 + b"\xff" * 10_000,
        "indefinite-bytes-bomb": b"\x5f" + b"\x40" * 4000 + b"\xff",
        "indefinite-map-unterminated": b"\xbf" + b"\x61a\x01" * 100,
        "shared-ref-cycle": b"\xd8\x1c\x81\xd8\x1d\x00",
        "shared-ref-dangling": b"\xd8\x1d\x05",
        "kind-invalid-utf8": raw.replace(b"htransfer", b"h\xfftransfe"),
        "body-map-with-int-keys": fields(body={}).replace(b"\xa0", b"\xa1\x01\x02"),
        "seq-negative": fields(seq=-1),
        "seq-2pow64-bignum": raw[:seq_at] + b"\xc2\x49\x01" + bytes(8) + raw[seq_at + 1 :],
        "seq-long-head": raw[:seq_at] + head(0, 1, 8) + raw[seq_at + 1 :],
        "sig-v-zero": fields(signature=sig[:64] + b"\x00"),
        "sig-high-s": fields(signature=sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])),
        "sig-64-bytes": fields(signature=sig[:64]),
        "sig-all-zero": fields(signature=bytes(64) + b"\x1b"),
        "parents-1000": fields(parents=[i.to_bytes(32, "big") for i in range(1000)]),
        "parents-unsorted": fields(parents=[b"\x02" * 32, b"\x01" * 32]),
        "wrong-channel": other,
        "unknown-author": forge(ctx, author=b"\x99" * 20, seq=1, parents=[], kind="t", body={}, ts=0, signature=sig),
        "float-in-body": fields(body={}).replace(b"\xa0", b"\xa1\x61a\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00"),
        "null-in-body": fields(body={}).replace(b"\xa0", b"\xa1\x61a\xf6"),
        "ts-epoch-datetime-tag": raw[:ts_at] + b"\xc1\x1b" + (2**63).to_bytes(8, "big") + raw[ts_at + 1 :],
        "trailing-byte": raw + b"\x00",
        "two-ops-concatenated": raw + raw,
        "array-of-7": cbor.encode([channel, author, 1, [], "transfer", body, 0]),
    }


def main() -> None:
    for name, data in build().items():
        (HERE / f"{name}.bin").write_bytes(data)


if __name__ == "__main__":
    main()
