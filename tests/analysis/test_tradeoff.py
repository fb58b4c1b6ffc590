"""Hard routing at any threshold, per-sample MACs, and `memgate tradeoff` end to end."""

import json

import numpy as np
import pytest
import torch
from runfactory import tiny

from memgate.analysis.tradeoff import choose_tau, halves_of_test, per_sample_macs, route_patterns
from memgate.cli import main
from memgate.config import GateConfig, ModelConfig
from memgate.experiments.report import report
from memgate.models import build_model, macs_per_stage
from memgate.train.run import train as run_training


def _net(gates=(2, 3)):
    torch.manual_seed(0)
    net = build_model(ModelConfig(depth=14, gates=gates), GateConfig(hidden=(8,) * len(gates), input="first_unit"))
    return net.eval()


@pytest.mark.parametrize("tau", [0.0, 0.3, 0.6, 0.9, 1.01])
def test_hard_routing_equals_soft_routing_with_thresholded_g_at_both_gates(tau):
    net = _net()
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        routed = net(x, g_mode="hard", tau=tau)  # real routing: only g >= tau runs the extra layers
    with torch.enable_grad():  # with autograd on, "hard" is equation (1) with g := 1[g >= tau] for every sample
        reference = net(x, g_mode="hard", tau=tau)
    assert torch.allclose(routed.logits, reference.logits.detach(), atol=1e-5)
    for s in (2, 3):
        assert torch.equal(routed.gates[s].g, reference.gates[s].g.detach())


def test_tau_zero_is_the_full_network_and_tau_above_max_g_skips_everything():
    net = _net()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x, g_mode="hard", tau=0.0).logits, net(x, g_mode="full").logits, atol=1e-6)
        assert torch.allclose(net(x, g_mode="hard", tau=1.01).logits, net(x, g_mode="skip").logits, atol=1e-6)


def _conv_macs(cin, cout, k, hw):
    return cin * cout * k * k * hw * hw


def test_per_sample_macs_match_an_analytic_count():
    net = _net()
    total, skip = macs_per_stage(net)
    # ResNet-14 basic, option B (1x1 projection shortcuts), 2 units per stage; gate heads 8 wide over pooled o1.
    stage_rest = {2: 2 * _conv_macs(32, 32, 3, 16), 3: 2 * _conv_macs(64, 64, 3, 8)}
    assert skip == stage_rest
    convs = _conv_macs(3, 16, 3, 32) + 4 * _conv_macs(16, 16, 3, 32)
    convs += _conv_macs(16, 32, 3, 16) + _conv_macs(32, 32, 3, 16) + _conv_macs(16, 32, 1, 16) + stage_rest[2]
    convs += _conv_macs(32, 64, 3, 8) + _conv_macs(64, 64, 3, 8) + _conv_macs(32, 64, 1, 8) + stage_rest[3]
    heads = (32 * 8 + 8 * 10) + (64 * 8 + 8 * 10)
    assert total == convs + heads + 64 * 10
    routed = {2: np.array([1, 0, 1, 0]), 3: np.array([1, 1, 0, 0])}
    expected = [total, total - skip[2], total - skip[3], total - skip[2] - skip[3]]
    assert per_sample_macs(total, skip, routed).tolist() == expected


def test_route_patterns_are_the_joint_shares_in_stage_order():
    routed = {3: np.array([1, 1, 0, 0, 1], bool), 2: np.array([1, 0, 1, 0, 1], bool)}
    assert route_patterns(routed) == {"00": 0.2, "01": 0.2, "10": 0.2, "11": 0.4}
    assert route_patterns({3: np.array([0, 0, 1], bool)}) == {"0": 2 / 3, "1": 1 / 3}


def test_choose_tau_uses_validation_accuracy_only():
    rows = [
        {"tau": 0.0, "val_acc": 0.80, "test_acc": 0.10, "test_macs": 100},
        {"tau": 0.5, "val_acc": 0.795, "test_acc": 0.99, "test_macs": 70},
        {"tau": 0.9, "val_acc": 0.70, "test_acc": 0.99, "test_macs": 40},
    ]
    assert choose_tau(rows, 1.0)["tau"] == 0.5
    assert choose_tau(rows, 10.0)["tau"] == 0.9
    assert choose_tau(rows, 0.1)["tau"] == 0.0


