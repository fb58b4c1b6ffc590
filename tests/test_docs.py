"""The README and docs/ must tell a new user the truth: every config key documented, commands and
files that exist, code blocks that run as written, and numbers traced to committed files."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from memgate.cli import build_parser
from memgate.config import describe_keys

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {"README.md": README, **{f"docs/{k}": v for k, v in DOCS.items()}}


def test_readme_fits_on_a_screen_and_links_the_docs():
    assert len(README.splitlines()) <= 150
    for name in DOCS:
        assert f"(docs/{name})" in README, name


def test_every_relative_link_resolves():
    for page, text in PAGES.items():
        base = (ROOT / page).parent
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://")):
                assert (base / target).exists(), (page, target)


def test_every_config_key_is_in_the_guide_table():
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", DOCS["guide.md"], flags=re.M))
    assert documented == {key for key, _, _ in describe_keys()}


def test_commands_shown_exist():
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
    used = {c for text in PAGES.values() for c in re.findall(r"^(?:\$ )?memgate (\w+)", text, flags=re.M)}
    assert used and used <= commands
    for target in ("demo", "test", "setup"):
        assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), flags=re.M)


def test_configs_and_grids_named_exist():
    for page, text in PAGES.items():
        for name in re.findall(
            r"`(?:configs/|experiments/)?((?:table\d|quick|baseline|gated_b3|pretrained_)[\w_]*\.toml)`", text
        ):
            assert (ROOT / "configs" / name).exists() or (ROOT / "experiments" / name).exists(), (page, name)


def test_cli_reference_is_what_the_parsers_say():
    """docs/cli.md is written by docs/make_cli.py from the parsers; rerun it after changing an option."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_cli
    finally:
        sys.path.pop(0)
    assert DOCS["cli.md"] == make_cli.render(), "docs/cli.md is stale: run python docs/make_cli.py"


