import numpy as np
from datafactory import (
    image_tree_files,
    write_zip,
)

from memgate.data import load_dataset


def test_cache_is_reused_and_keyed_by_content(tmp_path, arrays, monkeypatch):
    monkeypatch.setenv("MEMGATE_CACHE", str(tmp_path / "cache"))
    path = write_zip(tmp_path / "d.zip", image_tree_files(*arrays))
    first = load_dataset(path)
    assert first.cache.startswith(str(tmp_path / "cache"))
    second = load_dataset(path)
    assert second.cache == first.cache and np.array_equal(second.x_train, first.x_train)
    # Other content under the same name gets another cache entry.
    x2 = arrays[0].copy()
    x2[0, 0, 0, 0] ^= 1
    write_zip(path, image_tree_files(x2, *arrays[1:]))
    third = load_dataset(path)
    assert third.cache != first.cache and third.x_train[0, 0, 0, 0] == x2[0, 0, 0, 0]
