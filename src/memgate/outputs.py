"""Outputs belong to their run. `memgate analyze`, `ood` and `tradeoff` write into the run or into
an ``-o`` folder; before they write anything, ``claim`` refuses an ``-o`` folder that is another
run's folder or that holds this command's results for another run (unless ``force``), and
``record`` notes in the folder whose results it now holds (``.memgate_outputs.json``: command ->
run path), so that a later command for another run cannot silently overwrite them.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import write_json
from .errors import RunError
from .parsing import loads_json

MARK = ".memgate_outputs.json"
RUN_MARKERS = ("config.toml", "checkpoint.pt")  # what makes a folder a run's own


def _key(path: Path) -> str:
    return str(path.resolve())


def _owners(out_dir: Path) -> dict[str, str]:
    try:
        owners = loads_json((out_dir / MARK).read_text())
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in owners.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(owners, dict)
        else {}
    )


def run_folder(run: str | Path) -> Path:
    """The folder of a run given as its folder or as its checkpoint file."""
    run = Path(run)
    return run if run.is_dir() else run.parent


def _kept_run(out_dir: Path) -> str | None:
    """The run whose kept results a folder holds (its copied summary.json names it), else None."""
    try:
        out = loads_json((out_dir / "summary.json").read_text()).get("out")
    except (OSError, ValueError, AttributeError):
        return None
    return out if isinstance(out, str) else None


def claim(out_dir: str | Path, run: str | Path, command: str, force: bool = False) -> Path:
    """``out_dir`` (created), checked to be this run's to write; a one-line RunError otherwise: a
    folder of another run, one keeping another run's results (its summary.json names that run), or
    one holding this command's results for another run. A folder keeping this run's own copied files
    (summary.json naming it, config.toml, no checkpoint: a study's committed copy) is this run's."""
    out_dir, mine = Path(out_dir), run_folder(run)
    if not force and out_dir.exists() and _key(out_dir) != _key(mine):
        kept = _kept_run(out_dir)
        copy_of_mine = kept is not None and _key(Path(kept)) == _key(mine) and not (out_dir / "checkpoint.pt").exists()
        if any((out_dir / m).exists() for m in RUN_MARKERS) and not copy_of_mine:  # its copied config is no run
            raise RunError(
                f"{command}: -o {out_dir} is the folder of another run; choose another -o folder, or --force"
            )
        if kept is not None and _key(Path(kept)) != _key(mine):
            raise RunError(
                f"{command}: -o {out_dir} keeps the results of another run ({kept}); choose another -o folder, "
                "or --force"
            )
        owner = _owners(out_dir).get(command)
        if owner is not None and owner != _key(mine):
            raise RunError(
                f"{command}: -o {out_dir} holds the {command} results of {owner}; choose another -o folder "
                "(one per run), or --force to replace them"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{command}: cannot create -o {out_dir} ({e.strerror}); choose a writable folder") from None
    return out_dir


def record(out_dir: str | Path, run: str | Path, command: str) -> None:
    """Note that ``out_dir`` now holds ``command``'s results for ``run`` (not in the run's own folder)."""
    out_dir, mine = Path(out_dir), run_folder(run)
    if _key(out_dir) != _key(mine):
        write_json(out_dir / MARK, {**_owners(out_dir), command: _key(mine)})
