"""A real router to test against: miniupnpd in network namespaces that this module creates.

    LAN host 192.168.77.2 --veth-- 192.168.77.1 router 11.22.33.1 --veth-- 11.22.33.2 internet host
    ipv6=True:  2001:db8:77::2         2001:db8:77::1   2001:db8:1122::1     2001:db8:1122::2
    second_host=True:
    LAN host 192.168.77.3 --veth-- 192.168.77.1 (a /32 route each way, so the first link stays as it is)

The router runs miniupnpd: Debian's nftables build, or with `build="iptables"` Debian's iptables build
unpacked from its .deb (the packages conflict; `make system-deps` unpacks it, see iptables_dir()).
With `ipv6=True` both sides also carry IPv6 from the documentation prefix 2001:db8::/32 only, with
the same forward-drop firewall, so only a pinhole lets IPv6 from the internet host reach the LAN.
With `ipv6_link_local_gateway=True` too, the LAN host's IPv6 default route goes via the router's
link-local address fe80::1 (as router advertisements make it at home) instead of its global one.
tests/labfixtures.py makes the pytest fixtures over it.

Every address lives in namespaces made here, and all traffic stays inside them; nothing is added
to the machine's own namespace except the veth pairs' creation, and both ends move out at once.
miniupnpd refuses to map behind a private WAN address, so the WAN side uses a public-looking one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LAN_IP, ROUTER_LAN_IP, ROUTER_WAN_IP, NET_IP = "192.168.77.2", "192.168.77.1", "11.22.33.1", "11.22.33.2"
LAN2_IP = "192.168.77.3"  # the second LAN host, with second_host=True
HTTP_PORT = 5000
LAN_IP6, ROUTER_LAN_IP6 = "2001:db8:77::2", "2001:db8:77::1"
ROUTER_WAN_IP6, NET_IP6 = "2001:db8:1122::1", "2001:db8:1122::2"
LAN_NET6 = "2001:db8:77::/64"
ROUTER_LINK_LOCAL = "fe80::1"  # the router's LAN side, with ipv6_link_local_gateway=True
BUILDS = ("nftables", "iptables")
# miniupnpd's permission rules, first match wins: any port for the LAN, nothing else.
OPEN_RULES = ("allow 1-65535 192.168.77.0/24 1-65535", "deny 0-65535 0.0.0.0/0 0-65535")
# The rules of miniupnpd's sample configuration: unprivileged ports for the LAN, nothing else.
SAMPLE_RULES = ("allow 1024-65535 192.168.77.0/24 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535")

# Answers every connection with a greeting; stops by itself after `lifetime` seconds. IPv4, or IPv6
# (all addresses of the LAN host) with a third argument "6".
_SERVER = """
import socket, sys, time
v6 = sys.argv[3:] == ["6"]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if v6 else "0.0.0.0", int(sys.argv[1]))); s.listen(16); s.settimeout(0.5)
deadline = time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < deadline:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    c.sendall(b"hello from the LAN"); c.close()
"""
_CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as c:
        c.settimeout(2); print(c.recv(100).decode())
except OSError as e:
    print("unreachable:", e)
"""


def missing_prerequisites() -> str:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft", "miniupnpd", "upnpc", "natpmpc"):  # natpmpc: another app's NAT-PMP mappings
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: miniupnpd-nftables miniupnpc natpmpc nftables iproute2)"
    return ""


