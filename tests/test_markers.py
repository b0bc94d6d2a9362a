"""`pytest -m 'not router'` selects only lab-free tests: every module that builds namespaces says so."""

from __future__ import annotations

import ast
import glob
import os

import pytest

TESTS = os.path.dirname(__file__)
LAB_FIXTURE = "lab"  # conftest's fixture: real miniupnpd in namespaces


def _builds_namespaces(tree: ast.Module) -> bool:
    """Does the module start a lab (routerlab.Lab(...), require_lab(), module_lab(...)) or use conftest's `lab`?"""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            if called in ("Lab", "routerlab.Lab", "require_lab", "module_lab", "labfixtures.module_lab"):
                return True
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and _takes_lab(node):
            return True
    return False


def _takes_lab(test: ast.FunctionDef) -> bool:
    return any(a.arg == LAB_FIXTURE for a in test.args.args)


def _marked_router(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(ast.unparse(t) == "pytestmark" for t in node.targets):
            return "pytest.mark.router" in ast.unparse(node.value)
    return False


def _modules() -> list[str]:
    return sorted(glob.glob(os.path.join(TESTS, "test_*.py")))


def test_the_guard_recognises_a_lab_module() -> None:
    """The check below would notice a lab module: the real-router smoke tests are one."""
    with open(os.path.join(TESTS, "test_real_router.py"), encoding="utf-8") as f:
        assert _builds_namespaces(ast.parse(f.read()))


@pytest.mark.parametrize("path", _modules(), ids=os.path.basename)
def test_a_module_that_builds_namespaces_carries_the_router_marker(path: str) -> None:
    """Modules that run miniupnpd in namespaces set `pytestmark = pytest.mark.router`."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    if _builds_namespaces(tree):
        assert _marked_router(tree), f"{os.path.basename(path)} builds network namespaces but is not marked router"
