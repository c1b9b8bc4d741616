"""Pictures people look at besides instance overlays (``CellLocalVisualizer`` draws those): PR
curves, confusion matrices, galleries and training curves; and PNG files of images.

Plots are matplotlib figures built without pyplot (``Figure`` + the Agg canvas): no global
figure state and no display needed, so they work inside training runs and on headless machines.
Every file is written atomically through ``cellseg.utils.fileio``.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cellseg.utils.fileio import atomic_write_bytes
from cellseg.utils.scalars import LEADERBOARD_KEY

Color = tuple[int, int, int]


# ---- PNG files ---------------------------------------------------------------------------------

def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB (or grey) uint8 image."""
    pixels = image[..., ::-1] if image.ndim == 3 else image  # OpenCV encodes BGR
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(pixels))
    if not ok:
        raise ValueError(f'cannot encode an image of shape {image.shape} as PNG')
    return buf.tobytes()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    return atomic_write_bytes(path, encode_png(image))


# ---- figures ------------------------------------------------------------------------------------

def new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight')
    return atomic_write_bytes(path, buf.getvalue())


def _rgb01(color: Color) -> tuple[float, float, float]:
    return tuple(c / 255 for c in color)


def _darker(color: Color) -> tuple[float, float, float]:
    """The class colour darkened for lines on white (the palette's yellow is made for images)."""
    h, s, v = cv2.cvtColor(np.uint8([[color]]), cv2.COLOR_RGB2HSV)[0, 0]
    rgb = cv2.cvtColor(np.uint8([[[h, s, min(int(v), 200)]]]), cv2.COLOR_HSV2RGB)[0, 0]
    return _rgb01(tuple(int(c) for c in rgb))


def plot_pr_curves(recall: np.ndarray, precision: np.ndarray, class_names: Sequence[str],
                   palette: Sequence[Color], ap: Sequence[float], iou: float = 0.5,
                   title: str = '') -> Figure:
    """Precision over recall per class. ``precision`` is (classes, recall points) as COCOeval's
    ``eval['precision']`` gives it for one IoU threshold, area and maxDets: interpolated (the
    best precision at that recall or above), 0 past the highest recall reached, -1 for a class
    without ground truth (drawn as such in the legend). ``ap`` is printed in the legend."""
    fig = new_figure(6, 4.5)
    ax = fig.add_subplot()
    for k, name in enumerate(class_names):
        p = precision[k]
        valid = p > -1
        if not valid.any() or math.isnan(ap[k]):
            ax.plot([], [], color=_darker(palette[k]), label=f'{name} (no ground truth)')
            continue
        ax.plot(recall[valid], p[valid], color=_darker(palette[k]), lw=2,
                label=f'{name} (AP{round(iou * 100)} {ap[k]:.3f})')
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel='recall', ylabel='precision',
           title=title or f'Mask precision-recall at IoU {iou:g}')
    ax.grid(alpha=0.3)
    ax.legend(loc='lower left', fontsize=9)
    return fig


def plot_confusion(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
                   title: str = '') -> Figure:
    """A count matrix with its counts written in the cells; the shading is each row's share, so
    rare classes read as clearly as common ones."""
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    fig = new_figure(1.2 + 0.9 * len(col_labels), 1.0 + 0.7 * len(row_labels))
    ax = fig.add_subplot()
    ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(int(matrix[i, j])), ha='center', va='center', fontsize=10,
                    color='white' if share[i, j] > 0.5 else 'black')
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30, ha='right')
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set(xlabel='predicted class', ylabel='ground-truth class', title=title)
    return fig


