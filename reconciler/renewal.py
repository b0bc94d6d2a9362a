"""When a lease is renewed: the one place for the shares of a lease that decide it.

A lease is renewed before half of it has gone, so that a failed attempt leaves time for another.
`portctl plan` renews a lease once less than half of it is left. The agent renews earlier: it
plans with a higher share and wakes for a lease between the two, so the pass it wakes for is sure
to renew (less is left than it plans with) and is done before half (more is left than that).
"""

from __future__ import annotations

PLAN_BELOW = 0.5  # a plan renews a lease once less than this share of it is left
AGENT_BELOW = 0.6  # the agent's passes renew once less than this share is left ...
AGENT_WAKE = 0.55  # ... and the agent wakes for a lease when this share is left


def agent_wakes_in(left: float, lease: float) -> float:
    """Seconds until the agent should wake to renew a lease of `lease` seconds with `left` to go."""
    return left - AGENT_WAKE * lease
