"""DESIGN convention 1: the pure core stays pure, and is enforced.

In a fresh interpreter, import every module of ``sipwarden.sip`` (and of
``sipwarden.engine``, ``sipwarden.detect`` and ``sipwarden.fraud`` once they
exist) and check that none of them pulled in an I/O, clock or randomness
module, and that ``sip`` depends on nothing of ours but ``sipwarden.errors``.
Modules the interpreter itself loads at start-up (``time`` is one of them) are
measured in the same subprocess first and are not held against the core.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

# The modules a sans-IO layer must not import (DESIGN "Layers and rooms").
FORBIDDEN = (
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "time",
    "random",
    "threading",
    "subprocess",
    "sqlite3",
)
PURE_PACKAGES = ("sipwarden.sip", "sipwarden.engine", "sipwarden.detect", "sipwarden.fraud")

# Runs in the fresh interpreter; argv: the forbidden modules, the package roots to import.
# The probe's own imports come before the baseline; everything after it (the root
# package ``sipwarden`` included) counts against the core.
_PROBE = r"""
import importlib
import importlib.util
import json
import pkgutil
import sys

forbidden = set(json.loads(sys.argv[1]))
roots = json.loads(sys.argv[2])
baseline = set(sys.modules)

report = {"missing": [], "modules": [], "culprits": {}, "new": []}
for root in roots:
    if importlib.util.find_spec(root) is None:
        report["missing"].append(root)
        continue
    names = [root]
    path = getattr(importlib.util.find_spec(root), "submodule_search_locations", None)
    if path is not None:
        importlib.import_module(root)
        names += [info.name for info in pkgutil.walk_packages(path, root + ".")]
    for name in names:
        before = set(sys.modules)
        importlib.import_module(name)
        pulled = sorted(
            mod for mod in set(sys.modules) - before - baseline
            if mod.split(".")[0] in forbidden
        )
        if pulled:
            report["culprits"][name] = pulled
        report["modules"].append(name)
report["new"] = sorted(set(sys.modules) - baseline)
print(json.dumps(report))
"""


def probe(*roots: str) -> dict[str, Any]:
    result = subprocess.run(  # our own interpreter, fixed arguments
        [
            sys.executable,
            "-c",
            _PROBE,
            json.dumps(FORBIDDEN),
            json.dumps(list(roots)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def forbidden_in(modules: list[str]) -> list[str]:
    return sorted(module for module in modules if module.split(".")[0] in FORBIDDEN)


@pytest.fixture(scope="module")
def core() -> dict[str, Any]:
    return probe(*PURE_PACKAGES)


def test_every_sip_module_is_imported(core: dict[str, Any]) -> None:
    modules = core["modules"]
    assert "sipwarden.sip" in modules
    for expected in ("parser", "message", "headers", "fields", "limits", "abnf", "checks"):
        assert f"sipwarden.sip.{expected}" in modules
    assert "sipwarden.sip" not in core["missing"]
    # engine, detect and fraud are checked as soon as they exist.
    assert set(core["missing"]) <= set(PURE_PACKAGES) - {"sipwarden.sip"}


def test_pure_core_imports_no_io_clock_or_randomness(core: dict[str, Any]) -> None:
    # The whole cost of `import sipwarden.sip` counts, the root package included
    # (its __version__ is looked up lazily because importlib.metadata pulls in socket).
    culprits = core["culprits"]
    assert culprits == {}, f"sans-IO modules pulled in forbidden modules: {culprits}"
    assert forbidden_in(core["new"]) == []


def test_sip_depends_on_nothing_of_ours_but_errors() -> None:
    report = probe("sipwarden.sip")
    ours = [module for module in report["new"] if module.split(".")[0] == "sipwarden"]
    outside = [
        module
        for module in ours
        if module not in ("sipwarden", "sipwarden.errors")
        and not module.startswith("sipwarden.sip.")
        and module != "sipwarden.sip"
    ]
    assert outside == [], f"sipwarden.sip imports other rooms: {outside}"
    assert "sipwarden.errors" in ours


def test_the_probe_would_notice_a_forbidden_import() -> None:
    # Guard against a probe that can never fail: socketserver imports socket,
    # selectors and threading, none of which the interpreter loads at start-up.
    report = probe("socketserver")
    assert "socket" in report["culprits"]["socketserver"]
    assert {"socket", "selectors", "threading"} <= set(forbidden_in(report["new"]))
