"""Predicting any images: label images for napari/Fiji, class maps, overlays and one CSV.

For each image, with ``<stem>`` its file name without suffix (``<folder>_<stem>`` when two
inputs share a stem, as ``train/<name>/image.tif`` do)::

    <stem>_labels.tif    instance ids 1..N, 0 = background; uint16, uint32 past 65535 instances
    <stem>_classes.tif   class of each pixel: 0 = background, 1..K (uint8)
    <stem>_overlay.png   the image with instance contours coloured by class, and a legend
    <stem>.geojson       QuPath objects: one detection per instance, its outline as a polygon
                         in pixel coordinates, class name and colour, score and area

and for the whole run ``instances.csv``, one row per instance (``CSV_COLUMNS``), plus
``failed.csv`` (image, error) when some images could not be predicted.

Nothing finished is lost. Each image's rows are appended to ``instances.csv`` as the image
finishes (flushed to disk), then kept in ``.cellseg_predict/rows/<stem>.csv``, which marks the
image done; a rerun of the same run (``cellseg.apis.prediction_folder``: same checkpoint,
threshold and options) skips the images marked done and ends with the ``instances.csv`` an
uninterrupted run writes. An output folder holding another run's outputs is refused unless
``overwrite`` clears them first. An image that cannot be read or predicted is reported and the
run goes on with the others.

Label image rules. Mask R-CNN masks of neighbouring cells may overlap; a label image cannot, so
the higher score wins the pixel (instances are painted in increasing score order). An instance
left without pixels is dropped, so N may be below the number of detections. Ids follow
decreasing score (id 1 is the most confident) and so do the CSV rows. Area, box and centroid in
the CSV are measured on the label image, so they agree with what a viewer shows, not with the
overlapping raw masks: box = (x, y, w, h) of the pixel extent (COCO convention), centroid = mean
pixel column and row (pixel centres at integer coordinates).

Images are read with ``cellseg.formats.images.read_image`` (the training rules: alpha dropped,
grey replicated, other types than uint8 normalised by the percentiles of the model's config)
and predicted by the model's ``CellInferencer`` (mmdet's ``DetInferencer``, in
``cellseg.apis.cell_inferencer``); a config with
``TiledMaskRCNN`` (``cellseg.models.detectors.tiled_mask_rcnn``) tiles large images with no
change here. The model and its config come from the checkpoint (``cellseg.apis.saved_config``).
"""
from __future__ import annotations

import csv
import glob
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage

from cellseg.apis.cell_inferencer import CellInferencer
from cellseg.apis.classes import set_classes
from cellseg.apis.prediction_folder import CSV_NAME, FAILED_NAME, STATE_DIR, append_durably
from cellseg.apis.saved_config import config_from_checkpoint
from cellseg.datasets.cell_dataset import palette_for
from cellseg.engine.checkpoint_loader import read_checkpoint
from cellseg.formats.hw3 import HW3FormatError
from cellseg.formats.image_regions import SLIDE_SUFFIXES
from cellseg.formats.images import PERCENTILES, TIFF_SUFFIXES, read_image, tiff_shape
from cellseg.formats.qupath_geojson import geojson_bytes, instances_to_geojson
from cellseg.structures.crop_masks import CropMasks
from cellseg.structures.label_images import class_map, paint_labels
from cellseg.utils.fileio import atomic_write_bytes
from cellseg.utils.spreadsheet import SafeDictWriter, spreadsheet_safe
from cellseg.visualization import CellLocalVisualizer
from cellseg.visualization.visualize import write_png

IMAGE_SUFFIXES = (*TIFF_SUFFIXES, '.png', '.jpg', '.jpeg', *SLIDE_SUFFIXES)
CSV_COLUMNS = ('image', 'instance_id', 'class_id', 'class_name', 'score', 'area', 'bbox_x',
               'bbox_y', 'bbox_w', 'bbox_h', 'centroid_x', 'centroid_y')
_GLOB_CHARS = set('*?[')


# ---- inputs -------------------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files named by ``inputs``: files, folders (their images, not recursing) and
    glob patterns (``**`` recurses). Order is kept, duplicates dropped.

    Raises HW3FormatError naming the input for a missing path, a pattern or folder without
    images, or a file of another type (checked up front, before a long run). Whether each image
    can be read is ``check_images``'s question.
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
    return list(found)


