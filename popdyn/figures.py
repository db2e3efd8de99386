"""Figures of a run, drawn from what ``popdyn.store.load`` returns."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: sweeps run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402


def loss_curves(ds: xr.Dataset, path: str | Path) -> Path:
    """Training MSE against step per group: median over members, shaded between the quartiles (log scale).

    Diverged members are left out of the median and counted in the legend.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for group in dict.fromkeys(ds.group.values):
        sub = ds.where((ds.group == group) & ~ds.diverged, drop=True)
        n_div = int((ds.diverged & (ds.group == group)).sum())
        if sub.sizes.get("member", 0) == 0:
            continue
        q = np.nanquantile(sub.loss.values, [0.25, 0.5, 0.75], axis=0)
        label = f"{group} ({sub.sizes['member']})" + (f", {n_div} diverged" if n_div else "")
        (line,) = ax.plot(ds.step, q[1], label=label)
        ax.fill_between(ds.step, q[0], q[2], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training MSE")
    ax.set_title(f"{ds.attrs.get('task', '')}: median and quartiles over networks")
    ax.legend(fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
