from pathlib import Path

import pytest

from memgate.cli import main
from memgate.config import ConfigError
from memgate.experiments.grid import load_grid, shard_runs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name,variants,seeds",
    [
        ("table1", 11, 5),
        ("table2", 9, 5),
        ("table3", 9, 1),
        ("table4", 5, 1),
        ("quick", 3, 2),
        ("noise", 8, 2),
        ("adaptive", 3, 2),
        ("noise_clean", 3, 1),
        ("flat_gate", 2, 1),
        ("memorise", 7, 3),
        ("bf16_parity", 2, 2),
        ("pretrained_r20", 3, 3),
        ("pretrained_r56", 3, 2),
        ("pretrained_r56_skip", 2, 1),
        ("table1_r20", 3, 5),
    ],
)
def test_shipped_grids_expand_and_validate(name, variants, seeds):
    grid = load_grid(ROOT / "experiments" / f"{name}.toml")
    runs = grid.runs("runs")
    assert len(grid.variants) == variants and len(grid.seeds) == seeds
    assert len(runs) == sum(len(grid.variant_seeds(v)) for v in grid.variants)
    assert len({r.out for r in runs}) == len(runs)
    position = {r.out: i for i, r in enumerate(runs)}
    for r in runs:
        assert f"seed={r.seed}" in r.overrides and f"out=runs/{name}/{r.variant}/seed{r.seed}" in r.overrides
        if r.depends_on is not None:  # baseline initialisation: same seed, ordered first
            assert r.depends_on == Path("runs") / name / "baseline" / f"seed{r.seed}"
            assert position[r.depends_on] < position[r.out]
            assert f"train.init={r.depends_on}" in r.overrides
    assert main(["sweep", str(ROOT / "experiments" / f"{name}.toml"), "--dry-run"]) == 0


def test_table1_r20_is_table1_at_depth_20_for_100_epochs():
    """Issue 34: Table 1's presets with the depth and the length changed and nothing else."""
    from memgate.config import load_config

    grid = load_grid(ROOT / "experiments" / "table1_r20.toml")
    runs = grid.runs("runs")
    assert [r.name for r in runs[:5]] == [
        "baseline/seed0",
        "scratch_lr0.01_const/seed0",
        "binit_lr0.01_const/seed0",
        "baseline/seed1",
        "scratch_lr0.01_const/seed1",
    ]
    assert sorted(r.seed for r in runs if r.variant == "binit_lr0.01_const") == [0, 1, 2]
    assert sorted(r.seed for r in runs if r.variant == "scratch_lr0.01_const") == [0, 1, 2, 3, 4]
    paper = {v["name"]: v.get("paper") for v in load_grid(ROOT / "experiments" / "table1.toml").variants}
    for v in grid.variants:
        assert v["paper"] == paper[v["name"]]
    by = {r.name: r for r in runs}
    base = load_config(grid.config, [o for o in by["baseline/seed0"].overrides])
    gated = load_config(grid.config, [o for o in by["binit_lr0.01_const/seed2"].overrides if "train.init" not in o])
    full = load_config(ROOT / "configs" / "table1_gated.toml")
    assert base.model.gates == () and gated.model.gates == (3,) and gated.model.depth == 20
    assert (gated.train.epochs, gated.train.milestones, gated.train.warmup_epochs) == (100, (40, 60), 0)
    assert (gated.data.val_size, gated.data.augment, gated.train.batch_size, gated.train.lr) == (0, True, 128, 0.1)
    assert not gated.train.amp  # fp32 on every machine: the grid spans sessions on CPUs with and without bf16
    assert "train.init=runs/table1_r20/baseline/seed2" in by["binit_lr0.01_const/seed2"].overrides
    same = {
        "model.depth",
        "train.epochs",
        "train.milestones",
        "train.warmup_epochs",
        "train.amp",
        "train.snapshot_every",
    }
    for section in ("model", "gate", "data", "train", "gate_optim"):
        a, b = getattr(gated, section), getattr(full, section)
        for k in vars(a):
            if f"{section}.{k}" not in same:
                assert getattr(a, k) == getattr(b, k), f"{section}.{k}"


