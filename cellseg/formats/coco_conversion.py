"""COCO annotation files of an HW3 data root: all train images, K folds, the test image list."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from cellseg.formats import hw3
from cellseg.utils.fileio import atomic_write_bytes


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


def annotation_classes(ann_file: str | os.PathLike) -> tuple[str, ...]:
    """The class names of a COCO file, by category id; ids must be 1..K."""
    try:
        with open(ann_file, encoding='utf-8') as f:
            categories = json.load(f).get('categories') or []
        categories = sorted(categories, key=lambda c: c['id'])
    except (ValueError, AttributeError, KeyError, TypeError) as e:
        raise hw3.HW3FormatError(f'{ann_file}: cannot read its COCO categories ({e})') from None
    if [c['id'] for c in categories] != list(range(1, len(categories) + 1)) or not categories:
        raise hw3.HW3FormatError(f'{ann_file}: categories must have ids 1..K (K >= 1), got '
                                 f'{[c["id"] for c in categories]}')
    return tuple(str(c['name']) for c in categories)


def build_test_coco(data_root: str | Path, names: tuple[str, ...]) -> dict:
    """Image-info COCO file of ``test_release/`` carrying the ids of the test id map; its
    categories are ``names`` (the train data's classes or the model's; none when unknown)."""
    images = [dict(id=info.id, file_name=f'{hw3.TEST_DIR}/{info.file_name}', height=info.height,
                   width=info.width) for info in hw3.test_image_infos(data_root)]
    return dict(info=dict(description='HW3 test images (ids from test_image_name_to_ids.json)'),
                images=images, annotations=[], categories=hw3.categories(names))


def writable_folder(folder: str | Path) -> list[Path]:
    """Create ``folder`` if needed and check that files can be created in it, before any long
    work; raises ``OSError`` naming the folder. Returns the folders it created, deepest first,
    for ``remove_created`` when the work then fails."""
    folder = Path(folder)
    created = []
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    folder = Path(created[0]) if created else folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        remove_created(created)
        raise OSError(e.errno, f'cannot write there ({e.strerror})', str(folder)) from None
    return created


def remove_created(folders: list[Path]) -> None:
    """Remove the folders ``writable_folder`` created, where they are still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def landing_together(folder: Path) -> Iterator[Callable[[str, dict], Path]]:
    """Files that land together or not at all: ``put(name, obj)`` writes ``obj`` as JSON
    completely (fsynced) into a hidden staging folder inside ``folder`` as soon as it is
    computed (memory holds one file at a time), and only when the block ends without error
    are all of them moved into place. A failure (an error of the data, a full disk, the folder
    made read-only) removes the staging folder and leaves ``folder`` as it was. ``put``
    returns the file's final path."""
    stage = Path(tempfile.mkdtemp(prefix='.converting-', dir=folder))
    names: list[str] = []

    def put(name: str, obj: dict) -> Path:
        try:
            atomic_write_bytes(stage / name, json.dumps(obj, separators=(',', ':')).encode())
        except OSError as e:
            raise OSError(e.errno, f'cannot write there ({e.strerror}); nothing written',
                          str(folder)) from None
        names.append(name)
        return folder / name

    try:
        yield put
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for name in names:
        os.replace(stage / name, folder / name)
    stage.rmdir()


def check_folds(n_images: int, folds: int, train_dir: Path) -> None:
    """A fold count the images can be split into (0: no folds), else an error naming
    ``--folds``."""
    if folds and not 2 <= folds <= n_images:
        allowed = f'between 2 and {n_images}, or 0' if n_images >= 2 else '0'
        raise hw3.HW3FormatError(
            f'{train_dir}: {n_images} image{"" if n_images == 1 else "s"} cannot be split into '
            f'{folds} folds (--folds {folds}); give --folds {allowed} for no folds')


def convert(data_root: str | Path, out_dir: str | Path, folds: int = 5, seed: int = 0) -> dict:
    """Write ``train_all.json``, ``fold{k}_{train,val}.json`` and (if the id map exists)
    ``test.json`` to ``out_dir``; return a summary for printing. A data root without ``train/``
    but with the test id map (a checkpoint handed to someone with the test set only) gets
    ``test.json`` alone.

    Nothing is written unless the whole conversion succeeds: the fold count and the output
    folder are checked first, and the files land together (``landing_together``)."""
    start = time.perf_counter()
    data_root, out_dir = Path(data_root), Path(out_dir)
    has_test = (data_root / hw3.TEST_ID_MAP).is_file()
    no_train = not (data_root / 'train').exists() and has_test
    if not no_train:
        check_folds(len(hw3.list_train_samples(data_root)), folds, data_root / 'train')
    created = writable_folder(out_dir)
    try:
        summary = _convert(data_root, out_dir, folds, seed, has_test, no_train)
    except BaseException:
        remove_created(created)
        raise
    return dict(summary, seconds=time.perf_counter() - start)


def _convert(data_root: Path, out_dir: Path, folds: int, seed: int, has_test: bool,
             no_train: bool) -> dict:
    if no_train:
        # no train data to name the classes: classes.txt's, else none (the model brings its own
        # when the test set is predicted or submitted)
        test = build_test_coco(data_root, hw3.read_class_names(data_root) or ())
        with landing_together(out_dir) as put:
            written = [put('test.json', test)]
        return dict(images=0, instances=0, classes=[c['name'] for c in test['categories']],
                    instances_per_class={}, images_without_instances=0,
                    fold_instances_per_class=[], test_images=len(test['images']),
                    written=[str(p) for p in written], no_train=True)
    if has_test:  # checked first: a broken map fails before the long reading of the masks
        hw3.test_image_infos(data_root)
    coco = build_train_coco(data_root)
    names = tuple(c['name'] for c in coco['categories'])
    test = build_test_coco(data_root, names) if has_test else None
    counts = per_image_class_counts(coco)
    fold_counts = []
    with landing_together(out_dir) as put:
        written = [put('train_all.json', coco)]
        if folds:
            for f, rows in enumerate(split_folds(counts, folds, seed)):
                rest = np.setdiff1d(np.arange(len(coco['images'])), rows)
                written.append(put(f'fold{f}_train.json', subset(coco, rest)))
                written.append(put(f'fold{f}_val.json', subset(coco, rows)))
                fold_counts.append(counts[rows].sum(0).tolist())
        if test is not None:
            written.append(put('test.json', test))
    return dict(
        images=len(coco['images']), instances=len(coco['annotations']), classes=list(names),
        instances_per_class=dict(zip(names, counts.sum(0).tolist())),
        images_without_instances=int((counts.sum(1) == 0).sum()),
        fold_instances_per_class=fold_counts,
        test_images=None if test is None else len(test['images']),
        written=[str(p) for p in written], no_train=False)
