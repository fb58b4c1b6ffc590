"""Grid files: variants x seeds, their dependency order (baseline initialisation) and sharding.

A grid file (TOML) names a base config, overrides for every run, a list of seeds and named
variants (each a list of ``KEY=VALUE`` overrides, optionally ``init_from`` another variant of the
same seed, optionally the paper's reported ``paper = [mean, std]``, optionally its own ``baseline``
variant for the report's comparison, e.g. gated vs ungated at the same noise level, optionally a
``seed_offset`` added to the seed its runs train with; their folders keep the grid's seed),
optionally its own ``seeds``, a subset of the grid's (e.g. a costly variant at fewer seeds).
Runs are ordered seed by seed, so the variants of one seed finish together (an interim answer
has same-seed pairs); a run's baseline-initialisation source always comes before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import ConfigError
from ..parsing import read_toml
from ..train.rundir import CONFIG, config_difference, describe_difference

GRID_KEYS = {"name", "title", "config", "overrides", "seeds", "variant", "baseline"}


VARIANT_KEYS = {"name", "overrides", "init_from", "paper", "baseline", "seed_offset", "seeds"}


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    out: Path
    overrides: tuple[str, ...]  # everything passed to `memgate train` after the base config
    depends_on: Path | None  # run directory that must finish first (baseline initialisation)

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"


def baseline_of(meta: dict[str, Any], variant: dict[str, Any]) -> str | None:
    """The variant a report compares ``variant`` with (``meta``: a grid's ``Grid.meta()``): its own
    ``baseline`` key, else the grid's."""
    return variant.get("baseline") or meta.get("baseline")


@dataclass(frozen=True)
class Grid:
    name: str
    title: str
    config: Path
    seeds: tuple[int, ...]
    variants: tuple[dict[str, Any], ...]
    baseline: str | None  # the variant the report compares against
    overrides: tuple[str, ...] = ()
    source: Path = field(default=Path("."))

    def meta(self) -> dict[str, Any]:
        """What `memgate report` needs of the grid (the sweep writes it as grid.json beside the runs)."""
        return {
            "name": self.name,
            "title": self.title,
            "config": str(self.config),
            "seeds": list(self.seeds),
            "baseline": self.baseline,
            "variants": [
                {
                    "name": v["name"],
                    "overrides": list(v.get("overrides", ())),
                    "init_from": v.get("init_from"),
                    "paper": v.get("paper"),
                    "baseline": v.get("baseline"),
                    "seeds": list(self.variant_seeds(v)),
                }
                for v in self.variants
            ],
        }

    def variant_seeds(self, v: dict[str, Any]) -> tuple[int, ...]:
        """The grid's seeds that this variant runs (its own ``seeds`` key narrows them)."""
        own = v.get("seeds")
        return self.seeds if own is None else tuple(s for s in self.seeds if s in own)

    def runs(self, root: str | Path = "runs", extra: tuple[str, ...] = ()) -> list[Run]:
        """Every variant x seed, seed by seed, dependencies before their dependents."""
        base = Path(root) / self.name
        runs = []
        ordered = _dependency_order(self.variants)
        for s in self.seeds:
            for v in ordered:
                if s not in self.variant_seeds(v):
                    continue
                out = base / v["name"] / f"seed{s}"
                dep = base / v["init_from"] / f"seed{s}" if v.get("init_from") else None
                seed = s + v.get("seed_offset", 0)  # e.g. holdout models: one init seed per model
                ov = [*self.overrides, *v.get("overrides", ()), *extra, f"seed={seed}", f"out={out}"]
                if dep is not None:
                    ov.append(f"train.init={dep}")
                runs.append(Run(v["name"], s, out, tuple(ov), dep))
        return runs


def _dependency_order(variants: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    by_name = {v["name"]: v for v in variants}
    done: list[dict[str, Any]] = []

    def visit(v: dict[str, Any], path: tuple[str, ...]) -> None:
        if v in done:
            return
        dep = v.get("init_from")
        if dep:
            if dep not in by_name:
                raise ConfigError(f"grid: variant {v['name']} has init_from={dep!r}, which is no variant of the grid")
            if dep in path:
                cycle = (*path[path.index(dep) :], dep)
                raise ConfigError(f"grid: variants {' -> '.join(cycle)} depend on each other in a circle")
            visit(by_name[dep], (*path, dep))
        done.append(v)

    for v in variants:
        visit(v, (v["name"],))
    return done


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    raw = read_toml(path)
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise ConfigError(f"grid: unknown key(s) {sorted(unknown)} in {path} (known: {sorted(GRID_KEYS)})")
    if "config" not in raw or not raw.get("variant"):
        raise ConfigError(f'grid: {path} needs `config = "..."` and at least one [[variant]]')
    _check_types(raw, path)
    variants = [_checked_variant(v, path) for v in raw["variant"]]
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"grid: {path} repeats a variant name")
    baseline = raw.get("baseline", "baseline" if "baseline" in names else None)
    if baseline is not None and baseline not in names:
        raise ConfigError(f"grid: baseline = {baseline!r} is no variant of {path}")
    for v in variants:
        if v.get("baseline") is not None and (v["baseline"] not in names or v["baseline"] == v["name"]):
            raise ConfigError(f"grid: variant {v['name']}: baseline = {v['baseline']!r} must name another variant")
    config = (path.parent / raw["config"]).resolve()
    grid = Grid(
        name=raw.get("name", path.stem),
        title=raw.get("title", path.stem),
        config=config,
        seeds=tuple(raw.get("seeds", [0])),
        variants=tuple(variants),
        baseline=baseline,
        overrides=tuple(raw.get("overrides", ())),
        source=path,
    )
    _dependency_order(grid.variants)
    _check_variant_seeds(grid, path)
    return grid


def _check_variant_seeds(grid: Grid, path: Path) -> None:
    by_name = {v["name"]: v for v in grid.variants}
    for v in grid.variants:
        own = v.get("seeds")
        if own is not None and not set(own) <= set(grid.seeds):
            raise ConfigError(
                f"grid: variant {v['name']}: seeds {own} must be among the grid's seeds {list(grid.seeds)}"
            )
        src = v.get("init_from")
        missing = set(grid.variant_seeds(v)) - set(grid.variant_seeds(by_name[src])) if src else set()
        if missing:
            raise ConfigError(
                f"grid: variant {v['name']} starts from {src}, which has no run of seed(s) {sorted(missing)} in {path}"
            )


def _check_types(raw: dict[str, Any], path: Path) -> None:
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_is_seed(s) for s in seeds):
        raise ConfigError(f"grid: seeds in {path} must be a list of integers >= 0, e.g. seeds = [0, 1]")
    for key in ("name", "title", "config", "baseline"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"grid: {key} in {path} must be a string")
    if "name" in raw and not _plain_name(raw["name"]):
        raise ConfigError(f"grid: name {raw['name']!r} in {path} must be a plain folder name")
    if not isinstance(raw.get("overrides", []), list) or not all(isinstance(o, str) for o in raw.get("overrides", [])):
        raise ConfigError(f'grid: overrides in {path} must be a list of "KEY=VALUE" strings')
    if not isinstance(raw["variant"], list) or not all(isinstance(v, dict) for v in raw["variant"]):
        raise ConfigError(f"grid: variant in {path} must be [[variant]] tables")