def check_images(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``paths`` into the images that look readable and ``(path, problem)`` for those
    that do not (empty files, broken TIFF headers; each reported on stderr as it is found),
    before any prediction runs; the pixels are checked when an image is read. Raises the first
    problem when no image is readable."""
    good, bad = [], []
    for p in paths:
        try:
            _check_readable(p)
            good.append(p)
        except (HW3FormatError, OSError) as e:
            bad.append((p, str(e)))
    if not good and bad:
        raise HW3FormatError(bad[0][1] + (f' (and {len(bad) - 1} more unreadable)'
                                          if len(bad) > 1 else ''))
    for _, problem in bad:
        print(f'error: {problem} (skipped)', file=sys.stderr)
    return good, bad


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

def load_model(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
               device: str | None = None, score_thr: float | None = None,
               cfg_options: dict | None = None, amp: bool = False) -> torch.nn.Module:
    """The detector of a checkpoint with its weights, ready for ``predict_image``.

    The config is the one saved in the checkpoint (read as data, never run), or ``config`` when
    given; its ``custom_imports`` (cellseg's modules) are imported. The heads are sized to the
    classes the checkpoint remembers; ``cfg_options`` override config keys as ``--cfg-options``
    does. ``score_thr`` becomes the model's ``test_cfg.rcnn.score_thr``: the box head drops
    detections below it before the mask head runs, so no mask is computed for a detection the
    output would drop (NMS and the top-k of the detections above it do not change), and no
    class cap (``max_per_class``, kept for what COCO's AP counts) applies to a detection the
    output keeps. ``amp``: predict under a mixed-precision autocast (``inference_precision``).
    """
    from mmdet.apis import init_detector
    from mmengine.config import Config

    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f'{checkpoint}: checkpoint file not found')
    if config is not None and not Path(config).is_file():
        raise FileNotFoundError(f'{config}: config file not found')
    saved = read_checkpoint(checkpoint)  # kept for init_detector's load: read once
    classes = ((saved.get('meta') or {}).get('dataset_meta') or {}).get('classes')
    if not classes:
        raise ValueError(f'{checkpoint}: the checkpoint does not say which classes it was '
                         'trained on (meta.dataset_meta.classes)')
    cfg = Config.fromfile(os.fspath(config)) if config else config_from_checkpoint(saved,
                                                                                   checkpoint)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None  # the checkpoint holds every weight; nothing to fetch
    set_classes(cfg, tuple(classes))
    rcnn = cfg.model.get('test_cfg', {}).get('rcnn')
    if score_thr is not None and rcnn is not None:
        rcnn.score_thr = score_thr
        if rcnn.get('max_per_class') is not None:
            rcnn.uncapped_score = min(rcnn.get('uncapped_score', score_thr), score_thr)
    percentiles = _take_reading_percentiles(cfg)
    device = device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    model = init_detector(cfg, os.fspath(checkpoint), device=device)
    model.image_percentiles = percentiles
    model.autocast_dtype = inference_precision(device, amp)
    return model


def inference_precision(device: str, amp: bool) -> torch.dtype | None:
    """The autocast type prediction runs in: ``None`` (float32) unless ``amp``; then float16
    on CUDA and bfloat16 on a CPU that computes it natively. A CPU without native bfloat16
    emulates it, slower than float32, so it predicts in float32 (said on stderr)."""
    from cellseg.engine.optimizers.cpu_amp_optim_wrapper import cpu_has_bf16

    if not amp:
        return None
    if torch.device(device).type == 'cuda':
        return torch.float16
    if cpu_has_bf16():
        return torch.bfloat16
    print('warning: mixed precision asked, but this CPU has no native bfloat16 (no avx512_bf16 '
          'or amx_bf16 flag): predicting in float32', file=sys.stderr)
    return None


def model_classes(model: torch.nn.Module) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and palette stored with the model (from its checkpoint and config;
    ``load_model`` refuses a checkpoint without classes)."""
    meta = getattr(model, 'dataset_meta', None) or {}
    names = list(meta.get('classes') or [])
    if not names:
        raise ValueError('the model has no classes (dataset_meta.classes): load it with '
                         'load_model, which takes them from its checkpoint')
    return names, palette_for(meta, len(names))


def _take_reading_percentiles(cfg) -> tuple[float, float]:
    """The image percentiles of the config's test pipeline (its ``LoadCellImageFromFile``),
    taken out of it: ``CellInferencer`` swaps that step for mmdet's ``LoadImageFromNDArray``,
    which has no such option."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for step in pipeline:
        if step.get('type') == 'LoadCellImageFromFile':
            return tuple(step.pop('percentiles', PERCENTILES))
    return PERCENTILES


def reading_percentiles(model: torch.nn.Module) -> tuple[float, float]:
    """The image percentiles the model was trained with (from the config saved in its
    checkpoint, by ``load_model``), so prediction sees the pixels training saw."""
    return getattr(model, 'image_percentiles', PERCENTILES)


def predict_image(model: torch.nn.Module, path: str | os.PathLike, score_thr: float = 0.0
                  ) -> tuple[np.ndarray, CropMasks, np.ndarray, np.ndarray]:
    """Predict one image file through the model's ``CellInferencer``.

    Returns ``(image_rgb, masks, labels, scores)`` for the detections scoring at least
    ``score_thr``: the HxWx3 uint8 image, the masks as ``CropMasks`` (each the pixels of its
    bounding rectangle and the rectangle's position, so no full-size array per instance), the
    0-based class indices and the scores.
    """
    image = read_image(path, percentiles=reading_percentiles(model))  # a bad file fails first
    (pred,) = CellInferencer.of(model)([image], score_thr=score_thr)['predictions']
    return pred['image'], pred['masks'], pred['labels'], pred['scores']


# ---- label images -------------------------------------------------------------------------------

def instance_rows(image_name: str, labels: np.ndarray, class_of_id: np.ndarray,
                  score_of_id: np.ndarray, class_names: Sequence[str],
                  origin: tuple[int, int] = (0, 0)) -> list[dict]:
    """CSV rows (``CSV_COLUMNS``) of ids 1..N of ``labels``, measured on ``labels`` itself;
    ``origin``: where ``labels`` lies in the image (a window of a large image)."""
    rows = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:  # ids are contiguous after paint_labels; tolerate gaps in other maps
            continue
        ys, xs = np.nonzero(labels[sl] == i)
        y0, x0 = sl[0].start + origin[0], sl[1].start + origin[1]
        k = int(class_of_id[i - 1])
        rows.append(dict(
            image=image_name, instance_id=i, class_id=k,
            class_name=class_names[k - 1] if 1 <= k <= len(class_names) else str(k),
            score=round(float(score_of_id[i - 1]), 5), area=int(ys.size),
            bbox_x=x0, bbox_y=y0, bbox_w=sl[1].stop - sl[1].start,
            bbox_h=sl[0].stop - sl[0].start,
            centroid_x=round(float(xs.mean()) + x0, 2), centroid_y=round(float(ys.mean()) + y0, 2)))
    return rows


def encode_tiff(array: np.ndarray) -> bytes:
    """TIFF bytes of a 2-D integer map, deflate-compressed (label maps are mostly zeros);
    Fiji, napari and tifffile read it."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, photometric='minisblack', compression='zlib')
    return buf.getvalue()


def csv_bytes(rows: Sequence[dict], header: bool = True) -> bytes:
    buf = io.StringIO()
    # image and class names come from the user's files: never read as formulas
    writer = SafeDictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator='\n')
    if header:
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


def write_image_outputs(out_dir: str | Path, name: str, image: np.ndarray, masks: CropMasks,
                        labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
                        palette: Sequence[tuple[int, int, int]]) -> ImageOutputs:
    """Label TIFF, class TIFF and overlay PNG of one image's detections (0-based ``labels``), and
    its CSV rows (returned, not written)."""
    out_dir = Path(out_dir)
    ids, index = paint_labels(masks, scores)
    class_of_id = np.asarray(labels, np.int64)[index] + 1
    classes = class_map(ids, class_of_id)
    outputs = ImageOutputs(
        labels=atomic_write_bytes(out_dir / f'{name}_labels.tif', encode_tiff(ids)),
        classes=atomic_write_bytes(out_dir / f'{name}_classes.tif', encode_tiff(classes)),
        # the label image just painted, drawn as the training hook's visualizer draws detections
        overlay=write_png(out_dir / f'{name}_overlay.png', CellLocalVisualizer.get_instance(
            'cellseg_predict').draw_label_image(image, ids, class_of_id, class_names, palette)),
        geojson=atomic_write_bytes(out_dir / f'{name}.geojson', geojson_bytes(
            instances_to_geojson(ids, [dict(instance_id=i + 1, class_id=int(c), score=float(sc))
                                       for i, (c, sc) in enumerate(
                                           zip(class_of_id, np.asarray(scores)[index]))],
                                 class_names, palette))))
    outputs.rows = instance_rows(name, ids, class_of_id, np.asarray(scores)[index], class_names)
    return outputs


@dataclass
class PredictSummary:
    images: int  # predicted by this run
    skipped: int  # done by an earlier run of the same prediction
    failed: list[tuple[Path, str]]
    instances: int  # rows of instances.csv, skipped images included
    csv: Path
    seconds: float
    per_class: dict[str, int]


def predict_files(model: torch.nn.Module, paths: Sequence[Path], out_dir: str | Path,
                  score_thr: float = 0.5, progress: bool = True,
                  failed: Sequence[tuple[Path, str]] = (),
                  large_image_pixels: int | None = None) -> PredictSummary:
    """Predict ``paths`` (from ``collect_images``) into ``out_dir`` (see ``prepare_output_dir``
    for a folder that is not new), image by image: an image that fails is reported in
    ``failed.csv`` (with those already ``failed``, e.g. by ``check_images``) and the others go
    on; images an earlier run of the same prediction finished are skipped. Slides, pyramidal
    TIFFs and TIFFs of more than ``large_image_pixels`` (default
    ``predict_large.LARGE_IMAGE_PIXELS``) are read tile by tile (``cellseg.apis.predict_large``).
    """
    from tqdm import tqdm

    # here, not at the top: it imports mmdet's models, which the loaded model has imported
    from cellseg.apis import predict_large

    out_dir = Path(out_dir)
    rows_dir = out_dir / STATE_DIR / 'rows'
    rows_dir.mkdir(parents=True, exist_ok=True)
    class_names, palette = model_classes(model)
    csv_path = out_dir / CSV_NAME
    names = output_stems(paths)
    done = {n for n in names if (rows_dir / f'{n}.csv').is_file()}
    # the finished images' rows first, as the appends below continue from them
    atomic_write_bytes(csv_path, csv_bytes([]) + b''.join(
        (rows_dir / f'{n}.csv').read_bytes() for n in names if n in done))
    failed = list(failed)
    checked_out = len(failed)
    start = time.perf_counter()
    todo = [(p, n) for p, n in zip(paths, names, strict=True) if n not in done]
    for path, name in tqdm(todo, desc='predict', unit='image', disable=not progress):
        try:
            if predict_large.reads_from_disk(path, large_image_pixels
                                             or predict_large.LARGE_IMAGE_PIXELS):
                # its rows are appended to instances.csv as its cells finish
                data = predict_large.predict_large_image(
                    model, path, out_dir, name, score_thr, csv_path, class_names, palette,
                    reading_percentiles(model), instance_rows, csv_bytes, progress)
            else:
                image, masks, labels, scores = predict_image(model, path, score_thr)
                data = csv_bytes(write_image_outputs(out_dir, name, image, masks, labels, scores,
                                                     class_names, palette).rows, header=False)
                append_durably(csv_path, data)
        except Exception as e:  # one bad image must not stop the others; reported below
            if os.environ.get('CELLSEG_DEBUG', '') not in ('', '0'):
                raise
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            failed.append((path, message if message.startswith(str(path)) else
                           f'{path}: {message}'))
            print(f'error: {failed[-1][1]}', file=sys.stderr)
            continue
        # the image counts as done once its rows are in both places; killed in between, it is
        # predicted again and instances.csv rewritten from these files
        atomic_write_bytes(rows_dir / f'{name}.csv', data)
    # the same file an uninterrupted run writes: every finished image's rows in input order
    atomic_write_bytes(csv_path, csv_bytes([]) + b''.join(
        (rows_dir / f'{n}.csv').read_bytes() for n in names
        if (rows_dir / f'{n}.csv').is_file()))
    failed_path = out_dir / FAILED_NAME
    if failed:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator='\n')
        writer.writerow(('image', 'error'))
        writer.writerows((spreadsheet_safe(os.fspath(p)), spreadsheet_safe(m)) for p, m in failed)
        atomic_write_bytes(failed_path, buf.getvalue().encode())
    elif failed_path.exists():
        failed_path.unlink()
    with open(csv_path, newline='') as f:
        all_rows = list(csv.DictReader(f))
    per_class = {n: sum(r['class_name'] == n for r in all_rows) for n in class_names}
    return PredictSummary(len(todo) - len(failed) + checked_out, len(done), failed,
                          len(all_rows), csv_path, time.perf_counter() - start, per_class)
