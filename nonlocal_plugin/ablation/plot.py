"""``ablation.png``: measured and published metrics per row.

One panel per metric column. Each row shows its mean over seeds (a bar
with the sample std as error bar), every seed as a dot, and the published
number as a hollow diamond where it was read from its source. Needs
matplotlib (the ``analysis`` extra).
"""
from __future__ import annotations

from typing import Sequence

from .collect import RowResult
from .grid import Grid


def plot(path: str, grid: Grid, results: Sequence[RowResult]) -> str:
    """Draws the table into ``path`` (PNG); returns ``path``.

    Args:
        path (str): The PNG to write.
        grid (Grid): The grid (title, metrics).
        results (Sequence[RowResult]): :func:`~.collect.collect`'s rows.
    """
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise SystemExit('error: --plot needs matplotlib: pip install '
                         '"nonlocal_plugin[analysis]"') from err
    columns = list(grid.metrics)
    names = [r.row.name for r in results]
    width = max(6., 0.45 * len(names) + 2)
    fig, axes = plt.subplots(
        len(columns), 1, figsize=(width, 3.2 * len(columns)), squeeze=False)
    for ax, column in zip(axes[:, 0], columns):
        for x, result in enumerate(results):
            mean, std = result.mean(column), result.std(column)
            if mean is not None:
                ax.bar(x, mean, width=0.6, color='#9ecae1', zorder=1)
                if std is not None:
                    ax.errorbar(x, mean, yerr=std, color='black',
                                capsize=3, zorder=3)
                values = result.values(column)
                ax.scatter([x] * len(values), values, s=12, color='#08519c',
                           zorder=4, label='seed')
            published = result.row.published_value(column)
            if published is not None:
                ax.scatter([x], [published], marker='D', s=40,
                           facecolors='none', edgecolors='#d62728',
                           zorder=5, label='published')
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        if unique:
            ax.legend(unique.values(), unique.keys(), fontsize=8,
                      loc='lower right')
        ax.set_ylabel(column)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha='right', fontsize=8)
        ax.grid(axis='y', alpha=0.3)
    axes[0, 0].set_title(grid.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
