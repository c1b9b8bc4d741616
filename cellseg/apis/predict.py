"""Predicting any images: label images for napari/Fiji, class maps, overlays and one CSV.

For each image, with ``<stem>`` its file name without suffix (``<folder>_<stem>`` when two
inputs share a stem, as ``train/<name>/image.tif`` do)::

    <stem>_labels.tif    instance ids 1..N, 0 = background; uint16, uint32 past 65535 instances
    <stem>_classes.tif   class of each pixel: 0 = background, 1..K (uint8)
    <stem>_overlay.png   the image with instance contours coloured by class, and a legend
    <stem>.geojson       QuPath objects: one detection per instance, its outline as a polygon
                         in pixel coordinates, class name and colour, score and area

and for the whole run ``instances.csv``, one row per instance (``CSV_COLUMNS``).

Label image rules. Mask R-CNN masks of neighbouring cells may overlap; a label image cannot, so
the higher score wins the pixel (instances are painted in increasing score order). An instance
left without pixels is dropped, so N may be below the number of detections. Ids follow
decreasing score (id 1 is the most confident) and so do the CSV rows. Area, box and centroid in
the CSV are measured on the label image, so they agree with what a viewer shows, not with the
overlapping raw masks: box = (x, y, w, h) of the pixel extent (COCO convention), centroid = mean
pixel column and row (pixel centres at integer coordinates).

Images are read with ``cellseg.formats.hw3.read_image`` (the training rules: alpha dropped, grey
replicated, 16-bit rescaled) and predicted whole by ``mmdet.apis.inference_detector``; a config
with ``TiledMaskRCNN`` (``cellseg.structures.mask_crops``) tiles large images with no change here.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage

from cellseg.apis.config_helpers import checkpoint_classes, set_classes
from cellseg.formats.hw3 import TIFF_SUFFIXES, HW3FormatError, read_image, tiff_shape
from cellseg.formats.qupath_geojson import geojson_bytes, instances_to_geojson
from cellseg.structures.label_images import class_map, paint_labels
from cellseg.utils.fileio import atomic_write_bytes
from cellseg.visualization.visualize import overlay_instances, palette_for, write_png

IMAGE_SUFFIXES = (*TIFF_SUFFIXES, '.png', '.jpg', '.jpeg')
CSV_NAME = 'instances.csv'
CSV_COLUMNS = ('image', 'instance_id', 'class_id', 'class_name', 'score', 'area', 'bbox_x',
               'bbox_y', 'bbox_w', 'bbox_h', 'centroid_x', 'centroid_y')
# a long run rewrites instances.csv at most this often (and at the end), so a killed run keeps
# the rows of the images already written without rewriting a growing file after every image
CSV_REWRITE_S = 30.0
_GLOB_CHARS = set('*?[')


# ---- inputs -------------------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files named by ``inputs``: files, folders (their images, not recursing) and
    glob patterns (``**`` recurses). Order is kept, duplicates dropped.

    Raises HW3FormatError naming the input for a missing path, a pattern or folder without
    images, a file of another type, or an empty file (checked up front, before a long run).
    """
    found: dict[Path, None] = {}
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if _is_image(p))
            if not images:
                raise HW3FormatError(f'{path}: folder holds no images '
                                     f'({", ".join(IMAGE_SUFFIXES)})')
        elif path.exists():
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                raise HW3FormatError(f'{path}: not an image file (expected one of '
                                     f'{", ".join(IMAGE_SUFFIXES)})')
            images = [path]
        elif _GLOB_CHARS & set(text):
            images = sorted(Path(p) for p in glob.glob(text, recursive=True) if _is_image(Path(p)))
            if not images:
                raise HW3FormatError(f'{text}: pattern matches no images')
        else:
            raise HW3FormatError(f'{path}: no such file or folder')
        for p in images:
            found.setdefault(p, None)
    for p in found:
        _check_readable(p)
    return list(found)


