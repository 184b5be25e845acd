"""Whether the core runs compiled: mypyc-built modules are used only when they match the sources.

``make native`` (``scripts/build-native-core``) compiles the core's modules with mypyc into
``riskengine/core/_compiled/`` and writes there, last, a stamp with the digest of the sources it
compiled. :func:`use_compiled` puts that folder first on the core packages' ``__path__`` only when
the stamp matched the sources on disk at import, so an edited source is never shadowed by an old build:
the core then runs interpreted and says why. Both builds give the same results (pinned by
``tests/unit/core/test_native.py``); the compiled one spends about half the time per event.

This module and the packages' ``__init__`` stay interpreted: they run before the choice is made
(and mypyc would give a compiled package a ``__path__`` inside the build's own layout).
Reading the sources here is the one file access in the core, at import, of its own code.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from collections.abc import MutableSequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).parent
COMPILED_DIR = PACKAGE / "_compiled"
STAMP = COMPILED_DIR / "STAMP.json"
#: Relative to the package; interpreted in every build (see the module's docstring).
INTERPRETED = frozenset({"__init__.py", "native.py", "patterns/__init__.py"})


@dataclass(frozen=True)
class CoreBuild:
    """Which build of the core this process runs, and why (for the start-up log and ``/stats``)."""

    compiled: bool
    detail: str

    def __str__(self) -> str:
        return f"{'compiled' if self.compiled else 'interpreted'} ({self.detail})"


def compiled_sources() -> list[Path]:
    """The core's modules that ``make native`` compiles, in a stable order."""
    return sorted(
        path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).as_posix() not in INTERPRETED
    )


def source_digest() -> str:
    """SHA-256 over the compiled sources (names and bytes) and this interpreter's extension ABI."""
    digest = hashlib.sha256(str(sysconfig.get_config_var("EXT_SUFFIX")).encode())
    for path in compiled_sources():
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def read_build(stamp: Path = STAMP) -> CoreBuild:
    """The build to run: compiled when ``stamp`` exists and matches the sources on disk now."""
    if not stamp.is_file():
        return CoreBuild(False, "no compiled build; `make native` builds one")
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        built_from, compiler = str(recorded["digest"]), str(recorded["compiler"])
    except (ValueError, KeyError, TypeError) as exc:
        return CoreBuild(False, f"unreadable stamp {stamp} ({exc!r}); `make native` rebuilds it")
    if built_from != source_digest():
        return CoreBuild(False, "stale compiled build: the sources changed since; `make native` rebuilds it")
    # A module without its extension would be imported from source next to compiled ones, with
    # classes of its own that the compiled modules do not know.
    missing = [path for path in compiled_sources() if not compiled_module(path, stamp.parent).is_file()]
    if missing:
        names = ", ".join(path.relative_to(PACKAGE).as_posix() for path in missing)
        return CoreBuild(False, f"incomplete compiled build, missing {names}; `make native` rebuilds it")
    return CoreBuild(True, compiler)


def compiled_module(source: Path, folder: Path = COMPILED_DIR) -> Path:
    """Where the build in ``folder`` keeps the extension module compiled from ``source``."""
    relative = source.relative_to(PACKAGE).with_suffix("")
    return folder / relative.parent / f"{relative.name}{sysconfig.get_config_var('EXT_SUFFIX')}"


#: The build this process runs, read once, when the core package is first imported.
BUILD = read_build()


def use_compiled(package_path: MutableSequence[str], subfolder: str = "") -> None:
    """Put the compiled modules of a core package (``subfolder`` of the build) first on its path.

    Called by each package's ``__init__`` before it imports any of its modules; does nothing when
    :data:`BUILD` is interpreted.
    """
    if BUILD.compiled:
        package_path.insert(0, str(COMPILED_DIR / subfolder))
