from pathlib import Path

import pytest

from memgate.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_preset_loads(path):
    from memgate.config import load_config

    cfg = load_config(path)
    if path.name.startswith("table"):
        assert cfg.data.val_size == 0 and cfg.train.epochs == 300 and cfg.train.milestones == (120, 180)
        assert cfg.train.warmup_epochs == 1 and cfg.train.batch_size == 128 and cfg.train.lr == 0.1
    if path.name.startswith(("table2", "table3")):
        assert cfg.model.num_classes == 100 and cfg.data.dataset == "cifar100"
    if path.name.startswith("table2"):
        assert (cfg.model.depth, cfg.model.block) == (164, "bottleneck")
    if path.name in ("baseline.toml", "gated_b3.toml"):
        assert cfg.train.epochs == 333 and cfg.train.milestones == (133, 200) and cfg.data.val_size == 5000


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["model.depth=21"], "model.depth=21 is not 6n+2"),
        (["model.block=bottleneck", "model.depth=32"], "model.depth=32 is not 9n+2"),
        (["model.gates=[1]"], "stage 2 or 3"),
        (["model.depth=8", "model.gates=[3]"], "one unit per stage"),
        (["model.gates=[4]"], "stage 2 or 3"),
        (["model.gates=[3]", "gate.hidden=[512,216]"], "gate.hidden has 2 entries"),
        (["model.colour=1"], "unknown key 'model.colour'"),
        (["trian.epochs=1"], "unknown key 'trian'"),
        (["model.depth=abc"], "model.depth must be an integer"),
        (["model.preact=1"], "model.preact must be true or false"),
        (["model.block=wide"], "one of 'basic', 'bottleneck'"),
        (["gate.input=middle"], "one of 'output', 'first_unit'"),
        (["data.label_noise=1.5"], "data.label_noise=1.5"),
        (["train.milestones=[200,100]"], "train.milestones"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)
