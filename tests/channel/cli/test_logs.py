"""``node run --log-json``: every record, libp2p's included, is one JSON line on stderr with a
UTC timestamp; the text format has the timestamp too."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from channel.cli.logs import configure


@pytest.fixture
def restored() -> Iterator[None]:
    """The logging configuration as it was (configure changes the root and libp2p's loggers)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libp2p = logging.getLogger("libp2p")
    before = (libp2p.handlers[:], libp2p.propagate, libp2p.level)
    yield
    root.handlers[:], root.level = handlers, level
    libp2p.handlers[:], libp2p.propagate, libp2p.level = before[0], before[1], before[2]


@pytest.mark.usefixtures("restored")
def test_json_lines_for_ours_and_libp2p_s(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", as_json=True)
    logging.getLogger("channel.runtime.node").info("node 0x%s serving %s", "ab", "http://x", extra={"seq": 3})
    logging.getLogger("libp2p.host.basic_host").warning("peer %s went away", "12D3Koo")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("channel").exception("failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["level"], line["logger"], line["message"]) for line in lines] == [
        ("info", "channel.runtime.node", "node 0xab serving http://x"),
        ("warning", "libp2p.host.basic_host", "peer 12D3Koo went away"),
        ("error", "channel", "failed"),
    ]
    assert lines[0]["seq"] == 3
    assert "ValueError: boom" in lines[2]["exc"]
    for line in lines:
        assert datetime.fromisoformat(line["ts"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.usefixtures("restored")
def test_text_lines_carry_a_timestamp_and_libp2p_s_level_stays(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", as_json=False)
    logging.getLogger("libp2p.pubsub").info("chatty")  # below libp2p's own WARNING: not shown
    logging.getLogger("libp2p.pubsub").warning("loud")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" WARNING libp2p.pubsub: loud")
    datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")


def test_configured_leaves_the_logging_as_it_was() -> None:
    """A node run in-process (a CliRunner test) leaves no handler or level behind."""
    from channel.cli.logs import configured

    root, libp2p = logging.getLogger(), logging.getLogger("libp2p")
    before = (root.handlers[:], root.level, libp2p.handlers[:], libp2p.propagate, libp2p.level)
    with configured("debug", as_json=True):
        assert root.level == logging.DEBUG
        assert libp2p.propagate
    assert (root.handlers, root.level, libp2p.handlers, libp2p.propagate, libp2p.level) == before
