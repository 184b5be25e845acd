"""The worker's Faust configuration (:func:`riskengine.worker.app.app_options`)."""

from __future__ import annotations

from dataclasses import replace

from riskengine.settings import Settings
from riskengine.worker.app import MAX_HEARTBEAT_S, app_options


def test_the_group_member_heartbeats_often_enough_to_notice_a_joining_worker_soon() -> None:
    # A member learns of a rebalance from a heartbeat: at session/10 of the default 60 s, a second
    # worker's join went unnoticed for 6 s while the first worker went on alone.
    default = app_options(Settings.from_env({}))
    assert default["broker_session_timeout"] == 60.0
    assert default["broker_heartbeat_interval"] == MAX_HEARTBEAT_S == 3.0
    short = app_options(replace(Settings.from_env({}), worker_session_timeout=10.0))
    assert short["broker_heartbeat_interval"] == 1.0
