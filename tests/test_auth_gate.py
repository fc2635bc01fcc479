"""The auth gate (pure): while the provider refuses our token, at most one probe goes per interval, and
sending resumes as soon as a request is accepted. Properties over any sequence of events."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from mailer.domain.auth_gate import AuthGate

INTERVAL_S = 10.0

events = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.floats(0.0, 3 * INTERVAL_S)),
        st.tuples(st.sampled_from(["send", "refused", "accepted", "inconclusive"]), st.just(0.0)),
    ),
    max_size=60,
)


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def gate() -> tuple[AuthGate, Clock, list[str]]:
    clock = Clock()
    calls: list[str] = []
    return (
        AuthGate(
            INTERVAL_S, clock, lambda reason: calls.append(f"pause:{reason}"), lambda: calls.append("resume")
        ),
        clock,
        calls,
    )


@given(events)
def test_at_most_one_probe_per_interval_while_paused(sequence: list[tuple[str, float]]) -> None:
    auth, clock, calls = gate()
    probes: list[float] = []
    outstanding = False
    for kind, value in sequence:
        if kind == "tick":
            clock.now_s += value
        elif kind == "send":
            paused = auth.paused
            if auth.try_send():
                if paused:
                    probes.append(clock.now_s)
                    outstanding = True
            else:
                assert paused, "an open gate never refuses"
        elif kind == "refused":
            auth.refused("401")
            outstanding = False
        elif kind == "accepted":
            auth.accepted()
            outstanding = False
            probes.clear()  # sending resumed: the next pause starts afresh
        else:
            auth.inconclusive(probe=outstanding)
            outstanding = False
        if not auth.paused:
            assert auth.claim_limit(7) == 7
            assert auth.probe_in_s() is None
        else:
            assert auth.claim_limit(7) in (0, 1)
    # Probes of one pause are at least an interval apart.
    assert all(b - a >= INTERVAL_S for a, b in itertools.pairwise(probes))
    # Every pause is announced once and each resume follows a pause.
    pauses = [c for c in calls if c.startswith("pause")]
    assert len(pauses) - calls.count("resume") in (0, 1)


def test_refused_pauses_once_and_accepted_resumes() -> None:
    auth, clock, calls = gate()
    assert auth.try_send()
    auth.refused("token expired")
    auth.refused("token expired")
    assert calls == ["pause:token expired"]
    assert auth.claim_limit(100) == 0
    assert not auth.try_send()
    clock.now_s += INTERVAL_S
    assert auth.claim_limit(100) == 1
    assert auth.try_send()  # the probe
    assert not auth.try_send()  # only one at a time
    auth.accepted()
    assert calls == ["pause:token expired", "resume"]
    assert auth.claim_limit(100) == 100
