"""The memorisation proxies against values computed independently: by hand, with torch.func's exact
Hessian-vector product, and with the reference implementation's own formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from memgate.analysis.proxies import (
    curvature,
    depth_from_probes,
    gather_features,
    knn_predict,
    layer_features,
    loss_sensitivity,
    prediction_depth,
)
from memgate.config import GateConfig, ModelConfig
from memgate.models import build_model


def test_curvature_and_sensitivity_of_a_quadratic_loss_by_hand():
    """L_i(x) = c_i |x_i|^2 / 2: grad = c_i x_i, so grad(x + h v) - grad(x) = c_i h v and, for any
    Rademacher v in d dimensions, its norm is c_i h sqrt(d), exactly."""
    c = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    fn = lambda z: 0.5 * c * z.flatten(1).pow(2).sum(1)  # noqa: E731
    d = 3 * 4 * 4
    got = curvature(fn, x, probes=4, h=1e-3, generator=torch.Generator().manual_seed(0))
    assert got.double().tolist() == pytest.approx((c * 1e-3 * math.sqrt(d)).tolist(), rel=1e-5)
    assert loss_sensitivity(fn, x).tolist() == pytest.approx((c * x.flatten(1).norm(dim=1)).tolist(), rel=1e-9)


def test_curvature_is_h_times_the_exact_hessian_vector_product():
    """On a smooth nonlinear loss, the finite difference equals h |H v| (torch.func's exact H v for
    the same Rademacher v) up to O(h)."""
    torch.manual_seed(0)
    w1, w2 = torch.randn(12, 8, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    y = torch.tensor([0, 2])

    def fn(z):
        return F.cross_entropy(torch.tanh(z.flatten(1) @ w1.T) @ w2.T, y, reduction="none")

    x = torch.randn(2, 8, dtype=torch.float64)
    h = 1e-4
    got = curvature(fn, x, probes=1, h=h, generator=torch.Generator().manual_seed(3))
    v = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(3)).double() * 2 - 1
    for i in range(2):

        def one(z, i=i):  # sample i's loss as a function of its own input
            return F.cross_entropy(torch.tanh(z[None] @ w1.T) @ w2.T, y[i : i + 1])

        hv = torch.autograd.functional.hvp(one, x[i], v[i])[1]
        assert got[i].item() == pytest.approx(h * hv.norm().item(), rel=1e-3)


def test_curvature_matches_the_reference_implementation_up_to_its_batch_mean():
    """purdue-nrl/Memorization-Curvature: nn.CrossEntropyLoss() (a batch mean), v = h (v + 1e-7); the
    same probes give our per-sample scores divided by the batch size."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(depth=8), GateConfig()).double().eval()
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.tensor([1, 5, 5, 9])

    def reference(batch_data, batch_labels, h, niter, gen):
        regr = torch.zeros(len(batch_data), dtype=torch.float64)
        for _ in range(niter):
            v = torch.randint(0, 2, batch_data.shape, generator=gen).double()
            v[v == 0] = -1
            v = h * (v + 1e-7)
            batch_data = batch_data.detach().requires_grad_()
            loss_pos = F.cross_entropy(net(batch_data + v).logits, batch_labels)
            loss_orig = F.cross_entropy(net(batch_data).logits, batch_labels)
            grad_diff = torch.autograd.grad(loss_pos - loss_orig, batch_data)[0]
            regr += grad_diff.reshape(len(batch_data), -1).norm(dim=1)
        return regr / niter

    theirs = reference(x, y, 1e-3, 3, torch.Generator().manual_seed(7))
    fn = lambda z: F.cross_entropy(net(z).logits, y, reduction="none")  # noqa: E731
    ours = curvature(fn, x, probes=3, h=1e-3, generator=torch.Generator().manual_seed(7))
    assert (ours.double() / len(x)).tolist() == pytest.approx(theirs.tolist(), rel=1e-4)


