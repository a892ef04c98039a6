"""A bound on the nesting of JSON text, measured before `json.loads` is allowed to recurse.

The eth stack (py_ecc, py-evm) raises the process's recursion limit to 100,000 when it is
imported, and the C JSON parser checks nesting against that limit only: 100,000 nested
brackets (200 KB) run it out of C stack long before the check fires, and the process dies
with a segfault. Every JSON text from outside the process (the local API's requests, and the
answers the client reads) is therefore measured here first, in a way that cannot recurse.
"""

from __future__ import annotations

from itertools import accumulate

MAX_NESTING = 32  # arrays and objects; the API needs 4 (a batch of submits), its answers about 6

_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_BRACKET_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes


def json_nesting(data: bytes) -> int:
    """How deep arrays and objects nest in the JSON text `data` (UTF-8), brackets inside strings
    not counted. Exact for valid JSON, and never below the depth `json.loads` reaches before it
    fails on invalid JSON, so checking it first bounds the parser's recursion.

    No recursion, and no Python loop over the bytes (1 MiB of brackets: 40-55 ms here, 1 MiB of
    empty strings 70-85 ms, a 1 MiB batch of transfers 20 ms, as long as `json.loads` takes):
    escapes are dropped first (a backslash pairs with the byte after it, from the left, as in a
    JSON string; outside strings a backslash is already a parse error), so every remaining quote
    opens or closes a string and the pieces between quotes alternate outside and inside (an
    unterminated string runs to the end). UTF-8 never puts these ASCII bytes inside a multi-byte
    character, so the bytes say what the text says.
    """
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    signs = outside.translate(_BRACKET_SIGNS, _NOT_BRACKETS)
    return max(accumulate(memoryview(signs).cast("b"), initial=0))


def deeper_than_limit(data: bytes) -> int | None:
    """The nesting of `data` if it is deeper than `MAX_NESTING`, else None. Text with at most
    that many opening brackets cannot be, so it is not scanned (two byte counts, 1 ms a MiB)."""
    if data.count(b"[") + data.count(b"{") <= MAX_NESTING:
        return None
    depth = json_nesting(data)
    return depth if depth > MAX_NESTING else None
