"""Scores, bans and rate limits (pure; time is passed in)."""

from __future__ import annotations

from p2p.policy import PeerScores, ScorePolicy, TokenBucket


def test_bad_signatures_ban_after_the_threshold_once() -> None:
    scores = PeerScores(ScorePolicy(ban_threshold=100, half_life=60))
    assert not scores.penalize(b"p", "bad_signature", 0.0)
    assert scores.penalize(b"p", "bad_signature", 0.0)
    assert not scores.penalize(b"p", "bad_signature", 0.0)  # reported once
    assert scores.is_banned(b"p")
    assert not scores.is_banned(b"q")
    assert scores.penalties == {"bad_signature": 3}


def test_penalties_decay() -> None:
    scores = PeerScores(ScorePolicy(ban_threshold=100, half_life=10))
    scores.penalize(b"p", "malformed", 0.0)
    assert scores.score(b"p", 10.0) == -12.5
    for t in range(0, 1000, 10):  # one malformed message every 10 s never adds up to a ban
        assert not scores.penalize(b"p", "malformed", float(t))


def test_token_bucket_limits_a_flood_and_refills() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert sum(bucket.take(1, 0.0) for _ in range(100)) == 20
    assert not bucket.take(1, 0.0)
    assert bucket.take(10, 1.0)
    assert not bucket.take(1, 1.0)
    assert bucket.take(20, 100.0)
