"""Numbers from outside (router answers, headers, flags, config files) are plain ASCII digits or one clear error."""

from __future__ import annotations

import pytest

from reconciler import discovery
from reconciler.agent.config import ConfigError, build, split_address
from reconciler.backends import gena, soap
from reconciler.durations import parse_duration
from reconciler.errors import RouterProtocolError
from reconciler.numbers import NotANumber, ascii_int, seconds
from tests.helpers import portctl

# Each of these int() either refuses with Python's own words, or reads as a number it should not.
ODD = [
    "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
    "1\u00b9",
    "\u0663\u0666",  # Arabic-Indic 36
    "\uff18\uff10",  # fullwidth 80
    "1_000",
    " 80",
    "80 ",
    "+80",
    "",
    "9" * 5000,  # beyond int()'s 4300-digit limit
]


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("80", 80), ("0080", 80), ("4294967295", 4294967295)])
def test_ascii_int_reads_plain_digits(text: str, value: int) -> None:
    """ASCII digits are the number they spell."""
    assert ascii_int(text) == value


@pytest.mark.parametrize("text", [*ODD, "-1", "12345678901"])
def test_ascii_int_refuses_anything_else(text: str) -> None:
    """Other scripts' digits, separators, whitespace, signs and over-long numbers are NotANumber, quoting the text."""
    with pytest.raises(NotANumber) as caught:
        ascii_int(text)
    assert str(caught.value).startswith(repr(text[:24]))
    assert len(str(caught.value)) < 120


def test_signed_ints_take_a_minus_only_where_allowed() -> None:
    """A sign is part of the number only for signed fields, and `+` never."""
    assert ascii_int("-12", signed=True) == -12
    with pytest.raises(NotANumber):
        ascii_int("+12", signed=True)


@pytest.mark.parametrize(("text", "value"), [("5", 5.0), ("2.5", 2.5), (".5", 0.5), (3, 3.0), (0.25, 0.25)])
def test_seconds_reads_plain_numbers(text: str | float, value: float) -> None:
    """Seconds are ASCII decimals, or numbers a YAML file already parsed."""
    assert seconds(text) == value


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "0", "1e3", "\u0665", "1_0", float("nan"), float("inf"), -1, 0])
def test_seconds_refuses_nan_inf_negative_and_zero(text: str | float) -> None:
    """nan, inf, negative, zero, exponents and other scripts' digits are not a timeout."""
    with pytest.raises(NotANumber, match="is not a number of seconds above 0"):
        seconds(text)


@pytest.mark.parametrize("text", ["\u00b2", "9" * 5000, "9" * 5000 + "s"])
def test_durations_refuse_odd_digits(text: str) -> None:
    """A duration is ASCII digits with units; anything else is a ValueError naming the text, not Python's message."""
    with pytest.raises(ValueError, match="is not a") as caught:
        parse_duration(text)
    assert "4300" not in str(caught.value)


@pytest.mark.parametrize("code", ["7\u00b94", "\u0667\u0661\u0664", "7_14", "+714", "9" * 5000])
def test_a_fault_code_int_cannot_read_is_a_protocol_error(code: str) -> None:
    """A UPnP errorCode int() refuses or misreads makes the answer malformed, named by the action."""
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        f"<detail><UPnPError><errorCode>{code}</errorCode></UPnPError></detail></s:Fault></s:Body></s:Envelope>"
    ).encode()
    with pytest.raises(RouterProtocolError, match=r"^GetExternalIPAddress: malformed answer .*errorCode"):
        soap.answer("GetExternalIPAddress", 500, body)


@pytest.mark.parametrize(
    "header", ["Second-\u00b2", "Second-\u0663", "Second-1_0", "Second-+5", "Second-" + "9" * 5000]
)
def test_a_gena_timeout_int_cannot_read_is_not_a_number(header: str) -> None:
    """A TIMEOUT header whose number int() refuses or misreads is NotANumber, not a ValueError from int()."""
    with pytest.raises(NotANumber, match="is not a TIMEOUT such as Second-1800"):
        gena.timeout_seconds(header, 1800)


@pytest.mark.parametrize("listen", ["127.0.0.1:\u00b2", "127.0.0.1:\u0669\u0664\u0667\u0667", "h:9" + "9" * 5000])
def test_a_listen_port_that_is_not_a_number_is_a_config_error(listen: str) -> None:
    """--listen takes an ASCII port: anything else is a ConfigError (one message, exit 1)."""
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        split_address(listen)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("timeout", ".nan"), ("timeout", ".inf"), ("timeout", "-1"), ("timeout", "0"), ("events-port", "'\u0668'")],
)
def test_config_file_numbers_are_checked_like_flags(tmp_path: str, setting: str, value: str) -> None:
    """timeout: .nan, .inf, -1 or 0 in the agent's config file is a ConfigError naming the file, line and setting."""
    path = f"{tmp_path}/agent.yaml"
    with open(path, "w") as f:
        f.write(f"manifest: m.yaml\n{setting}: {value}\n")
    with pytest.raises(ConfigError, match=f"^{path}:2:{len(setting) + 3}: {setting}: "):
        build(path, {})


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "\u0665"])
@pytest.mark.parametrize("command", [["plan", "m.yaml"], ["agent", "--manifest", "m.yaml"], ["discover"]])
def test_a_timeout_flag_that_is_not_seconds_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: list[str], value: str
) -> None:
    """--timeout nan, inf, -1, 0: argparse's usage error (exit 2) naming the flag, and no traceback."""
    with pytest.raises(SystemExit) as exited:
        portctl(capsys, *command, f"--timeout={value}")
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert f"error: argument --timeout: {value!r} is not a number of seconds above 0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("listen", ["127.0.0.1:\u00b2", "127.0.0.1:1\u00b2"])
def test_an_agent_listen_port_that_is_not_a_number_is_one_error(
    capsys: pytest.CaptureFixture[str], listen: str
) -> None:
    """`portctl agent --listen HOST:²` exits 1 with one line, as any other bad agent setting does."""
    run = portctl(capsys, "agent", "--manifest", "m.yaml", "--listen", listen)
    assert run.code == 1
    assert run.err == f"error: the command line: listen: {listen!r} is not HOST:PORT (for example 127.0.0.1:9477)\n"


def test_an_ssdp_config_id_in_other_digits_is_dropped() -> None:
    """A CONFIGID.UPNP.ORG int() would misread is ignored: the answer is used without it."""
    reply = (
        "HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n"
        "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\nCONFIGID.UPNP.ORG: \u00b2\r\n\r\n"
    ).encode("latin-1")
    answer = discovery.parse_reply(reply, "192.168.1.1", gateway="192.168.1.1", subnets=None)
    assert answer is not None and answer.config_id == ""
