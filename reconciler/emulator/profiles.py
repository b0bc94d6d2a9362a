"""Quirk profiles: how real routers deviate from the IGD spec, each a small declaration.

A Profile is data; `router.Router` (the table's semantics) and `server.EmulatorServer` (the wire)
read it. `portctl emulate --profile NAME` serves one, and the tests run every profile through a
full plan -> apply -> plan cycle. docs/quirks.md lists what portctl does about each.
"""

from __future__ import annotations

from dataclasses import dataclass

SPEC_EXTERNAL_IP = "203.0.113.7"  # TEST-NET-3: public-looking, routes nowhere


@dataclass(frozen=True)
class Profile:
    name: str = "spec"
    summary: str = "follows the IGD spec (WANIPConnection:2 by default)"
    seen_on: str = "miniupnpd"
    igd_version: int = 2
    service_type: str = ""  # default: urn:schemas-upnp-org:service:WANIPConnection:<igd_version>
    external_ip: str = SPEC_EXTERNAL_IP
    # AddPortMapping refusals: the error code answered, 0 for none.
    finite_lease_error: int = 0  # for any lease other than 0
    permanent_lease_error: int = 0  # for lease 0
    different_ports_error: int = 0  # for internal port != external port
    remote_host_error: int = 0  # for a non-empty remote host
    specific_port_error: int = 0  # for any external port (only wildcards would do)
    below_1024_error: int = 0  # for external ports below 1024
    add_error: int = 0  # for every add
    secure_mode: bool = False  # only the internal client itself may add or delete its mapping
    # Permission rules (miniupnpd's allow/deny lines): internal clients outside these networks are
    # refused with 606 (IGD v2) or 718 (IGD v1); empty: every client is allowed.
    permitted_clients: tuple[str, ...] = ()
    description_limit: int = 0  # characters kept of a description; 0: all
    # Reading the table.
    index_end: int | str = 713  # what GetGenericPortMappingEntry answers past the end; "http-500": a bare 500
    list_resets: bool = False  # GetListOfPortMappings is advertised but drops the connection
    list_abort_over: int = 0  # a listing of more entries than this kills the daemon (0: no limit)
    list_cap: int = 0  # a listing answers at most this many rows, the newest first, not the lowest ports (0: all)
    # The wire.
    strict_soap: bool = False  # exact SOAPAction, no leading whitespace, prefixed action element
    delay: float = 0.0  # seconds before every answer
    flaky_every: int = 0  # every Nth request fails: alternately a bare HTTP 500 and a dropped connection
    dead_wan_first: bool = False  # a disconnected WAN connection service is listed before the live one
    ssdp: str = "standard"  # "odd-port": answers from another port; "unicast-only": ignores multicast
    # PCP and NAT-PMP on the UDP port (EmulatorServer's pcp_port), as miniupnpd answers them.
    pcp: str = "v2"  # "v2": PCP version 2 and NAT-PMP; "natpmp-only": a PCP request gets NAT-PMP's
    # version-0 UNSUPP_VERSION; "unsupp-version": it gets a PCP UNSUPP_VERSION naming version 1
    epoch_period: int = 0  # the daemon restarts every this many seconds: the epoch runs back, the table stays
    byteorder: str = "little"  # how the router prints a PCP nonce's 32-bit words in its UPnP descriptions
    pcp_third_party: bool = False  # PCP maps for other hosts (THIRD_PARTY; miniupnpd: pcp_allow_thirdparty=yes)
    # IPv6 pinholes: WANIPv6FirewallControl:1 is served where igd_version >= 2 and this is True.
    pinholes: bool = True


