"""Paired timings: the ratio is of the two sides' own times, and every measurement spans min_s."""

import time

import pytest

from memgate.analysis.timing import paired_rates


def test_paired_rates_repeat_short_passes_to_span_min_s_and_pair_the_sides():
    calls = {"a": 0, "b": 0}

    def side(name: str, seconds: float):
        def run() -> None:
            calls[name] += 1
            time.sleep(seconds)

        return run

    out = paired_rates(side("a", 0.005), side("b", 0.015), n=10, repeats=3, cuda=False, min_s=0.1)
    # the warm-up's shorter side (a, ~5 ms) sets the count: at least 0.1 s / 5 ms, i.e. up to 20 passes
    # per measurement (sleep overshoots, so fewer), the same count for both sides, 3 rounds + warm-up
    per_side = (calls["a"] - 1) / 3
    assert calls["a"] == calls["b"] and per_side == int(per_side) and 5 <= per_side <= 20
    assert out["speedup"] == pytest.approx(3.0, rel=0.35)  # b's time over a's: each pass, not each measurement
    assert out["images_per_s"] == pytest.approx(10 / 0.005, rel=0.5)
    assert out["full_images_per_s"] == pytest.approx(10 / 0.015, rel=0.35)
    # one pass already longer than min_s: timed once per measurement
    calls.update(a=0, b=0)
    paired_rates(side("a", 0.02), side("b", 0.02), n=1, repeats=2, cuda=False, min_s=0.01)
    assert calls == {"a": 3, "b": 3}