def _check_readable(path: Path) -> None:
    """Catch empty files and broken TIFF headers before any prediction runs (the pixels are
    checked when the image is read)."""
    if path.stat().st_size == 0:
        raise HW3FormatError(f'{path}: file is empty (0 bytes)')
    if path.suffix.lower() in TIFF_SUFFIXES:
        tiff_shape(path)


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A unique output name per input: the file stem, or ``<folder>_<stem>`` for stems shared by
    several inputs (``train/<name>/image.tif``), numbered if still not unique."""
    stem_count = Counter(p.stem for p in paths)
    names = [f'{p.parent.name}_{p.stem}' if stem_count[p.stem] > 1 else p.stem for p in paths]
    name_count = Counter(names)
    seen: Counter = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if name_count[n] == 1 else f'{n}_{seen[n]}')
    return out


# ---- the model ----------------------------------------------------------------------------------

def load_model(config: str | os.PathLike, checkpoint: str | os.PathLike,
               device: str | None = None, score_thr: float | None = None,
               cfg_options: dict | None = None) -> torch.nn.Module:
    """The config's detector with the checkpoint's weights, ready for ``predict_image``.

    The config's ``custom_imports`` (cellseg's modules, the checkpoint loader for torch >= 2.6)
    are imported by ``Config.fromfile``; the heads are sized to the classes the checkpoint
    remembers; ``cfg_options`` override config keys as
    ``--cfg-options`` does. A ``score_thr`` below the config's ``test_cfg.rcnn.score_thr`` lowers
    it, so the threshold asked for is the one applied.
    """
    from mmdet.apis import init_detector
    from mmengine.config import Config

    for path, what in ((config, 'config'), (checkpoint, 'checkpoint')):
        if not Path(path).is_file():
            raise FileNotFoundError(f'{path}: {what} file not found')
    cfg = Config.fromfile(os.fspath(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None  # the checkpoint holds every weight; nothing to fetch
    classes = checkpoint_classes(checkpoint)
    if classes is None:
        raise ValueError(f'{checkpoint}: the checkpoint does not say which classes it was '
                         'trained on (meta.dataset_meta.classes)')
    set_classes(cfg, classes)
    rcnn = cfg.model.get('test_cfg', {}).get('rcnn')
    if score_thr is not None and rcnn is not None and rcnn.get('score_thr', 0) > score_thr:
        rcnn.score_thr = score_thr
    device = device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    return init_detector(cfg, os.fspath(checkpoint), device=device)


def model_classes(model: torch.nn.Module) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and palette stored with the model (from its checkpoint and config)."""
    meta = getattr(model, 'dataset_meta', None) or {}
    names = list(meta.get('classes') or [])
    if not names:
        from cellseg.formats.hw3 import CLASS_NAMES

        names = list(CLASS_NAMES)
    return names, palette_for(meta, len(names))


def predict_image(model: torch.nn.Module, path: str | os.PathLike, score_thr: float = 0.0
                  ) -> tuple[np.ndarray, list, np.ndarray, np.ndarray]:
    """Predict one image file.

    Returns ``(image_rgb, masks, labels, scores)`` for the detections scoring at least
    ``score_thr``: the HxWx3 uint8 image, each mask as a ``MaskCrop`` (the pixels of its
    bounding rectangle and the rectangle's position, so no full-size array per instance), the
    0-based class indices and the scores. This is the one function a different inference
    (tiling, test-time augmentation) replaces.
    """
    from mmdet.apis import inference_detector

    from cellseg.structures.mask_crops import crop_from_rle, crops_from_tensor

    image = read_image(path)
    # mmdet's pipeline expects BGR as OpenCV decodes it; read_image applied the HW3 rules
    result = inference_detector(model, np.ascontiguousarray(image[..., ::-1]))
    inst = result.pred_instances
    scores = inst.scores.detach().cpu().numpy().astype(np.float32)
    keep = np.flatnonzero(scores >= score_thr)
    masks = inst.masks
    if isinstance(masks, torch.Tensor):  # whole-image MaskRCNN: (N, H, W) bool
        crops = crops_from_tensor(masks[torch.from_numpy(keep).to(masks.device)])
    else:  # TiledMaskRCNN on a large image: COCO RLEs
        crops = [crop_from_rle(masks[i]) for i in keep]
    labels = inst.labels.detach().cpu().numpy().astype(np.int64)[keep]
    return image, crops, labels, scores[keep]


# ---- label images -------------------------------------------------------------------------------

