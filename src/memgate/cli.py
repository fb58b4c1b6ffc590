"""memgate's command line: a thin layer over the library. Every user error exits with status 2."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .cliargs import OneLineParser, count, number
from .errors import ConfigError, Interrupted, MemgateError


def _config(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.config, args.overrides)


def cmd_info(args: argparse.Namespace) -> int:
    from .models import architecture_summary, build_model

    cfg = _config(args)
    s = architecture_summary(build_model(cfg.model, cfg.gate))
    if args.json:
        print(json.dumps(s))
        return 0
    kind = "pre-activation" if s["preact"] else "post-activation"
    print(
        f"ResNet-{s['depth']} ({s['block']} blocks, {kind}, shortcut option {s['shortcut']}), "
        f"{s['units_per_stage']} units per stage, {s['num_classes']} classes"
    )
    print(f"  parameters      {s['params_total']:>12,d} total")
    print(f"                  {s['params_backbone']:>12,d} backbone")
    for stage, n in s["params_gate_per_stage"].items():
        print(f"                  {n:>12,d} gate over B{stage}")
    print(f"  MACs per image  {s['macs']:>12,d} full network")
    if s["gates"]:
        note = "" if s["gate_input"] == "first_unit" else " (a hard gate can skip them only with gate.input=first_unit)"
        print(
            f"                  {s['macs_skippable']:>12,d} in the extra layers a sample skips at g=0 "
            f"({100 * s['skippable_fraction']:.1f}%){note}"
        )
    else:
        print("  no gate (baseline)")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from .data import dataset_info, load_dataset

    ds = load_dataset(args.path, resize=args.resize)
    info = dataset_info(ds)
    if args.json:
        print(json.dumps(info))
        return 0
    print(
        f"{info['name']}: {len(info['classes'])} classes, image shape {tuple(info['image_shape'])}, "
        f"source {info['source_format']}"
    )
    print(f"  train {info['train']:,d} images, test {info['test']:,d} images")
    print(f"  per class (train): min {min(info['per_class_train'])}, max {max(info['per_class_train'])}")
    print(f"  per class (test):  min {min(info['per_class_test'])}, max {max(info['per_class_test'])}")
    print(
        "  mean " + " ".join(f"{m:.4f}" for m in info["mean"]) + "   std " + " ".join(f"{s:.4f}" for s in info["std"])
    )
    print(f"  classes: {', '.join(info['classes'][:12])}{' ...' if len(info['classes']) > 12 else ''}")
    print(f"  cache: {info['cache']}")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from .data import load_dataset

    ds = load_dataset(args.path, progress=True, resize=args.resize)
    print(f"{ds.name}: {len(ds.y_train):,d} train + {len(ds.y_test):,d} test images cached at {ds.cache}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train.run import final_line, train

    summary = train(_config(args), force=args.force)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, once
        print(final_line(summary), flush=True)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .pretrained import import_checkpoint

    cfg = import_checkpoint(args.checkpoint, args.out, args.overrides)
    m = cfg.model
    print(f"imported ResNet-{m.depth} (option A, {m.num_classes} classes, normalize {cfg.data.normalize}) -> {cfg.out}")
    print(
        f"  next: memgate eval {cfg.out}; gate it: memgate train -c configs/pretrained_gate.toml "
        f"model.depth={m.depth} train.init={cfg.out} out={cfg.out}_gate"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .train.evaluate import evaluate_run

    result = evaluate_run(args.run, data_path=args.data, device=args.device, g_mode=args.g_mode)
    print(json.dumps(result, indent=2) if args.json else result["text"])
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis.analyze import analyze_run

    text = analyze_run(
        args.run,
        args.out,
        external=args.scores,
        suspects=args.suspects,
        by=args.by,
        force=args.force,
        partial=args.partial,
    )
    print(text)
    return 0


def cmd_scores(args: argparse.Namespace) -> int:
    from .analysis.export import export_scores

    print(export_scores(args.run, args.out, force=args.force, proxies=args.proxies, probes=args.probes))
    return 0


def cmd_ood(args: argparse.Namespace) -> int:
    from .analysis.ood import run_ood

    print(run_ood(args.run, args.ood, out=args.out, device=args.device, force=args.force))
    return 0


def _floats(text: str, what: str, cast=float) -> tuple:
    try:
        return tuple(cast(v) for v in text.split(","))
    except ValueError:
        example = "1,256" if cast is int else "0.1,0.5"
        kind = "whole numbers" if cast is int else "numbers"
        raise ConfigError(f"{what} {text!r} must be comma-separated {kind}, e.g. {example}") from None


def cmd_tradeoff(args: argparse.Namespace) -> int:
    from .analysis.tradeoff import DEFAULT_TAUS, tradeoff

    taus = _floats(args.thresholds, "tradeoff: --thresholds") if args.thresholds else DEFAULT_TAUS
    sizes = _floats(args.batch_sizes, "tradeoff: --batch-sizes", int)
    if any(b < 1 for b in sizes) or any(not 0 <= t <= 2 for t in taus):
        raise ConfigError("tradeoff: batch sizes must be >= 1 and thresholds within [0, 2]")
    text = tradeoff(
        args.run,
        tuple(args.baseline),
        taus,
        sizes,
        args.max_drop,
        args.repeats,
        args.out,
        args.device,
        args.force,
        args.note,
    )
    print(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.overrides, out=args.out, force=args.force)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments.sweep import sweep

    seeds = None
    if args.seeds:
        try:
            seeds = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise ConfigError(f"sweep: --seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    return sweep(
        args.grid,
        args.overrides,
        jobs=args.jobs,
        shard=args.shard,
        dry_run=args.dry_run,
        status=args.status,
        runs_root=args.runs,
        seeds=seeds,
        variants=tuple(v for v in args.variants.split(",") if v) if args.variants else None,
    )


def cmd_holdout(args: argparse.Namespace) -> int:
    from .experiments import holdout

    if args.holdout_cmd == "plan":
        grid = holdout.plan(args.config, args.out, args.overrides, args.models, args.ratio, args.folds, args.seed)
        print(f"planned {grid.parent}: next, memgate holdout run {grid.parent} [--jobs N] [--shard I/N]")
        return 0
    if args.holdout_cmd == "run":
        return holdout.run(args.folder, jobs=args.jobs, shard=args.shard)
    print("\n".join(holdout.summary_lines(holdout.collect(args.folder))))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .experiments.report import report

    report(args.runs_dir, out=args.out, grid=args.grid, force=args.force)
    return 0


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
    sp.set_defaults(func=cmd_info)

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
    sp.set_defaults(func=cmd_data_info)
    sp = data.add_parser("prepare", help="decode once and build the uint8 cache")
    sp.add_argument("path")
    sp.add_argument("--resize", **resize)
    sp.set_defaults(func=cmd_data_prepare)

    sp = sub.add_parser("train", help="train one run (resumes an unfinished run in `out`)")
    _with_config(sp)
    sp.add_argument("--force", action="store_true", help="discard a run of another config in `out`")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("import", help="an external checkpoint (akamaster CIFAR ResNets) as a memgate run")
    sp.add_argument("checkpoint", help="e.g. resnet56-4bfd9763.th")
    sp.add_argument("-o", "--out", required=True, help="run folder to create")
    sp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data.* settings, e.g. data.path=...")
    sp.set_defaults(func=cmd_import)

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
    sp.set_defaults(func=cmd_eval)


def _add_analysis_commands(sub) -> None:
    sp = sub.add_parser("analyze", help="where the gate sends training samples: Figure 2, noisy vs clean, top-g images")
    sp.add_argument("run", help="run directory")
    sp.add_argument("-o", "--out", default=None, help="folder for the figures (default: the run)")
    sp.add_argument(
        "--scores",
        default=None,
        metavar="FILE.npz",
        help="external per-sample scores to compare: 'scores' keyed by dataset index ('indices', else position) "
        "or, for image folders, by 'paths'; optional 'labels' are checked against the run's",
    )
    sp.add_argument("--partial", action="store_true", help="--scores may cover only some of the run's training samples")
    sp.add_argument(
        "--suspects", type=count(0), default=0, metavar="N", help="write suspects.csv/.png: the N most suspicious"
    )
    sp.add_argument(
        "--by", default=None, metavar="SCORE", help="score ranking the suspects (default: final g, or -AUM)"
    )
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another run's results")
    sp.set_defaults(func=cmd_analyze)

    sp = sub.add_parser("scores", help="per-sample g, loss, margin, max softmax of the final network (train, test)")
    sp.add_argument("run", help="gated run directory")
    sp.add_argument("-o", "--out", default=None, help="folder for train_scores.npz, test_scores.npz (default: the run)")
    sp.add_argument(
        "--proxies",
        action="store_true",
        help="also prediction depth, input-loss curvature and loss sensitivity (averaged over the run's snapshots)",
    )
    sp.add_argument("--probes", type=count(1), default=2, help="Rademacher probes per curvature estimate")
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another run's results")
    sp.set_defaults(func=cmd_scores)

    sp = sub.add_parser("ood", help="out-of-distribution detection: g against max-softmax and energy")
    sp.add_argument("run", help="run directory or checkpoint.pt")
    sp.add_argument(
        "--ood", action="append", required=True, metavar="SOURCE", help="dataset path, or gaussian / uniform"
    )
    sp.add_argument("-o", "--out", default=None, help="folder for ood.md / ood.json (default: the run)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another run's results")
    sp.set_defaults(func=cmd_ood)

    sp = sub.add_parser("tradeoff", help="accuracy vs MACs and measured time when a hard gate skips layers")
    sp.add_argument("run", help="gated run directory (gate.input=first_unit)")
    sp.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="a finished run drawn as a point beside the curve (repeatable): the ungated net, an o2-gate run",
    )
    sp.add_argument("--thresholds", default=None, help="taus, e.g. 0,0.1,0.5,1.01 (g >= tau runs the extra layers)")
    sp.add_argument("--batch-sizes", default="1,256", help="batch sizes for the throughput measurement")
    sp.add_argument(
        "--max-drop", type=number(0, 100), default=None, help="pick tau on validation: accuracy within D points"
    )
    sp.add_argument("--repeats", type=count(1), default=3, help="timed repeats (median) per point")
    sp.add_argument("--note", default="", help='said on the figure, e.g. "timings invalid: ran beside other work"')
    sp.add_argument("-o", "--out", default=None, help="folder for tradeoff.* (default: the run)")
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another run's results")
    sp.set_defaults(func=cmd_tradeoff)

    sp = sub.add_parser(
        "demo", help="a short real run on a CIFAR-10 subset (about 2 minutes on a 2-core CPU with bf16)"
    )
    sp.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    sp.add_argument("--out", default="runs/demo")
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(func=cmd_demo)


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
    sp.add_argument("--seeds", default=None, help="comma-separated seeds replacing the grid's, e.g. 0,1,2,3,4")
    sp.add_argument("--variants", default=None, help="comma-separated variants to run (default: all), e.g. baseline")
    sp.add_argument("--runs", default="runs", help="root directory of grid outputs")
    sp.set_defaults(func=cmd_sweep)

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
    ho.set_defaults(func=cmd_holdout)

    sp = sub.add_parser("report", help="tables (mean, std, CI, Welch t-test) and figures for a grid")
    sp.add_argument("runs_dir")
    sp.add_argument("-o", "--out", default=None, help="output folder (default: RUNS_DIR)")
    sp.add_argument(
        "--grid", default=None, help="grid file whose variants and baselines to use (default: RUNS_DIR/grid.json)"
    )
    sp.add_argument("--force", action="store_true", help="write into an -o folder holding another grid's report")
    sp.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # no command: the usage and the commands, once
        parser.print_help(sys.stderr)
        return 2
    try:
        args, extra = parser.parse_known_args(argv)
        # KEY=VALUE overrides may also follow options (memgate import FILE -o RUN data.path=...).
        if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0) or a usage error (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except MemgateError as e:
        print(f"memgate: {'stopped' if isinstance(e, Interrupted) else 'error'}: {e}", file=sys.stderr)
        return 130 if isinstance(e, Interrupted) else 2
    except BrokenPipeError:  # output piped into `head` and the reader left: nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except OSError as e:  # a path the user named that the library did not wrap: still one line
        where = f" {e.filename}" if e.filename else ""
        print(
            f"memgate: error: cannot use{where} ({e.strerror or e}); check the path and its permissions",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
