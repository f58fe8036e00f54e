"""carechain.dev.localnet: the restart policy `carechain up` supervises with."""

from __future__ import annotations

from carechain.dev.localnet import RestartPolicy


def test_restart_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    policy = RestartPolicy(first_delay_seconds=1.0, max_delay_seconds=30.0)
    assert [policy.backoff(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
