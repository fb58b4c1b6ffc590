"""The one place memgate makes a matplotlib figure: headless backend, then save and close."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots`` on the headless Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save(fig: Any, png: str | Path, title: str | None = None, title_size: float | None = None) -> Path:
    """Tight layout, write ``png`` at 110 dpi, free the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def colormap(name: str) -> Any:
    import matplotlib.pyplot as plt

    return plt.get_cmap(name)