def plot_gallery(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]],
                 legend: Sequence[tuple[str, Color]] = (), panel_in: float = 3.5,
                 title: str = '') -> Figure:
    """One row per entry ``(row title, [(panel title, RGB image), ...])``, panels side by side,
    each row as tall as its images need at ``panel_in`` inches wide; ``legend`` (label, colour)
    pairs are shown once, under the panels."""
    n_cols = max(len(panels) for _, panels in rows)
    ratios = [max(img.shape[0] / img.shape[1] for _, img in panels) for _, panels in rows]
    header = (0.4 if title else 0) + (0.4 if legend else 0)
    fig = Figure(figsize=(panel_in * n_cols, panel_in * sum(ratios) + 0.5 * len(rows) + header),
                 dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(rows), n_cols, height_ratios=ratios)
    for r, (row_title, panels) in enumerate(rows):
        for c, (panel_title, image) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(image, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(panel_title, fontsize=9)
            if c == 0:
                ax.set_ylabel(row_title, fontsize=8)
    if title:
        fig.suptitle(title)
    if legend:
        fig.legend(handles=[Patch(color=_rgb01(c), label=name) for name, c in legend],
                   loc='outside lower center', ncol=len(legend), fontsize=9, frameon=False)
    return fig


# ---- training curves ----------------------------------------------------------------------------

def _dedupe_steps(rows: Sequence[dict]) -> list[dict]:
    """Rows keyed by (kind, step), the last one winning: a run killed and resumed from an earlier
    checkpoint logs the steps after that checkpoint twice, and the resumed run is the one that
    counts."""
    kept: dict[tuple[bool, int], dict] = {}
    for r in rows:
        if 'step' in r:
            kept[('loss' in r or 'lr' in r, int(r['step']))] = r
    return [kept[k] for k in sorted(kept, key=lambda k: (k[1], k[0]))]


def iters_per_epoch(train_rows: Sequence[dict]) -> float | None:
    """Iterations per epoch from mmengine's training rows (``epoch``, global ``iter``), or None
    for iteration-based runs. LoggerHook logs the last iteration of every epoch, so the largest
    ``iter`` of an epoch is where it ends."""
    ends: dict[int, int] = {}
    for r in train_rows:
        if 'epoch' in r and 'iter' in r:
            ends[int(r['epoch'])] = max(ends.get(int(r['epoch']), 0), int(r['iter']))
    if not ends:
        return None
    complete = [e for e in ends if e + 1 in ends and (e - 1 in ends or e == 1)]
    if complete:
        return float(np.median([ends[e] - ends.get(e - 1, 0) for e in complete]))
    last = max(ends)
    return ends[last] / last  # one (possibly partial) epoch logged: the best estimate there is


def plot_training_curves(rows: Sequence[dict], title: str = '',
                         metric: str = LEADERBOARD_KEY) -> Figure:
    """Loss terms, learning rate and validation ``metric`` of mmengine's scalars.json rows, on
    one epoch axis (training rows at fractional epochs)."""
    rows = _dedupe_steps(rows)
    train = [r for r in rows if 'loss' in r or 'lr' in r]
    val = [r for r in rows if metric in r]
    per_epoch = iters_per_epoch(train)
    unit = 'epoch' if per_epoch else 'iteration'

    def x_of(r: dict) -> float:
        return r['iter'] / per_epoch if per_epoch and 'iter' in r else r['step']

    fig = new_figure(12, 3.8)
    ax_loss, ax_lr, ax_val = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    loss_keys = sorted({k for r in train for k in r if k.startswith('loss')},
                       key=lambda k: (k != 'loss', k))
    for key in loss_keys:
        pts = [(x_of(r), r[key]) for r in train if key in r and math.isfinite(r[key])]
        if pts:
            xs, ys = zip(*pts)
            ax_loss.plot(xs, ys, lw=2.2 if key == 'loss' else 1.2, label=key,
                         color='black' if key == 'loss' else None)
    if loss_keys:
        ax_loss.legend(fontsize=7)
    ax_loss.set(title='training losses', xlabel=unit, ylabel='loss')
    lr = [(x_of(r), r['lr']) for r in train if 'lr' in r]
    if lr:
        ax_lr.plot(*zip(*lr), color='tab:purple')
        ax_lr.ticklabel_format(axis='y', style='sci', scilimits=(-2, 3))
    ax_lr.set(title='learning rate', xlabel=unit, ylabel='lr')
    if val:
        # validation rows are logged with step = epoch (iteration for iteration-based runs)
        ax_val.plot([r['step'] for r in val], [r[metric] for r in val], 'o-', color='tab:green',
                    label=metric)
        best = max(val, key=lambda r: r[metric])
        ax_val.annotate(f"best {best[metric]:.3f}", (best['step'], best[metric]),
                        textcoords='offset points', xytext=(0, 6), ha='center', fontsize=8)
        ax_val.set_ylim(0, max(1e-3, max(r[metric] for r in val)) * 1.15)
    else:
        ax_val.text(0.5, 0.5, 'no validation logged', ha='center', va='center',
                    transform=ax_val.transAxes, color='grey')
    ax_val.set(title=f'validation {metric}', xlabel=unit, ylabel=metric.split('/')[-1])
    for ax in (ax_loss, ax_lr, ax_val):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
