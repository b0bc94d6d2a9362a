"""Derived PCP nonces, the secret they come from, and the descriptions miniupnpd gives mappings."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from reconciler.backends.pcp.nonce import (
    SECRET_FILE,
    SecretError,
    load_secret,
    mapping_nonce,
    miniupnpd_description,
    natpmp_description,
)

SECRET = bytes(range(32))


def test_the_same_mapping_always_gets_the_same_nonce() -> None:
    """Renew and delete match: the nonce depends only on the secret and the mapping's identity."""
    first = mapping_nonce(SECRET, "home", "web", "TCP", 8080)
    assert len(first) == 12
    assert mapping_nonce(SECRET, "home", "web", "tcp", 8080) == first


@pytest.mark.parametrize(
    "other",
    [
        (SECRET[::-1], "home", "web", "TCP", 8080),
        (SECRET, "office", "web", "TCP", 8080),
        (SECRET, "home", "ssh", "TCP", 8080),
        (SECRET, "home", "web", "UDP", 8080),
        (SECRET, "home", "web", "TCP", 8081),
        (SECRET, "homeweb", "", "TCP", 8080),  # no ambiguity where one field ends and the next begins
    ],
)
def test_every_part_of_the_identity_changes_the_nonce(other: tuple[bytes, str, str, str, int]) -> None:
    """Another secret, owner, name, protocol or port gives another nonce."""
    assert mapping_nonce(*other) != mapping_nonce(SECRET, "home", "web", "TCP", 8080)


def test_the_secret_is_made_once_private_and_then_reused(tmp_path: str) -> None:
    """The first call creates a 32-byte secret readable only by its owner; later calls read it back."""
    directory = os.path.join(str(tmp_path), "cache")
    secret = load_secret(directory)
    path = os.path.join(directory, SECRET_FILE)
    assert len(secret) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(directory) == secret
    assert os.listdir(directory) == [SECRET_FILE]  # no temporary file left behind


def test_processes_starting_together_share_one_secret(tmp_path: str) -> None:
    """Many loaders racing on an empty directory all end up with the same secret."""
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(load_secret(str(tmp_path)))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 16 and len(set(results)) == 1


def test_a_damaged_secret_is_refused_not_replaced(tmp_path: str) -> None:
    """A secret of the wrong size is an error naming the file; it is not silently regenerated."""
    path = os.path.join(str(tmp_path), SECRET_FILE)
    with open(path, "wb") as f:
        f.write(b"short")
    os.chmod(path, 0o600)
    with pytest.raises(SecretError, match=f"{path}: the PCP nonce secret has 5 bytes, not 32"):
        load_secret(str(tmp_path))
    with open(path, "rb") as f:
        assert f.read() == b"short"


def test_a_secret_others_can_read_is_refused(tmp_path: str) -> None:
    """A secret restored with mode 0644 is refused, naming the mode and the remedy; not used, not replaced."""
    secret = load_secret(str(tmp_path))
    path = os.path.join(str(tmp_path), SECRET_FILE)
    os.chmod(path, 0o644)
    with pytest.raises(SecretError, match=r"must be this user's alone.*mode 644.*chmod 600"):
        load_secret(str(tmp_path))
    os.chmod(path, 0o600)
    assert load_secret(str(tmp_path)) == secret


def test_miniupnpd_prints_the_nonce_as_words_in_its_byte_order() -> None:
    """As measured on x86 (PROTOCOL-NOTES): 00112233... shows as 33221100...; big-endian keeps it."""
    nonce = bytes.fromhex("00112233445566778899aabb")
    assert miniupnpd_description(nonce) == "PCP MAP 3322110077665544bbaa9988"
    assert miniupnpd_description(nonce, "big") == "PCP MAP 00112233445566778899aabb"


def test_natpmp_description_names_the_external_port_and_protocol() -> None:
    """miniupnpd labels a NAT-PMP mapping with its external port and lower-case protocol."""
    assert natpmp_description(9600, "TCP") == "NAT-PMP 9600 tcp"
