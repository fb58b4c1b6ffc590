"""The top-g image grid: which images, and a title that names red titles only where there are any."""

import numpy as np
import pytest

from memgate.analysis import gates as gates_mod


@pytest.mark.parametrize("noisy_at", [None, 3])
def test_top_g_grid_ranks_by_final_g_and_keys_red_only_with_label_noise(monkeypatch, noisy_at):
    n = 6
    final = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3], np.float16)
    noisy = np.zeros(n, bool)
    if noisy_at is not None:
        noisy[noisy_at] = True
    gates = {
        "stages": np.array([3]),
        "g_b3": np.stack([np.full(n, 0.5, np.float16), final]),
        "labels": np.array([0, 1, 0, 1, 0, 1]),
        "clean_labels": np.array([0, 1, 0, 0, 0, 1]),
        "noisy": noisy,
        "indices": np.array([10, 11, 12, 13, 14, 15]),
    }
    images = np.arange(16)[:, None].repeat(3, 1)  # image i is recognisable by its value
    drawn = {}
    monkeypatch.setattr(gates_mod, "image_grid", lambda imgs, titles, red, png, title: drawn.update(locals()))
    gates_mod.plot_top_g_images(images, gates, ["cat", "dog"], "unused.png", count=3)
    assert [int(i[0]) for i in drawn["imgs"]] == [11, 13, 12]  # g 0.9, 0.7, 0.5, by dataset index
    assert drawn["titles"][0] == "dog\ng=0.90"
    if noisy_at is None:
        assert drawn["title"] == "training images with the highest final g" and not any(drawn["red"])
    else:
        assert "(red: noisy label" in drawn["title"] and drawn["red"] == [False, True, False]
        assert drawn["titles"][1] == "dog [cat]\ng=0.70"
    # beside other runs' figures (a study's report) the title names its run
    gates_mod.plot_top_g_images(images, gates, ["cat", "dog"], "unused.png", count=3, run_name="gated, seed 2")
    assert drawn["title"].startswith("gated, seed 2: training images with the highest final g")
