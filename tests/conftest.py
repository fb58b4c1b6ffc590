import os
from pathlib import Path

import pytest
import torch
from datafactory import make_arrays, write_learnable_npz

# two threads shared by the test processes (`make test` runs two: pytest-xdist), or what
# OMP_NUM_THREADS says: one thread while a study runs on the same cores, where more threads spin-wait
# on each other and make every test many times slower
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1) // _WORKERS)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Dataset caches of tests go to a per-session temp dir unless a test sets its own."""
    if "MEMGATE_CACHE" not in os.environ:
        monkeypatch.setenv("MEMGATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def shared_cifar10() -> Path:
    path = SHARED_DATA / "cifar10.zip"
    if not path.exists():
        pytest.skip("../shared/data/cifar10.zip is absent")
    return path


@pytest.fixture
def arrays():
    return make_arrays()


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_learnable_npz(tmp_path_factory.mktemp("data") / "toy.npz")
