"""`memgate import` of the akamaster CIFAR ResNet layout, and fitting a gate on a frozen network."""

from pathlib import Path

import numpy as np
import pytest
import torch
from runfactory import tiny

from memgate.cli import main
from memgate.config import ModelConfig
from memgate.models import build_model
from memgate.train import checkpoint as ckpt_io
from memgate.train.run import train as run_training

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "pretrained"
PUBLISHED = {20: "91.73", 32: "92.62", 44: "93.11", 56: "93.39"}  # ../shared/pretrained/README.md
BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # the real files have no num_batches_tracked


def akamaster_file(path, depth=20, classes=10, seed=0):
    """A checkpoint in akamaster/pytorch_resnet_cifar10's layout with random weights and BN statistics,
    saved like the real files (no BatchNorm counters); returns it and the same weights under memgate's
    names (put in by hand)."""
    torch.manual_seed(seed)
    net = build_model(ModelConfig(depth=depth, shortcut="A", num_classes=classes))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    sd = net.state_dict()
    n = (depth - 2) // 6
    theirs = {"conv1.weight": sd["stem.weight"], "linear.weight": sd["fc.weight"], "linear.bias": sd["fc.bias"]}
    for f in BN_FIELDS:
        theirs[f"bn1.{f}"] = sd[f"stem_bn.{f}"]
    for s in range(3):
        for u in range(n):
            mine = f"stages.{s}.first" if u == 0 else f"stages.{s}.rest.{u - 1}"
            for j in range(2):
                theirs[f"layer{s + 1}.{u}.conv{j + 1}.weight"] = sd[f"{mine}.convs.{j}.weight"]
                for f in BN_FIELDS:
                    theirs[f"layer{s + 1}.{u}.bn{j + 1}.{f}"] = sd[f"{mine}.bns.{j}.{f}"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.items()}, "best_prec1": 91.73}, path)
    return theirs, net


@pytest.mark.parametrize("depth", [20, 32])
def test_import_then_eval_gives_the_hand_loaded_logits(tmp_path, capsys, depth):
    _, hand = akamaster_file(tmp_path / "r.th", depth)
    assert main(["import", str(tmp_path / "r.th"), "-o", str(tmp_path / "run")]) == 0
    c = ckpt_io.load(tmp_path / "run")
    cfg = ckpt_io.checkpoint_config(c, tmp_path / "run")
    assert (cfg.model.depth, cfg.model.shortcut, cfg.data.normalize) == (depth, "A", "imagenet")
    assert 'normalize = "imagenet"' in (tmp_path / "run" / "config.toml").read_text()
    net = build_model(cfg.model, cfg.gate)
    ckpt_io.load_model_state(net, c, tmp_path / "run")
    x = torch.randn(8, 3, 32, 32)
    assert torch.equal(net.eval()(x).logits, hand.eval()(x).logits)


