"""The one place memgate makes a matplotlib figure: headless backend, then save and close."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import write_atomic


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots`` on the headless Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    # Text is drawn as given: class names, file names and notes come from users' data, and a "$" in
    # one would otherwise be parsed as TeX (a name like "$\\undefined$" breaks the figure).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def plain_log_labels(*axes: Any) -> None:
    """Tick labels of log-scaled ``axes`` (x or y axis objects) as plain numbers (0.01): matplotlib
    writes them as TeX, which ``subplots`` turns off, so they would show as "$\\mathdefault{...}$"."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for axis in axes:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def save(fig: Any, png: str | Path, title: str | None = None, title_size: float | None = None) -> Path:
    """Tight layout, write ``png`` at 110 dpi through the atomic writer (a kill mid-save leaves the
    old figure), free the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=title_size)
    # tight_layout ignores the suptitle: keep its 0.4 inch free so that it never covers the top row
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()) if title else None)
    try:
        return write_atomic(png, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)


def colormap(name: str) -> Any:
    import matplotlib.pyplot as plt

    return plt.get_cmap(name)


def image_grid(
    images: list[Any], titles: list[str], red: list[bool], png: str | Path, title: str, font: float = 7
) -> Path:
    """Images eight to a row, each titled (in red where ``red``), saved to ``png``."""
    import numpy as np

    cols = 8
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = subplots(rows, cols, figsize=(cols * 1.5, rows * 2.0))  # room for two-line titles above square images
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, img, text, r in zip(np.atleast_1d(axes).ravel(), images, titles, red):
        ax.imshow(img)
        ax.set_title(text, fontsize=font, color="red" if r else "black")
    return save(fig, png, title, 9)
