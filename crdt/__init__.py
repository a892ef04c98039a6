"""The pure, deterministic core of Parley.

Operations and their encoding (`ops`, `cbor`, `eip712`), the hash graph (`graph`), the ledger
(`ledger`), the epoch-ordered replay (`replica`), and Merkle trees (`merkle`). Nothing here does
I/O, reads a clock or draws randomness, so the same inputs give the same bytes everywhere.

The modules are compiled with mypyc where a C compiler was present at install time;
``BUILD`` says which build this process runs (``"compiled"``, ``"pure"`` or ``"stale"``,
see `crdt._build`).
"""

from crdt import _build

BUILD = _build.choose()
