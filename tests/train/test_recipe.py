import copy

import pytest
import torch
import torch.nn.functional as F

from memgate.config import load_config
from memgate.models import build_model, param_groups
from memgate.train.recipe import gate_lr, make_optimizers, model_lr, train_step


def _setup(*overrides, seed=0):
    cfg = load_config(None, ["model.depth=14", "model.gates=[3]", "gate.hidden=[32]", *overrides])
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.gate)
    model_opt, gate_opt = make_optimizers(model, cfg)
    x = torch.randn(12, 3, 32, 32)
    y = torch.randint(0, 10, (12,))
    return cfg, model, model_opt, gate_opt, x, y


def _snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def _backbone_state(model):
    backbone, _ = param_groups(model)
    return _snapshot(backbone) + _snapshot(model.buffers())


def _reference_grads(model, x, y):
    """Gradients of each loss alone, on a copy, with plain autograd."""
    ref = copy.deepcopy(model)
    backbone, gate = param_groups(ref)
    out = ref(x)
    cls = F.cross_entropy(out.logits, y)
    gate_loss = sum(F.cross_entropy(g.logits, y) for g in out.gates.values())
    g_cls_backbone = torch.autograd.grad(cls, backbone, retain_graph=True)
    g_gate_gate = torch.autograd.grad(gate_loss, gate)
    return g_cls_backbone, g_gate_gate


def test_step_gradients_are_separated():
    _, model, model_opt, gate_opt, x, y = _setup()
    ref_backbone, ref_gate = _reference_grads(model, x, y)
    train_step(model, x, y, model_opt, gate_opt, step_model=True)
    backbone, gate = param_groups(model)
    # The backbone's gradient is the classification loss's alone (no gate-loss leak) ...
    for p, r in zip(backbone, ref_backbone):
        assert torch.allclose(p.grad, r, atol=1e-6)
    # ... and the heads' gradient is the gate loss's alone (the classification loss never steps them).
    for p, r in zip(gate, ref_gate):
        assert torch.allclose(p.grad, r, atol=1e-6)


def test_model_step_leaves_gate_params_unchanged():
    _, model, model_opt, _, x, y = _setup()
    _, gate = param_groups(model)
    before_gate, before_backbone = _snapshot(gate), _snapshot(param_groups(model)[0])
    train_step(model, x, y, model_opt, gate_opt=None, step_model=True)
    assert all(torch.equal(a, b) for a, b in zip(before_gate, gate))
    assert all(p.grad is None for p in gate)
    assert any(not torch.equal(a, b) for a, b in zip(before_backbone, param_groups(model)[0]))


def test_gate_step_leaves_every_backbone_param_and_buffer_unchanged():
    _, model, model_opt, gate_opt, x, y = _setup()
    model.eval()  # BN uses running stats, so only an optimizer could change backbone state
    before = _backbone_state(model)
    gate_before = _snapshot(param_groups(model)[1])
    train_step(model, x, y, model_opt, gate_opt, step_model=False)
    after = _backbone_state(model)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for p in param_groups(model)[0])
    assert all(not torch.equal(a, b) for a, b in zip(gate_before, param_groups(model)[1]))


@pytest.mark.parametrize("gate_input", ["output", "first_unit"])
@pytest.mark.parametrize("detach", [False, True])
def test_loss_paths_are_separated_in_the_graph(gate_input, detach):
    _, model, *_, x, y = _setup(f"gate.detach_g={str(detach).lower()}", f"gate.input={gate_input}")
    backbone, gate = param_groups(model)
    out = model(x)
    cls = F.cross_entropy(out.logits, y)
    gate_loss = F.cross_entropy(out.gates[3].logits, y)
    # The gate loss has no path into the backbone, the classification loss none into the heads.
    assert all(g is None for g in torch.autograd.grad(gate_loss, backbone, retain_graph=True, allow_unused=True))
    assert all(g is None for g in torch.autograd.grad(cls, gate, retain_graph=True, allow_unused=True))
    g = out.gates[3].g
    if detach:
        assert not g.requires_grad  # a constant to the classification loss
    else:
        through_g = torch.autograd.grad(cls, g, retain_graph=True)[0]
        # The classification loss depends on g, and g depends on the backbone features.
        assert through_g is not None and through_g.abs().sum() > 0
        stage3 = list(model.stages[2].first.parameters())
        assert any(t is not None and t.abs().sum() > 0 for t in torch.autograd.grad(g.sum(), stage3, allow_unused=True))


