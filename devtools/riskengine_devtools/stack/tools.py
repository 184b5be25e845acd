"""Download and build helpers shared by the services: Maven, ``go install``, Java discovery.

Downloads go into the cache dir and nowhere else: Maven's local repository and Go's module cache
live inside it, so a fresh machine and a developer machine behave alike and one ``rm -rf`` of the
cache starts over.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import shutil
import subprocess
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from riskengine_devtools.stack.procs import with_tail
from riskengine_devtools.stack.service import Say, StackError

#: maven-dependency-plugin for goals run without a pom (Maven 3.8's default plugin is too old).
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
#: Seconds between progress lines during a download.
PROGRESS_EVERY = 15.0
_JVM_DIR = Path("/usr/lib/jvm")
_MAVEN_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def rendered_config(entries: dict[str, str], separator: str = "=") -> str:
    """A server's config file from ``entries`` (``key=value`` lines, or ``key: value`` for YAML)."""
    lines = ["# Rendered by `riskengine stack up`; edits are overwritten at the next start."]
    lines += [f"{key}{separator}{value}" for key, value in entries.items()]
    return "\n".join(lines) + "\n"


def human_size(size: int) -> str:
    """``size`` bytes as ``12.3 MB``."""
    amount = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError("unreachable")


def tree_size(path: Path) -> int:
    """Total size of the files under ``path`` (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while walking (Maven renames its temporary files)
    return total


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Build into ``<target>.partial`` and rename it to ``target`` on success.

    So an existing ``target`` is always complete: an interrupted download leaves only a
    ``.partial`` folder, which the next attempt removes.
    """
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


async def run_logged(
    argv: Sequence[str],
    *,
    what: str,
    log: Path,
    say: Say,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    watch: Path | None = None,
) -> None:
    """Run a download or build step with its output appended to ``log``, saying how it goes.

    Prints a progress line every :data:`PROGRESS_EVERY` seconds (with the size of ``watch`` when
    given). Raises :class:`StackError` naming ``what`` and ``log`` when the command fails.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("ab") as out:
        out.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n".encode())
        out.flush()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )
        except OSError as exc:
            raise StackError(f"{what}: cannot run {argv[0]}: {exc}") from None
        waiter = asyncio.ensure_future(process.wait())
        while not (await asyncio.wait({waiter}, timeout=PROGRESS_EVERY))[0]:
            size = f", {human_size(tree_size(watch))} in {watch}" if watch else ""
            say(f"  ... {what}: {time.monotonic() - started:.0f} s{size}")
    if waiter.result() != 0:
        raise StackError(with_tail(f"{what} failed (exit {waiter.result()}); log: {log}", log, 15))


def _require(tool: str, what: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise StackError(f"{what}: `{tool}` is not on PATH")
    return found


def maven_repository(cache_dir: Path) -> Path:
    """Maven's local repository, kept inside the cache dir."""
    return cache_dir / "m2"


def _maven_lock() -> asyncio.Lock:
    # One per event loop: an asyncio.Lock cannot be shared between loops (each asyncio.run).
    return _MAVEN_LOCKS.setdefault(asyncio.get_running_loop(), asyncio.Lock())


def maven_argv(mvn: str, args: Sequence[str], repository: Path, *, strict: bool = True) -> list[str]:
    """The command line of every Maven run: batch mode, strict checksums, the cache's repository.

    ``--strict-checksums``: a downloaded artifact whose checksum does not match the one the
    repository publishes, or that has none, fails the run, instead of a warning and a corrupt or
    tampered jar on the servers' classpath. ``strict=False`` only for an artifact checked against a
    digest pinned here instead (:func:`maven_fetch`).
    """
    checksums = "--strict-checksums" if strict else "--lax-checksums"
    return [mvn, "-B", checksums, "-Dstyle.color=never", f"-Dmaven.repo.local={repository}", *args]


