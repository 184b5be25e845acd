"""The stack's servers run unprivileged: their accounts, the folders handed to them, the start as them."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

import pytest

from riskengine.settings import Settings
from riskengine_devtools.stack import SERVICES, accounts, build_services
from riskengine_devtools.stack.accounts import account_environment, chown_tree, server_account
from riskengine_devtools.stack.procs import start_detached

#: An account every Linux system has, standing in for a service's system user.
NOBODY = "nobody"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners and users needs root")


def _owners(root: Path) -> set[int]:
    found = {root.lstat().st_uid}
    found |= {path.lstat().st_uid for path in root.rglob("*")}
    return found


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file").write_text("x")
    return root


def test_every_real_service_runs_as_an_account_of_its_own(settings: Settings) -> None:
    users = [service.system_user for service in SERVICES]
    assert all(user and user.startswith("riskengine-") for user in users), users
    assert len(set(users)) == len(users)
    for service in build_services(settings):
        assert service.data_dir in service.writable_dirs, service.name


def test_nothing_changes_hands_unless_the_stack_runs_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _tree(tmp_path / "data")
    owners = _owners(tree)
    monkeypatch.setattr(accounts, "runs_as_root", lambda: False)
    assert server_account(NOBODY, [tree]) is None
    monkeypatch.setattr(accounts, "runs_as_root", lambda: True)
    assert server_account(None, [tree]) is None  # a service without an account: the caller's
    assert _owners(tree) == owners


def test_the_environment_names_the_account_and_a_writable_home(tmp_path: Path) -> None:
    nobody = pwd.getpwnam(NOBODY)
    assert account_environment(None, tmp_path) == {}
    assert account_environment(nobody, tmp_path) == {"HOME": str(tmp_path), "USER": NOBODY, "LOGNAME": NOBODY}


@as_root
def test_as_root_the_writable_folders_are_handed_over_on_every_start(tmp_path: Path) -> None:
    # As a stack folder made by an earlier, root-run stack: everything root's.
    tree = _tree(tmp_path / "data")
    missing = tmp_path / "logs"
    account = server_account(NOBODY, [tree, missing])
    assert account is not None and account.pw_uid == pwd.getpwnam(NOBODY).pw_uid
    assert _owners(tree) == _owners(missing) == {account.pw_uid}
    assert stat.S_IMODE(tree.stat().st_mode) == stat.S_IMODE(missing.stat().st_mode) == 0o700
    (tree / "sub" / "new").write_text("written as root since")
    server_account(NOBODY, [tree])
    assert _owners(tree) == {account.pw_uid}


@as_root
def test_chown_leaves_the_target_of_a_link_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("root's")
    tree = _tree(tmp_path / "data")
    (tree / "link").symlink_to(outside)
    chown_tree(tree, pwd.getpwnam(NOBODY))
    assert outside.stat().st_uid == 0
    assert (tree / "link").lstat().st_uid == pwd.getpwnam(NOBODY).pw_uid


def _status(pid: int, field: str) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1:]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@as_root
def test_a_server_started_with_an_account_is_that_account_and_its_group_alone(tmp_path: Path) -> None:
    nobody = pwd.getpwnam(NOBODY)
    tmp_path.chmod(0o755)  # pytest's folder is private to root; the server's working folder is in it
    pid = start_detached(
        ["sleep", "30"], env=dict(os.environ), cwd=tmp_path, log=tmp_path / "log", account=nobody
    )
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/cmdline").read_bytes() != b"sleep\x0030\x00":
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        # Real, effective, saved and file-system ids: none is root's.
        assert _status(pid, "Uid") == [str(nobody.pw_uid)] * 4
        assert _status(pid, "Gid") == [str(nobody.pw_gid)] * 4
        assert _status(pid, "Groups") == []
    finally:
        subprocess.run(["kill", str(pid)], check=False)
        os.waitpid(pid, 0)
