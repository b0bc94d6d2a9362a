"""The suite's own guard: code in the test process sends datagrams to loopback only (conftest)."""

from __future__ import annotations

import socket

import pytest


def test_a_datagram_off_this_host_fails_the_test_before_it_is_sent() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(AssertionError, match="off this host"):
        s.sendto(b"M-SEARCH", ("192.0.2.1", 1900))  # TEST-NET-1: never routed, never sent


def test_loopback_datagrams_go_through() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(30)
        tx.sendto(b"ping", rx.getsockname())
        assert rx.recv(16) == b"ping"
