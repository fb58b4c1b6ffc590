import io

import pytest
from datafactory import (
    image_tree_files,
    write_zip,
)

from memgate.config import DataConfig


def test_offline_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    import urllib.error

    from memgate.data import fetch as data_mod
    from memgate.errors import DataError

    def offline(*a, **kw):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", offline)
    monkeypatch.setenv("MEMGATE_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match="cannot download cifar-10-python.tar.gz.*MEMGATE_DATA") as e:
        data_mod.find_data(DataConfig())
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "nothing-here").glob("*.part"))


def test_download_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    from memgate.data import fetch as data_mod
    from memgate.errors import DataError

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", lambda *a, **kw: io.BytesIO(b"not the archive"))
    monkeypatch.setenv("MEMGATE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="md5"):
        data_mod.find_data(DataConfig(dataset="cifar100"))
    assert not (tmp_path / "cifar-100-python.tar.gz").exists()


def test_memgate_data_in_env_dir_is_found(tmp_path, arrays, monkeypatch):
    from memgate.data import find_data

    write_zip(tmp_path / "cifar10.zip", image_tree_files(*arrays))
    monkeypatch.setenv("MEMGATE_DATA", str(tmp_path))
    assert find_data(DataConfig()) == tmp_path / "cifar10.zip"
    assert find_data(DataConfig(path=str(tmp_path / "x.npz"))) == tmp_path / "x.npz"