_PROFILES = (
    Profile(),
    Profile(
        "permanent-only",
        "any lease other than 0 fails with 725 OnlyPermanentLeasesSupported",
        "MikroTik RouterOS; some Netgear and Zyxel firmware",
        igd_version=1,
        finite_lease_error=725,
    ),
    Profile(
        "finite-only",
        "lease 0 fails with 402 Invalid Args; leases up to 604800 work",
        "IGD v1 firmware that reads lease 0 literally (some D-Link, Technicolor)",
        igd_version=1,
        permanent_lease_error=402,
    ),
    Profile(
        "arris",
        "a finite lease fails with 402 Invalid Args; only permanent leases work",
        "Arris cable gateways (TG1682, SB6183 firmware)",
        igd_version=1,
        finite_lease_error=402,
    ),
    Profile(
        "same-port-only",
        "external != internal port fails with 724 SamePortValuesRequired",
        "Broadcom-based ISP boxes",
        igd_version=1,
        different_ports_error=724,
    ),
    Profile(
        "wildcard-remote-only",
        "a non-empty remote host fails with 726 RemoteHostOnlySupportsWildcard",
        "most consumer routers (Netgear, TP-Link Archer)",
        remote_host_error=726,
    ),
    Profile(
        "wildcard-external-only",
        "every specific external port fails with 727 ExternalPortOnlySupportsWildcard",
        "rare; a spec-allowed IGD v1 deviation",
        igd_version=1,
        specific_port_error=727,
    ),
    Profile(
        "no-privileged-ports",
        "external ports below 1024 fail with 606 ActionNotAuthorized",
        "TP-Link ER605; miniupnpd's default permission rules",
        below_1024_error=606,
    ),
    Profile(
        "igd1-ppp",
        "only WANPPPConnection:1",
        "PPPoE DSL boxes (Fritz!Box on DSL, Speedport)",
        igd_version=1,
        service_type="urn:schemas-upnp-org:service:WANPPPConnection:1",
    ),
    Profile(
        "legacy-dslforum",
        "the connection service is urn:dslforum-org:service:WANIPConnection:1",
        "Huawei HG531 and other TR-064-derived ISP boxes",
        igd_version=1,
        service_type="urn:dslforum-org:service:WANIPConnection:1",
    ),
    Profile(
        "two-wan",
        "two WAN connection services; the first listed is disconnected with no address",
        "MikroTik CHR, dual-WAN routers",
        igd_version=1,
        dead_wan_first=True,
    ),
    Profile(
        "index-end-402",
        "GetGenericPortMappingEntry past the end answers 402 instead of 713",
        "DD-WRT",
        igd_version=1,
        index_end=402,
    ),
    Profile(
        "index-end-500",
        "GetGenericPortMappingEntry past the end answers a bare HTTP 500",
        "Linksys WRT1900AC",
        igd_version=1,
        index_end="http-500",
    ),
    Profile(
        "index-end-501",
        "GetGenericPortMappingEntry past the end answers 501 ActionFailed",
        "assorted ISP boxes",
        igd_version=1,
        index_end=501,
    ),
    Profile(
        "list-resets",
        "GetListOfPortMappings is advertised but resets the connection",
        "Ubee EVW32C",
        list_resets=True,
    ),
    Profile(
        "truncates-descriptions",
        "descriptions are cut to 16 characters",
        "older Netgear and Belkin firmware",
        igd_version=1,
        description_limit=16,
    ),
    Profile(
        "strict-soap",
        "rejects an inexact SOAPAction, leading whitespace, an unprefixed action element, lower-case protocol",
        "Linksys WRT120N, MikroTik RB951G, TP-Link ER605",
        strict_soap=True,
    ),
    Profile(
        "cgnat",
        "the external address is carrier-grade NAT (100.64.0.0/10); every add fails with 501",
        "miniupnpd behind an ISP's CGNAT",
        external_ip="100.64.12.34",
        add_error=501,
    ),
    Profile(
        "secure-mode",
        "a mapping for another LAN address fails with 606 (IGD v2) or 718 (IGD v1); so does deleting one",
        "miniupnpd secure_mode=yes (most Linux-based routers)",
        secure_mode=True,
    ),
    Profile(
        "permission-rules",
        "a mapping to a client outside the LAN (192.168.1.0/24) or below port 1024 fails with 606",
        "miniupnpd's sample permission rules (allow 1024-65535 on the LAN, deny the rest)",
        permitted_clients=("127.0.0.0/8", "192.168.1.0/24"),
        below_1024_error=606,
    ),
    Profile("slow", "every answer is delayed 2 s", "overloaded ISP boxes", delay=2.0),
    Profile(
        "flaky",
        "one request in five is answered with a bare HTTP 500 or a dropped connection",
        "overloaded ISP boxes, Wi-Fi mesh nodes",
        flaky_every=5,
    ),
    Profile(
        "miniupnpd-2.3.1",
        "GetListOfPortMappings answers 128 of a range's entries, the newest first; of more than 132 it "
        "crashes the daemon, which restarts empty",
        "Debian 12's miniupnpd 2.3.1 (fixed upstream in 2.3.4)",
        list_abort_over=132,
        list_cap=128,
    ),
    Profile(
        "natpmp-only",
        "speaks NAT-PMP but not PCP: a PCP request is answered with NAT-PMP's version-0 UNSUPP_VERSION",
        "Apple AirPort, older Tomato and DD-WRT builds (miniupnpd before 2.0)",
        pcp="natpmp-only",
    ),
    Profile(
        "pcp-unsupp-version",
        "a PCP version 2 request is answered with UNSUPP_VERSION naming version 1; NAT-PMP works",
        "firmware built on the PCP draft (version 1), such as early Apple and Cisco implementations",
        pcp="unsupp-version",
    ),
    Profile(
        "epoch-goes-back",
        "the PCP/NAT-PMP daemon restarts every 10 minutes, keeping its table: the epoch runs back to 0",
        "OpenWrt restarting miniupnpd (with its lease file) on every WAN ifupdate or DHCP renewal",
        epoch_period=600,
    ),
    Profile(
        "pcp-third-party",
        "PCP maps ports for other hosts: a MAP with THIRD_PARTY is the named host's mapping",
        "miniupnpd with pcp_allow_thirdparty=yes",
        pcp_third_party=True,
    ),
    Profile(
        "no-pinholes",
        "IGD v1 without WANIPv6FirewallControl: every pinhole action is answered 401 Invalid Action",
        "IGD v1 routers, miniupnpd built without IPv6",
        igd_version=1,
        pinholes=False,
    ),
    Profile("ssdp-odd-port", "SSDP answers come from a port other than 1900", "various", ssdp="odd-port"),
    Profile(
        "ssdp-unicast-only",
        "SSDP answers only a unicast M-SEARCH sent to the gateway",
        "Eero",
        ssdp="unicast-only",
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in _PROFILES}
