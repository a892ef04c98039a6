"""The certificates a node holds, in bounded memory.

A channel certifies about one checkpoint a second by default, and each certificate carries a
quorum of signatures, so a node that kept every one in memory grew by the certificates alone
for as long as it ran, and checked all of them at every start. `HeldCertificates` keeps the
newest `KEEP` in memory and only the version numbers of the rest, as ranges (a run of
consecutive versions costs one pair however long it is); an older certificate is read from the
store, and checked against the genesis, when it is asked for. The store holds them all, and
each is also its file for the exit (`Store.put_certificate`).
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping

from channel.runtime.store import Store
from crdt.certificate import Certificate
from crdt.errors import InvalidInput
from crdt.genesis import Genesis

KEEP = 64  # certificates in memory: the newest, which the chain worker and catch-up ask for

log = logging.getLogger(__name__)


class VersionRanges:
    """A set of positive integers as sorted, disjoint, non-adjacent inclusive ranges."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, version: int) -> None:
        i = bisect.bisect_right(self._starts, version) - 1  # the range starting at or before it
        if i >= 0 and version <= self._ends[i]:
            return
        joins_left = i >= 0 and self._ends[i] == version - 1
        joins_right = i + 1 < len(self._starts) and self._starts[i + 1] == version + 1
        if joins_left and joins_right:
            self._ends[i] = self._ends.pop(i + 1)
            del self._starts[i + 1]
        elif joins_left:
            self._ends[i] = version
        elif joins_right:
            self._starts[i + 1] = version
        else:
            self._starts.insert(i + 1, version)
            self._ends.insert(i + 1, version)

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, int):
            return False
        i = bisect.bisect_right(self._starts, version) - 1
        return i >= 0 and version <= self._ends[i]

    def __iter__(self) -> Iterator[int]:
        for start, end in zip(self._starts, self._ends, strict=True):
            yield from range(start, end + 1)

    def __len__(self) -> int:
        return sum(end - start + 1 for start, end in zip(self._starts, self._ends, strict=True))

    @property
    def ranges(self) -> int:
        return len(self._starts)

    def max(self) -> int:
        """The largest version, 0 if there is none."""
        return self._ends[-1] if self._ends else 0


class HeldCertificates(Mapping[int, Certificate]):
    """Version -> certificate, for every certificate in the store; see the module's docstring.
    Iterating goes through the versions in order (and reads each older one from the store)."""

    def __init__(self, store: Store, genesis: Genesis, keep: int = KEEP) -> None:
        """Every stored version; the newest certificate read and checked (`InvalidInput` if it
        fails, which the caller reports as a damaged store)."""
        self.store, self.genesis, self.keep = store, genesis, keep
        self.versions = VersionRanges()
        for version in store.certificate_versions():
            self.versions.add(version)
        self._recent: OrderedDict[int, Certificate] = OrderedDict()
        newest = self.versions.max()
        if newest:
            self._recent[newest] = self._checked(newest, store.certificate(newest))

    def _checked(self, version: int, data: bytes | None) -> Certificate:
        if data is None:
            raise InvalidInput(f"certificate {version} is missing from the store")
        certificate = Certificate.decode(data)
        certificate.verify(self.genesis)
        if certificate.version != version:
            raise InvalidInput(f"the certificate stored as version {version} is of version {certificate.version}")
        return certificate

    def add(self, certificate: Certificate) -> None:
        """A certificate this node formed or received (and stored)."""
        self.versions.add(certificate.version)
        self._remember(certificate.version, certificate)

    def _remember(self, version: int, certificate: Certificate) -> None:
        self._recent[version] = certificate
        self._recent.move_to_end(version)
        while len(self._recent) > self.keep:
            self._recent.popitem(last=False)

    def newest(self) -> Certificate | None:
        newest = self.versions.max()
        return self[newest] if newest else None

    def __contains__(self, version: object) -> bool:
        return version in self.versions

    def __getitem__(self, version: int) -> Certificate:
        found = self._recent.get(version)
        if found is not None:
            return found
        if version not in self.versions:
            raise KeyError(version)
        try:
            certificate = self._checked(version, self.store.certificate(version))
        except InvalidInput as exc:  # a failing disk: say so, and answer as if it were not held
            log.error("the stored certificate of version %d fails its checks (%s); parley node repair "
                      "removes it and catch-up fetches it again", version, exc)
            raise KeyError(version) from exc
        self._remember(version, certificate)
        return certificate

    def __iter__(self) -> Iterator[int]:
        return iter(self.versions)

    def __len__(self) -> int:
        return len(self.versions)

    def in_memory(self) -> int:
        return len(self._recent)