def instance_rows(image_name: str, labels: np.ndarray, class_of_id: np.ndarray,
                  score_of_id: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """CSV rows (``CSV_COLUMNS``) of ids 1..N of ``labels``, measured on ``labels`` itself."""
    rows = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:  # ids are contiguous after paint_labels; tolerate gaps in other maps
            continue
        ys, xs = np.nonzero(labels[sl] == i)
        y0, x0 = sl[0].start, sl[1].start
        k = int(class_of_id[i - 1])
        rows.append(dict(
            image=image_name, instance_id=i, class_id=k,
            class_name=class_names[k - 1] if 1 <= k <= len(class_names) else str(k),
            score=round(float(score_of_id[i - 1]), 5), area=int(ys.size),
            bbox_x=x0, bbox_y=y0, bbox_w=sl[1].stop - x0, bbox_h=sl[0].stop - y0,
            centroid_x=round(float(xs.mean()) + x0, 2), centroid_y=round(float(ys.mean()) + y0, 2)))
    return rows


def encode_tiff(array: np.ndarray) -> bytes:
    """TIFF bytes of a 2-D integer map, deflate-compressed (label maps are mostly zeros);
    Fiji, napari and tifffile read it."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, photometric='minisblack', compression='zlib')
    return buf.getvalue()


def csv_bytes(rows: Sequence[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


# ---- one image, a whole run ---------------------------------------------------------------------

@dataclass
class ImageOutputs:
    """What ``write_image_outputs`` wrote for one image."""

    labels: Path
    classes: Path
    overlay: Path
    geojson: Path
    rows: list[dict] = field(default_factory=list)


def write_image_outputs(out_dir: str | Path, name: str, image: np.ndarray, crops: Sequence,
                        labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
                        palette: Sequence[tuple[int, int, int]]) -> ImageOutputs:
    """Label TIFF, class TIFF and overlay PNG of one image's detections (0-based ``labels``), and
    its CSV rows (returned, not written)."""
    out_dir = Path(out_dir)
    ids, index = paint_labels(crops, scores, image.shape[:2])
    class_of_id = np.asarray(labels, np.int64)[index] + 1
    classes = class_map(ids, class_of_id)
    outputs = ImageOutputs(
        labels=atomic_write_bytes(out_dir / f'{name}_labels.tif', encode_tiff(ids)),
        classes=atomic_write_bytes(out_dir / f'{name}_classes.tif', encode_tiff(classes)),
        overlay=write_png(out_dir / f'{name}_overlay.png', overlay_instances(
            image, ids, classes, class_of_id, class_names, palette)),
        geojson=atomic_write_bytes(out_dir / f'{name}.geojson', geojson_bytes(
            instances_to_geojson(ids, [dict(instance_id=i + 1, class_id=int(c), score=float(sc))
                                       for i, (c, sc) in enumerate(
                                           zip(class_of_id, np.asarray(scores)[index]))],
                                 class_names, palette))))
    outputs.rows = instance_rows(name, ids, class_of_id, np.asarray(scores)[index], class_names)
    return outputs


@dataclass
class PredictSummary:
    images: int
    instances: int
    csv: Path
    seconds: float
    per_class: dict[str, int]


def predict_files(model: torch.nn.Module, paths: Sequence[Path], out_dir: str | Path,
                  score_thr: float = 0.5, progress: bool = True) -> PredictSummary:
    """Predict ``paths`` (from ``collect_images``) and write every output into ``out_dir``."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names, palette = model_classes(model)
    csv_path = out_dir / CSV_NAME
    rows: list[dict] = []
    start = last_csv = time.perf_counter()
    for path, name in tqdm(list(zip(paths, output_stems(paths))), desc='predict', unit='image',
                           disable=not progress):
        image, crops, labels, scores = predict_image(model, path, score_thr)
        rows += write_image_outputs(out_dir, name, image, crops, labels, scores, class_names,
                                    palette).rows
        if time.perf_counter() - last_csv > CSV_REWRITE_S:
            atomic_write_bytes(csv_path, csv_bytes(rows))
            last_csv = time.perf_counter()
    atomic_write_bytes(csv_path, csv_bytes(rows))
    per_class = {n: sum(r['class_name'] == n for r in rows) for n in class_names}
    return PredictSummary(len(paths), len(rows), csv_path, time.perf_counter() - start, per_class)
