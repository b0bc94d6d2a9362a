"""Epoch validation: when do a server's epoch and the client's clock say the server lost its state?"""

from __future__ import annotations

import pytest

from reconciler.backends.pcp.epoch import natpmp_state_lost, pcp_state_lost


@pytest.mark.parametrize(
    ("prev_epoch", "prev_time", "new_epoch", "new_time", "lost"),
    [
        (100, 0.0, 110, 10.0, False),  # both advanced 10 s
        (100, 0.0, 100, 0.4, False),  # same second
        (100, 0.0, 99, 0.5, False),  # back by one second: quantisation, allowed
        (100, 0.0, 98, 0.5, True),  # back by two: time does not run backwards
        (5000, 0.0, 3, 3600.0, True),  # restarted an hour later
        (100, 0.0, 1100, 100.0, True),  # server ran ten times faster than the client
        (0, 0.0, 1000, 1060.0, False),  # 6 % apart: within 2 s + 1/16
        (0, 0.0, 1000, 1075.0, True),  # 7.5 % apart: the server's clock fell behind
        (0, 0.0, 1075, 1000.0, True),  # 7.5 % apart the other way
        (100, 10.0, 103, 11.0, False),  # 2 s of slack over a one-second interval
        (100, 10.0, 104, 11.0, True),  # 3 s is too much
    ],
)
def test_pcp_epoch_check_follows_rfc_6887_section_8_5(
    prev_epoch: int, prev_time: float, new_epoch: int, new_time: float, lost: bool
) -> None:
    """The epoch is invalid when it runs back more than 1 s or strays from the client's clock by
    more than 2 s plus 1/16 of the interval."""
    assert pcp_state_lost(prev_epoch, prev_time, new_epoch, new_time) is lost


@pytest.mark.parametrize(
    ("prev_epoch", "prev_time", "new_epoch", "new_time", "lost"),
    [
        (100, 0.0, 110, 10.0, False),  # both advanced 10 s
        (100, 0.0, 98, 0.0, False),  # 2 s behind: tolerated
        (100, 0.0, 97, 0.0, True),  # 3 s behind the last answer: restarted
        (1000, 0.0, 1068, 80.0, False),  # 7/8 of 80 s is 70 s; 2 s below that is tolerated
        (1000, 0.0, 1067, 80.0, True),  # more than 2 s below it is not
        (1000, 0.0, 5000, 80.0, False),  # running ahead is no loss of state in NAT-PMP's rule
        (5000, 0.0, 3, 3600.0, True),  # restarted an hour later
    ],
)
def test_natpmp_epoch_check_follows_rfc_6886_section_3_6(
    prev_epoch: int, prev_time: float, new_epoch: int, new_time: float, lost: bool
) -> None:
    """The state is lost when the epoch is more than 2 s below the previous one advanced by 7/8 of
    the client's elapsed time."""
    assert natpmp_state_lost(prev_epoch, prev_time, new_epoch, new_time) is lost
