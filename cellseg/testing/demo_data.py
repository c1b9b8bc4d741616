"""A deterministic generated dataset in the HW3 layout, for the demo and the tests.

The real competition data cannot be shipped, yet every stage (conversion, training, evaluation,
submission) needs files in exactly the real layout to be exercised end to end. This module writes
the shapes of ``cellseg.testing.synthetic_cells``::

    OUT/train/<name>/image.tif               RGBA uint8, alpha 255, LZW
    OUT/train/<name>/class{1..4}.tif         float64 instance-id maps, absent for absent classes
    OUT/test_release/<file>.tif              RGBA uint8, alpha 255, LZW
    OUT/test_image_name_to_ids.json          [{file_name, id, height, width}], ids shuffled
    OUT/test_gt.json                         COCO ground truth of the test images (demo only)

Same seed, same bytes: every image draws from its own ``default_rng([seed, split, index])``
stream, so images do not depend on each other and the files are reproducible.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from cellseg.formats.hw3 import IMAGE_FILE, TEST_DIR, TEST_ID_MAP
from cellseg.structures.rle import encode_instances
from cellseg.testing.synthetic_cells import SYNTHETIC_CLASSES, render_image
from cellseg.utils.fileio import atomic_write_json

__all__ = ['SYNTHETIC_CLASSES', 'TEST_GT', 'make_demo_dataset', 'render_image']

TEST_GT = 'test_gt.json'
# test_gt.json's info names its maker: a folder holding it may be regenerated over (stale images
# of an earlier run removed), any other non-empty folder is refused rather than mixed into.
_INFO_DESCRIPTION = 'cellseg generated demo data (cellseg.testing.demo_data)'
_CELLS_PER_PX = 1 / 1700  # 160x160 -> 15 cells, 320x320 -> 60


@dataclass(frozen=True)
class _ImageSpec:
    name: str
    height: int
    width: int
    n_cells: int
    classes: tuple[int, ...]
    first_class: int


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
    rgba, ids, class_of_id = render_image(rng, spec.height, spec.width, spec.n_cells,
                                          spec.classes, spec.first_class)
    folder = out / 'train' / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    _write_tiff(folder / IMAGE_FILE, rgba)
    counts = np.zeros(len(SYNTHETIC_CLASSES), np.int64)
    for k in range(1, len(SYNTHETIC_CLASSES) + 1):
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
    rgba, ids, class_of_id = render_image(rng, spec.height, spec.width, spec.n_cells,
                                          spec.classes, spec.first_class)
    file_name = spec.name + '.tif'
    _write_tiff(out / TEST_DIR / file_name, rgba)
    image = dict(id=image_id, file_name=f'{TEST_DIR}/{file_name}', height=spec.height,
                 width=spec.width)
    anns = []
    counts = np.zeros(len(SYNTHETIC_CLASSES), np.int64)
    for k in range(1, len(SYNTHETIC_CLASSES) + 1):
        for inst in encode_instances(np.where(class_of_id[ids] == k, ids, 0)):
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

    train_counts = np.zeros(len(SYNTHETIC_CLASSES), np.int64)
    for i, spec in enumerate(train):
        train_counts += _write_train(out, spec, np.random.default_rng([seed, 0, i]))

    # ids 1..n in a shuffled order, as the real map's ids do not follow file names
    test_ids = np.random.default_rng([seed, 8]).permutation(len(test)) + 1
    images, annotations = [], []
    test_counts = np.zeros(len(SYNTHETIC_CLASSES), np.int64)
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
        categories=[dict(id=k + 1, name=name) for k, name in enumerate(SYNTHETIC_CLASSES)]))

    sides = [v for s in train + test for v in (s.height, s.width)]
    return dict(
        root=str(out),
        train_images=len(train),
        test_images=len(test),
        train_instances_per_class=dict(zip(SYNTHETIC_CLASSES, train_counts.tolist())),
        test_instances_per_class=dict(zip(SYNTHETIC_CLASSES, test_counts.tolist())),
        largest_side=max(sides),
        smallest_side=min(sides),
    )