def test_variant_seeds_are_a_checked_subset(tmp_path):
    grid = tmp_path / "g.toml"
    head = 'config = "x.toml"\nseeds = [0, 1, 2]\n[[variant]]\nname = "b"\n'
    grid.write_text(head + '[[variant]]\nname = "g"\ninit_from = "b"\nseeds = [1, 5]\n')
    with pytest.raises(ConfigError, match=r"variant g: seeds \[1, 5\] must be among the grid's seeds \[0, 1, 2\]"):
        load_grid(grid)
    grid.write_text(
        head.replace('name = "b"', 'name = "b"\nseeds = [0]') + '[[variant]]\nname = "g"\ninit_from = "b"\n'
    )
    with pytest.raises(ConfigError, match=r"variant g starts from b, which has no run of seed\(s\) \[1, 2\]"):
        load_grid(grid)
    grid.write_text(head + '[[variant]]\nname = "g"\nseeds = "all"\n')
    with pytest.raises(ConfigError, match="variant g: seeds must be a list"):
        load_grid(grid)


def test_sweep_runs_only_the_variants_named(tmp_path, capsys):
    grid = ROOT / "experiments" / "table1_r20.toml"
    assert main(["sweep", str(grid), "--dry-run", "--seeds", "0,1", "--variants", "baseline,scratch_lr0.01_const"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "table1_r20: 4 runs (2 variants, 2 seeds)"
    assert [ln.split("]")[1].split()[0] for ln in out[1:]] == [
        "baseline/seed0",
        "scratch_lr0.01_const/seed0",
        "baseline/seed1",
        "scratch_lr0.01_const/seed1",
    ]
    assert main(["sweep", str(grid), "--dry-run", "--variants", "baseline,nope"]) == 2
    assert "--variants nope: no such variant" in capsys.readouterr().err


def test_table1_rows_and_paper_numbers():
    grid = load_grid(ROOT / "experiments" / "table1.toml")
    by_name = {v["name"]: v for v in grid.variants}
    assert by_name["baseline"]["paper"] == [93.478, 0.2644]
    assert by_name["scratch_lr0.01_const"]["paper"][0] == 94.12
    assert "train.gate_iters=5" in by_name["scratch_lr0.01_const_k5"]["overrides"]
    assert sum(1 for v in grid.variants if v.get("init_from") == "baseline") == 4


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 60])
def test_sharding_is_a_deterministic_partition_that_keeps_dependencies_together(count):
    runs = load_grid(ROOT / "experiments" / "table1.toml").runs("runs")
    shards = [shard_runs(runs, i, count) for i in range(1, count + 1)]
    outs = [r.out for s in shards for r in s]
    assert sorted(outs) == sorted(r.out for r in runs)  # every run in exactly one shard
    assert len(outs) == len(set(outs))
    for s in shards:
        mine = {r.out for r in s}
        assert all(r.depends_on is None or r.depends_on in mine for r in s)
    assert [[r.out for r in s] for s in shards] == [
        [r.out for r in shard_runs(runs, i, count)] for i in range(1, count + 1)
    ]
    sizes = [len(s) for s in shards]
    if count <= 4:
        assert max(sizes) - min(sizes) <= 5  # the largest dependency group has 5 runs


def test_bad_grids_and_shards_are_one_line_errors(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('config = "x.toml"\n[[variant]]\nname = "a"\ninit_from = "b"\n')
    with pytest.raises(ConfigError, match="init_from='b'"):
        load_grid(grid)
    grid.write_text('config = "x.toml"\ncolour = 1\n[[variant]]\nname = "a"\n')
    assert main(["sweep", str(grid), "--dry-run"]) == 2
    assert "unknown key(s) ['colour']" in capsys.readouterr().err
    assert main(["sweep", str(ROOT / "experiments" / "quick.toml"), "--shard", "5/4", "--dry-run"]) == 2
    assert main(["sweep", str(ROOT / "experiments" / "quick.toml"), "model.depth=21", "--dry-run"]) == 2
    assert "model.depth=21" in capsys.readouterr().err
