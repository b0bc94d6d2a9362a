"""Every failure portctl expects, as one tree.

    PortctlError                      anything the CLI reports as one message and exit 1
    ├── ManifestError                 the manifest is unreadable or invalid (carries every problem)
    ├── PlanFileError                 a saved plan cannot be read, or is stale against the router
    ├── ApprovalError                 apply/destroy was not approved
    ├── ConflictError                 the plan has conflicts that block any write
    ├── DiscoveryError                no IGD answered SSDP
    ├── LockTimeout                   another portctl kept the router's lock past --lock-timeout
    └── RouterError                   talking to the router failed
        ├── RouterUnreachable         connection refused, no route, DNS, timeout
        │   ├── ConnectionDropped     the router closed the connection without answering
        │   └── RouterTimeout         one request was not answered by its deadline (the router may be busy)
        ├── NotAnIGD                  the device answered but offers no WAN connection service
        ├── ActionNotOffered          the router does not offer the action (its description, or a 401 answer, says so)
        ├── RouterProtocolError       the router's answer is malformed, hostile or too large
        │   └── HttpStatusError       an HTTP error status that carried no UPnP fault
        └── UpnpActionError           the router answered an action with a UPnP fault code
            ├── RouterRefused         a fault the fallback table (quirks.py) says is final, with the need it shows
            │   └── PinholeRefused    606 to AddPinhole: not this host's own address, or a privileged port
            └── PinholeNotFound       402/704 to UpdatePinhole or DeletePinhole: no pinhole has that UniqueID

Only backends raise RouterError (and xmlsafe, the parser they read the router's XML with); they
translate socket, http.client and XML parser exceptions at that boundary, so nothing above them
handles those. portctl speaks SOAP itself: there is no UPnP library underneath.
This module imports nothing from the package.
"""

from __future__ import annotations

from dataclasses import dataclass

# Names of the UPnP control and IGD error codes (UPnP DA 1.1 section 3.2.2, WANIPConnection:2 2.5).
UPNP_ERROR_NAMES: dict[int, str] = {
    401: "InvalidAction",
    402: "InvalidArgs",
    501: "ActionFailed",
    600: "ArgumentValueInvalid",
    601: "ArgumentValueOutOfRange",
    602: "OptionalActionNotImplemented",
    605: "StringArgumentTooLong",
    606: "ActionNotAuthorized",
    713: "SpecifiedArrayIndexInvalid",
    714: "NoSuchEntryInArray",
    715: "WildCardNotPermittedInSrcIP",
    716: "WildCardNotPermittedInExtPort",
    718: "ConflictInMappingEntry",
    724: "SamePortValuesRequired",
    725: "OnlyPermanentLeasesSupported",
    726: "RemoteHostOnlySupportsWildcard",
    727: "ExternalPortOnlySupportsWildcard",
    728: "NoPortMapsAvailable",
    729: "ConflictWithOtherMechanisms",
    730: "PortMappingNotFound",
    732: "WildCardNotPermittedInIntPort",
    733: "InconsistentParameters",
}


class PortctlError(Exception):
    """Base of every expected failure: the CLI prints str(exc) and exits 1."""


@dataclass(frozen=True)
class Problem:
    """One manifest problem, located as precisely as the input allows."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ManifestError(PortctlError):
    """The manifest cannot be used; every problem found is listed, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PlanFileError(PortctlError):
    """A saved plan is unreadable, from another format version, or stale."""


class ApprovalError(PortctlError):
    """A write was not approved (no terminal and no --auto-approve, or the answer was not yes)."""


class ConflictError(PortctlError):
    """The plan has conflicts; nothing is written until they are resolved."""


class DiscoveryError(PortctlError):
    """No Internet Gateway Device answered SSDP discovery."""


class LockTimeout(PortctlError):
    """Another portctl process is writing to the same router and did not finish in time."""


class RouterError(PortctlError):
    """Talking to the router failed."""


class RouterUnreachable(RouterError):
    """The router could not be reached (refused, no route, unresolvable, timed out)."""


class RouterTimeout(RouterUnreachable):
    """One request was not answered by its deadline. The router may be busy rather than gone, and
    the request may still have taken effect: read the router again before judging."""


class NotAnIGD(RouterError):
    """The device answered but is not an Internet Gateway Device with a WAN connection service."""


class ActionNotOffered(RouterError):
    """The router's service description (SCPD) does not list the action, so it was never sent.

    Not a UPnP fault: the router did not answer anything, it just does not offer this.
    """

    def __init__(self, action: str, where: str, *, why: str = "") -> None:
        super().__init__(
            f"the router does not offer {action} ({why or f'its service description at {where} does not list it'})"
        )
        self.action = action
        self.where = where


class ConnectionDropped(RouterUnreachable):
    """The router accepted the connection and closed it without an answer (reset, hang-up)."""


class RouterProtocolError(RouterError):
    """The router's answer was malformed, hostile (DTDs, entities) or larger than allowed."""


class HttpStatusError(RouterProtocolError):
    """The router answered with an HTTP error status and no UPnP fault in the body."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class UpnpActionError(RouterError):
    """The router refused an action with a UPnP error code."""

    def __init__(self, action: str, code: int, description: str = "") -> None:
        self.action = action
        self.code = code
        self.description = description or UPNP_ERROR_NAMES.get(code, "")
        name = UPNP_ERROR_NAMES.get(code) or description or "unknown error"
        super().__init__(f"{action} failed: {code} {name}")


class RouterRefused(UpnpActionError):
    """A fault that no retry can fix: the message says what the user has to change.

    `stop` means the refusal holds for every write to this router (secure mode, a router that maps no
    specific external port), so an apply stops at once instead of sending more requests that would be
    refused the same way. `need` names what the router needs instead of the mapping it was given (a
    quirk, such as permanent-only), which the backend learned, `proven` or only suspected; the planner
    plans for it next time.
    """

    def __init__(
        self, action: str, code: int, remedy: str, *, stop: bool = False, need: str = "", proven: bool = True
    ) -> None:
        super().__init__(action, code)
        self.remedy = remedy
        self.stop = stop
        self.need = need
        self.proven = proven
        self.args = (f"{self.args[0]}: {remedy}",)


class PinholeRefused(RouterRefused):
    """The router refused to open a pinhole (606 to AddPinhole); `remedy` says which of its rules the
    pinhole breaks, `internal_client` and `internal_port` name the pinhole."""

    def __init__(self, code: int, remedy: str, *, internal_client: str, internal_port: int) -> None:
        super().__init__("AddPinhole", code, remedy)
        self.internal_client = internal_client
        self.internal_port = internal_port


class PinholeHeldElsewhere(RouterRefused):
    """The router will not close a pinhole because it holds it for another (PCP: another nonce): it
    stays open until its lease runs out, and is no longer this owner's to record."""


class PinholeNotFound(UpnpActionError):
    """The router holds no pinhole with this UniqueID (it expired, or was deleted): for a delete, the
    work is already done; for an update, the pinhole must be added again."""

    def __init__(self, action: str, code: int, unique_id: int) -> None:
        super().__init__(action, code)
        self.unique_id = unique_id
        self.args = (f"{self.args[0]}: the router holds no pinhole {unique_id} (expired or deleted)",)
