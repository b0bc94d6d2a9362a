"""Did the server lose its mappings? Judged from its epoch and the client's own clock. Pure.

Every PCP and NAT-PMP answer carries the seconds since the server's mapping state began. Between
two answers that value must advance about as fast as the client's clock; when it runs back or falls
behind, the server restarted (or otherwise lost its table) and every mapping must be made again.
The client times are the client's clock when each answer arrived, in seconds, passed in by the
caller: nothing here reads a clock. The backend passes the wall clock, because the last epoch is kept
across runs; a wall clock stepped by more than the RFC's allowance (NTP at boot) can therefore read
as a restart, which costs one needless re-add and loses nothing.
"""

from __future__ import annotations

from ...boot import EpochRule


def pcp_state_lost(prev_epoch: int, prev_client_time: float, new_epoch: int, new_client_time: float) -> bool:
    """RFC 6887 section 8.5: true when the new epoch is invalid against the previous answer.

    It may not run back by more than one second, and the two clocks may disagree by at most
    2 seconds plus 1/16 of the interval (quantisation and drift).
    """
    if new_epoch < prev_epoch - 1:
        return True
    client_delta = int(new_client_time - prev_client_time)
    server_delta = new_epoch - prev_epoch
    return client_delta + 2 < server_delta - server_delta // 16 or server_delta + 2 < client_delta - client_delta // 16


def natpmp_state_lost(prev_epoch: int, prev_client_time: float, new_epoch: int, new_client_time: float) -> bool:
    """RFC 6886 section 3.6: true when the new epoch is more than 2 seconds below the previous one
    advanced by 7/8 of the client's elapsed time (the client's clock may run up to 1/8 fast)."""
    expected = prev_epoch + (new_client_time - prev_client_time) * 7 / 8
    return new_epoch < expected - 2


# The rules as the agent's restart check takes them (reconciler.boot): an epoch reading becomes a Boot.
PCP_RULE = EpochRule("pcp-epoch", pcp_state_lost, "PCP epoch")
NATPMP_RULE = EpochRule("natpmp-epoch", natpmp_state_lost, "NAT-PMP epoch")