async def maven(
    args: Sequence[str], *, what: str, cache_dir: Path, log: Path, say: Say, strict: bool = True
) -> None:
    """Run Maven (:func:`maven_argv`) against the cache's local repository (see :func:`run_logged`).

    One Maven at a time: Maven 3.8 does not lock its local repository, and two runs fetching the
    same plugin at once can leave a corrupt file behind.
    """
    repository = maven_repository(cache_dir)
    repository.mkdir(parents=True, exist_ok=True)
    argv = maven_argv(_require("mvn", what), args, repository, strict=strict)
    async with _maven_lock():
        await run_logged(argv, what=what, log=log, say=say, cwd=cache_dir, watch=repository)


def maven_artifact_path(cache_dir: Path, coordinates: str) -> Path:
    """Where ``group:artifact:version:type[:classifier]`` lands in the cache's local repository."""
    group, artifact, version, kind, *classifier = coordinates.split(":")
    suffix = f"-{classifier[0]}" if classifier else ""
    folder = maven_repository(cache_dir).joinpath(*group.split("."), artifact, version)
    return folder / f"{artifact}-{version}{suffix}.{kind}"


async def maven_fetch(
    coordinates: str, *, cache_dir: Path, log: Path, say: Say, sha256: str | None = None
) -> Path:
    """Download one artifact (no dependencies) into the local repository; returns its path.

    ``sha256``: for an artifact the repository serves without a checksum (Maven's strict check
    then refuses it), the digest it must have, pinned in the code; the download is checked against
    it instead, and deleted on a mismatch.
    """
    path = maven_artifact_path(cache_dir, coordinates)
    if not path.is_file():
        what = f"Maven download of {coordinates}"
        await maven(
            [f"{DEPENDENCY_PLUGIN}:get", f"-Dartifact={coordinates}", "-Dtransitive=false"],
            what=what,
            cache_dir=cache_dir,
            log=log,
            say=say,
            strict=sha256 is None,
        )
        if sha256 is not None:
            found = file_sha256(path)
            if found != sha256:
                path.unlink(missing_ok=True)
                raise StackError(f"{what}: SHA-256 {found}, pinned {sha256}; the download was deleted")
    return path


def file_sha256(path: Path) -> str:
    """The SHA-256 of ``path``'s content, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def go_install(package: str, *, bin_dir: Path, cache_dir: Path, log: Path, say: Say) -> None:
    """``go install package`` with the binary in ``bin_dir`` and the module cache in the cache dir."""
    what = f"go install {package}"
    module_cache = cache_dir / "go-mod"
    env = dict(os.environ)
    env["GOBIN"] = str(bin_dir)
    env["GOMODCACHE"] = str(module_cache)
    # Go makes its module cache read-only; writable files keep `rm -rf <cache dir>` working.
    env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -modcacherw".strip()
    await run_logged(
        [_require("go", what), "install", package], what=what, log=log, say=say, env=env, watch=module_cache
    )


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``1.8.0_x`` is 8), or None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@functools.cache
def _version_of(java: str) -> int | None:
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return java_major(result.stderr + result.stdout)


@functools.cache
def find_java(minimum: int) -> str:
    """A ``java`` of at least version ``minimum``: the one on PATH, else the newest under /usr/lib/jvm."""
    on_path = shutil.which("java")
    installed = sorted((str(path) for path in _JVM_DIR.glob("*/bin/java")), reverse=True)
    candidates = ([on_path] if on_path else []) + installed
    versions = {java: _version_of(java) for java in candidates}
    if on_path and (versions[on_path] or 0) >= minimum:
        return on_path
    fitting = [java for java in installed if (versions[java] or 0) >= minimum]
    if fitting:
        return max(fitting, key=lambda java: versions[java] or 0)
    seen = ", ".join(f"{java} ({versions[java] or '?'})" for java in candidates) or "none"
    raise StackError(f"needs Java {minimum} or newer; found: {seen}")
