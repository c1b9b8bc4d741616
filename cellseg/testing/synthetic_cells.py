"""Synthetic cell images: textured, cell-like shapes of four visibly different classes, with
their instance-id maps, so that a small Mask R-CNN learns them in minutes on a CPU.

The classes (sizes are radii in pixels):

- class1: small round dark-purple nuclei (5-7), grainy;
- class2: larger round pale-pink cells (10-14) with a darker rim and a faint nucleus;
- class3: brown spindles, ellipses of about 16x6 px at any angle;
- class4: large wobbly blue blobs (16-20) with a dark-blue nucleus.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

MIN_VISIBLE = 10  # an instance with fewer visible pixels is dropped: nothing invisible is labelled
_MIN_PLACED = 20  # a cell clipped by the border to fewer pixels than this is not placed at all
_MAX_OVERLAP = 0.3  # share of a new cell allowed to lie over earlier cells
_KEEP = 0.6  # an earlier cell keeps at least this share of its pixels when a new one covers it
_TOUCH = 0.4  # chance that a cell is placed against an earlier one (touching/overlapping pairs)
_TRIES = 25
_CLASS_P = np.array([0.3, 0.25, 0.25, 0.2])  # class4 is big: fewer of them for similar area
_SHIFT = 4  # OpenCV drawing with 4 fractional bits: sub-pixel centres and radii
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class _Style:
    body: tuple[float, float, float]  # RGB
    rim: tuple[float, float, float]
    rim_width: float  # px; the rim darkening decays as exp(-depth / rim_width)
    nucleus: tuple[float, float, float] | None
    nucleus_scale: float  # nucleus radius / cell radius
    grain: float  # texture amplitude (grey levels)
    grain_sigma: float  # texture blur: small = speckled chromatin, large = smooth cytoplasm


_STYLES = {
    1: _Style((92, 52, 132), (62, 30, 98), 1.2, None, 0.0, 16.0, 0.7),
    2: _Style((238, 180, 206), (196, 118, 160), 1.8, (214, 148, 186), 0.35, 7.0, 1.6),
    3: _Style((164, 112, 70), (118, 74, 44), 1.0, (136, 88, 54), 0.45, 11.0, 1.0),
    4: _Style((104, 144, 212), (58, 92, 170), 2.5, (66, 84, 168), 0.3, 12.0, 2.0),
}
# The names the generated data gives its kinds of cell, as HW3 names its class files
SYNTHETIC_CLASSES = tuple(f'class{k}' for k in sorted(_STYLES))
_BACKGROUND = np.array([238, 226, 232], np.float32)


@dataclass(frozen=True)
class _Cell:
    cls: int
    mask: np.ndarray  # uint8 0/1, the whole shape with a zero margin
    y0: int  # image position of mask[0, 0]
    x0: int
    radius: float  # rough size, for placing neighbours
    nucleus: tuple[float, float, float, float, float] | None  # cy, cx, ry, rx, angle in the mask





def _ellipse(mask: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float) -> None:
    cv2.ellipse(mask, (round(cx * _ONE), round(cy * _ONE)),
                (max(round(rx * _ONE), 1), max(round(ry * _ONE), 1)), angle, 0, 360, 1, -1,
                cv2.LINE_8, _SHIFT)


def _draw_shape(rng: np.random.Generator, cls: int, frac_y: float, frac_x: float
                ) -> tuple[np.ndarray, int, float, tuple[float, float, float, float, float] | None]:
    """A local mask of one cell: (mask, index of the centre pixel, radius, nucleus)."""
    angle = float(rng.uniform(0, 180))
    nucleus = None
    if cls == 4:
        radius = float(rng.uniform(16, 20))
        half = math.ceil(radius * 1.45) + 2
    elif cls == 3:
        ry, rx = float(rng.uniform(2.6, 3.6)), float(rng.uniform(7.0, 10.0))
        radius = rx
        half = math.ceil(rx) + 2
    else:
        radius = float(rng.uniform(5, 7) if cls == 1 else rng.uniform(10, 14))
        ry, rx = radius * float(rng.uniform(0.82, 1.0)), radius
        half = math.ceil(radius) + 2
    mask = np.zeros((2 * half + 1, 2 * half + 1), np.uint8)
    cy, cx = half + frac_y, half + frac_x
    if cls == 4:
        # a wobbly outline: the radius varies with angle as a sum of a few low harmonics
        theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r = np.ones_like(theta)
        for k in range(2, 6):
            r += rng.uniform(0.03, 0.14) / math.sqrt(k - 1) * np.cos(k * theta
                                                                       + rng.uniform(0, 2 * np.pi))
        r = radius * np.clip(r, 0.6, 1.4)
        pts = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], axis=1)
        cv2.fillPoly(mask, [np.round(pts * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    else:
        _ellipse(mask, cy, cx, ry, rx, angle)
    style = _STYLES[cls]
    if style.nucleus is not None:
        # off-centre, but well inside: the nucleus must not reach the outline
        nr = radius * style.nucleus_scale
        off = rng.uniform(-0.25, 0.25, size=2) * (radius - nr if cls != 3 else 0)
        ratio = 0.35 if cls == 3 else float(rng.uniform(0.75, 1.0))
        nucleus = (cy + float(off[0]), cx + float(off[1]), nr * ratio, nr,
                   angle if cls == 3 else float(rng.uniform(0, 180)))
    return mask, half, radius, nucleus


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A light stain: smooth blotches plus sparse specks.

    The texture is smooth or sparse, not per-pixel noise, on purpose: white noise is what LZW
    cannot compress, and it would make the two 1400 px images alone over 10 MB.
    """
    img = np.empty((height, width, 3), np.float32)
    img[:] = _BACKGROUND * np.float32(rng.uniform(0.97, 1.02))
    for scale, amp in ((32, np.array([5, 7, 5], np.float32)), (12, np.full(3, 2, np.float32))):
        # one noise field for all channels: stain density varies, its hue barely does
        small = rng.normal(0, 1, size=(max(height // scale, 2), max(width // scale, 2)))
        img += cv2.resize(small.astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)[..., None] * amp
    specks = rng.random((height, width)) < 0.015
    img[specks] -= rng.uniform(8, 25, size=(int(specks.sum()), 1)).astype(np.float32) * np.array(
        [0.8, 1.0, 0.7], np.float32)
    return img


def _paint(rng: np.random.Generator, img: np.ndarray, ids: np.ndarray, cell: _Cell,
           inst_id: int) -> None:
    """Colour the visible pixels of one cell: body, darker rim, nucleus and grain."""
    style = _STYLES[cell.cls]
    # depth inside the whole shape (not just its visible part): an occluded cell keeps its rim
    # only along its own outline, as a cell lying underneath would look
    depth = cv2.distanceTransform(cell.mask, cv2.DIST_L2, 3)
    h, w = cell.mask.shape
    jitter = np.float32(rng.uniform(0.93, 1.06))
    body = np.asarray(style.body, np.float32) * jitter
    rim = np.asarray(style.rim, np.float32) * jitter
    rim_w = np.exp(-depth / style.rim_width)[..., None]
    color = body + rim_w * (rim - body)
    if cell.nucleus is not None:
        nmask = np.zeros((h, w), np.uint8)
        _ellipse(nmask, *cell.nucleus)
        soft = cv2.GaussianBlur(nmask.astype(np.float32), (0, 0), 0.8)[..., None]
        color += soft * (np.asarray(style.nucleus, np.float32) * jitter - color)
    grain = cv2.GaussianBlur(rng.normal(0, 1, size=(h, w)).astype(np.float32), (0, 0),
                             style.grain_sigma)
    grain *= style.grain / max(float(grain.std()), 1e-3)
    color += grain[..., None] * np.array([1.0, 0.9, 1.0], np.float32)
    ys, xs = max(cell.y0, 0), max(cell.x0, 0)
    ye, xe = min(cell.y0 + h, ids.shape[0]), min(cell.x0 + w, ids.shape[1])
    if ye <= ys or xe <= xs:
        return
    visible = ids[ys:ye, xs:xe] == inst_id
    local = color[ys - cell.y0:ye - cell.y0, xs - cell.x0:xe - cell.x0]
    img[ys:ye, xs:xe][visible] = local[visible]


def _place(rng: np.random.Generator, ids: np.ndarray, cells: list[_Cell], visible: list[int],
           original: list[int], cls: int) -> _Cell | None:
    """Try to add one cell of class ``cls`` to ``ids``; None when no spot was acceptable."""
    height, width = ids.shape
    for _ in range(_TRIES):
        frac_y, frac_x = rng.uniform(0, 1, size=2)
        mask, half, radius, nucleus = _draw_shape(rng, cls, frac_y, frac_x)
        if cells and rng.uniform() < _TOUCH:
            # beside an earlier cell, at about the sum of the radii: touching or a bit overlapping
            other = cells[int(rng.integers(len(cells)))]
            oy = other.y0 + other.mask.shape[0] // 2
            ox = other.x0 + other.mask.shape[1] // 2
            dist = (other.radius + radius) * rng.uniform(0.75, 1.05)
            theta = rng.uniform(0, 2 * np.pi)
            cy, cx = int(round(oy + dist * np.sin(theta))), int(round(ox + dist * np.cos(theta)))
        else:
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, x0 = cy - half, cx - half
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + mask.shape[0], height), min(x0 + mask.shape[1], width)
        if ye <= ys or xe <= xs:
            continue
        inside = mask[ys - y0:ye - y0, xs - x0:xe - x0].astype(bool)
        area = int(inside.sum())
        if area < _MIN_PLACED:
            continue
        region = ids[ys:ye, xs:xe]
        under = region[inside]
        under = under[under > 0]
        if under.size > _MAX_OVERLAP * area:
            continue
        covered, counts = np.unique(under, return_counts=True)
        if any(visible[j] - c < _KEEP * original[j] for j, c in zip(covered, counts)):
            continue
        # the later cell lies on top: its pixels leave the maps of the cells it covers
        new_id = len(cells) + 1
        region[inside] = new_id
        for j, c in zip(covered, counts):
            visible[j] -= int(c)
        visible.append(area)
        original.append(area)
        cell = _Cell(cls, mask, y0, x0, radius, nucleus)
        cells.append(cell)
        return cell
    return None


def _render(rng: np.random.Generator, height: int, width: int, n_cells: int,
            classes: Sequence[int] | None, first_class: int | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    allowed = np.array(sorted(set(classes)) if classes is not None else [1, 2, 3, 4])
    if allowed.size == 0 or not set(allowed.tolist()) <= {1, 2, 3, 4}:
        raise ValueError(f'classes must be a non-empty subset of 1..4, got {classes!r}')
    p = _CLASS_P[allowed - 1] / _CLASS_P[allowed - 1].sum()
    ids = np.zeros((height, width), np.int32)
    cells: list[_Cell] = []
    visible, original = [0], [0]  # index 0: background
    for i in range(n_cells):
        cls = first_class if i == 0 and first_class in allowed else int(rng.choice(allowed, p=p))
        _place(rng, ids, cells, visible, original, cls)

    keep = [i for i in range(1, len(cells) + 1) if visible[i] >= MIN_VISIBLE]
    lut = np.zeros(len(cells) + 1, np.int32)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    ids = lut[ids]
    class_of_id = np.array([0] + [cells[i - 1].cls for i in keep], np.int32)

    img = _background(rng, height, width)
    for new_id, old_id in enumerate(keep, start=1):
        _paint(rng, img, ids, cells[old_id - 1], new_id)
    # a slight blur softens the drawn outlines and specks as optics would
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., :3] = np.clip(np.rint(img), 0, 255)
    rgba[..., 3] = 255
    return rgba, ids, class_of_id


def render_image(rng: np.random.Generator, height: int, width: int, n_cells: int,
                 classes: Sequence[int] | None = None, first_class: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image of up to ``n_cells`` cells (fewer when no free spot is found).

    Returns ``(rgba, ids, class_of_id)``: RGBA uint8 HxWx4 with alpha 255; int32 HxW instance
    ids, 0 = background, 1..N, one id per pixel (where cells overlap, the one drawn later);
    int32 ``class_of_id`` of length N + 1 with ``class_of_id[i]`` in 1..4 and
    ``class_of_id[0] == 0``. ``classes`` restricts which classes appear (all four by default);
    ``first_class`` is the class of the first cell placed (so that an image surely holds it).
    """
    return _render(rng, height, width, n_cells, classes, first_class)
