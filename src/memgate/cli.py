"""memgate's command line: a thin layer over the library. Every user error exits with status 2."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cliargs import stderr_line
from .cliparsers import build_parser
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

    print(
        export_scores(
            args.run,
            args.out,
            force=args.force,
            proxies=args.proxies,
            probes=args.probes,
            snapshots=args.snapshots,
            external=tuple(args.scores),
            partial=args.partial,
        )
    )
    return 0


def cmd_ood(args: argparse.Namespace) -> int:
    from .analysis.ood import run_ood

    print(run_ood(args.run, args.ood, out=args.out, device=args.device, force=args.force))
    return 0


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} {text!r} must be comma-separated numbers, e.g. 0.1,0.5") from None


def cmd_agreement(args: argparse.Namespace) -> int:
    from .analysis.agreement import agreement, agreement_markdown, write_agreement

    shares = _floats(args.top, "agreement: --top")
    if any(not 0 < q < 100 for q in shares):
        raise ConfigError(f"agreement: --top {args.top}: percentages must be within (0, 100), e.g. 1,10")
    shares = tuple(q / 100 for q in shares)
    if args.out:
        print(write_agreement(args.files, args.out, shares, args.partial, args.force), end="")
    else:
        print(agreement_markdown(agreement(args.files, shares, args.partial)), end="")
    return 0


def cmd_tradeoff(args: argparse.Namespace) -> int:
    from .analysis.tradeoff import DEFAULT_TAUS, tradeoff

    taus = _floats(args.thresholds, "tradeoff: --thresholds") if args.thresholds else DEFAULT_TAUS
    if any(not 0 <= t <= 2 for t in taus):
        raise ConfigError("tradeoff: thresholds must be within [0, 2]")
    text = tradeoff(
        args.run,
        tuple(args.baseline),
        taus,
        args.batch_sizes,
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

    return sweep(
        args.grid,
        args.overrides,
        jobs=args.jobs,
        shard=args.shard,
        dry_run=args.dry_run,
        status=args.status,
        runs_root=args.runs,
        seeds=args.seeds,
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


HANDLERS = {
    "info": cmd_info,
    "data_info": cmd_data_info,
    "data_prepare": cmd_data_prepare,
    "train": cmd_train,
    "import": cmd_import,
    "eval": cmd_eval,
    "analyze": cmd_analyze,
    "scores": cmd_scores,
    "ood": cmd_ood,
    "agreement": cmd_agreement,
    "tradeoff": cmd_tradeoff,
    "demo": cmd_demo,
    "sweep": cmd_sweep,
    "holdout": cmd_holdout,
    "report": cmd_report,
}


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
        return HANDLERS[args.handler](args)
    except MemgateError as e:
        stderr_line(f"memgate: {'stopped' if isinstance(e, Interrupted) else 'error'}: {e}")
        return 130 if isinstance(e, Interrupted) else 2
    except KeyboardInterrupt:  # Ctrl-C outside the handlers of a training or a sweep (while loading)
        stderr_line("memgate: stopped: interrupted (Ctrl-C); run the same command to resume")
        return 130
    except BrokenPipeError:  # output piped into `head` and the reader left: nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except OSError as e:  # a path the user named that the library did not wrap: still one line
        where = f" {e.filename}" if e.filename else ""
        stderr_line(f"memgate: error: cannot use{where} ({e.strerror or e}); check the path and its permissions")
        return 2


if __name__ == "__main__":
    sys.exit(main())
