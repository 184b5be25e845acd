"""``riskengine bench-e2e``'s command line, run as a real process (no services: it stops at validation)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RISKENGINE = Path(sys.executable).parent / "riskengine"


@pytest.mark.parametrize("event_loop", ["aio", "uvloop", "both"])
def test_every_event_loop_choice_reaches_the_argument_checks(event_loop: str) -> None:
    # Importing faust reads --loop from sys.argv and installs that loop; "both" used to crash it.
    done = subprocess.run(
        [str(RISKENGINE), "bench-e2e", "--event-loop", event_loop, "--trades", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "riskengine bench-e2e: --trades >= 2" in done.stderr


def test_an_order_flow_row_of_one_trade_is_refused() -> None:
    done = subprocess.run(
        [str(RISKENGINE), "bench-e2e", "--order-flow-trades", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--order-flow-trades must be 0 or at least 2" in done.stderr
