import math

import pytest
import torch
import torch.nn.functional as F

from memgate.config import GateConfig, ModelConfig, load_config
from memgate.models import (
    architecture_summary,
    build_model,
    count_params,
    gate_value,
    param_groups,
)

BETA = 8 / 2.3


def _gated(depth=20, gates=(3,), **gate_kw):
    cfg = load_config(None, [f"model.depth={depth}", f"model.gates={list(gates)}"])
    gate = GateConfig(**{**cfg.gate.__dict__, **gate_kw})
    return build_model(cfg.model, gate)


def _basic_b_formula(depth, classes):
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    w_in = 16
    for w in (16, 32, 64):
        first = 9 * w_in * w + 9 * w * w + 4 * w
        if w_in != w:
            first += w_in * w + 2 * w  # 1x1 projection + BN
        total += first + (n - 1) * (18 * w * w + 4 * w)
        w_in = w
    return total + 64 * classes + classes


def _bottleneck_b_formula(depth, classes):
    n = (depth - 2) // 9
    total = 3 * 16 * 9 + 2 * 16
    w_in = 16

    def unit(cin, p):
        return cin * p + 2 * p + 9 * p * p + 2 * p + p * 4 * p + 8 * p

    for p in (16, 32, 64):
        total += unit(w_in, p) + w_in * 4 * p + 8 * p  # the first unit always projects
        total += (n - 1) * unit(4 * p, p)
        w_in = 4 * p
    return total + 256 * classes + classes


@pytest.mark.parametrize("depth,expected", [(20, 269_722), (56, 853_018), (110, 1_727_962)])
def test_option_a_param_counts_match_published(depth, expected):
    assert count_params(build_model(ModelConfig(depth=depth, shortcut="A"))) == expected


@pytest.mark.parametrize("depth", [20, 56, 110])
@pytest.mark.parametrize("classes", [10, 100])
def test_option_b_basic_counts_match_formula(depth, classes):
    m = build_model(ModelConfig(depth=depth, shortcut="B", num_classes=classes))
    assert count_params(m) == _basic_b_formula(depth, classes)


@pytest.mark.parametrize("classes", [10, 100])
def test_bottleneck_164_count_matches_formula(classes):
    m = build_model(ModelConfig(depth=164, block="bottleneck", num_classes=classes))
    assert count_params(m) == _bottleneck_b_formula(164, classes)
    assert count_params(m) == (1_704_154 if classes == 10 else 1_727_284)


def test_preact_counts_bn_on_inputs_and_final_bn():
    # Pre-activation: each BN sees the conv's input width; no stem BN; one final BN(64);
    # projections carry no BN of their own.
    n, total, w_in = 3, 3 * 16 * 9, 16
    for w in (16, 32, 64):
        first = 2 * w_in + 9 * w_in * w + 2 * w + 9 * w * w + (w_in * w if w_in != w else 0)
        total += first + (n - 1) * (18 * w * w + 4 * w)
        w_in = w
    total += 2 * 64 + 64 * 10 + 10
    assert count_params(build_model(ModelConfig(depth=20, preact=True))) == total


def test_gate_over_b3_of_resnet110_adds_38410_params():
    base = build_model(ModelConfig(depth=110))
    gated = _gated(depth=110)
    assert count_params(gated) - count_params(base) == 64 * 512 + 512 + 512 * 10 + 10 == 38_410
    summary = architecture_summary(gated)
    assert summary["params_gate"] == 38_410
    assert summary["params_gate_per_stage"] == {"3": 38_410}


def test_gates_over_b2_and_b3_use_their_own_widths():
    m = _gated(gates=(2, 3))
    assert count_params(m.gates["2"]) == 32 * 216 + 216 + 216 * 10 + 10
    assert count_params(m.gates["3"]) == 64 * 512 + 512 + 512 * 10 + 10


def test_flattened_first_unit_head_reads_whole_map():
    m = _gated(input="first_unit", flatten=True, relu=True)
    first = m.gates["3"].head[0]
    assert first.in_features == 64 * 8 * 8
    assert isinstance(m.gates["3"].head[1], torch.nn.ReLU)