def test_tradeoff_command_end_to_end_and_in_the_grid_report(npz, tmp_path, capsys):
    grid = tmp_path / "grid"
    run, o2 = grid / "o1" / "seed0", grid / "o2" / "seed0"
    run_training(tiny(npz, run, "train.epochs=1", "gate.input=first_unit", "model.gates=[2,3]", "gate.hidden=[8,8]"))
    run_training(tiny(npz, o2, "train.epochs=1"))
    capsys.readouterr()
    argv = ["tradeoff", str(run), "--thresholds", "0,0.5,1.01", "--batch-sizes", "1,64", "--repeats", "1"]
    assert main([*argv, "--max-drop", "5", "--baseline", str(o2)]) == 0
    res = json.loads((run / "tradeoff.json").read_text())
    pts = {p["tau"]: p for p in res["points"]}
    assert pts[0.0]["test_routed"] == {"2": 1.0, "3": 1.0} and pts[0.0]["test_macs"] == res["macs_full"]
    assert pts[1.01]["test_routed"] == {"2": 0.0, "3": 0.0}
    assert pts[1.01]["test_macs"] == res["macs_full"] - sum(res["macs_skippable"].values())
    assert res["chosen"]["tau"] in pts
    assert all(set(p["speedup"]) == {"1", "64"} and min(p["speedup"].values()) > 0 for p in res["points"])
    for p in res["points"]:  # each point's spread over its timed repeats brackets its median
        for b in ("1", "64"):
            lo, hi = p["images_per_s_range"][b]
            assert lo <= p[f"images_per_s_b{b}"] <= hi
    (ref,) = res["references"]
    o2_summary = json.loads((o2 / "summary.json").read_text())
    assert ref["label"] == "soft gate over B3 reading o2" and ref["test_acc"] == o2_summary["final_test_acc"]
    # the reference is on the time axes too: timed at each batch size beside the full network
    assert set(ref["speedup"]) == set(ref["images_per_s"]) == {"1", "64"}
    assert min(ref["speedup"].values()) > 0 and min(ref["images_per_s"].values()) > 0
    out = capsys.readouterr().out
    progress = [line for line in out.splitlines() if line.startswith("tradeoff: ")]
    assert progress == [
        "tradeoff: tau 0 (1 of 3): accuracy, then timing at batch 1, 64",
        "tradeoff: tau 0.5 (2 of 3): accuracy, then timing at batch 1, 64",
        "tradeoff: tau 1.01 (3 of 3): accuracy, then timing at batch 1, 64",
        f"tradeoff: timing --baseline {o2} beside the full network",
    ]
    assert f"reference soft gate over B3 reading o2: {100 * ref['test_acc']:.2f}%" in out
    assert f"measured {ref['speedup']['1']:.2f}x at batch 1, {ref['speedup']['64']:.2f}x at batch 64" in out
    assert (run / "tradeoff.csv").read_text().startswith("tau,test_acc,random_test_acc,val_acc,routed_b2,routed_b3")
    # two gates: the random control gives each joint route to the same share of images
    for p in pts.values():
        shares = p["test_patterns"]
        assert sum(shares.values()) == pytest.approx(1) and set(shares) <= {"00", "01", "10", "11"}
        assert sum(v for k, v in shares.items() if k[0] == "1") == pytest.approx(p["test_routed"]["2"])
        assert sum(v for k, v in shares.items() if k[1] == "1") == pytest.approx(p["test_routed"]["3"])
    assert pts[0.0]["test_patterns"] == {"11": 1.0} and pts[1.01]["test_patterns"] == {"00": 1.0}
    assert pts[0.0]["random_test_acc"] == pytest.approx(pts[0.0]["test_acc"])
    assert pts[1.01]["random_test_acc"] == pytest.approx(pts[1.01]["test_acc"])
    assert (run / "tradeoff.png").stat().st_size > 10_000

    assert main(["tradeoff", str(o2)]) == 2  # an o2 gate: one line, no curve
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reads o2" in err and "can skip nothing" in err
    # The hard-gate line of analyze and eval: a saving only where one is real, and one gate's share only.
    assert main(["analyze", str(run)]) == 0 and "hard gate" not in capsys.readouterr().out  # two gates
    assert main(["analyze", str(o2)]) == 0
    assert "reads o2 (the extra layers' output), so a hard gate cannot skip them" in capsys.readouterr().out

    text = report(grid, tmp_path / "rep").read_text()  # the grid report gathers every run's tradeoff.json
    section = text.split("## Accuracy against compute")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| o1 | 0 |")).split(" | ")
    assert row[3] == f"{100 * pts[0.0]['test_acc']:.2f}" and row[4] == f"{100 * pts[1.01]['test_acc']:.2f}"
    assert row[6] == f"{res['chosen']['tau']:g}"
    refs = next(line for line in section.splitlines() if line.startswith("References"))
    assert f"measured {ref['speedup']['1']:.2f}x / {ref['speedup']['64']:.2f}x (batch 1 / 64) ({o2})" in refs
    chosen = pts[res["chosen"]["tau"]]  # by g beside the random control, both on the whole test split
    assert row[9] == f"{100 * chosen['test_acc']:.2f} / {100 * chosen['random_test_acc']:.2f}"
    assert row[10] == f"{chosen['speedup']['1']:.2f}"  # the paired, measured speedup
    assert "| o2 |" not in section and "soft gate over B3 reading o2" in section
    assert (tmp_path / "rep" / "tradeoff_all.png").stat().st_size > 10_000
    (run / "tradeoff.json").write_text("{not json")
    assert main(["report", str(grid)]) == 2
    err = capsys.readouterr().err.strip()
    assert "tradeoff.json is damaged" in err and "memgate tradeoff" in err