def _checked_variant(v: dict[str, Any], path: Path) -> dict[str, Any]:
    bad = set(v) - VARIANT_KEYS
    if bad or "name" not in v:
        raise ConfigError(f"grid: variant {v.get('name', '?')} in {path} has unknown keys {sorted(bad)} or no name")
    if not isinstance(v["name"], str) or not _plain_name(v["name"]):
        raise ConfigError(f"grid: variant name {v['name']!r} must be a plain folder name (letters, digits, _ - .)")
    ov = v.get("overrides", [])
    if not isinstance(ov, list) or not all(isinstance(o, str) for o in ov):
        raise ConfigError(f'grid: variant {v["name"]}: overrides must be a list of "KEY=VALUE" strings')
    for key in ("init_from", "baseline"):
        if key in v and not isinstance(v[key], str):
            raise ConfigError(f"grid: variant {v['name']}: {key} must name another variant")
    paper = v.get("paper")
    if paper is not None and (
        not isinstance(paper, list)
        or not 1 <= len(paper) <= 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 100 for x in paper)
    ):
        raise ConfigError(f"grid: variant {v['name']}: paper must be [mean, std] in percent, e.g. paper = [93.5, 0.2]")
    if "seed_offset" in v and not _is_seed(v["seed_offset"]):
        raise ConfigError(f"grid: variant {v['name']}: seed_offset must be an integer >= 0")
    own = v.get("seeds")
    if own is not None and (not isinstance(own, list) or not own or not all(_is_seed(s) for s in own)):
        raise ConfigError(f"grid: variant {v['name']}: seeds must be a list of integers >= 0, e.g. seeds = [0, 1, 2]")
    return v


