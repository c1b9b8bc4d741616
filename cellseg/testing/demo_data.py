"""A deterministic generated dataset in the HW3 layout, for the demo and the tests.

The real competition data cannot be shipped, yet every stage (conversion, training, evaluation,
submission) needs files in exactly the real layout to be exercised end to end. This module draws
textured, cell-like shapes of four visibly different classes, so that a small Mask R-CNN learns
them in minutes on a CPU, and writes::

    OUT/train/<name>/image.tif               RGBA uint8, alpha 255, LZW
    OUT/train/<name>/class{1..4}.tif         float64 instance-id maps, absent for absent classes
    OUT/test_release/<file>.tif              RGBA uint8, alpha 255, LZW
    OUT/test_image_name_to_ids.json          [{file_name, id, height, width}], ids shuffled
    OUT/test_gt.json                         COCO ground truth of the test images (demo only)

The classes (sizes are radii in pixels):

- class1: small round dark-purple nuclei (5-7), grainy;
- class2: larger round pale-pink cells (10-14) with a darker rim and a faint nucleus;
- class3: brown spindles, ellipses of about 16x6 px at any angle;
- class4: large wobbly blue blobs (16-20) with a dark-blue nucleus.

Same seed, same bytes: every image draws from its own ``default_rng([seed, split, index])``
stream, so images do not depend on each other and the files are reproducible.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from cellseg.formats.hw3 import CLASS_NAMES, IMAGE_FILE, TEST_DIR, TEST_ID_MAP, encode_instance_map
from cellseg.utils.fileio import atomic_write_json

__all__ = ['CLASS_NAMES', 'TEST_GT', 'make_demo_dataset', 'render_image']

TEST_GT = 'test_gt.json'
# test_gt.json's info names its maker: a folder holding it may be regenerated over (stale images
# of an earlier run removed), any other non-empty folder is refused rather than mixed into.
_INFO_DESCRIPTION = 'cellseg generated demo data (cellseg.testing.demo_data)'

MIN_VISIBLE = 10  # an instance with fewer visible pixels is dropped: nothing invisible is labelled
_MIN_PLACED = 20  # a cell clipped by the border to fewer pixels than this is not placed at all
_MAX_OVERLAP = 0.3  # share of a new cell allowed to lie over earlier cells
_KEEP = 0.6  # an earlier cell keeps at least this share of its pixels when a new one covers it
_TOUCH = 0.4  # chance that a cell is placed against an earlier one (touching/overlapping pairs)
_TRIES = 25
_CLASS_P = np.array([0.3, 0.25, 0.25, 0.2])  # class4 is big: fewer of them for similar area
_SHIFT = 4  # OpenCV drawing with 4 fractional bits: sub-pixel centres and radii
_ONE = 1 << _SHIFT
_CELLS_PER_PX = 1 / 1700  # 160x160 -> 15 cells, 320x320 -> 60


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
_BACKGROUND = np.array([238, 226, 232], np.float32)


@dataclass(frozen=True)
class _Cell:
    cls: int
    mask: np.ndarray  # uint8 0/1, the whole shape with a zero margin
    y0: int  # image position of mask[0, 0]
    x0: int
    radius: float  # rough size, for placing neighbours
    nucleus: tuple[float, float, float, float, float] | None  # cy, cx, ry, rx, angle in the mask


@dataclass(frozen=True)
class _ImageSpec:
    name: str
    height: int
    width: int
    n_cells: int
    classes: tuple[int, ...]
    first_class: int


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
                 classes: Sequence[int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image of up to ``n_cells`` cells (fewer when no free spot is found).

    Returns ``(rgba, ids, class_of_id)``: RGBA uint8 HxWx4 with alpha 255; int32 HxW instance
    ids, 0 = background, 1..N, one id per pixel (where cells overlap, the one drawn later);
    int32 ``class_of_id`` of length N + 1 with ``class_of_id[i]`` in 1..4 and
    ``class_of_id[0] == 0``. ``classes`` restricts which classes appear (all four by default).
    """
    return _render(rng, height, width, n_cells, classes, None)


def _tmp_path(path: Path) -> Path:
    return path.with_name('.' + path.name + '.tmp')