def iptables_dir() -> str:
    """Where `make system-deps` unpacked miniupnpd-iptables and legacy iptables (PORTCTL_LAB_IPTABLES overrides)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("PORTCTL_LAB_IPTABLES") or os.path.join(here, "..", ".lab", "miniupnpd-iptables")


def missing_build(build: str) -> str:
    """Why this miniupnpd build cannot run here, or "" (missing_prerequisites() covers the nftables one)."""
    if build not in BUILDS:
        return f"no such build {build!r}: one of {', '.join(BUILDS)}"
    if build == "iptables":
        root = iptables_dir()
        for tool in ("usr/sbin/miniupnpd", "usr/sbin/iptables-legacy-restore"):
            if not os.path.exists(os.path.join(root, tool)):
                return f"needs miniupnpd-iptables unpacked in {root} (make system-deps, as root)"
    return ""


# A command in a namespace must end by itself; these bound it. Generous: on a shared CI machine a
# single request to miniupnpd was seen to take over 30 s, and one apply writes several rows.
COMMAND_TIMEOUT = 180.0
PORTCTL_TIMEOUT = 300.0


def eventually(condition: Callable[[], bool], timeout: float = 30) -> bool:
    """Does `condition` come true within `timeout`? For positive traffic checks: a busy machine may lose one try."""
    try:
        wait_for(condition, timeout, "the condition")
    except TimeoutError:
        return False
    return True


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Lab:
    prefix: str
    igd1: bool = False
    secure_mode: bool = False
    rules: tuple[str, ...] = OPEN_RULES  # miniupnpd's allow/deny lines
    emulator: str = ""  # a quirk profile: run portctl's emulator (with SSDP) as the router instead of miniupnpd
    ipv6: bool = False  # IPv6 on both sides too (documentation prefixes), pinholes through the same firewall
    build: str = "nftables"  # which miniupnpd: "nftables" (installed) or "iptables" (unpacked, see iptables_dir)
    upnp: bool = True  # False: miniupnpd with UPnP IGD off (no HTTP, no SSDP); PCP and NAT-PMP stay on
    second_host: bool = False  # a second LAN host, LAN2_IP in namespace lan2 (a server for another host's mapping)
    pcp_third_party: bool = False  # miniupnpd maps through PCP for other hosts (THIRD_PARTY option)
    # With ipv6: the LAN host's IPv6 default route goes via the router's link-local address (as router
    # advertisements make it on real home networks), ROUTER_LINK_LOCAL on its LAN side, not its global one.
    ipv6_link_local_gateway: bool = False
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="portctl-lab-"))
    _daemon: subprocess.Popen[bytes] | None = None
    _servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def lan(self) -> str:
        return f"{self.prefix}lan"

    @property
    def lan2(self) -> str:
        return f"{self.prefix}lan2"

    @property
    def rtr(self) -> str:
        return f"{self.prefix}rtr"

    @property
    def net(self) -> str:
        return f"{self.prefix}net"

    @property
    def url(self) -> str:
        return f"http://{ROUTER_LAN_IP}:{HTTP_PORT}/rootDesc.xml"

    @property
    def url6(self) -> str:
        return f"http://[{ROUTER_LAN_IP6}]:{HTTP_PORT}/rootDesc.xml"

    # -- lifecycle -------------------------------------------------------------------------

    def up(self) -> Lab:
        p = self.prefix
        reason = missing_build(self.build)
        if reason:
            raise RuntimeError(reason)
        if self.ipv6 and self.build != "nftables":
            raise ValueError("the IPv6 lab runs the nftables build only")
        self.down_namespaces()
        for ns in (self.lan, self.rtr, self.net):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh(
            "ip",
            "link",
            "add",
            f"{p}l0",
            "netns",
            self.lan,
            "type",
            "veth",
            "peer",
            "name",
            f"{p}l1",
            "netns",
            self.rtr,
        )
        _sh(
            "ip",
            "link",
            "add",
            f"{p}w0",
            "netns",
            self.net,
            "type",
            "veth",
            "peer",
            "name",
            f"{p}w1",
            "netns",
            self.rtr,
        )
        for ns, dev, addr in (
            (self.lan, f"{p}l0", f"{LAN_IP}/24"),
            (self.rtr, f"{p}l1", f"{ROUTER_LAN_IP}/24"),
            (self.rtr, f"{p}w1", f"{ROUTER_WAN_IP}/24"),
            (self.net, f"{p}w0", f"{NET_IP}/24"),
        ):
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "-n", self.lan, "route", "add", "default", "via", ROUTER_LAN_IP)
        _sh("ip", "netns", "exec", self.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.ipv6:
            self._up_ipv6()
        if self.second_host:
            self._up_second_host()
        if self.build == "iptables":
            self._iptables_chains()
            self.start_router()
            return self
        # The chains miniupnpd 2.3.1 (nftables) expects, with a forward policy that drops what
        # no mapping allows: a closed port really is closed.
        ruleset = f"""
