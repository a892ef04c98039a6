"""The certificates a node holds in bounded memory: the newest in memory, every version as a
range, older ones read and checked from the store when asked for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from channel.runtime.certificates import HeldCertificates, VersionRanges
from channel.runtime.store import Store
from tests.channel.cli.test_certificates_cli import GENESIS, certificates


@given(st.lists(st.integers(1, 60)))
@example([3, 1, 2])  # a gap filled from both sides joins two ranges
@example([5, 5, 4, 6])
def test_version_ranges_are_the_set_they_were_given(versions: list[int]) -> None:
    ranges = VersionRanges()
    for version in versions:
        ranges.add(version)
    assert list(ranges) == sorted(set(versions))
    assert len(ranges) == len(set(versions))
    assert all((v in ranges) == (v in set(versions)) for v in range(0, 62))
    assert ranges.max() == max(versions, default=0)
    runs = sum(1 for v in set(versions) if v - 1 not in set(versions))
    assert ranges.ranges == runs  # adjacent versions always share one range


def test_only_the_newest_stay_in_memory_and_older_ones_come_from_the_store(tmp_path: Path) -> None:
    made = certificates(6)
    store = Store(tmp_path / "node" / "node.sqlite")
    try:
        for certificate in made[:4]:
            store.put_certificate(certificate.version, certificate.encode())
        held = HeldCertificates(store, GENESIS, keep=2)
        assert held.in_memory() == 1  # a start reads and checks only the newest
        assert held.newest() == made[3]
        for certificate in made[4:]:
            store.put_certificate(certificate.version, certificate.encode())
            held.add(certificate)
        assert list(held) == [1, 2, 3, 4, 5, 6]
        assert held.in_memory() == 2
        assert held[1] == made[0]  # read back from the store, checked
        assert held.in_memory() == 2
        assert held.get(7) is None and 7 not in held
        assert held.newest() == made[5]
    finally:
        store.close()


def test_a_damaged_older_certificate_reads_as_not_held(tmp_path: Path) -> None:
    made = certificates(3)
    path = tmp_path / "node" / "node.sqlite"
    store = Store(path)
    try:
        for certificate in made:
            store.put_certificate(certificate.version, certificate.encode())
    finally:
        store.close()
    with sqlite3.connect(path) as db:  # another certificate's bytes under version 1
        db.execute("UPDATE certificates SET certificate = ? WHERE version = 1", (made[1].encode(),))
    store = Store(path)
    try:
        held = HeldCertificates(store, GENESIS, keep=1)
        assert 1 in held  # the version is listed ...
        assert held.get(1) is None  # ... but what the disk holds for it is not its certificate
        assert held.get(2) == made[1]
    finally:
        store.close()