def _write_tiff(path: Path, data: np.ndarray) -> None:
    tmp = _tmp_path(path)
    try:
        if data.ndim == 3:
            # horizontal differencing lets LZW compress the smooth stain about twice as well;
            # every TIFF reader (tifffile, PIL, OpenCV) undoes it
            tifffile.imwrite(tmp, data, photometric='rgb', compression='lzw', predictor=True)
        else:
            tifffile.imwrite(tmp, data, photometric='minisblack', compression='lzw')
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _name(rng: np.random.Generator) -> str:
    # UUID-like names, as the real data has: sorted order is unrelated to generation order
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _plan(seed: int, tiny: bool) -> tuple[list[_ImageSpec], list[_ImageSpec]]:
    rng = np.random.default_rng([seed, 9])

    def regular(n: int, lo: int, hi: int, cells: tuple[int, int] | None,
                restrict_every: int) -> list[_ImageSpec]:
        specs = []
        for i in range(n):
            h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
            if cells is None:
                count = int(np.clip(round(h * w * _CELLS_PER_PX * rng.uniform(0.8, 1.2)), 15, 60))
            else:
                count = int(rng.integers(cells[0], cells[1] + 1))
            classes = (1, 2, 3, 4)
            if restrict_every and i % restrict_every == 1:
                k = int(rng.integers(1, 4))
                classes = tuple(sorted(int(c) for c in rng.choice(4, k, replace=False) + 1))
            # cycling the first cell's class puts every class into even the tiny set
            first = classes[i % len(classes)] if (i % 4 + 1) not in classes else i % 4 + 1
            specs.append(_ImageSpec(_name(rng), h, w, count, classes, first))
        return specs

    if tiny:
        train = regular(5, 64, 96, (3, 8), 3)
        test = regular(2, 64, 96, (3, 8), 0)
    else:
        train = regular(24, 160, 320, None, 5)
        test = regular(8, 160, 320, None, 0)
        # one image beyond MMDetection's usual 1333 px limit, with more cells than COCO's 100
        # detections per image; not as dense as the small ones, because loading decodes every
        # instance at full size (240 masks of 1400x1360 are already 460 MB) ...
        train.append(_ImageSpec(_name(rng), 1400, 1360, 240, (1, 2, 3, 4), 4))
        # ... and in the test set a sparse one: COCO AP counts at most 100 detections per image,
        # so a denser test image would cap the demo's recall whatever the model does
        test.append(_ImageSpec(_name(rng), 1360, 1408, 90, (1, 2, 3, 4), 2))
    # and one under 64 px a side, which crops, anchors and sliding windows must all cope with
    train.append(_ImageSpec(_name(rng), 48, 40, int(rng.integers(1, 4)), (1, 2, 3, 4), 1))
    return train, test


def _is_demo_root(out: Path) -> bool:
    try:
        info = json.loads((out / TEST_GT).read_text())['info']
        return info.get('description') == _INFO_DESCRIPTION
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _clear_stale(out: Path, train_names: set[str], test_files: set[str]) -> None:
    """Remove images of an earlier demo run that this run does not write (another seed or size):
    readers take every folder of train/, so leftovers would silently join the dataset."""
    stale = []
    if (out / 'train').is_dir():
        stale += [p for p in (out / 'train').iterdir() if p.name not in train_names]
    if (out / TEST_DIR).is_dir():
        stale += [p for p in (out / TEST_DIR).iterdir() if p.name not in test_files]
    if not stale:
        return
    if not _is_demo_root(out):
        raise FileExistsError(f'{out}: holds {stale[0]} (and {len(stale) - 1} more entries) that '
                              'a demo dataset would not write, and no demo test_gt.json; '
                              'choose an empty or new folder')
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _write_train(out: Path, spec: _ImageSpec, rng: np.random.Generator) -> np.ndarray:
    rgba, ids, class_of_id = _render(rng, spec.height, spec.width, spec.n_cells, spec.classes,
                                     spec.first_class)
    folder = out / 'train' / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    _write_tiff(folder / IMAGE_FILE, rgba)
    counts = np.zeros(len(CLASS_NAMES), np.int64)
    for k in range(1, len(CLASS_NAMES) + 1):
        path = folder / f'class{k}.tif'
        n = int((class_of_id == k).sum())
        counts[k - 1] = n
        if n == 0:
            path.unlink(missing_ok=True)  # the real layout leaves out a class with no instance
            continue
        # ids stay those of the whole image (1..N over all classes), as in the real data
        labels = np.where(class_of_id[ids] == k, ids, 0).astype(np.float64)
        _write_tiff(path, labels)
    return counts


