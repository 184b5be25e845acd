"""The chaos verifier's decisions over hand-made records (no services): each kind of failure the
suite exists to catch must be reported, and a clean run must pass."""

from __future__ import annotations

import pytest

from riskengine_devtools.chaos.verifier import (
    DELIVERED,
    LOST,
    MISMATCH,
    Check,
    DeadLetter,
    check_dead_letters,
    check_delivery,
    check_states,
    last_values,
    latency_threshold,
    recovery_times,
    verdict,
)


def test_every_id_with_one_output_is_delivered():
    delivery = check_delivery("trades", ["t1", "t2"], [("t1", b"a"), ("t2", b"b")])
    assert delivery.ok and delivery.received == 2 and delivery.duplicated == 0
    assert verdict([delivery], []) == DELIVERED
    assert delivery.line().startswith("OK")


def test_a_lost_record_is_reported_as_lost():
    delivery = check_delivery("trades", ["t1", "t2", "t3"], [("t1", b"a"), ("t3", b"c")])
    assert delivery.lost == {"t2"}
    assert not delivery.ok
    assert verdict([delivery], []) == LOST
    assert "lost 1" in delivery.line() and "t2" in delivery.line()


def test_byte_identical_duplicates_are_counted_not_failed():
    delivery = check_delivery(
        "trades", ["t1", "t2"], [("t1", b"a"), ("t1", b"a"), ("t1", b"a"), ("t2", b"b")]
    )
    assert delivery.ok
    assert delivery.duplicated == 2
    assert verdict([delivery], []) == DELIVERED


def test_a_duplicate_that_differs_is_a_mismatch():
    delivery = check_delivery("trades", ["t1"], [("t1", b"a"), ("t1", b"a-changed")])
    assert delivery.differing == {"t1"}
    assert delivery.duplicated == 0
    assert verdict([delivery], []) == MISMATCH


def test_an_output_nobody_expects_is_a_mismatch():
    delivery = check_delivery("alerts", ["a1"], [("a1", b"x"), ("a-made-up", b"y")])
    assert delivery.unexpected == {"a-made-up"}
    assert verdict([delivery], []) == MISMATCH


def test_loss_outranks_a_mismatch():
    lost = check_delivery("trades", ["t1"], [])
    differing = check_delivery("alerts", ["a1"], [("a1", b"x"), ("a1", b"y")])
    assert verdict([differing, lost], []) == LOST


def test_final_states_equal_to_one_process_pass():
    check = check_states("user states", {"u1": {"n": 1}, "u2": {"n": 2}}, {"u1": {"n": 1}, "u2": {"n": 2}})
    assert check.ok and verdict([], [check]) == DELIVERED


def test_a_wrong_final_state_is_a_mismatch():
    check = check_states("user states", {"u1": {"n": 1}, "u2": {"n": 2}}, {"u1": {"n": 1}, "u2": {"n": 3}})
    assert check.different == {"u2"}
    assert verdict([], [check]) == MISMATCH
    assert "u2" in check.line()


def test_a_missing_final_state_is_a_loss_and_an_extra_one_a_mismatch():
    missing = check_states("pair states", {"p1": b"x", "p2": b"y"}, {"p1": b"x"})
    assert missing.missing == {"p2"} and verdict([], [missing]) == LOST
    extra = check_states("pair states", {"p1": b"x"}, {"p1": b"x", "p9": b"z"})
    assert extra.extra == {"p9"} and verdict([], [extra]) == MISMATCH


def test_last_values_follow_offsets_per_partition_and_skip_the_clock():
    records = [
        (1, 5, b"u1", b"late"),
        (1, 2, b"u1", b"early"),
        (0, 7, b"u2", b"only"),
        (0, 8, b" market-clock", b"clock"),
    ]
    assert last_values(records, skip=(b" market-clock",)) == {"u1": b"late", "u2": b"only"}


def test_each_garbage_input_needs_its_own_dead_letter_at_its_offset():
    garbage = [("crypto-trades-x", 0, 10), ("crypto-orders-x", 3, 4)]
    good = [DeadLetter("crypto-trades-x", 0, 10, b"d1"), DeadLetter("crypto-orders-x", 3, 4, b"d2")]
    assert verdict([check_dead_letters(garbage, good)], []) == DELIVERED

    missing = check_dead_letters(garbage, good[:1])
    assert missing.lost == {"crypto-orders-x/3/4"} and verdict([missing], []) == LOST

    # A dead letter that points at the wrong offset: the garbage one is lost, the other unexpected.
    wrong = check_dead_letters(garbage, [good[0], DeadLetter("crypto-orders-x", 3, 5, b"d2")])
    assert wrong.lost == {"crypto-orders-x/3/4"} and wrong.unexpected == {"crypto-orders-x/3/5"}

    # A good input dead-lettered is unexpected even when every garbage one has its letter.
    extra = check_dead_letters(garbage, [*good, DeadLetter("crypto-trades-x", 1, 0, b"d3")])
    assert verdict([extra], []) == MISMATCH


def test_other_checks_count_as_loss_or_mismatch():
    assert verdict([], [], [Check("es ids", False, "3 missing")]) == LOST
    assert verdict([], [], [Check("snapshot after", False, loss=False)]) == MISMATCH
    assert verdict([], [], [Check("fine", True)]) == DELIVERED


def test_latency_threshold_has_a_floor():
    assert latency_threshold([]) == 2_000
    assert latency_threshold([100.0] * 50) == 2_000
    assert latency_threshold([1_000.0] * 50) == pytest.approx(3_000)


def test_recovery_is_the_last_held_up_output_after_the_fault():
    fault = 100_000
    timings = {
        # before the fault: 200 ms each (threshold: the 2 s floor)
        **{f"a{i}": (fault - 10_000 + i * 100, fault - 10_000 + i * 100 + 200) for i in range(50)},
        # held up: sent around the fault, answered late; the last one 9.5 s after the fault
        "b1": (fault - 500, fault + 6_000),
        "b2": (fault + 1_000, fault + 9_500),
        # after the backlog: quick again
        "c1": (fault + 12_000, fault + 12_200),
    }
    recovery = recovery_times(timings, [fault])
    assert recovery.per_fault == (9.5,)
    assert recovery.worst == 9.5


def test_a_fault_that_holds_nothing_up_recovers_at_once_and_no_output_is_never():
    fault = 50_000
    quick = {f"a{i}": (fault - 5_000 + i * 200, fault - 5_000 + i * 200 + 100) for i in range(50)}
    assert recovery_times(quick, [fault]).per_fault == (0.0,)
    never = {**quick, "x": (fault + 1_000, None)}
    assert recovery_times(never, [fault]).worst is None
    assert recovery_times(quick, []).worst == 0.0


def test_each_fault_is_measured_up_to_the_next_one():
    timings = {
        **{f"a{i}": (i * 100, i * 100 + 100) for i in range(50)},
        "late1": (10_000, 14_000),  # held up by the first fault (at 10 s)
        "late2": (30_500, 33_000),  # held up by the second (at 30 s)
    }
    assert recovery_times(timings, [10_000, 30_000]).per_fault == (4.0, 3.0)