def _is_seed(s: Any) -> bool:
    return isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32


def _plain_name(name: str) -> bool:
    """A name that is one folder inside the grid's folder: no separators, not . or .., not hidden."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name and "\0" not in name


def validate_runs(grid: Grid, runs: list[Run]) -> None:
    """Build every run's config up front so a typo fails before hours of training, not after, and
    refuse a run folder trained with another config than the grid gives it now: the sweep would skip
    it as finished, and a report would put its seed beside seeds of another recipe."""
    for r in runs:
        try:
            cfg = load_config(grid.config, r.overrides)
        except ConfigError as e:
            raise ConfigError(f"grid: run {r.name}: {e}") from None
        if (r.out / CONFIG).is_file():
            # the baseline's path moves with --runs; `memgate train` checks its content (inputs.json)
            moved = ("train.init",) if r.depends_on is not None else ()
            diff = [d for d in config_difference(cfg, r.out / CONFIG) if d[0] not in moved]
            if diff:
                raise ConfigError(
                    f"grid: run {r.name} in {r.out} was trained with another config than the grid gives it "
                    f"now ({describe_difference(diff)}); restore the grid file (and the sweep's KEY=VALUE "
                    "overrides), or move that folder away to train the run again"
                )


def parse_shard(spec: str | None) -> tuple[int, int]:
    if spec is None:
        return 1, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"sweep: --shard {spec!r} must look like I/N, e.g. 2/4") from None
    if not 1 <= i <= n:
        raise ConfigError(f"sweep: --shard {spec}: I must be between 1 and N")
    return i, n


def shard_runs(runs: list[Run], index: int, count: int) -> list[Run]:
    """The ``index``-th (1-based) of ``count`` deterministic shards.

    A run and everything it depends on stay in one shard, so a shard never waits for another
    machine; whole dependency groups are dealt out largest first to the lightest shard.
    """
    groups: dict[tuple[str, int], list[Run]] = {}
    root_of = {r.out: r for r in runs}
    for r in runs:
        head = r
        while head.depends_on is not None and head.depends_on in root_of:
            head = root_of[head.depends_on]
        groups.setdefault((head.variant, head.seed), []).append(r)
    loads = [0] * count
    owner: dict[tuple[str, int], int] = {}
    for key in sorted(groups, key=lambda k: (-len(groups[k]), k)):
        target = min(range(count), key=lambda i: (loads[i], i))
        owner[key] = target
        loads[target] += len(groups[key])
    mine = {id(r) for key, rs in groups.items() if owner[key] == index - 1 for r in rs}
    return [r for r in runs if id(r) in mine]