def test_depth_from_probes_by_hand():
    # 4 layers, 4 samples; final predictions 1, 1, 2, 0
    probes = torch.tensor(
        [
            [1, 0, 2, 0],
            [1, 1, 1, 0],
            [1, 1, 2, 1],
            [1, 1, 2, 0],
        ]
    )
    final = torch.tensor([1, 1, 2, 0])
    # sample 0 agrees from layer 0; sample 1 from layer 1; sample 2 from layer 2 (layer 1 says 1);
    # sample 3 disagrees at layer 2, agrees at 3: depth 3
    assert depth_from_probes(probes, final).tolist() == [0, 1, 2, 3]
    assert depth_from_probes(probes, torch.tensor([0, 0, 0, 1])).tolist() == [4, 4, 4, 4]  # last disagrees


def test_prediction_depth_on_planted_representations_and_leave_one_out():
    """Two clusters in every layer's space; the query sits in cluster 0 at layer 0 and in cluster 1
    from layer 1 on, and the network predicts 1: depth 1. A training sample may not vote for itself."""
    ref = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    q0, q1 = torch.tensor([[0.05, 0.05]]), torch.tensor([[5.05, 5.05]])
    depth = prediction_depth([q0, q1, q1], torch.tensor([1]), [ref, ref, ref], labels, 2, k=3)
    assert depth.tolist() == [1]
    # a lone point of class 1 inside cluster 0: with itself voting it is "class 1", without it class 0
    ref2 = torch.cat([ref, torch.tensor([[0.02, 0.02]])])
    lab2 = torch.cat([labels, torch.tensor([1])])
    query = ref2[6:7]
    assert knn_predict(query, ref2, lab2, 1, 2).tolist() == [1]
    assert knn_predict(query, ref2, lab2, 1, 2, self_index=torch.tensor([6])).tolist() == [0]


