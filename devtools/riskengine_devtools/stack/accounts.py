"""Unprivileged accounts: no stack server runs as root, even when the stack is started as root.

Each real service names its own system account (:attr:`Service.system_user
<riskengine_devtools.stack.service.Service.system_user>`): one account per server, so a server
(Kafka Connect runs plugin code) cannot write another's data. When the stack runs as root, the
runner creates the account once, hands it the folders the server writes (before every start: a
stack folder made by an earlier, root-run stack keeps working) and starts the server as that
account, so the process in the pid file is the unprivileged server itself. Run by anyone else, the
servers run as that user and nothing here applies.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterable
from pathlib import Path

from riskengine_devtools.stack.service import StackError

#: useradd's exit code when the account exists (another stack command created it meanwhile).
_USERADD_EXISTS = 9


def runs_as_root() -> bool:
    """True when the stack runs as root (containers, CI): the servers then get their own accounts."""
    return os.geteuid() == 0


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The account ``name``, created as a system user without home or login shell if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, _USERADD_EXISTS):
        raise StackError(
            f"useradd --system {name} failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return pwd.getpwnam(name)


def chown_tree(path: Path, account: pwd.struct_passwd) -> None:
    """Give ``path`` and everything under it to ``account`` (symbolic links themselves, not their targets)."""
    for root, folders, files in os.walk(path):
        os.chown(root, account.pw_uid, account.pw_gid)
        for name in folders + files:
            os.chown(os.path.join(root, name), account.pw_uid, account.pw_gid, follow_symlinks=False)


def server_account(system_user: str | None, writable: Iterable[Path]) -> pwd.struct_passwd | None:
    """The account a server is started as, with ``writable`` folders handed to it; None: as the caller.

    None unless the stack runs as root and the service names a ``system_user``; then the folders
    (created if missing) become the account's, private to it (mode 0700).
    """
    if system_user is None or not runs_as_root():
        return None
    account = ensure_system_user(system_user)
    for folder in writable:
        folder.mkdir(parents=True, exist_ok=True)
        chown_tree(folder, account)
        # Snapshots, messages, indices: for the server alone (root still reads them).
        folder.chmod(0o700)
    return account


def account_environment(account: pwd.struct_passwd | None, home: Path) -> dict[str, str]:
    """Variables that name the account a server runs as; ``home`` stands in for its (absent) home.

    Without them the server would inherit root's ``HOME``, which it cannot write (JVMs put their
    per-user files there).
    """
    if account is None:
        return {}
    return {"HOME": str(home), "USER": account.pw_name, "LOGNAME": account.pw_name}
