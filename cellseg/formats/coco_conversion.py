"""COCO annotation files of an HW3 data root: all train images, K folds, the test image list."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cellseg.formats import hw3
from cellseg.utils.fileio import atomic_write_json


def build_train_coco(data_root: str | Path) -> dict:
    """COCO instances of every ``train/<name>/`` folder; image ids 1..N in folder-name order.

    ``file_name`` is relative to ``data_root`` so configs point ``data_root`` at the data. The
    categories are the data's classes (``hw3.data_classes``).
    """
    images, annotations = [], []
    samples = hw3.list_train_samples(data_root)
    names = hw3.data_classes(data_root, samples)
    for image_id, sample in enumerate(samples, start=1):
        (h, w), instances = hw3.convert_sample(sample)
        images.append(dict(id=image_id, file_name=f'train/{sample.name}/{hw3.IMAGE_FILE}',
                           height=h, width=w))
        for inst in instances:
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=inst['category_id'],
                segmentation=inst['segmentation'], area=inst['area'], bbox=inst['bbox'],
                iscrowd=0))
    return dict(info=dict(description=f'HW3 train data of {Path(data_root).resolve()}'),
                images=images, annotations=annotations, categories=hw3.categories(names))


def per_image_class_counts(coco: dict) -> np.ndarray:
    """(n_images, n_classes) instance counts, rows in ``coco['images']`` order."""
    row = {img['id']: i for i, img in enumerate(coco['images'])}
    counts = np.zeros((len(coco['images']), len(coco['categories'])), dtype=np.int64)
    for ann in coco['annotations']:
        counts[row[ann['image_id']], ann['category_id'] - 1] += 1
    return counts


def split_folds(counts: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Assign images to ``k`` disjoint folds balanced on per-class instance counts.

    Greedy: images go in order of how much of the rarest classes they hold (ties broken by a seeded
    shuffle), each to the fold whose per-class totals, relative to a k-th of the whole, stay lowest
    after adding it; the image count per fold enters the same cost so folds stay similar in size.
    Returns the row indices of each fold.
    """
    n = counts.shape[0]
    if not 2 <= k <= n:
        raise ValueError(f'cannot split {n} images into {k} folds')
    totals = counts.sum(0).astype(np.float64)
    weights = np.where(totals > 0, 1.0 / np.maximum(totals, 1), 0.0)
    share = counts * weights  # each image's fraction of every class
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    order = order[np.argsort(-share[order].max(1), kind='stable')]
    fold_share = np.zeros((k, counts.shape[1]))
    fold_size = np.zeros(k)
    assign = np.empty(n, dtype=np.int64)
    for i in order:
        cost = ((fold_share + share[i]) ** 2).sum(1) + ((fold_size + 1) / n) ** 2
        f = int(np.argmin(cost))
        assign[i] = f
        fold_share[f] += share[i]
        fold_size[f] += 1
    return [np.flatnonzero(assign == f) for f in range(k)]


def subset(coco: dict, rows: np.ndarray) -> dict:
    """The images at ``rows`` of ``coco`` with their annotations (ids kept)."""
    keep = {coco['images'][i]['id'] for i in rows}
    return dict(info=coco['info'], categories=coco['categories'],
                images=[img for img in coco['images'] if img['id'] in keep],
                annotations=[a for a in coco['annotations'] if a['image_id'] in keep])


def build_test_coco(data_root: str | Path,
                    names: tuple[str, ...] | None = None) -> dict:
    """Image-info COCO file of ``test_release/`` carrying the ids of the test id map; its
    categories are ``names`` (the train data's classes), else ``classes.txt``'s, else HW3's."""
    names = names or hw3.read_class_names(data_root) or hw3.CLASS_NAMES
    images = [dict(id=info.id, file_name=f'{hw3.TEST_DIR}/{info.file_name}', height=info.height,
                   width=info.width) for info in hw3.test_image_infos(data_root)]
    return dict(info=dict(description='HW3 test images (ids from test_image_name_to_ids.json)'),
                images=images, annotations=[], categories=hw3.categories(names))


def convert(data_root: str | Path, out_dir: str | Path, folds: int = 5, seed: int = 0) -> dict:
    """Write ``train_all.json``, ``fold{k}_{train,val}.json`` and (if the id map exists)
    ``test.json`` to ``out_dir``; return a summary for printing. A data root without ``train/``
    but with the test id map (a checkpoint handed to someone with the test set only) gets
    ``test.json`` alone."""
    start = time.perf_counter()
    data_root, out_dir = Path(data_root), Path(out_dir)
    has_test = (data_root / hw3.TEST_ID_MAP).is_file()
    if not (data_root / 'train').exists() and has_test:
        test = build_test_coco(data_root)
        path = atomic_write_json(out_dir / 'test.json', test)
        return dict(images=0, instances=0, classes=[c['name'] for c in test['categories']],
                    instances_per_class={}, images_without_instances=0,
                    fold_instances_per_class=[], test_images=len(test['images']),
                    written=[str(path)], seconds=time.perf_counter() - start, no_train=True)
    if has_test:  # checked first: a broken map leaves no new train files beside an old test.json
        hw3.test_image_infos(data_root)
    coco = build_train_coco(data_root)
    names = tuple(c['name'] for c in coco['categories'])
    test = build_test_coco(data_root, names) if has_test else None
    written = [atomic_write_json(out_dir / 'train_all.json', coco)]
    counts = per_image_class_counts(coco)
    fold_counts = []
    if folds:
        for f, rows in enumerate(split_folds(counts, folds, seed)):
            rest = np.setdiff1d(np.arange(len(coco['images'])), rows)
            written.append(atomic_write_json(out_dir / f'fold{f}_train.json', subset(coco, rest)))
            written.append(atomic_write_json(out_dir / f'fold{f}_val.json', subset(coco, rows)))
            fold_counts.append(counts[rows].sum(0).tolist())
    test_images = None
    if test is not None:
        written.append(atomic_write_json(out_dir / 'test.json', test))
        test_images = len(test['images'])
    return dict(
        images=len(coco['images']), instances=len(coco['annotations']), classes=list(names),
        instances_per_class=dict(zip(names, counts.sum(0).tolist())),
        images_without_instances=int((counts.sum(1) == 0).sum()),
        fold_instances_per_class=fold_counts, test_images=test_images,
        written=[str(p) for p in written], seconds=time.perf_counter() - start, no_train=False)