def _write_test(out: Path, spec: _ImageSpec, image_id: int, rng: np.random.Generator
                ) -> tuple[dict, list[dict], np.ndarray]:
    rgba, ids, class_of_id = _render(rng, spec.height, spec.width, spec.n_cells, spec.classes,
                                     spec.first_class)
    file_name = spec.name + '.tif'
    _write_tiff(out / TEST_DIR / file_name, rgba)
    image = dict(id=image_id, file_name=f'{TEST_DIR}/{file_name}', height=spec.height,
                 width=spec.width)
    anns = []
    counts = np.zeros(len(CLASS_NAMES), np.int64)
    for k in range(1, len(CLASS_NAMES) + 1):
        for inst in encode_instance_map(np.where(class_of_id[ids] == k, ids, 0)):
            anns.append(dict(image_id=image_id, category_id=k, segmentation=inst['segmentation'],
                             area=inst['area'], bbox=inst['bbox'], iscrowd=0))
            counts[k - 1] += 1
    return image, anns, counts


def make_demo_dataset(out_dir: str | Path, seed: int = 0, tiny: bool = False) -> dict:
    """Generate the demo dataset under ``out_dir`` (see the module doc for the layout).

    ``tiny``: a handful of small images for unit tests. An existing folder is written over; images
    of an earlier demo run that this one does not produce are removed, and a non-empty folder that
    is not a demo dataset is refused (FileExistsError) rather than mixed into.

    Returns ``{'root', 'train_images', 'test_images', 'train_instances_per_class',
    'test_instances_per_class', 'largest_side', 'smallest_side'}`` (sides over both splits).
    """
    out = Path(out_dir)
    train, test = _plan(seed, tiny)
    _clear_stale(out, {s.name for s in train}, {s.name + '.tif' for s in test})
    (out / 'train').mkdir(parents=True, exist_ok=True)
    (out / TEST_DIR).mkdir(parents=True, exist_ok=True)

    train_counts = np.zeros(len(CLASS_NAMES), np.int64)
    for i, spec in enumerate(train):
        train_counts += _write_train(out, spec, np.random.default_rng([seed, 0, i]))

    # ids 1..n in a shuffled order, as the real map's ids do not follow file names
    test_ids = np.random.default_rng([seed, 8]).permutation(len(test)) + 1
    images, annotations = [], []
    test_counts = np.zeros(len(CLASS_NAMES), np.int64)
    for i, spec in enumerate(test):
        image, anns, counts = _write_test(out, spec, int(test_ids[i]),
                                          np.random.default_rng([seed, 1, i]))
        images.append(image)
        annotations += anns
        test_counts += counts
    images.sort(key=lambda im: im['id'])
    annotations.sort(key=lambda a: a['image_id'])  # stable: class order within an image remains
    annotations = [dict(id=ann_id, **ann) for ann_id, ann in enumerate(annotations, start=1)]
    id_map = sorted((dict(file_name=im['file_name'].split('/', 1)[1], id=im['id'],
                          height=im['height'], width=im['width']) for im in images),
                    key=lambda e: e['file_name'])
    atomic_write_json(out / TEST_ID_MAP, id_map)
    atomic_write_json(out / TEST_GT, dict(
        info=dict(description=_INFO_DESCRIPTION, seed=seed, tiny=tiny),
        images=images,
        annotations=annotations,
        categories=[dict(id=k + 1, name=name) for k, name in enumerate(CLASS_NAMES)]))

    sides = [v for s in train + test for v in (s.height, s.width)]
    return dict(
        root=str(out),
        train_images=len(train),
        test_images=len(test),
        train_instances_per_class=dict(zip(CLASS_NAMES, train_counts.tolist())),
        test_instances_per_class=dict(zip(CLASS_NAMES, test_counts.tolist())),
        largest_side=max(sides),
        smallest_side=min(sides),
    )
