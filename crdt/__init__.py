"""The pure, deterministic core of Parley.

Operations and their encoding (`ops`, `cbor`, `eip712`), the hash graph (`graph`), the ledger
(`ledger`), the epoch-ordered replay (`replica`), and Merkle trees (`merkle`). Nothing here does
I/O, reads a clock or draws randomness, so the same inputs give the same bytes everywhere.
"""
