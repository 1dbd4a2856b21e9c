"""PNG overlays of captured attention maps (matplotlib, Agg backend).

One figure per image: the first row shows the image and the numbered query
points; then one row per block: an NL block's map for each query, a GC
block's single map, a DNL block's pairwise maps and, in a row of its own,
its unary map. Each map is scaled to its own maximum and drawn over the
image. The blocks are those of :mod:`.capture` (NL,
https://arxiv.org/abs/1711.07971; GCNet, https://arxiv.org/abs/1904.11492;
DNL, https://arxiv.org/abs/2006.06668).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .capture import BlockMaps

# helper functions


def _upsample(row: torch.Tensor, key_grid: Tuple[int, int],
              input_shape: Tuple[int, int],
              image_shape: Tuple[int, int]) -> np.ndarray:
    """One ``[M]`` map as an image-sized ``[H, W]`` array in ``[0, 1]``."""
    grid = row.float().reshape(1, 1, *key_grid)  # [1, 1, h, w]
    grid = grid / grid.max().clamp_min(1e-12)
    full = F.interpolate(grid, size=input_shape, mode='nearest')[0, 0]
    return full[:image_shape[0], :image_shape[1]].cpu().numpy()


def _rows(maps: Dict[str, BlockMaps], image: int) -> List[tuple]:
    """``(label, [map, ...], key_grid, show_points)`` per figure row."""
    rows = []
    for name, block in maps.items():
        short = name.replace('backbone.', '')
        if block.pairwise is not None:
            label = f'{short}\n({block.kind} pairwise)' if (
                block.kind == 'dnl') else f'{short}\n(nl)'
            rows.append((label, list(block.pairwise[image]), block.key_grid,
                         True))
        if block.unary is not None:
            label = f'{short}\n({block.kind} unary)' if (
                block.kind == 'dnl') else f'{short}\n(gc, one map)'
            rows.append((label, [block.unary[image]], block.key_grid, False))
    return rows


# main function


def save_overlay(path: str, image_rgb: np.ndarray,
                 maps: Dict[str, BlockMaps],
                 points: Sequence[Tuple[float, float]],
                 input_shape: Tuple[int, int],
                 *,
                 image: int = 0,
                 panel_width: float = 2.2,
                 dpi: int = 80) -> None:
    """Writes one image's overlay PNG.

    Args:
        path (str): The PNG to write.
        image_rgb (np.ndarray): ``[H, W, 3]`` uint8 RGB image.
        maps (dict): ``{block name: BlockMaps}`` from a capture.
        points (Sequence): The ``(x, y)`` query points.
        input_shape (tuple): ``(H', W')`` of the padded network input.
        image (int): Which image of the captured batch. Default: 0.
        panel_width (float): Inches per panel. Default: 2.2.
        dpi (int): Resolution. Default: 80.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    height, width = image_rgb.shape[:2]
    rows = _rows(maps, image)
    columns = max([len(points)] + [len(r[1]) for r in rows])
    panel_height = panel_width * height / width + 0.35
    fig, axes = plt.subplots(
        len(rows) + 1, columns, squeeze=False,
        figsize=(panel_width * columns + 1.2, panel_height * (len(rows) + 1)))
    for ax in axes.flat:
        ax.axis('off')
    xs, ys = zip(*points)
    axes[0, 0].imshow(image_rgb)
    axes[0, 0].scatter(xs, ys, s=30, c='white', edgecolors='black')
    for number, (x, y) in enumerate(points):
        axes[0, 0].annotate(str(number), (x, y), color='yellow', fontsize=8,
                            xytext=(3, 3), textcoords='offset points')
    axes[0, 0].set_title('image, queries', fontsize=8)
    for row, (label, row_maps, key_grid, show_points) in enumerate(rows, 1):
        for column, attn in enumerate(row_maps):
            ax = axes[row, column]
            ax.imshow(image_rgb)
            ax.imshow(_upsample(attn, key_grid, input_shape, (height, width)),
                      cmap='jet', alpha=0.5, vmin=0, vmax=1)
            if show_points:
                ax.scatter([xs[column]], [ys[column]], s=40, c='white',
                           edgecolors='black', marker='*')
                ax.set_title(f'query {column}', fontsize=7)
        axes[row, 0].text(-0.05, 0.5, label, transform=axes[row, 0].transAxes,
                          ha='right', va='center', fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