table inet filter {{
  chain miniupnpd {{
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "{p}l1" accept
    jump miniupnpd
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
  }}
}}
"""
        subprocess.run(["ip", "netns", "exec", self.rtr, "nft", "-f", "-"], input=ruleset.encode(), check=True)
        self.start_router()
        return self

    def start_router(self, *, keep_table: bool = False, wait: float = 15) -> None:
        """Start the router; unless `keep_table`, with an empty table, as a reboot leaves most routers.

        miniupnpd rebuilds its table from the lease file and from the nftables rules it finds, so
        an empty start needs both gone.
        """
        if self.emulator:
            self._start_emulator()
            return
        conf = os.path.join(self.workdir, "miniupnpd.conf")
        leases = os.path.join(self.workdir, "leases")
        if not keep_table:
            if os.path.exists(leases):
                os.remove(leases)
            if self.build == "iptables":
                self._flush_iptables_chains()
            else:
                for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"):
                    _sh("ip", "netns", "exec", self.rtr, "nft", "flush", "chain", "inet", "filter", chain)
        with open(conf, "w") as f:
            f.write(
                f"ext_ifname={self.prefix}w1\nlistening_ip={self.prefix}l1\nhttp_port={HTTP_PORT}\n"
                f"enable_natpmp=yes\nenable_upnp={'yes' if self.upnp else 'no'}\nsystem_uptime=no\n"
                f"secure_mode={'yes' if self.secure_mode else 'no'}\n"
                f"force_igd_desc_v1={'yes' if self.igd1 else 'no'}\n"
                f"uuid=3d3cec3a-8cf0-11e0-98ee-{abs(hash(self.prefix)) % 10**12:012d}\n"
                f"lease_file={leases}\n"
                + ("pcp_allow_thirdparty=yes\n" if self.pcp_third_party else "")
                + "".join(f"{rule}\n" for rule in self.rules)
            )
        log = open(os.path.join(self.workdir, "miniupnpd.log"), "ab")  # noqa: SIM115 - owned by the daemon
        pidfile = os.path.join(self.workdir, "pid")
        self._daemon = subprocess.Popen(
            ["ip", "netns", "exec", self.rtr, self._miniupnpd(), "-d", "-f", conf, "-P", pidfile],
            stdout=log,
            stderr=log,
            env=self.iptables_env(),
        )
        # miniupnpd loads its lease file before it serves: a second or so per hundred mappings.
        wait_for(self._answers, wait, "miniupnpd to serve its description")

    # -- IPv6 and the iptables build (each in its own functions) -------------------------------

    def _up_ipv6(self) -> None:
        """The notes' recipe: static addresses without DAD (no waiting), routes, forwarding on the router.

        No ipv6_listening_ip in miniupnpd.conf: with it, 2.3.1 binds HTTP to that IPv6 address alone and
        stops answering on IPv4; without it, it serves both and advertises the LAN's global IPv6 address.
        """
        p = self.prefix
        _sh("ip", "netns", "exec", self.rtr, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for ns, dev, addr in (
            (self.lan, f"{p}l0", LAN_IP6),
            (self.rtr, f"{p}l1", ROUTER_LAN_IP6),
            (self.rtr, f"{p}w1", ROUTER_WAN_IP6),
            (self.net, f"{p}w0", NET_IP6),
        ):
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=0")
            _sh("ip", "-n", ns, "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        if self.ipv6_link_local_gateway:
            _sh("ip", "-n", self.rtr, "-6", "addr", "add", f"{ROUTER_LINK_LOCAL}/64", "dev", f"{p}l1", "nodad")
            _sh("ip", "-n", self.lan, "-6", "route", "add", "default", "via", ROUTER_LINK_LOCAL, "dev", f"{p}l0")
        else:
            _sh("ip", "-n", self.lan, "-6", "route", "add", "default", "via", ROUTER_LAN_IP6)
        _sh("ip", "-n", self.net, "-6", "route", "add", LAN_NET6, "via", ROUTER_WAN_IP6)
        _sh("ip", "-n", self.rtr, "-6", "route", "add", "default", "via", NET_IP6)

    def _up_second_host(self) -> None:
        """Another LAN host on a link of its own: the router's LAN address on it too, and a /32 route to
        it. The first LAN link, the address miniupnpd listens on and the firewall stay as they are."""
        p = self.prefix
        _sh("ip", "netns", "add", self.lan2)
        _sh("ip", "-n", self.lan2, "link", "set", "lo", "up")
        _sh(
            "ip",
            "link",
            "add",
            f"{p}m0",
            "netns",
            self.lan2,
            "type",
            "veth",
            "peer",
            "name",
            f"{p}m1",
            "netns",
            self.rtr,
        )
        _sh("ip", "-n", self.lan2, "addr", "add", f"{LAN2_IP}/24", "dev", f"{p}m0")
        _sh("ip", "-n", self.rtr, "addr", "add", f"{ROUTER_LAN_IP}/32", "dev", f"{p}m1")
        for ns, dev in ((self.lan2, f"{p}m0"), (self.rtr, f"{p}m1")):
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "-n", self.rtr, "route", "add", f"{LAN2_IP}/32", "dev", f"{p}m1")
        _sh("ip", "-n", self.lan2, "route", "add", "default", "via", ROUTER_LAN_IP)

    def _miniupnpd(self) -> str:
        return os.path.join(iptables_dir(), "usr/sbin/miniupnpd") if self.build == "iptables" else "miniupnpd"

    def iptables_env(self) -> dict[str, str] | None:
        """For the unpacked build and its tools: their libraries (and iptables' extensions) inside its directory."""
        if self.build != "iptables":
            return None
        lib = os.path.join(iptables_dir(), "usr/lib/x86_64-linux-gnu")
        return {**os.environ, "LD_LIBRARY_PATH": lib, "XTABLES_LIBDIR": os.path.join(lib, "xtables")}

    def _iptables_restore(self, rules: str, *, flush: bool) -> None:
        restore = os.path.join(iptables_dir(), "usr/sbin/iptables-legacy-restore")
        cmd = ["ip", "netns", "exec", self.rtr, restore, *([] if flush else ["--noflush"])]
        subprocess.run(cmd, input=rules.encode(), check=True, capture_output=True, env=self.iptables_env())

    def _iptables_chains(self) -> None:
        """What miniupnpd's iptables_init.sh makes, with a forward policy that drops what no mapping allows."""
        w, lan = f"{self.prefix}w1", f"{self.prefix}l1"
        self._iptables_restore(
            f"""*filter
:FORWARD DROP [0:0]
:MINIUPNPD - [0:0]
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -i {lan} -j ACCEPT
-A FORWARD -i {w} ! -o {w} -j MINIUPNPD
COMMIT
*nat
:MINIUPNPD - [0:0]
:MINIUPNPD-POSTROUTING - [0:0]
-A PREROUTING -i {w} -j MINIUPNPD
-A POSTROUTING -o {w} -j MINIUPNPD-POSTROUTING
COMMIT
*mangle
:MINIUPNPD - [0:0]
-A PREROUTING -i {w} -j MINIUPNPD
COMMIT
""",
            flush=True,
        )

    def _flush_iptables_chains(self) -> None:
        # With --noflush, declaring a chain that exists empties it and leaves the jumps to it alone.
        self._iptables_restore(
            "*filter\n:MINIUPNPD - [0:0]\nCOMMIT\n*nat\n:MINIUPNPD - [0:0]\n:MINIUPNPD-POSTROUTING - [0:0]\nCOMMIT\n"
            "*mangle\n:MINIUPNPD - [0:0]\nCOMMIT\n",
            flush=False,
        )

    def upnpc6(self, *args: str) -> subprocess.CompletedProcess[str]:
        """upnpc over IPv6 from the LAN host (its source address is LAN_IP6, the only global one there)."""
        return self.run(self.lan, "upnpc", "-6", "-u", self.url6, *args, check=False)

    def serve6(self, port: int, lifetime: float = 120) -> None:
        """An IPv6 TCP server on the LAN host that greets every connection."""
        self.serve(port, lifetime, "6")

    def reaches6(self, port: int, address: str = LAN_IP6) -> bool:
        """Does an IPv6 connection from the internet host to the LAN host's `address` reach its server?"""
        out = self.run(self.net, sys.executable, "-c", _CLIENT, address, str(port)).stdout
        return out.strip() == "hello from the LAN"

    def _start_emulator(self) -> None:
        log = open(os.path.join(self.workdir, "emulator.log"), "ab")  # noqa: SIM115 - owned by the process
        cmd = [sys.executable, "-m", "reconciler", "emulate", "--profile", self.emulator, "--ssdp"]
        self._daemon = subprocess.Popen(
            ["ip", "netns", "exec", self.rtr, *cmd, "--host", ROUTER_LAN_IP, "--port", str(HTTP_PORT)],
            stdout=log,
            stderr=log,
        )
        wait_for(self._answers, 15, "the emulator to serve its description")

    def stop_router(self) -> None:
        if self._daemon and self._daemon.poll() is None:
            self._daemon.send_signal(signal.SIGTERM)
            try:
                self._daemon.wait(10)
            except subprocess.TimeoutExpired:
                self._daemon.kill()
                self._daemon.wait(5)
        self._daemon = None

    def router_alive(self) -> bool:
        return self._daemon is not None and self._daemon.poll() is None

    def _answers(self) -> bool:
        if self._daemon is not None and self._daemon.poll() is not None:
            raise RuntimeError(f"the router exited; see the log in {self.workdir}")
        probe = f"import urllib.request; urllib.request.urlopen({self.url!r}, timeout=1).read()"
        if not self.upnp:
            # No HTTP to ask: a NAT-PMP external-address request (RFC 6886 section 3.2) answered is serving.
            probe = (
                "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); "
                f"s.sendto(bytes(2), ({ROUTER_LAN_IP!r}, 5351)); assert s.recv(16)[1] == 128"
            )
        try:
            return self.run(self.lan, sys.executable, "-c", probe, check=False, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False  # busy (loading a big lease file): not serving yet

    def down(self) -> None:
        for s in self._servers:
            s.kill()
            s.wait(5)
        self._servers.clear()
        self.stop_router()
        self.down_namespaces()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def down_namespaces(self) -> None:
        for ns in (self.lan, self.lan2, self.rtr, self.net):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    # -- acting in the namespaces ------------------------------------------------------------

    def run(
        self,
        ns: str,
        *cmd: str,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *cmd],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            input=stdin,
            env=env,
        )

    def portctl(self, *args: str, router: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """portctl run on the LAN host, as a user would run it there."""
        extra = ["--router", self.url] if router and args and args[0] not in ("validate", "discover", "init") else []
        env = {k: v for k, v in os.environ.items() if k not in ("PORTCTL_ROUTER",)}
        command = (sys.executable, "-m", "reconciler", *args, *extra)
        return self.run(self.lan, *command, check=False, stdin=stdin, env=env, timeout=PORTCTL_TIMEOUT)

    def upnpc(self, *args: str) -> subprocess.CompletedProcess[str]:
        """miniupnpc's client: the independent witness of what the router holds."""
        return self.run(self.lan, "upnpc", "-u", self.url, *args, check=False)

    def table(self) -> set[tuple[int, str, str, int, str]]:
        """(external port, protocol, internal client, internal port, description) per mapping, per upnpc -l."""
        out = self.upnpc("-l").stdout
        rows = set()
        for line in out.splitlines():
            parts = line.split()
            # " 0 TCP 18000->192.168.77.2:8000  'desc' '' 3600"
            if len(parts) >= 3 and parts[0].isdigit() and parts[1] in ("TCP", "UDP") and "->" in parts[2]:
                ext, internal = parts[2].split("->")
                client, iport = internal.rsplit(":", 1)
                desc = line.split("'")[1] if "'" in line else ""
                rows.add((int(ext), parts[1], client, int(iport), desc))
        return rows

    def empty_table(self, timeout: float = 30) -> Lab:
        """Delete every mapping with upnpc, as another client would, and wait until upnpc lists none."""
        for port, proto, *_ in self.table():
            self.upnpc("-d", str(port), proto)
        wait_for(lambda: not self.table(), timeout, "the table to empty")
        return self

    def add_foreign(self, port: int, protocol: str, description: str, internal_port: int | None = None) -> None:
        r = self.upnpc("-e", description, "-a", LAN_IP, str(internal_port or port), str(port), protocol, "0")
        assert "is redirected" in r.stdout, r.stdout + r.stderr

    def serve(self, port: int, lifetime: float = 120, *family: str, host: str = "") -> None:
        """A TCP server on the LAN host (or the namespace `host`, such as lan2) that greets every
        connection (IPv6 with `family` "6")."""
        ns = host or self.lan
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _SERVER, str(port), str(lifetime), *family],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        self._servers.append(proc)

    def reaches(self, external_port: int) -> bool:
        """Does a connection from the internet host to the router's WAN address reach the LAN server?"""
        out = self.run(self.net, sys.executable, "-c", _CLIENT, ROUTER_WAN_IP, str(external_port)).stdout
        return out.strip() == "hello from the LAN"


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)