def test_param_groups_disjoint_and_complete():
    m = _gated(gates=(2, 3))
    backbone, gate = param_groups(m)
    ids_b, ids_g = {id(p) for p in backbone}, {id(p) for p in gate}
    assert not ids_b & ids_g
    assert ids_b | ids_g == {id(p) for p in m.parameters()}
    assert ids_g == {id(p) for p in m.gates.parameters()}


def test_init_is_he_style():
    m = build_model(ModelConfig(depth=110))
    conv = m.stages[2].rest[5].convs[0]
    std = conv.weight.std().item()
    assert abs(std - math.sqrt(2 / (9 * 64))) < 0.01
    bn = m.stages[2].rest[5].bns[0]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_macs_resnet110_and_skippable_part():
    s = architecture_summary(_gated(depth=110))
    # 17 of the 18 B3 units are skippable: 17 units * 2 convs * 64*64*9 * 8*8.
    assert s["macs_skippable"] == 17 * 2 * 64 * 64 * 9 * 64
    assert 250e6 < s["macs"] < 256e6


@pytest.mark.parametrize("classes", [10, 100])
def test_g_for_uniform_and_confident_logits(classes):
    uniform = torch.zeros(3, classes)
    lnc = math.log(classes)
    assert torch.allclose(gate_value(uniform, "sigmoid"), torch.full((3,), 1 / (1 + math.exp(-BETA * lnc / 2))))
    assert torch.allclose(gate_value(uniform, "normalized"), torch.ones(3))
    onehot = torch.zeros(2, classes)
    onehot[:, 1] = 60.0
    assert torch.allclose(
        gate_value(onehot, "sigmoid"), torch.full((2,), 1 / (1 + math.exp(BETA * lnc / 2))), atol=1e-6
    )
    assert torch.allclose(gate_value(onehot, "normalized"), torch.zeros(2), atol=1e-6)


def test_g_sigmoid_matches_released_formula_for_cifar10():
    z = torch.randn(16, 10) * 3
    p = z.softmax(1)
    h = -(p * p.log()).sum(1)
    assert torch.allclose(
        gate_value(z, "sigmoid"), torch.sigmoid(BETA * (h / math.log(10) - 0.5) * math.log(10)), atol=1e-6
    )
    # For C = 10 the released slope is 8 per unit of normalised entropy.
    assert torch.allclose(gate_value(z, "sigmoid"), torch.sigmoid(8.0 * (h / math.log(10) - 0.5)), atol=1e-3)


@pytest.mark.parametrize("gate_input", ["output", "first_unit"])
def test_equation_1_numerically(gate_input):
    torch.manual_seed(0)
    m = _gated(input=gate_input).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        h = F.relu(m.stem_bn(m.stem(x)))
        h = m.stages[1](m.stages[0](h))
        o1 = m.stages[2].first(h)
        o2 = m.stages[2].rest(o1)
        z, g = m.gates["3"](o1 if gate_input == "first_unit" else o2)
        mixed = g.view(-1, 1, 1, 1) * o2 + (1 - g.view(-1, 1, 1, 1)) * o1
        expected = m.fc(mixed.mean((2, 3)))
        out = m(x)
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert torch.allclose(out.gates[3].g, g)
    assert torch.allclose(out.gates[3].logits, z)
    assert not torch.allclose(mixed, o2) and not torch.allclose(mixed, o1)


