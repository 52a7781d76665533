"""The bench's report of interleaved rounds: medians, the ratio of the medians and the verdicts."""

from __future__ import annotations

from bench.rounds import precision_met, summarise, verdict


def test_summary_is_the_ratio_of_the_medians_with_every_round_listed():
    s = summarise([1400.0, 1300.0, 1500.0, 900.0, 1413.0], [4355.0, 4000.0, 1760.0, 7000.0, 4400.0])

    assert s["service_median"] == 1400.0
    assert s["ceiling_median"] == 4355.0
    assert s["ratio"] == round(1400 / 4355, 3)
    assert s["service_rounds"] == [1400.0, 1300.0, 1500.0, 900.0, 1413.0]
    assert s["ceiling_rounds"] == [4355.0, 4000.0, 1760.0, 7000.0, 4400.0]


def test_an_even_number_of_rounds_takes_the_mean_of_the_middle_two():
    s = summarise([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0])

    assert (s["service_median"], s["ceiling_median"], s["ratio"]) == (2.5, 25.0, 0.1)


def test_the_p99_ratio_is_of_the_p99_medians():
    s = summarise(
        [500.0] * 5, [1000.0] * 5, service_p99=[90, 99, 120, 80, 100], ceiling_p99=[75, 70, 80, 60, 90]
    )

    assert (s["service_p99_median"], s["ceiling_p99_median"]) == (99, 75)
    assert s["p99_ratio"] == round(99 / 75, 3)


def test_push_needs_half_the_ceiling_and_a_p99_within_a_fifth_of_it():
    half = summarise([500.0], [1000.0], service_p99=[60.0], ceiling_p99=[50.0])
    slow_tail = summarise([500.0], [1000.0], service_p99=[61.0], ceiling_p99=[50.0])
    short = summarise([499.0], [1000.0], service_p99=[10.0], ceiling_p99=[50.0])

    assert verdict("push_c64", half)
    assert not verdict("push_c64", slow_tail)
    assert not verdict("push_c64", short)


def test_the_other_ratios_have_their_own_floors():
    assert verdict("push_c64_keys_limit", summarise([400.0], [1000.0]))
    assert not verdict("batch_1000", summarise([690.0], [1000.0]))
    assert verdict("webhook_delivery", summarise([1000.0], [1000.0]))
    assert not verdict("webhook_delivery", summarise([999.0], [1000.0]))


def test_precision_needs_p99_under_a_quarter_second_and_max_under_one():
    assert precision_met({"p99": 0.249, "max": 0.99})
    assert not precision_met({"p99": 0.25, "max": 0.5})
    assert not precision_met({"p99": 0.1, "max": 1.0})
    assert not precision_met({"p99": None, "max": None})
