"""One exception root: every exception riskengine defines is a RiskEngineError, in at most one branch."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from riskengine.errors import EventRejected, FatalError, RiskEngineError

REPO = Path(__file__).resolve().parents[2]
#: Where each top-level package's folder is (riskengine/worker and its parts are namespace
#: packages, which pkgutil does not walk, so modules are found by path).
ROOTS = {"riskengine": REPO / "riskengine", "riskengine_devtools": REPO / "devtools" / "riskengine_devtools"}


def module_names() -> list[str]:
    """Every module of riskengine and riskengine_devtools, by its import name."""
    names = []
    for package, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            names.append(".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return names


def defined_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of riskengine or riskengine_devtools."""
    found: list[type[BaseException]] = []
    for name in module_names():
        module = importlib.import_module(name)
        for _name, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_exception_riskengine_defines_has_the_one_root():
    found = defined_exceptions()
    assert len(found) > 20  # the walk did reach the subsystems
    strays = [f"{c.__module__}.{c.__qualname__}" for c in found if not issubclass(c, RiskEngineError)]
    assert strays == []


def test_no_exception_both_dead_letters_an_event_and_stops_the_worker():
    both = [
        c.__qualname__
        for c in defined_exceptions()
        if issubclass(c, EventRejected) and issubclass(c, FatalError)
    ]
    assert both == []


def test_the_errors_that_dead_letter_an_event_carry_a_stable_reason():
    rejected = [c for c in defined_exceptions() if issubclass(c, EventRejected)]
    assert {c.__name__ for c in rejected} >= {"DecodeError", "KeyMismatch", "ProcessingFailed"}
    for cls in rejected:
        assert cls.reason != EventRejected.reason or cls is EventRejected, f"{cls.__name__} has no reason"
        assert cls.reason.replace("-", "").isalpha(), cls.reason