def test_imported_run_evaluates_and_refuses_training_into_it(tmp_path, npz, capsys):
    akamaster_file(tmp_path / "r.th")
    assert (
        main(["import", str(tmp_path / "r.th"), "-o", str(tmp_path / "run"), f"data.path={npz}", "data.val_size=64"])
        == 0
    )
    assert main(["eval", str(tmp_path / "run")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["train", "-c", str(tmp_path / "run" / "config.toml")]) == 2
    assert "imported network, not a training run" in capsys.readouterr().err


def _mutations(theirs):
    missing = {k: v for k, v in theirs.items() if k != "layer2.1.bn1.running_var"}
    extra = {**theirs, "layer3.0.shortcut.conv.weight": torch.zeros(64, 32, 1, 1)}
    shape = {**theirs, "layer1.0.conv1.weight": torch.zeros(16, 16, 1, 1)}
    uneven = {k: v for k, v in theirs.items() if not k.startswith("layer3.2.")}
    return {
        "missing key": ({"state_dict": missing}, "missing ['stages.1.rest.0.bns.0.running_var']"),
        "extra key": ({"state_dict": extra}, "unexpected ['layer3.0.shortcut.conv.weight']"),
        "wrong shape": ({"state_dict": shape}, "layer1.0.conv1.weight has shape (16, 16, 1, 1)"),
        "uneven stages": ({"state_dict": uneven}, "units in stages 1-3"),
        "unknown layout": ({"state_dict": {"features.0.weight": torch.zeros(3)}}, "not a known layout"),
        "no tensors": ({"state_dict": {"a": 1}}, "no state dict of tensors"),
        "some BN counters": (
            {"state_dict": {**theirs, "bn1.num_batches_tracked": torch.tensor(5)}},
            "num_batches_tracked for 1 of its 19 BatchNorm layers",
        ),
        "0-d linear.weight": ({"state_dict": {**theirs, "linear.weight": torch.tensor(1.0)}}, "is not a matrix"),
        "complex weights": (
            {"state_dict": {**theirs, "conv1.weight": theirs["conv1.weight"].to(torch.complex64)}},
            "holds complex tensors",
        ),
        "meta tensors": ({"state_dict": {k: v.to("meta") for k, v in theirs.items()}}, "holds meta tensors"),
        "a memgate checkpoint": ({"model": {"a": torch.zeros(1)}, "config": {}}, "is a memgate checkpoint already"),
    }


def test_bad_checkpoints_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    theirs, _ = akamaster_file(tmp_path / "r.th")
    for what, (obj, needle) in _mutations(theirs).items():
        torch.save(obj, tmp_path / "bad.th")
        capsys.readouterr()
        assert main(["import", str(tmp_path / "bad.th"), "-o", str(tmp_path / "out")]) == 2, what
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (what, err)
        assert not (tmp_path / "out").exists(), what
    assert main(["import", str(tmp_path / "r.th"), "-o", str(tmp_path / "out"), "model.gates=[3]"]) == 2
    assert "cannot change that" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_file_with_every_bn_counter_imports_too(tmp_path):
    theirs, hand = akamaster_file(tmp_path / "r.th")
    counters = {k.replace("running_var", "num_batches_tracked"): torch.tensor(7) for k in theirs if "running_var" in k}
    torch.save({"state_dict": {**theirs, **counters}}, tmp_path / "new.th")
    assert main(["import", str(tmp_path / "new.th"), "-o", str(tmp_path / "run")]) == 0
    assert int(ckpt_io.load(tmp_path / "run")["model"]["stem_bn.num_batches_tracked"]) == 7


@pytest.mark.slow
@pytest.mark.parametrize("depth", sorted(PUBLISHED))
def test_the_real_public_files_import_and_score_their_published_accuracy(tmp_path, capsys, shared_cifar10, depth):
    (path,) = REAL.glob(f"resnet{depth}-*.th")
    assert main(["import", str(path), "-o", str(tmp_path / "run")]) == 0
    assert main(["eval", str(tmp_path / "run"), "--data", str(shared_cifar10)]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {PUBLISHED[depth]}% (g mode soft, fp32)" in out, out
    if depth == 20:  # a public network as a tradeoff reference (--baseline): evaluated, not read from a summary
        from memgate.analysis.tradeoff import _reference_point

        ref = _reference_point(tmp_path / "run")
        assert ref["label"] == "ResNet-20 (public weights)" and ref["test_acc"] == pytest.approx(
            float(PUBLISHED[20]) / 100
        )
        assert ref["macs"] == 40_551_040 and ref["data"] == "cifar10"


def _backbone(net):
    return {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("gates.")}


@pytest.mark.parametrize("freeze", ["backbone", "backbone_bn"])
def test_freezing_keeps_the_backbone_bit_identical(tmp_path, npz, freeze):
    akamaster_file(tmp_path / "r.th")
    assert main(["import", str(tmp_path / "r.th"), "-o", str(tmp_path / "base"), f"data.path={npz}"]) == 0
    base = ckpt_io.load(tmp_path / "base")["model"]
    over = ["model.depth=20", 'model.shortcut="A"', 'data.normalize="imagenet"', f"train.freeze={freeze}"]
    run_training(tiny(npz, tmp_path / "gate", *over, f"train.init={tmp_path / 'base'}", "gate.input=first_unit"))
    after = ckpt_io.load(tmp_path / "gate")["model"]
    params = {k for k, _ in build_model(ModelConfig(depth=20, shortcut="A")).named_parameters()}
    for k, v in base.items():
        if k in params or freeze == "backbone_bn":
            assert torch.equal(after[k], v), k
    buffers_moved = any(not torch.equal(after[k], v) for k, v in base.items() if "running_mean" in k)
    assert buffers_moved == (freeze == "backbone")  # backbone: BN statistics still follow the data
    gate = [k for k in after if k.startswith("gates.")]
    assert gate and all(after[k].abs().sum() > 0 for k in gate)
    assert np.isfinite(ckpt_io.load(tmp_path / "gate")["metrics"][-1]["test_acc"])


def test_tradeoff_refuses_to_choose_tau_on_images_the_imported_network_trained_on(tmp_path, npz, capsys):
    """A gate trained from an imported public network (which saw every training image) may not pick tau
    on a validation split carved from those images; with data.val_size=0 it chooses on test half A."""
    akamaster_file(tmp_path / "r.th")
    assert main(["import", str(tmp_path / "r.th"), "-o", str(tmp_path / "pub"), f"data.path={npz}"]) == 0
    over = ["model.depth=20", "model.shortcut=A", "data.normalize=imagenet", "train.epochs=1", "gate.input=first_unit"]
    run_training(tiny(npz, tmp_path / "gate", *over, f"train.init={tmp_path / 'pub'}"))
    assert ckpt_io.imported_ancestor(str(tmp_path / "pub")) == str(tmp_path / "pub")
    assert ckpt_io.imported_ancestor(str(tmp_path / "gate")) == str(tmp_path / "pub")  # through the chain
    capsys.readouterr()
    argv = ["tradeoff", str(tmp_path / "gate"), "--max-drop", "0.5", "--batch-sizes", "1", "--repeats", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "would choose tau on" in err and f"({tmp_path / 'pub'}, imported) trained on those images" in err
    assert "data.val_size=0" in err and not (tmp_path / "gate" / "tradeoff.json").exists()