def test_random_routing_control_of_a_single_gate(npz, tmp_path):
    """The same share routed at random: all routed = the full network, none = all skipped, linear between."""
    run = tmp_path / "o1"
    run_training(tiny(npz, run, "train.epochs=1", "gate.input=first_unit"))
    argv = ["tradeoff", str(run), "--thresholds", "0,0.5,0.9,1.01", "--batch-sizes", "8", "--repeats", "1"]
    assert main([*argv, "--note", "timings invalid: test"]) == 0
    res = json.loads((run / "tradeoff.json").read_text())
    assert res["note"] == "timings invalid: test"
    pts = {p["tau"]: p for p in res["points"]}
    full, skip = pts[0.0], pts[1.01]
    assert full["random_test_acc"] == pytest.approx(full["test_acc"]) and skip["random_test_acc"] == pytest.approx(
        skip["test_acc"]
    )
    for p in pts.values():
        share = p["test_routed"]["3"]
        assert p["random_test_acc"] == pytest.approx(share * full["test_acc"] + (1 - share) * skip["test_acc"])


def test_without_a_validation_split_tau_is_chosen_on_one_test_half_and_reported_on_the_other(npz, tmp_path):
    a, b = halves_of_test(101)
    assert len(a) == 50 and len(b) == 51 and not np.intersect1d(a, b).size and np.array_equal(a, halves_of_test(101)[0])
    run = tmp_path / "grid" / "o1" / "seed0"
    run_training(tiny(npz, run, "train.epochs=1", "gate.input=first_unit", "data.val_size=0"))
    argv = ["tradeoff", str(run), "--thresholds", "0,0.5,1.01", "--batch-sizes", "8", "--repeats", "1"]
    # anything within 100 points: the cheapest tau
    assert main([*argv, "--max-drop", "100", "--note", "timings invalid: busy"]) == 0
    res = json.loads((run / "tradeoff.json").read_text())
    chosen, pts = res["chosen"], {p["tau"]: p for p in res["points"]}
    assert chosen["tau"] == 1.01 and "test half A" in chosen["chosen_on"]
    assert chosen["val_acc"] == pts[1.01]["val_acc"] and chosen["test_acc"] == pts[1.01]["report_acc"]
    n = len(halves_of_test(len(np.load(npz)["y_test"]))[1])
    assert f"half B's ({n:,d})" in chosen["chosen_on"]
    # the grid report says where tau was chosen and carries the run's note
    text = report(tmp_path / "grid", tmp_path / "rep").read_text()
    assert f"- o1 seed 0: tau chosen on {chosen['chosen_on']}; timings invalid: busy" in text
