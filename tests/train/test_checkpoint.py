import os

import pytest
import torch
from runfactory import _weights, tiny

import memgate.train.loop as training
from memgate.cli import main
from memgate.config import load_config
from memgate.errors import CheckpointError
from memgate.models import build_model
from memgate.train import checkpoint as ckpt_io
from memgate.train.run import train as run_training


def test_crash_during_checkpoint_save_leaves_old_one_loadable(npz, tmp_path, monkeypatch):
    cfg = tiny(npz, tmp_path / "run", "train.epochs=1")
    run_training(cfg)
    path = tmp_path / "run" / "checkpoint.pt"
    before = ckpt_io.load(path)

    def crashing_save(obj, f):
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_io.torch, "save", crashing_save)
    with pytest.raises(OSError):
        ckpt_io.save({"model": {}, "config": {}}, path)
    after = ckpt_io.load(path)
    assert after["epoch"] == before["epoch"] == 1
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])
    assert not list(path.parent.glob(".checkpoint.pt.tmp*"))


def test_checkpoints_load_with_weights_only(npz, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": Evil()}, bad)
    with pytest.raises(CheckpointError, match="cannot load"):
        ckpt_io.load(bad)


def test_checkpoint_of_another_architecture_is_refused(npz, tmp_path, capsys):
    run_training(tiny(npz, tmp_path / "run", "train.epochs=1"))
    other = build_model(
        load_config(None, ["model.depth=20", "model.gates=[3]"]).model,
        load_config(None, ["model.depth=20", "model.gates=[3]"]).gate,
    )
    c = ckpt_io.load(tmp_path / "run")
    with pytest.raises(CheckpointError, match="is a ResNet-14 basic.*but the model is ResNet-20"):
        ckpt_io.load_model_state(other, c, tmp_path / "run")
    # A gated model cannot start from a gated run, nor from a baseline of another depth.
    with pytest.raises(CheckpointError, match="gated run"):
        ckpt_io.init_from_baseline(other, tmp_path / "run")
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_baseline_init_copies_backbone_exactly_and_leaves_gate_fresh(npz, tmp_path):
    base = tiny(npz, tmp_path / "base", "model.gates=[]", "gate.hidden=[]", "train.epochs=1")
    run_training(base)
    baseline_state = _weights(tmp_path / "base")
    gated = tiny(npz, tmp_path / "gated", f"train.init={tmp_path / 'base'}", "train.epochs=1")
    torch.manual_seed(gated.seed)
    fresh = build_model(gated.model, gated.gate)
    torch.manual_seed(gated.seed)
    model = build_model(gated.model, gated.gate)
    copied = ckpt_io.init_from_baseline(model, tmp_path / "base")
    state = model.state_dict()
    assert set(copied) == set(baseline_state)  # complete: every baseline tensor, BN buffers included
    assert all(torch.equal(state[k], baseline_state[k]) for k in baseline_state)
    gate_keys = [k for k in state if k.startswith("gates.")]
    assert gate_keys and all(torch.equal(state[k], fresh.state_dict()[k]) for k in gate_keys)
    # Through the trainer, too, and the trained gated run differs from the baseline afterwards.
    trainer = training.Trainer(gated)
    assert all(torch.equal(trainer.net.state_dict()[k], baseline_state[k]) for k in baseline_state)
    deeper = tiny(npz, tmp_path / "g20", "model.depth=20", f"train.init={tmp_path / 'base'}")
    with pytest.raises(CheckpointError, match="does not match the model"):
        training.Trainer(deeper)


def test_checkpoint_size_does_not_grow_with_the_epochs(npz, tmp_path):
    """The per-sample histories are appended to history/, not carried in every checkpoint: a run of 4
    epochs checkpoints what a run of 1 does, plus 3 metrics rows."""
    sizes = {}
    for epochs in (1, 4):
        cfg = tiny(npz, tmp_path / f"e{epochs}", f"train.epochs={epochs}", "train.eval_every=100")
        run_training(cfg)
        sizes[epochs] = (tmp_path / f"e{epochs}" / "checkpoint.pt").stat().st_size
    per_epoch_history = 6 * (512 - 64) * 2  # 5 signals + g, float16, N samples
    assert abs(sizes[4] - sizes[1]) < per_epoch_history, sizes


def test_a_checkpoint_holds_no_gpu_rng_and_resumes_on_a_node_with_fewer_gpus(npz, tmp_path, monkeypatch):
    """Training draws no random number on a GPU, so no GPU generator is saved; a checkpoint of an
    earlier version with 8 GPUs' states resumes on a node with one (faked) without touching them."""
    monkeypatch.setattr(ckpt_io.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ckpt_io.torch.cuda, "get_rng_state_all", lambda: pytest.fail("GPU RNG read"))
    monkeypatch.setattr(ckpt_io.torch.cuda, "set_rng_state_all", lambda s: pytest.fail("GPU RNG set"))
    state = ckpt_io.rng_state()
    assert set(state) == {"torch", "numpy", "python"}
    ckpt_io.set_rng_state({**state, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 8})
    assert torch.equal(torch.get_rng_state(), state["torch"])
