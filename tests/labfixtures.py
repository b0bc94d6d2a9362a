"""pytest's side of the real-router lab: one module-scoped lab fixture, made the same way for every module.

routerlab knows nothing of pytest (the bench uses it too); this module turns it into fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TypedDict, Unpack

import pytest

from tests.routerlab import BUILDS, Lab, missing_build, missing_prerequisites


class LabSettings(TypedDict, total=False):
    """The Lab fields a module may set; the prefix is always made here."""

    igd1: bool
    secure_mode: bool
    rules: tuple[str, ...]
    emulator: str
    ipv6: bool
    build: str
    upnp: bool
    second_host: bool
    pcp_third_party: bool
    ipv6_link_local_gateway: bool


# A variant is one run of the module's tests: a letter that keeps its namespaces apart, and its settings.
Variant = tuple[str, LabSettings]
IGD_VERSIONS: Mapping[str, Variant] = {"igd2": ("b", {"igd1": False}), "igd1": ("a", {"igd1": True})}
# Both miniupnpd builds, each under the letter its name starts with.
MINIUPNPD_BUILDS: Mapping[str, Variant] = {build: (build[0], {"build": build}) for build in BUILDS}


def require_lab(build: str = "nftables") -> None:
    """Skip the real-router tests where they cannot run (with miniupnpd's `build`); in CI that is a
    failure, not a skip."""
    reason = missing_prerequisites() or missing_build(build)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"real-router tests cannot run in CI: {reason}")
        pytest.skip(reason)


def module_lab(letters: str, variants: Mapping[str, Variant] | None = None, **settings: Unpack[LabSettings]) -> object:
    """A module-scoped fixture: a Lab up for the module's tests and down after them, once per variant.

    Bind it to the fixture's name in the module (`lab = module_lab("pd")`): pytest finds it by that name.

    The prefix is `letters`, this process's pid % 1000 and the variant's letter: distinct letters per
    module and the pid keep the namespaces of modules and of concurrent runs apart.
    """

    def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
        suffix, extra = variants[request.param] if variants else ("", LabSettings())
        merged = LabSettings(**settings)
        merged.update(extra)
        require_lab(merged.get("build", "nftables"))
        the_lab = Lab(prefix=f"{letters}{os.getpid() % 1000}{suffix}", **merged)
        try:  # a lab that fails half-way up is torn down too
            yield the_lab.up()
        finally:
            the_lab.down()

    return pytest.fixture(lab, scope="module", params=list(variants) if variants else None)