def test_first_unit_gate_with_g_zero_returns_o1_exactly():
    torch.manual_seed(0)
    m = _gated(input="first_unit").eval()
    x = torch.randn(4, 64 // 2, 16, 16)  # input of stage 3
    with torch.no_grad():
        o1 = m.stages[2].first(x)
        out, go = m._gated_stage(m.stages[2], m.gates["3"], x, "skip")
    assert torch.equal(out, o1)
    assert torch.equal(go.g, torch.zeros(4))


def test_hard_gate_routes_only_hard_samples_through_extra_layers():
    torch.manual_seed(0)
    m = _gated(input="first_unit", g="normalized").eval()
    x = torch.randn(16, 32, 16, 16)
    head = m.gates["3"].head[-1]
    with torch.no_grad():
        o1 = m.stages[2].first(x)
        # Sharpen the head until the batch holds both easy (g < 0.5) and hard samples.
        for _ in range(40):
            hard = m.gates["3"](o1)[1] >= 0.5
            if 0 < hard.sum() < len(hard):
                break
            head.weight.mul_(1.5)
        assert 0 < hard.sum() < len(hard)
        out, go = m._gated_stage(m.stages[2], m.gates["3"], x, "hard")
        o2 = m.stages[2].rest(o1)
    expected = torch.where(hard.view(-1, 1, 1, 1), o2, o1)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.equal(go.g, hard.float())


def test_hard_mode_takes_one_threshold_per_stage():
    """tau={2: -inf, 3: inf}: every sample runs B2's extra layers and none runs B3's (the routes the
    tradeoff's random-routing control gives whole test sets)."""
    torch.manual_seed(0)
    m = _gated(gates=(2, 3), input="first_unit").eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        h = m.stages[0](F.relu(m.stem_bn(m.stem(x))))
        o1 = m.stages[2].first(m.stages[1].rest(m.stages[1].first(h)))
        out = m(x, g_mode="hard", tau={2: -math.inf, 3: math.inf})
    assert torch.equal(out.logits, m.fc(o1.mean((2, 3))))
    assert torch.equal(out.gates[2].g, torch.ones(5)) and torch.equal(out.gates[3].g, torch.zeros(5))


def test_info_cli_json_and_errors(capsys):
    import json
    from pathlib import Path

    from memgate.cli import main

    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "gated_b3.toml")
    assert main(["info", "-c", cfg, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params_gate"] == 38_410 and info["params_total"] == 1_730_714 + 38_410
    assert {"params_total", "params_gate", "macs", "macs_skippable"} <= set(info)
    assert main(["info", "-c", cfg, "model.depth=21"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("memgate: error: config: model.depth=21") and "\n" not in err
    assert main(["info", "-c", cfg, "gate.g=tanh"]) == 2
    assert "'sigmoid', 'normalized'" in capsys.readouterr().err


def test_constant_g_control_blends_with_the_constant_and_leaves_the_gate_head_training_unchanged():
    """gate.fixed_g: equation (1) with a constant g; the head's logits, g and its gradient step are
    those of the per-sample gate; the classifier sees the constant blend, so the backbone's step differs."""
    from memgate.train.recipe import train_step

    torch.manual_seed(0)
    per_sample = _gated()
    control = _gated(fixed_g=0.3)
    control.load_state_dict(per_sample.state_dict())
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    per_sample.eval(), control.eval()
    with torch.no_grad():
        h = F.relu(control.stem_bn(control.stem(x)))
        o1 = control.stages[2].first(control.stages[1](control.stages[0](h)))
        o2 = control.stages[2].rest(o1)
        out_p, out_c = per_sample(x), control(x)
        assert torch.allclose(out_c.logits, control.fc((0.3 * o2 + 0.7 * o1).mean((2, 3))), atol=1e-5)
        assert torch.equal(out_c.gates[3].g, out_p.gates[3].g) and torch.equal(
            out_c.gates[3].logits, out_p.gates[3].logits
        )
        assert not torch.allclose(out_c.logits, out_p.logits)
        ends = {v: _gated(fixed_g=v) for v in (0.0, 1.0)}
        for v, m in ends.items():
            m.load_state_dict(per_sample.state_dict())
            assert torch.equal(m.eval()(x).logits, per_sample(x, g_mode="full" if v else "skip").logits)
    steps = {}
    for name, m in (("per_sample", per_sample), ("control", control)):
        backbone, gate = param_groups(m.train())
        opts = torch.optim.SGD(backbone, lr=0.1), torch.optim.SGD(gate, lr=0.1)
        train_step(m, x, y, *opts)
        steps[name] = ([p.detach().clone() for p in gate], [p.detach().clone() for p in backbone])
    assert all(torch.equal(a, b) for a, b in zip(steps["per_sample"][0], steps["control"][0]))
    assert not all(torch.equal(a, b) for a, b in zip(steps["per_sample"][1], steps["control"][1]))


@pytest.mark.parametrize(
    ("value", "message"), [(-0.5, r"must be in \[0, 1\]"), (1.5, r"must be in \[0, 1\]"), ("nan", "must be a number")]
)
def test_constant_g_outside_unit_interval_is_a_config_error(value, message):
    from memgate.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"gate.fixed_g.* {message}"):
        load_config(None, ["model.gates=[3]", f"gate.fixed_g={value}"])