def test_make_clean_never_deletes_trained_runs():
    out = subprocess.run(["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    removed = [w for line in out.splitlines() if line.startswith("rm ") for w in line.split()[2:]]
    assert removed and not any("runs" in w for w in removed), removed
    assert "trained runs are kept" in out


def test_table1_beside_the_paper_is_the_grid_and_the_committed_runs():
    """The README's Table 1: each paper cell is the grid file's `paper` value; each memgate cell is the
    mean ± std of the committed results/table1_r20/<variant>_seed<s>/summary.json files, with how
    many of the variant's seeds are finished ("-" and 0 before the first), rounded as report.md
    rounds them (the mean of the accuracies, then per cent: 91.115 is 91.11 in both)."""
    import json
    import statistics

    from memgate.experiments.grid import load_grid

    grid = load_grid(ROOT / "experiments" / "table1_r20.toml")
    rows = {
        "baseline": "baseline",
        "gate from scratch, gate LR 0.01 constant": "scratch_lr0.01_const",
        "gate initialised from the baseline, gate LR 0.01 constant": "binit_lr0.01_const",
    }
    lines = {ln.split("|")[1].strip(): ln for ln in README.splitlines() if ln.startswith("| ")}
    for label, name in rows.items():
        cells = [c.strip() for c in lines[label].split("|")[1:-1]]
        v = next(v for v in grid.variants if v["name"] == name)
        assert cells[1] == f"{v['paper'][0]:.2f} ± {v['paper'][1]:.2f}", label
        seeds = grid.variant_seeds(v)
        accs = [
            json.loads(p.read_text())["final_test_acc"]
            for s in seeds
            if (p := ROOT / "results" / "table1_r20" / f"{name}_seed{s}" / "summary.json").exists()
        ]
        done = f"({len(accs)} of {len(seeds)} seeds finished)"
        if not accs:
            assert cells[2] == f"- {done}", label
        elif len(accs) == 1:
            assert cells[2] == f"{100 * accs[0]:.2f} {done}", label
        else:
            mean, std = 100 * statistics.mean(accs), 100 * statistics.stdev(accs)
            assert cells[2] == f"{mean:.2f} ± {std:.2f} {done}", label


def _shell_lines(page: str, marker: str) -> list[str]:
    """The commands of the bash block after ``<!-- marker -->`` in ``page``, comments stripped."""
    text = PAGES[page].split(f"<!-- {marker} -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [ln.split("  #")[0].strip() for ln in text.strip().splitlines() if not ln.startswith("#")]


def _run_memgate(line: str, extra: dict[str, list[str]]) -> None:
    """One `memgate ...` line of a block, run in-process, with ``extra`` arguments per command."""
    import os
    import shlex

    from memgate.cli import main

    argv = shlex.split(os.path.expandvars(line))
    assert argv[0] == "memgate", line
    assert main([*argv[1:], *extra.get(argv[1], [])]) == 0, line


@pytest.fixture
def in_a_checkout(tmp_path, monkeypatch, shared_cifar10):
    """A working folder that looks like the checkout (configs/, ../shared/data) as the blocks expect."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path.parent / "shared").mkdir(exist_ok=True)
    pretrained = tmp_path.parent / "shared" / "pretrained"
    if not pretrained.exists() and (ROOT.parent / "shared" / "pretrained").exists():
        pretrained.symlink_to(ROOT.parent / "shared" / "pretrained")
    (tmp_path.parent / "shared").mkdir(exist_ok=True)
    link = tmp_path.parent / "shared" / "data"
    if not link.exists():
        link.symlink_to(shared_cifar10.parent)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_the_readme_quick_start_runs_as_written(in_a_checkout, monkeypatch):
    lines = _shell_lines("README.md", "quickstart")
    assert lines[0].startswith("make setup") and 3 <= len(lines) <= 10
    for line in lines[1:]:
        if line.startswith("export "):
            key, value = line[len("export ") :].split("=", 1)
            monkeypatch.setenv(key, value.replace("$PWD", str(in_a_checkout)))
        else:
            _run_memgate(line, {})
    assert (in_a_checkout / "runs" / "first" / "summary.json").exists()
    assert (in_a_checkout / "runs" / "first" / "top_g.png").exists()


@pytest.mark.slow
def test_the_guide_session_runs_with_tiny_settings(in_a_checkout, monkeypatch):
    """Every line of the guide's first session, in order, with the trainings made tiny (depth 14, one
    epoch, 300 images) and the timing short; each later command reads what the earlier ones wrote."""
    tiny = ["model.depth=14", "train.epochs=1", "data.train_subset=300", "train.eval_every=1"]
    extra = {
        "train": tiny,
        "info": [],
        "tradeoff": ["--batch-sizes", "1", "--repeats", "1", "--thresholds", "0,0.5,1.01"],
    }
    for line in _shell_lines("docs/guide.md", "session"):
        if line.startswith("export "):
            key, value = line[len("export ") :].split("=", 1)
            monkeypatch.setenv(key, value.replace("$PWD", str(in_a_checkout)))
        else:
            _run_memgate(line, extra)
    assert (in_a_checkout / "runs" / "o1" / "tradeoff.json").exists()
    assert (in_a_checkout / "runs" / "r20_scores" / "train_scores.npz").exists()


@pytest.mark.slow
def test_the_api_snippet_runs_as_written(in_a_checkout, monkeypatch, capsys):
    monkeypatch.setenv("MEMGATE_DATA", str(in_a_checkout.parent / "shared" / "data"))
    code = DOCS["api.md"].split("<!-- api -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([4, 10])" in out and "test accuracy" in out
    assert (in_a_checkout / "runs" / "api" / "summary.json").exists()


def test_full_scale_tables_are_the_committed_summaries():
    """results/pretrained's ResNet-20 and ResNet-56 tables: each seed's cell is final_test_acc of
    the committed summary.json of that row ("-": a run not committed yet), and the mean ± std is
    computed from them ("-" below two seeds; numbers are never typed)."""
    import json
    import statistics

    names = {"a": "ungated", "b": "gate_o2", "c": "gate_o1"}
    lines = (ROOT / "results" / "pretrained" / "README.md").read_text().splitlines()
    heads = [i for i, line in enumerate(lines) if re.match(r"^\| ResNet-(20|56), test accuracy \(%\)", line)]
    assert len(heads) == 2
    for i in heads:
        depth = re.match(r"^\| ResNet-(\d+)", lines[i]).group(1)
        seeds = [int(c.strip()[5:]) for c in lines[i].split("|") if c.strip().startswith("seed ")]
        table = lines[i : lines.index("", i)]
        rows = [line for line in table if re.match(r"^\| \([abc]\) ", line)]
        assert seeds and len(rows) == 3, depth
        for row in rows:
            cells = [c.strip() for c in row.split("|")[1:-1]]
            key, accs = cells[0][1], []
            for seed, cell in zip(seeds, cells[1:]):
                summary = ROOT / "results" / "pretrained" / f"r{depth}" / f"{names[key]}_seed{seed}" / "summary.json"
                if cell == "-":  # not run yet: then no committed summary may exist either
                    assert not summary.exists(), (depth, key, seed)
                    continue
                accs.append(100 * json.loads(summary.read_text())["final_test_acc"])
                assert cell == f"{accs[-1]:.2f}", (depth, key, seed)
            spread = f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else "-"
            assert cells[1 + len(seeds)] == spread, (depth, key)


def test_full_scale_spearman_sentence_is_the_committed_scores_md():
    """'Spearman of g with the final network's loss: +0.63 / +0.64; with -AUM ...' of the write-up
    come from scores.md."""
    write_up = (ROOT / "results" / "pretrained" / "README.md").read_text()
    rows = {}
    for seed in (0, 1):
        text = (ROOT / "results" / "pretrained" / "r20" / f"gate_o2_seed{seed}" / "scores.md").read_text()
        for name, rho in re.findall(r"^\| ([^|]+?) \| ([+-][\d.]+) \|", text, flags=re.M):
            rows.setdefault(name, []).append(float(rho))
    for name, said in (("loss (final network, eval)", "loss"), ("-AUM", "-AUM"), ("forgetting events", "forgetting")):
        pair = " / ".join(f"{r:+.2f}" for r in rows[name])
        assert re.search(rf"{re.escape(said)}( events)?:\s+{re.escape(pair)}", write_up), (name, pair)


def _committed_numbers(folder: Path, suffixes: tuple[str, ...]) -> set[float]:
    """Every decimal number in the machine-written files of a results folder with one of ``suffixes``,
    and in its runs' summary.json files (not in its hand-written READMEs or COMMANDS)."""
    return {
        abs(float(n))
        for p in folder.rglob("*")
        if (p.suffix in suffixes or p.name == "summary.json") and p.name not in ("README.md", "COMMANDS.md")
        for n in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", p.read_text())
    }


def _is_committed(number: str, found: set[float]) -> bool:
    """``number`` (as printed) is one of ``found`` at its precision, or a fraction of it in percent."""
    x, places = abs(float(number)), len(number.split(".")[1])
    return any(round(n, places) == x or round(100 * n, places) == x for n in found)


def test_full_scale_numbers_come_from_results_pretrained():
    """The numbers of results/pretrained's write-up are in its machine-written files (reports, tables,
    metrics.jsonl), except the quoted ones: g's float16 floor as g_by_class.png prints it, the
    published anchors (DynConv ResNet-32 93.58% at 55.4M MACs, BlockDrop 93.6% at 1.81e8 FLOPs) and
    the paper's Table 1 differences to its baseline (+0.46 to +0.53 baseline-initialised, +0.64 from
    scratch: experiments/table1.toml's values)."""
    write_up = (ROOT / "results" / "pretrained" / "README.md").read_text()
    found = _committed_numbers(ROOT / "results" / "pretrained", (".md", ".csv", ".json", ".jsonl"))
    quoted = {"0.018", "93.58", "55.4", "93.6", "1.81", "0.46", "0.53", "0.64"}
    numbers = re.findall(r"(?<![\w.])-?\d+\.\d+", write_up)
    assert len(numbers) >= 20
    for number in numbers:
        assert number in quoted or _is_committed(number, found), number


def test_memorise_write_up_numbers_come_from_results_memorise():
    """The numbers of results/memorise's write-up are in its machine-written files (report.md,
    phases.md with its seed pairs, results.csv, detection.md) or its runs' summary.json."""
    write_up = (ROOT / "results" / "memorise" / "README.md").read_text()
    found = _committed_numbers(ROOT / "results" / "memorise", (".md", ".csv"))
    numbers = re.findall(r"(?<![\w.])-?\d+\.\d+", write_up)
    assert len(numbers) >= 100
    for number in numbers:
        assert _is_committed(number, found), number


def test_held_out_findings_come_from_results_holdout():
    """The numbers of results/holdout's "What it shows" are in the few machine-written files they come
    from: its report (which also quotes the noise study's in-sample AUROCs) and collect summaries.
    Not whole folders: their per-class json holds so many 3-decimal numbers that almost any typo
    would match one."""
    text = (ROOT / "results" / "holdout" / "README.md").read_text()
    section = text[text.index("## What it shows") : text.index("## Caveats")]
    sources = [ROOT / "results" / "holdout" / f for f in ("report.md", "holdout.json", "folds/holdout.json")]
    found = {abs(float(n)) for p in sources for n in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", p.read_text())}
    numbers = re.findall(r"(?<![\w.])-?\d+\.\d+", section)
    assert len(numbers) >= 15
    for number in numbers:
        assert _is_committed(number, found), number


def test_findings_numbers_come_from_the_committed_result_files():
    """Every number in the README's findings table is, at its precision, a number of a machine-written
    file (report.md, csv, tables, script output; not a hand-written README nor per-epoch json) of the
    results folders its row links to, as written or as the fraction the files store (70.25 % ->
    0.7025). A check against typing, not a proof: a mistyped number that happens to equal another
    number of the same folder passes (one in three of a sample of last-digit typos did)."""
    section = README[README.index("## What it has found") : README.index("## Table 1, the paper")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "](results/" in line]
    assert len(rows) >= 8
    for row in rows:
        folders = set(re.findall(r"\]\(results/([\w]+)", row))
        found = set().union(*(_committed_numbers(ROOT / "results" / f, (".md", ".csv", ".txt")) for f in folders))
        for number in re.findall(r"(?<![\w.])-?\d+\.\d+", row.split("|")[2]):
            assert _is_committed(number, found), (number, row[:60])


def test_step_breakdown_paragraph_is_the_committed_benchmark():
    """The bf16 step's breakdown in docs/performance.md is results/step_breakdown_cpu.json's
    (shares and bounds, ResNet-20 then ResNet-110) and the 3x goal's need is train_speed_cpu.json's."""
    import json

    perf = DOCS["performance.md"]
    para = perf[perf.index("Where the rest of the bf16 step goes") :].split("\n\n")[0]
    breakdown = json.loads((ROOT / "results" / "step_breakdown_cpu.json").read_text())
    bf16 = [d["bf16"] for d in breakdown["depths"].values()]
    shares = [f"{100 * d['share']['batch_norm_and_relu']:.0f}%" for d in bf16]
    assert f"take {shares[0]} (ResNet-20) and {shares[1]} (ResNet-110)" in para
    assert f"{bf16[0]['bound_if_free']:.2f}x / {bf16[1]['bound_if_free']:.2f}x faster" in para
    speed = json.loads((ROOT / "results" / "train_speed_cpu.json").read_text())["depths"]
    r110 = next(d for d in speed if d["depth"] == 110)["ratios"]["memgate_gated_bf16_vs_reference_epoch"]
    assert f"needs its step {3 / r110:.2f}x faster" in para


def test_test_errors_md_is_computed_from_the_committed_test_scores():
    """results/pretrained/test_errors.md holds, for every committed test_scores.npz, the test-split
    table `memgate scores` computes from it (rerun results/pretrained/test_errors.py after a new one)."""
    import numpy as np

    from memgate.analysis.export import test_split_table

    text = (ROOT / "results" / "pretrained" / "test_errors.md").read_text()
    files = sorted((ROOT / "results" / "pretrained").glob("*/*/test_scores.npz"))
    assert len(files) >= 8 and text.count("## ") == len(files)
    for f in files:
        with np.load(f) as d:
            scores = {k: d[k] for k in d.files}
        rows = [line for line in test_split_table(scores, 3).splitlines() if line.startswith("| ")]
        section = text.split(f"## {f.parent.parent.name}/{f.parent.name}: test split")[1].split("\n## ")[0]
        assert all(row in section.splitlines() for row in rows), f


def test_demo_figures_are_the_committed_demo_json():
    """The README's and results/demo's demo figures are results/demo/demo.json's (written by the demo)."""
    import json

    demo = json.loads((ROOT / "results" / "demo" / "demo.json").read_text())
    first, last = demo["epochs"][0], demo["epochs"][-1]
    found = {
        v
        for row in (first, last)
        for v in (
            row["g_mean"],
            row["frac_g_above_half"],
            row["g_noisy"],
            row["g_clean"],
            row["wrong_labels_fitted"],
            row["test_acc"],
        )
        if v is not None
    }
    write_up = (ROOT / "results" / "demo" / "README.md").read_text()
    para = README[README.index("The demo's figures") :].split("\n\n")[0]
    for text in (para, write_up):
        for number in re.findall(r"(?<![\w.,])-?\d+\.\d+", text):
            if number in ("2.13", "0.01", "0.1", "0.001", "0.5"):  # torch's version, learning rates, g's 0.5
                continue
            assert _is_committed(number, found), number
    assert demo["machine"]["threads"] == 2 and demo["precision"] == "fp32" and last["epoch"] == 18


def test_table1_write_up_numbers_come_from_results_table1_r20():
    """The numbers of results/table1_r20's findings are in its machine-written files (report.md,
    scores.md, proxies.md, the runs' summary.json and metrics.jsonl), except the published figures
    it sets them against: the anchors (He et al. 91.25, akamaster 91.73, the authors' logs
    93.44-93.87), the paper's gain 94.12 - 93.48 = 0.64, and the distance of the committed
    baselines (each seed, and their mean) to the first two anchors."""
    import json
    import statistics

    write_up = (ROOT / "results" / "table1_r20" / "README.md").read_text()
    section = write_up[write_up.index("## What it shows") : write_up.index("## Anchors")]
    found = _committed_numbers(ROOT / "results" / "table1_r20", (".md", ".json", ".jsonl"))
    baselines = [
        json.loads(p.read_text())["final_test_acc"]
        for p in sorted((ROOT / "results" / "table1_r20").glob("baseline_seed*/summary.json"))
    ]
    # each level as report.md prints it (per cent, 2 decimals), then its distance to an anchor
    levels = [float(f"{100 * b:.2f}") for b in [*baselines, statistics.mean(baselines)]]
    quoted = {"91.25", "91.73", "93.44", "93.87", "0.64"}
    quoted |= {f"{anchor - b:.2f}" for anchor in (91.25, 91.73) for b in levels}
    numbers = re.findall(r"(?<![\w.])-?\d+\.\d+", section)
    assert len(numbers) >= 15
    for number in numbers:
        assert number in quoted or _is_committed(number, found), number


def test_proxies_write_up_numbers_come_from_results_proxies():
    """The numbers of results/proxies' write-up are in the machine-written files of its runs and of
    the Table 1 study's runs it reads (proxies.md, scores.md, summary.json), except the published
    anchors it quotes with their settings (CSL 0.87 and curvature 0.69, cosine similarities on
    CIFAR-100)."""
    write_up = (ROOT / "results" / "proxies" / "README.md").read_text()
    found = set().union(
        *(_committed_numbers(ROOT / "results" / f, (".md", ".json")) for f in ("proxies", "table1_r20"))
    )
    numbers = re.findall(r"(?<![\w.])-?\d+\.\d+", write_up.split("## Anchors")[0])
    assert len(numbers) >= 30
    for number in numbers:
        assert _is_committed(number, found), number
