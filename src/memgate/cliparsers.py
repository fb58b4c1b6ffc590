"""memgate's argument parsers: every command and option (docs/cli.md is written from them). Each
command's parser names its handler (``handler``), which ``memgate.cli`` runs."""

from __future__ import annotations

import argparse

from . import __version__
from .cliargs import OneLineParser, count, integers, number


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="memgate",
        description="Soft entropy gates over CIFAR ResNets (Garg et al. 2019): train, analyse, reproduce. "
        "Run `memgate COMMAND --help` for a command's options; docs/cli.md lists them all.",
        epilog="A user error is one line on stderr and exit status 2.",
    )
    p.add_argument("--version", action="version", version=f"memgate {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(sub)
    _add_analysis_commands(sub)
    _add_experiment_commands(sub)
    return p


def _with_config(sp: argparse.ArgumentParser, required: bool = True) -> None:
    sp.add_argument("-c", "--config", required=required, help="TOML config file (configs/*.toml)")
    sp.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted-key overrides, values in TOML syntax, e.g. train.epochs=5 model.gates=[2,3]",
    )


def _add_run_commands(sub) -> None:
    sp = sub.add_parser("info", help="architecture summary: parameters and MACs")
    _with_config(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(handler="info")

    data = sub.add_parser("data", help="inspect or cache a dataset").add_subparsers(dest="data_cmd", required=True)
    resize = {
        "default": "none",
        "choices": ["none", "resize", "crop"],
        "help": "image files that are not 32x32 RGB: refuse (none), squeeze (resize) or centre-crop (crop), "
        "as data.resize",
    }
    sp = data.add_parser("info", help="classes, counts, pixel statistics, source format, cache")
    sp.add_argument("path")
    sp.add_argument("--resize", **resize)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(handler="data_info")
    sp = data.add_parser("prepare", help="decode once and build the uint8 cache")
    sp.add_argument("path")
    sp.add_argument("--resize", **resize)
    sp.set_defaults(handler="data_prepare")

    sp = sub.add_parser("train", help="train one run (resumes an unfinished run in `out`)")
    _with_config(sp)
    sp.add_argument("--force", action="store_true", help="discard a run of another config in `out`")
    sp.set_defaults(handler="train")

    sp = sub.add_parser("import", help="an external checkpoint (akamaster CIFAR ResNets) as a memgate run")
    sp.add_argument("checkpoint", help="e.g. resnet56-4bfd9763.th")
    sp.add_argument("-o", "--out", required=True, help="run folder to create")
    sp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data.* settings, e.g. data.path=...")
    sp.set_defaults(handler="import")

    sp = sub.add_parser("eval", help="test accuracy and gate statistics of a run or checkpoint")
    sp.add_argument("run", help="run directory or checkpoint.pt")
    sp.add_argument("--data", help="dataset path (default: the run's own)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument(
        "--g-mode",
        default="soft",
        choices=["soft", "hard", "skip", "full"],
        help="soft: equation (1); hard: g rounded to 0/1; skip: g=0; full: g=1",
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(handler="eval")


def _add_analysis_commands(sub) -> None:
    sp = sub.add_parser("analyze", help="where the gate sends training samples: Figure 2, noisy vs clean, top-g images")
    sp.add_argument("run", help="run directory")
    sp.add_argument("-o", "--out", default=None, help="folder for the figures (default: the run)")
    sp.add_argument(
        "--scores",
        default=None,
        metavar="FILE.npz",
        help="external per-sample scores to compare: 'scores' (FILE.npz:KEY: the array KEY) keyed by dataset index "
        "('indices', else position) or, for image folders, by 'paths'; optional 'labels' are checked against the run's",
    )
    sp.add_argument("--partial", action="store_true", help="--scores may cover only some of the run's training samples")
    sp.add_argument(
        "--suspects", type=count(0), default=0, metavar="N", help="write suspects.csv/.png: the N most suspicious"
    )
    sp.add_argument(
        "--by", default=None, metavar="SCORE", help="score ranking the suspects (default: final g, or -AUM)"
    )
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another run's results")
    sp.set_defaults(handler="analyze")

    sp = sub.add_parser("scores", help="per-sample g, loss, margin, max softmax of the final network (train, test)")
    sp.add_argument("run", help="run directory (an ungated one gets its scores without g)")
    sp.add_argument("-o", "--out", default=None, help="folder for train_scores.npz, test_scores.npz (default: the run)")
    sp.add_argument(
        "--proxies",
        action="store_true",
        help="also prediction depth, input-loss curvature and loss sensitivity (averaged over the run's snapshots)",
    )
    sp.add_argument("--probes", type=count(1), default=2, help="Rademacher probes per curvature estimate")
    sp.add_argument(
        "--snapshots",
        type=integers(1),
        default=None,
        metavar="EPOCHS",
        help="with --proxies: the kept snapshots to average curvature over, e.g. 20,40,60,80 (default: all)",
    )
    sp.add_argument(
        "--scores",
        action="append",
        default=[],
        metavar="FILE",
        help="an .npz of per-sample 'scores' by dataset index ('indices') to set beside g, named by its file name; "
        "FILE.npz:KEY takes the array KEY, e.g. an ungated run's train_scores.npz:loss (repeatable)",
    )
    sp.add_argument("--partial", action="store_true", help="--scores may cover only some of the run's training samples")
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another run's results")
    sp.set_defaults(handler="scores")

    _add_agreement(sub)
    sp = sub.add_parser("ood", help="out-of-distribution detection: g against max-softmax and energy")
    sp.add_argument("run", help="run directory or checkpoint.pt")
    sp.add_argument(
        "--ood", action="append", required=True, metavar="SOURCE", help="dataset path, or gaussian / uniform"
    )
    sp.add_argument("-o", "--out", default=None, help="folder for ood.md / ood.json (default: the run)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another run's results")
    sp.set_defaults(handler="ood")
    _add_tradeoff_and_demo(sub)


def _add_agreement(sub) -> None:
    sp = sub.add_parser(
        "agreement", help="how alike runs (seeds) rank the samples, per score: Spearman, top-q%% overlap"
    )
    sp.add_argument("files", nargs="+", metavar="FILE", help="score files of `memgate scores` (train_scores.npz ...)")
    sp.add_argument("-o", "--out", default=None, metavar="OUT.md", help="write OUT.md, OUT.json, OUT.png")
    sp.add_argument("--top", default="1,10", metavar="PERCENTS", help="the hardest q%% whose overlap to report")
    sp.add_argument("--partial", action="store_true", help="compare on the samples the files share")
    sp.add_argument("--force", action="store_true", help="replace an OUT.json that holds the agreement of other files")
    sp.set_defaults(handler="agreement")


def _add_tradeoff_and_demo(sub) -> None:
    sp = sub.add_parser("tradeoff", help="accuracy vs MACs and measured time when a hard gate skips layers")
    sp.add_argument("run", help="gated run directory (gate.input=first_unit)")
    sp.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="a finished run drawn as a point beside the curve (repeatable): the ungated net, an o2-gate run",
    )
    sp.add_argument("--thresholds", default=None, help="taus, e.g. 0,0.1,0.5,1.01 (g >= tau runs the extra layers)")
    sp.add_argument(
        "--batch-sizes", type=integers(1), default="1,256", help="batch sizes for the throughput measurement"
    )
    sp.add_argument(
        "--max-drop", type=number(0, 100), default=None, help="pick tau on validation: accuracy within D points"
    )
    sp.add_argument("--repeats", type=count(1), default=3, help="timed repeats (median) per point")
    sp.add_argument("--note", default="", help='said on the figure, e.g. "timings invalid: ran beside other work"')
    sp.add_argument("-o", "--out", default=None, help="folder for tradeoff.* (default: the run)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another run's results")
    sp.set_defaults(handler="tradeoff")

    sp = sub.add_parser(
        "demo", help="a short real run on a CIFAR-10 subset (about 2 minutes on a 2-core CPU with bf16)"
    )
    sp.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    sp.add_argument("--out", default="runs/demo")
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(handler="demo")


def _add_experiment_commands(sub) -> None:
    sp = sub.add_parser("sweep", help="run a grid of variants x seeds (resumable, shardable)")
    sp.add_argument("grid", help="grid file, e.g. experiments/table1.toml")
    sp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to every run")
    sp.add_argument("--jobs", type=count(1), default=1, help="runs at once on this machine")
    sp.add_argument("--shard", default=None, help="I/N: take the I-th of N deterministic shards (1-based)")
    sp.add_argument("--dry-run", action="store_true", help="list the runs and their overrides")
    sp.add_argument(
        "--status", action="store_true", help="where each run stands (done, running, stopped, failed) and the time left"
    )
    sp.add_argument(
        "--seeds", type=integers(0), default=None, help="comma-separated seeds replacing the grid's, e.g. 0,1,2,3,4"
    )
    sp.add_argument("--variants", default=None, help="comma-separated variants to run (default: all), e.g. baseline")
    sp.add_argument("--runs", default="runs", help="root directory of grid outputs")
    sp.set_defaults(handler="sweep")

    ho = sub.add_parser("holdout", help="held-out C-score and memorisation estimates from K trainings on subsets")
    hs = ho.add_subparsers(dest="holdout_cmd", required=True)
    sp = hs.add_parser("plan", help="choose each model's held-out samples; write the plan and its grid")
    _with_config(sp)
    sp.add_argument("-o", "--out", required=True, help="holdout folder to create, e.g. runs/holdout")
    sp.add_argument("--models", type=count(2), default=16, help="K networks (each sample held out by K*(1-ratio))")
    sp.add_argument(
        "--ratio",
        type=number(0, 1, open_low=True),
        default=0.75,
        help="share of the training split each model trains on",
    )
    sp.add_argument("--folds", type=count(0), default=0, help="F-fold instead: each sample held out exactly once")
    sp.add_argument("--seed", type=count(0), default=0, help="seed of the subsets (the models train with seed + k)")
    sp = hs.add_parser("run", help="train the plan's models through memgate sweep (resumable, shardable)")
    sp.add_argument("folder")
    sp.add_argument("--jobs", type=count(1), default=1, help="trainings at once on this machine")
    sp.add_argument("--shard", default=None, help="I/N: this machine's share of the models")
    sp = hs.add_parser("collect", help="evaluate the finished models and write holdout.npz")
    sp.add_argument("folder")
    ho.set_defaults(handler="holdout")

    sp = sub.add_parser("report", help="tables (mean, std, CI, Welch t-test) and figures for a grid")
    sp.add_argument("runs_dir")
    sp.add_argument("-o", "--out", default=None, help="output folder (default: RUNS_DIR)")
    sp.add_argument(
        "--grid", default=None, help="grid file whose variants and baselines to use (default: RUNS_DIR/grid.json)"
    )
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another grid's report")
    sp.set_defaults(handler="report")