def test_layer_features_are_the_stem_and_every_unit():
    net = build_model(ModelConfig(depth=14, gates=(3,)), GateConfig(hidden=(8,))).eval()
    feats, logits = layer_features(net, torch.randn(5, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [16, 16, 16, 32, 32, 64, 64]  # stem + 2 units in each of 3 stages
    assert all(f.shape[0] == 5 for f in feats) and logits.shape == (5, 10)


def test_gathered_features_fill_batch_by_batch_what_one_pass_gives():
    """gather_features writes each batch into outputs allocated once: the same as one pass over all
    the images (eval mode: no image depends on another), and a count that does not match is refused."""
    net = build_model(ModelConfig(depth=14, gates=(3,)), GateConfig(hidden=(8,))).eval()
    x = torch.randn(8, 3, 32, 32)
    feats, preds = gather_features(net, [x[:5], x[5:]], 8)
    with torch.no_grad():
        whole, logits = layer_features(net, x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(feats, whole)) and len(feats) == 7
    assert torch.equal(preds, logits.argmax(1))
    with pytest.raises(ValueError, match="hold 8 images, not 9"):
        gather_features(net, [x[:5], x[5:]], 9)
    with pytest.raises(ValueError, match="more than 7 images"):
        gather_features(net, [x[:5], x[5:]], 7)


@pytest.mark.slow
def test_scores_with_proxies_writes_them_averaged_over_the_snapshots(npz, tmp_path, capsys):
    """`memgate scores --proxies`: prediction depth, curvature and loss sensitivity for the train and
    test images, CSL and EL2N from the histories; averaged over snapshots only where the run kept them;
    the study of g against them (proxies.md) checked on the run without snapshots."""
    import numpy as np
    from runfactory import tiny

    from memgate.cli import main
    from memgate.train.run import train
    from memgate.train.rundir import read_signals

    for name, snap in (("snap", "train.snapshot_every=1"), ("plain", "train.snapshot_every=0")):
        train(tiny(npz, tmp_path / name, snap))
        capsys.readouterr()
        if name == "snap":
            run = str(tmp_path / name)
            assert main(["scores", run, "--proxies", "--snapshots", "1,3"]) == 2  # refused before anything is written
            assert "--snapshots 3: " in capsys.readouterr().err and not (tmp_path / name / "train_scores.npz").exists()
            assert main(["scores", run, "--snapshots", "1"]) == 2 and "add --proxies" in capsys.readouterr().err
            assert main(["scores", run, "--proxies", "--snapshots", "1,x"]) == 2
            assert "give comma-separated integers" in capsys.readouterr().err
            assert main(["scores", run, "--proxies", "--probes", "1", "--snapshots", "1"]) == 0
        else:
            _study_of_g(tmp_path, tmp_path / name, capsys)
        out = capsys.readouterr().out
        assert ("averaged over the snapshots of epochs [1] and the final network (epoch 2)" in out) == (name == "snap")
        assert ("no snapshots before the final epoch (trained with train.snapshot_every=0)" in out) == (name == "plain")
        tr, te = (np.load(tmp_path / name / f"{s}_scores.npz") for s in ("train", "test"))
        for z in (tr, te):
            n = len(z["indices"])
            assert z["prediction_depth"].shape == (n,) and 0 <= z["prediction_depth"].min()
            assert z["prediction_depth"].dtype == np.int16  # an integer count of layers, as forgetting events
            assert z["prediction_depth"].max() <= 7  # stem + 6 units of a ResNet-14
            assert (z["curvature"] > 0).all() and (z["loss_sensitivity"] > 0).all()
        sig = read_signals(tmp_path / name)
        order = np.argsort(sig["indices"])
        assert np.allclose(tr["csl"], sig["loss"].astype(np.float64).sum(0)[order], rtol=1e-6)
        assert np.array_equal(tr["el2n"], sig["el2n"][0][order].astype(np.float32))  # epoch 1 of 2 (10%)
        text = (tmp_path / name / "scores.md").read_text()
        for label in ("prediction depth (Baldock et al. 2021)", "input-loss curvature (Garg et al. 2024)", "CSL"):
            assert label in text


def _study_of_g(tmp_path, run, capsys):
    """proxies.md: the Spearman matrix with a score file covering half the samples, mean g per
    prediction depth, and the routing table whose ends are the network evaluated with every image
    taking (and skipping) the extra layers; a score file keyed to other samples is refused up front."""
    import numpy as np

    from memgate.cli import main
    from memgate.train.evaluate import open_run, predict

    sig = np.load(run / "signals.npz")
    idx, labels = np.sort(sig["indices"]), sig["labels"][np.argsort(sig["indices"])]
    half = idx[::2]
    np.savez(tmp_path / "cscore.npz", indices=half, scores=np.arange(len(half), dtype=np.float32))
    np.savez(tmp_path / "other.npz", indices=idx, labels=(labels + 1) % 10, scores=np.arange(len(idx)))
    capsys.readouterr()
    assert main(["scores", str(run), "--scores", str(tmp_path / "cscore.npz")]) == 2
    assert "covers" in capsys.readouterr().err  # half the samples, and no --partial
    assert (
        main(["scores", str(run), "--proxies", "--scores", str(tmp_path / "other.npz"), "-o", str(tmp_path / "x")]) == 2
    )
    assert "keyed to other samples" in capsys.readouterr().err and not (tmp_path / "x").exists()
    args = ["scores", str(run), "--proxies", "--probes", "1", "--scores", str(tmp_path / "cscore.npz")]
    assert main(args) == 2 and "--partial" in capsys.readouterr().err
    assert main([*args, "--partial"]) == 0
    out = capsys.readouterr().out
    assert "proxies.md, spearman.png, g_by_depth.png" in out
    print(out)  # for the caller's checks
    text = (run / "proxies.md").read_text()
    assert f"cscore ({len(half):,d})" in text  # the pairs with the partial file use its samples
    for png in ("spearman.png", "g_by_depth.png"):
        assert (run / png).stat().st_size > 1000
    te = np.load(run / "test_scores.npz")
    r = open_run(run)
    full, skip = (
        100 * (predict(r, r.dataset.x_test, g_mode=m).logits.argmax(1).numpy() == te["labels"]).mean()
        for m in ("full", "skip")
    )
    assert f"| none (the full network) | 0.0% | {full:.2f} |" in text
    assert f"| every image | 100.0% | {skip:.2f} |" in text
    share = 100 * (te["prediction_depth"] <= 5).mean()  # ResNet-14: stem 0, units 1-6; B3 begins at 5
    assert f"| prediction depth <= 5 (needs no extra layers) | {share:.1f}% |" in text
    counts = {int(d): int((te["prediction_depth"] == d).sum()) for d in np.unique(te["prediction_depth"])}
    for d, c in counts.items():
        assert f"| {d} | {c:,d} |" in text.split("## Mean g per prediction depth (test)")[1]