@pytest.mark.parametrize("gate_input", ["output", "first_unit"])
def test_detach_g_changes_only_the_path_through_g(gate_input):
    grads = {}
    for detach in (False, True):
        _, model, *_, x, y = _setup(f"gate.detach_g={str(detach).lower()}", f"gate.input={gate_input}")
        backbone, _ = param_groups(model)
        grads[detach] = torch.autograd.grad(F.cross_entropy(model(x).logits, y), backbone)
    # Same weights, same batch: the only difference is the path through g into the backbone.
    assert sum((a - b).abs().sum() for a, b in zip(grads[False], grads[True])) > 0


def test_k3_backbone_steps_on_batches_3_and_6_only():
    cfg, model, model_opt, gate_opt, x, y = _setup("train.gate_iters=3")
    model.eval()
    changed = []
    for batch in range(1, 7):
        before = _snapshot(param_groups(model)[0])
        gate_before = _snapshot(param_groups(model)[1])
        train_step(model, x, y, model_opt, gate_opt, step_model=batch % cfg.train.gate_iters == 0)
        changed.append(any(not torch.equal(a, b) for a, b in zip(before, param_groups(model)[0])))
        assert any(not torch.equal(a, b) for a, b in zip(gate_before, param_groups(model)[1]))
    assert changed == [False, False, True, False, False, True]


def test_baseline_step_without_gate():
    _, model, model_opt, gate_opt, x, y = _setup("model.gates=[]", "gate.hidden=[]")
    assert gate_opt is None
    r = train_step(model, x, y, model_opt, None)
    assert r.g == {} and r.gate_loss.item() == 0.0


# ----------------------------------------------------------------------------- LR schedules


def test_main_lr_warmup_and_milestones_full_set():
    cfg = load_config(None, ["data.val_size=0"])  # ResNet-110, 300 epochs
    assert cfg.train.epochs == 300 and cfg.train.milestones == (120, 180)
    assert cfg.train.warmup_epochs == 1
    ipe = 391
    assert model_lr(cfg, 0 // ipe) == 0.01
    assert model_lr(cfg, 390 // ipe) == 0.01
    assert model_lr(cfg, 391 // ipe) == 0.1
    assert model_lr(cfg, 119) == 0.1
    assert model_lr(cfg, 120) == pytest.approx(0.01)
    assert model_lr(cfg, 179) == pytest.approx(0.01)
    assert model_lr(cfg, 180) == pytest.approx(0.001)
    assert model_lr(cfg, 299) == pytest.approx(0.001)


def test_main_lr_with_validation_split_and_shallow_net():
    cfg = load_config(None, ["model.depth=56"])
    assert cfg.train.epochs == 333 and cfg.train.milestones == (133, 200)
    assert cfg.train.warmup_epochs == 0
    assert model_lr(cfg, 0) == 0.1
    assert model_lr(cfg, 132) == 0.1
    assert model_lr(cfg, 133) == pytest.approx(0.01)
    assert model_lr(cfg, 200) == pytest.approx(0.001)


@pytest.mark.parametrize(
    "epoch,expected",
    [(0, 0.01), (48, 0.01), (49, 0.001), (50, 0.001), (98, 0.001), (99, 1e-4), (100, 1e-4), (149, 1e-5)],
)
def test_gate_lr_step50(epoch, expected):
    cfg = load_config(None, ["gate_optim.schedule=step50", "gate_optim.lr=0.01"])
    assert gate_lr(cfg, epoch) == pytest.approx(expected)


def test_gate_lr_constant_and_from_config():
    constant = load_config(None, ["gate_optim.schedule=constant", "gate_optim.lr=0.001"])
    assert all(gate_lr(constant, e) == 0.001 for e in (0, 49, 50, 99, 100))
    cfg = load_config(None, ["gate_optim.schedule=step50", "gate_optim.lr=0.001"])
    assert gate_lr(cfg, 50) == pytest.approx(1e-4)
