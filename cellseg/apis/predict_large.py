"""Predicting images larger than memory (whole-slide TIFFs): tiles read from disk, cells merged
across tile borders as ``TiledMaskRCNN`` merges them, outputs written as the tiles finish.

``cellseg.apis.predict.predict_files`` sends an image here when ``reads_from_disk`` says so:
more than ``LARGE_IMAGE_PIXELS`` pixels, a pyramidal TIFF (whole-slide files are), or an SVS or
NDPI slide. Memory then follows the tile, not the image:

- Each tile of ``TiledMaskRCNN``'s grid (``tile_cfg``: its size and overlap; the tiled
  recipe's values for a model without one) is read with its overlap from the file
  (``cellseg.formats.image_regions``; for other types than uint8 the percentile rule's limits
  come from a strided sample of the whole image, see there), preprocessed and batched as
  ``tiled_predict`` does, and predicted by ``MaskRCNN.predict``.
- Cells are merged by ``merge_tile_detections`` itself, on the tiles in memory. Its decision
  about a detection depends only on the detections it can be made one cell with (same class,
  another tile, mask intersection over the smaller mask >= ``merge_thr``), chained: a connected
  component of that relation, a cell's copies in the tiles that overlap. After each row of
  tiles, the components that cannot reach a tile still to come are decided, exactly as one
  merge of the whole image would decide them, and leave memory; the others wait for the next
  row.
- A kept cell is *finished* once every detection overlapping it is decided: its pixels in the
  label image (the higher score wins a pixel, as in ``cellseg.structures.label_images``) are
  then final. Finished cells get their instance ids, their ``instances.csv`` rows (appended
  to the run's CSV as they finish, durably) and their GeoJSON features (appended to a part
  file, assembled into ``<stem>.geojson`` when the image is done).

No cell is dropped without a word: a tile returning the model's ``test_cfg.rcnn.max_per_img``
detections is logged, as ``TiledMaskRCNN`` logs it, and ``tile_cfg.max_per_img`` (a cap on a
whole image's merged cells) does not apply, since cells are written before the image is whole.

Outputs of such an image (beside the run's ``instances.csv``)::

    <stem>_labels.tif    tiled BigTIFF, uint32 ids 1..N, written band by band at the end
    <stem>_classes.tif   tiled BigTIFF, uint8 class of each pixel
    <stem>.geojson       the QuPath FeatureCollection, as for any image

No overlay PNG: a whole-slide overlay is as large as the slide; open the label image or the
GeoJSON over the slide in QuPath or napari instead. Ids differ from the in-memory path's (which
sorts the whole image by score): they follow the order cells finish, which is row by row of
tiles, by decreasing score within each group. CSV rows, areas, boxes, centroids and polygons are
measured on the label image as for any image.

Killed and rerun (the same prediction, ``cellseg.apis.prediction_folder``), an image resumes
from its tiles already predicted: each tile's detections are kept in
``.cellseg_predict/large/<stem>/tiles/`` (written atomically), and the rerun replays the merge
from them (no model run) before predicting the rest, so its outputs are byte for byte those of an
uninterrupted run.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from mmdet.models.detectors import MaskRCNN
from mmdet.structures import DetDataSample
from mmengine.logging import print_log
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cellseg.apis.prediction_folder import STATE_DIR, append_durably
from cellseg.formats.image_regions import (
    SLIDE_SUFFIXES,
    open_regions,
    percentile_limits,
    region_rgb,
)
from cellseg.formats.images import TIFF_SUFFIXES, tiff_shape
from cellseg.formats.qupath_geojson import instances_to_geojson
from cellseg.models.detectors.tiled_mask_rcnn import (
    TileConfig,
    merged_tile_index,
    tile_grid,
    tile_starts,
)
from cellseg.structures.crop_masks import CropMasks, MaskCrop
from cellseg.structures.detections import Detections
from cellseg.structures.label_images import paint_labels
from cellseg.utils.fileio import atomic_write_bytes

# Above this many pixels an image is read tile by tile from disk. The in-memory path holds the
# uint8 image, its float32 tensor and the model's padded copy, about 30 bytes a pixel: 64 Mpx
# (8000 x 8000) is about 2 GB, so the 3 GiB a 2-core machine leaves a prediction is not reached
LARGE_IMAGE_PIXELS = 64_000_000
# For a model without tile_cfg (plain MaskRCNN configs): the tiled recipe's tiles,
# configs/cell_r50_scratch_dense_tiled.py, where each value's reason is given
DEFAULT_TILE_CFG = dict(size=512, overlap=128, border_margin=2, merge_thr=0.5, batch_size=4)
# TIFF tiles of the label and class images: 512 px is what QuPath and napari pyramids use, and
# a band of them is 512 rows of the image in memory while writing
LABEL_TILE = 512
LARGE_STATE = 'large'


# ---- which images, which tiles ------------------------------------------------------------------

def reads_from_disk(path: str | os.PathLike, max_pixels: int = LARGE_IMAGE_PIXELS) -> bool:
    """Whether ``path`` is predicted tile by tile from disk: a slide (``SLIDE_SUFFIXES``), a
    pyramidal TIFF, or a TIFF of more than ``max_pixels`` pixels. A small TIFF stored in tiles
    is not: decoding it whole is cheap and the in-memory path also draws its overlay."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES:
        return False
    height, width = tiff_shape(path)
    if height * width > max_pixels:
        return True
    with tifffile.TiffFile(path) as tif:
        return len(tif.series[0].levels) > 1


def tile_config(model: torch.nn.Module) -> TileConfig:
    """The model's ``tile_cfg`` (``TiledMaskRCNN``), else ``DEFAULT_TILE_CFG``."""
    cfg = getattr(model, 'tile_cfg', None)
    return cfg if isinstance(cfg, TileConfig) else TileConfig(**DEFAULT_TILE_CFG)


# ---- detections on disk -------------------------------------------------------------------------

def _pack_crops(masks: CropMasks) -> dict[str, np.ndarray]:
    crops = masks.crops
    shapes = np.array([c.pixels.shape for c in crops], np.int64).reshape(-1, 2)
    bits = [np.ascontiguousarray(c.pixels).ravel() for c in crops if c.pixels.size]
    return dict(crop_y0=np.array([c.y0 for c in crops], np.int64),
                crop_x0=np.array([c.x0 for c in crops], np.int64), crop_shape=shapes,
                crop_bits=np.packbits(np.concatenate(bits)) if bits else np.zeros(0, np.uint8))


def _unpack_crops(data, height: int, width: int) -> CropMasks:
    shapes = data['crop_shape']
    sizes = shapes[:, 0] * shapes[:, 1]
    flat = np.unpackbits(data['crop_bits'], count=int(sizes.sum())).view(bool)
    ends = np.cumsum(sizes)
    return CropMasks.from_crops(
        [MaskCrop(flat[e - n:e].reshape(h, w), int(y0), int(x0)) if n else
         MaskCrop(np.zeros((0, 0), bool), 0, 0)
         for y0, x0, (h, w), n, e in zip(data['crop_y0'], data['crop_x0'], shapes, sizes, ends)],
        height, width)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _save_detections(path: Path, dets: Detections) -> None:
    atomic_write_bytes(path, _npz_bytes(bboxes=dets.bboxes, scores=dets.scores,
                                        labels=dets.labels, **_pack_crops(dets.masks)))


def _load_detections(path: Path, height: int, width: int) -> Detections:
    with np.load(path) as data:
        return Detections(data['bboxes'].astype(np.float32), data['scores'].astype(np.float32),
                          data['labels'].astype(np.int64), _unpack_crops(data, height, width))


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write a file too large to hold as bytes
    (``atomic_write_bytes`` takes bytes); renamed over ``path`` once written and synced."""
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- predicting tiles ---------------------------------------------------------------------------

def _predict_batch(model: torch.nn.Module, regions, batch: Sequence[tuple[int, int, int, int]],
                   limits) -> list[Detections]:
    """The detections of a batch of tiles in image coordinates: each tile read from disk as the
    BGR uint8 the test pipeline hands the model, preprocessed by the model's own
    ``data_preprocessor`` (which pads the batch to its largest tile, rounded to the pad divisor,
    with the pad value: ``tiled_predict``'s batch) and predicted by ``MaskRCNN.predict``."""
    inputs = [torch.from_numpy(region_rgb(regions, y0, x0, y1, x1, limits, bgr=True)
                               .transpose(2, 0, 1).copy()) for y0, x0, y1, x1 in batch]
    dtype = getattr(model, 'autocast_dtype', None)  # load_model's mixed precision, if asked
    device_type = next(model.parameters()).device.type
    with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
        data = model.data_preprocessor(dict(inputs=inputs), False)
        x = data['inputs']
        ph, pw = x.shape[2:]
        samples = [DetDataSample(metainfo=dict(
            img_shape=(y1 - y0, x1 - x0), ori_shape=(y1 - y0, x1 - x0), scale_factor=(1.0, 1.0),
            batch_input_shape=(ph, pw), pad_shape=(ph, pw), tile=(y0, x0, y1, x1)))
            for y0, x0, y1, x1 in batch]
        results = MaskRCNN.predict(model, x, samples, rescale=False)
    cap = (model.test_cfg.get('rcnn') or {}).get('max_per_img')
    for (y0, x0, y1, x1), r in zip(batch, results):
        if cap is not None and len(r.pred_instances) >= cap:  # no cell lost without a word
            print_log(f'{regions.path}: the tile at rows {y0}:{y1}, columns {x0}:{x1} returned '
                      f'{cap} detections, the most test_cfg.rcnn.max_per_img allows: cells '
                      'there may be missing (raise model.test_cfg.rcnn.max_per_img)',
                      logger='current', level=logging.WARNING)
    return [Detections.from_instances(r.pred_instances, (y1 - y0, x1 - x0), (y0, x0),
                                      (regions.height, regions.width))
            for (y0, x0, y1, x1), r in zip(batch, results)]


# ---- merging and finishing cells as the rows of tiles end ---------------------------------------

def _overlap_pairs(a: np.ndarray, b: np.ndarray, chunk: int = 2048
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of extents ``a[i]`` and ``b[j]`` (y0 x0 y1 x1) that intersect, the
    strict test ``merge_tile_detections`` uses; in chunks, so memory stays small."""
    out_i, out_j = [], []
    for s in range(0, len(a), chunk):
        e = a[s:s + chunk]
        hit = ((e[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < e[:, None, 2])
               & (e[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < e[:, None, 3]))
        i, j = np.nonzero(hit)
        out_i.append(i + s)
        out_j.append(j)
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


class _Cells:
    """Kept cells waiting to be finished or still needed by a neighbour being finished."""

    def __init__(self, height: int, width: int) -> None:
        self.masks = CropMasks.from_crops([], height, width)
        self.scores = np.zeros(0, np.float32)
        self.labels = np.zeros(0, np.int64)
        self.seq = np.zeros(0, np.int64)  # order of decision: breaks ties of equal scores
        self.ext = np.zeros((0, 4), np.int64)
        self.finished = np.zeros(0, bool)

    def add(self, dets: Detections, seq: np.ndarray) -> None:
        self.masks = CropMasks.cat([self.masks, dets.masks])
        self.scores = np.concatenate([self.scores, dets.scores])
        self.labels = np.concatenate([self.labels, dets.labels])
        self.seq = np.concatenate([self.seq, seq])
        self.ext = np.concatenate([self.ext, dets.extents()])
        self.finished = np.concatenate([self.finished, np.zeros(len(dets), bool)])

    def keep(self, mask: np.ndarray) -> None:
        self.masks = self.masks[np.flatnonzero(mask)]
        for name in ('scores', 'labels', 'seq', 'ext', 'finished'):
            setattr(self, name, getattr(self, name)[mask])


@dataclass
class FinishedCells:
    """Cells of a window (``origin``, ``shape``) in order of decision: those ``finished``
    and the kept cells meeting them (which can win some of their pixels); masks in the window's
    frame."""

    masks: CropMasks
    scores: np.ndarray
    labels: np.ndarray
    seq: np.ndarray
    finished: np.ndarray
    origin: tuple[int, int]
    shape: tuple[int, int]


class LargeImageMerger:
    """The merge and finishing of one image's cells as rows of tiles end (module doc).

    ``add(tile, dets)`` takes each tile's detections in grid order; ``end_row(row)`` decides what
    can be decided once every tile of rows <= ``row`` is in, and returns the cells finished, for
    ``emit``."""

    def __init__(self, height: int, width: int, cfg: TileConfig, score_thr: float) -> None:
        self.height, self.width, self.cfg, self.score_thr = height, width, cfg, score_thr
        self.tiles = tile_grid(height, width, cfg.size, cfg.overlap)
        self.ys = tile_starts(height, cfg.size, cfg.overlap)
        self.xs = tile_starts(width, cfg.size, cfg.overlap)
        self.rects = np.array(self.tiles, np.int64).reshape(-1, 4)
        self.pending: dict[int, Detections] = {}  # undecided detections by tile
        self.cells = _Cells(height, width)
        self.next_seq = 0

    def row_of(self, tile: int) -> int:
        return tile // len(self.xs)

    def add(self, tile: int, dets: Detections) -> None:
        if len(dets):
            self.pending[tile] = dets

    def _neighbours(self, tiles: Sequence[int]) -> list[int]:
        """``tiles`` and every tile whose rectangle meets one of them."""
        i, j = _overlap_pairs(self.rects[list(tiles)], self.rects)
        return sorted(set(np.asarray(tiles)[i].tolist()) | set(j.tolist()))

    def _decide(self, next_top: float) -> np.ndarray:
        """Merge the pending detections; keep in ``cells`` the kept ones of the components that
        no tile to come (rows starting at ``next_top``) can reach, drop their others. Returns
        the extents of the detections left undecided."""
        order = sorted(self.pending)
        per_tile = [self.pending[t] for t in order]
        dets = Detections.concat(per_tile, self.height, self.width)
        tile_of = np.repeat(np.asarray(order, np.int64), [len(d) for d in per_tile])
        ext = dets.extents()
        # components: the pairs the merge can make one cell (same class, different tiles, mask
        # intersection over the smaller mask >= merge_thr; a pair with an empty mask, which it
        # compares by boxes, counts as linked), chained. Linking every pair of overlapping
        # extents would chain the cells of a dense image along the tiles' overlap strips into
        # one component as large as the image, and nothing would be decided before the end.
        i, j = _overlap_pairs(ext, ext)
        pair = (i < j) & (tile_of[i] != tile_of[j]) & (dets.labels[i] == dets.labels[j])
        i, j = i[pair], j[pair]
        crops = dets.masks.crops
        area = dets.masks.areas.astype(np.int64)
        smaller = np.minimum(area[i], area[j])
        inter = np.array([crops[a].overlap(crops[b]) if m else 0
                          for a, b, m in zip(i.tolist(), j.tolist(), smaller.tolist())], np.int64)
        link = smaller == 0
        link[~link] = inter[~link] / smaller[~link] >= self.cfg.merge_thr
        n = len(dets)
        _, component = connected_components(coo_matrix(
            (np.ones(int(link.sum()), bool), (i[link], j[link])), shape=(n, n)), directed=False)
        reaches_on = np.zeros(component.max() + 1 if n else 0, bool)
        reaches_on[component[ext[:, 2] > next_top]] = True
        undecided = reaches_on[component]
        # one merge of the pending tiles, with every tile they meet (empty when not pending),
        # so "lies in another tile" and "cut by an inner border" read as for the whole image
        near = self._neighbours(order)
        empty = Detections.empty(self.height, self.width)
        index = merged_tile_index(
            [self.tiles[t] for t in near], [self.pending.get(t, empty) for t in near],
            self.height, self.width, self.cfg.border_margin, self.cfg.merge_thr, None)
        # the merge numbers the near tiles' detections; only pending tiles have any
        first = dict(zip(order, np.cumsum([0] + [len(d) for d in per_tile]).tolist()))
        in_dets = np.concatenate([np.zeros(0, np.int64)] + [
            first[t] + np.arange(len(self.pending[t])) for t in near if t in self.pending])
        kept = in_dets[index]  # by decreasing score
        kept = kept[~undecided[kept] & (dets.scores[kept] >= self.score_thr)]
        self.cells.add(dets.select(kept), np.arange(self.next_seq, self.next_seq + len(kept)))
        self.next_seq += len(kept)
        self.pending = {}
        for t in order:
            rest = np.flatnonzero(undecided & (tile_of == t))
            if rest.size:
                self.pending[t] = dets.select(rest)
        return ext[undecided]

    def end_row(self, row: int) -> FinishedCells | None:
        """After the last tile of ``row``: decide, and return the newly finished cells with
        every kept cell that meets one, or None when no cell finished."""
        next_top = self.ys[row + 1] if row + 1 < len(self.ys) else np.inf
        undecided = self._decide(next_top) if self.pending else np.zeros((0, 4), np.int64)
        cells = self.cells
        waiting = np.flatnonzero(~cells.finished)
        blocked = np.zeros(len(cells.scores), bool)
        blocked[waiting[np.unique(_overlap_pairs(cells.ext[waiting], undecided)[0])]] = True
        done = np.flatnonzero(~cells.finished & ~blocked)
        if not done.size:
            return None
        # the finished cells and every kept cell meeting one: all the cells that can win one
        # of their pixels; painted in order of decision so that equal scores break ties alike
        near = np.union1d(done, _overlap_pairs(cells.ext[done], cells.ext)[1])
        near = near[np.argsort(cells.seq[near], kind='stable')]
        ext = cells.ext[near]
        y0, x0 = int(ext[:, 0].min()), int(ext[:, 1].min())
        window = (int(ext[:, 2].max()) - y0, int(ext[:, 3].max()) - x0)
        masks = cells.masks[near].placed(-y0, -x0, *window)
        result = FinishedCells(masks, cells.scores[near], cells.labels[near], cells.seq[near],
                               np.isin(near, done), (y0, x0), window)
        cells.finished[done] = True
        # a finished cell stays only while a cell still waiting meets it
        finished, waiting = np.flatnonzero(cells.finished), np.flatnonzero(~cells.finished)
        keep = ~cells.finished
        keep[finished[np.unique(_overlap_pairs(cells.ext[finished], cells.ext[waiting])[0])]] = True
        cells.keep(keep)
        return result


# ---- outputs ------------------------------------------------------------------------------------

class _Outputs:
    """The streamed outputs of one image: CSV rows (into the run's CSV and a part file), GeoJSON
    features (a part file) and the finished cells (chunks for the label image)."""

    def __init__(self, state: Path, name: str, run_csv: Path, class_names: Sequence[str],
                 palette: Sequence[tuple[int, int, int]], measure: Callable, to_csv: Callable
                 ) -> None:
        self.state, self.name, self.run_csv = state, name, run_csv
        self.class_names, self.palette = list(class_names), list(palette)
        self.measure, self.to_csv = measure, to_csv
        self.rows_part = state / 'rows.part'
        self.features_part = state / 'features.part'
        (state / 'cells').mkdir(exist_ok=True)
        # a replay after a kill writes these again from the start, identically
        for part in (self.rows_part, self.features_part):
            part.write_bytes(b'')
        for old in (state / 'cells').glob('*.npz'):
            old.unlink()
        self.chunks: list[tuple[Path, int, int]] = []  # cells file, first and last row + 1
        self.count = 0

    def finish(self, window: FinishedCells) -> None:
        """Label the finished cells of ``LargeImageMerger.end_row``'s window, give them ids,
        and append their rows, features and pixels."""
        masks, scores, labels = window.masks, window.scores, window.labels
        y0, x0 = window.origin
        ids, index = paint_labels(masks, scores)
        done_ids = index[window.finished[index]]  # finished cells with pixels, by decreasing score
        gid = np.zeros(len(masks) + 1, np.uint32)
        new = np.arange(self.count + 1, self.count + 1 + done_ids.size, dtype=np.uint32)
        gid[done_ids + 1] = new
        lut = np.zeros(len(index) + 1, np.uint32)
        lut[1:] = gid[index + 1]
        labels_image = lut[ids]  # only the finished cells, with their ids in the whole image
        del ids
        self.count += done_ids.size
        if not done_ids.size:
            return
        top = int(new[-1])
        class_of_id = np.zeros(top, np.int64)
        score_of_id = np.zeros(top, np.float32)
        class_of_id[new - 1] = labels[done_ids] + 1
        score_of_id[new - 1] = scores[done_ids]
        rows = self.measure(self.name, labels_image, class_of_id, score_of_id,
                            self.class_names, origin=(y0, x0))
        data = self.to_csv(rows, header=False)
        append_durably(self.run_csv, data)
        append_durably(self.rows_part, data)
        collection = instances_to_geojson(
            labels_image, [dict(instance_id=int(i), class_id=int(class_of_id[i - 1]),
                                score=float(score_of_id[i - 1])) for i in new],
            self.class_names, self.palette)
        features = [_shift_feature(f, x0, y0) for f in collection['features']]
        text = ','.join(json.dumps(f, separators=(',', ':'), ensure_ascii=False,
                                   allow_nan=False) for f in features)
        append_durably(self.features_part, (b',' if self.features_part.stat().st_size else b'')
                       + text.encode('utf-8'))
        # in the image's frame: as large as needed to hold them (only the crops are stored)
        kept = masks[done_ids]
        kept = kept.placed(y0, x0, y0 + kept.height, x0 + kept.width)
        ext = kept.extents()
        chunk = self.state / 'cells' / f'{len(self.chunks):06d}.npz'
        atomic_write_bytes(chunk, _npz_bytes(ids=new, classes=class_of_id[new - 1],
                                             scores=scores[done_ids], seq=window.seq[done_ids],
                                             **_pack_crops(kept)))
        self.chunks.append((chunk, int(ext[:, 0].min()), int(ext[:, 2].max())))

    def write_geojson(self, path: Path) -> None:
        """``<stem>.geojson``: the features between the FeatureCollection's brackets, the bytes
        ``geojson_bytes`` writes for an image predicted in memory."""
        with _atomic_path(path) as tmp, open(tmp, 'wb') as out:
            out.write(b'{"type":"FeatureCollection","features":[')
            with open(self.features_part, 'rb') as part:
                while block := part.read(1 << 24):
                    out.write(block)
            out.write(b']}')

    def bands(self, height: int, width: int, band: int) -> Iterator[tuple[int, np.ndarray,
                                                                         np.ndarray]]:
        """``(top, ids, classes)`` of the label and class image, ``band`` rows at a time,
        painted from the finished cells that meet each band (the higher score wins a pixel;
        ids are final, so the band is the whole image's)."""
        loaded: dict[Path, tuple] = {}
        for top in range(0, height, band):
            bottom = min(top + band, height)
            for path, y_lo, y_hi in self.chunks:
                if y_lo < bottom and top < y_hi and path not in loaded:
                    with np.load(path) as data:
                        loaded[path] = (data['ids'], data['classes'], data['scores'],
                                        data['seq'], _unpack_crops(data, height, width), y_hi)
            for path in [p for p, v in loaded.items() if v[-1] <= top]:
                del loaded[path]  # bands go down: a chunk ending above this one is done
            parts = list(loaded.values())
            gids, classes, scores, seqs = (np.concatenate([np.zeros(0)] + [p[n] for p in parts])
                                           for n in range(4))
            in_band = CropMasks.cat([CropMasks.from_crops([], height, width)]
                                    + [p[4] for p in parts]).crop(
                np.array([0, top, width, bottom]))
            # in order of decision, as when the cells finished: equal scores break ties alike
            order = np.argsort(seqs.astype(np.int64), kind='stable')
            ids, index = paint_labels(in_band[order], scores[order])
            lut_id = np.zeros(len(index) + 1, np.uint32)
            lut_id[1:] = gids.astype(np.uint32)[order][index]
            lut_class = np.zeros(len(index) + 1, np.uint8)
            lut_class[1:] = classes.astype(np.uint8)[order][index]
            yield top, lut_id[ids], lut_class[ids]


def _shift_feature(feature: dict, dx: int, dy: int) -> dict:
    """A GeoJSON feature of a window moved to the whole image (integer pixel corners)."""
    geometry = feature['geometry']
    polygons = ([geometry['coordinates']] if geometry['type'] == 'Polygon'
                else geometry['coordinates'])
    moved = [[[[x + dx, y + dy] for x, y in ring] for ring in polygon] for polygon in polygons]
    geometry['coordinates'] = moved[0] if geometry['type'] == 'Polygon' else moved
    return feature


def _write_tiled_tiff(path: Path, height: int, width: int, dtype, bands: Iterator[np.ndarray]
                      ) -> None:
    """A tiled, deflated BigTIFF written from bands of ``LABEL_TILE`` rows, tile by tile."""
    def tiles() -> Iterator[np.ndarray]:
        for band in bands:
            for x in range(0, width, LABEL_TILE):
                yield band[:, x:x + LABEL_TILE]

    with _atomic_path(path) as tmp:
        tifffile.imwrite(tmp, tiles(), shape=(height, width), dtype=dtype,
                         tile=(LABEL_TILE, LABEL_TILE), bigtiff=True, compression='zlib',
                         photometric='minisblack')


# ---- one image ----------------------------------------------------------------------------------

def _image_state(state: Path, meta: dict) -> dict:
    """The image's state folder, cleared when it belongs to another file or tiling."""
    meta_path = state / 'image.json'
    if meta_path.is_file():
        saved = json.loads(meta_path.read_text())
        if {k: v for k, v in saved.items() if k != 'limits'} == meta:
            return saved
    if state.exists():
        import shutil

        shutil.rmtree(state)
    (state / 'tiles').mkdir(parents=True)
    return {}


def predict_large_image(model: torch.nn.Module, path: str | os.PathLike, out_dir: str | Path,
                        name: str, score_thr: float, run_csv: Path, class_names: Sequence[str],
                        palette: Sequence[tuple[int, int, int]],
                        percentiles: tuple[float, float], measure: Callable,
                        to_csv: Callable, progress: bool = True) -> bytes:
    """Predict one large image into ``out_dir`` (module doc): ``<name>_labels.tif``,
    ``<name>_classes.tif``, ``<name>.geojson``, and its CSV rows appended to ``run_csv`` as cells
    finish. Returns all its CSV rows (no header), for the run's record of finished images.

    ``cellseg.apis.predict`` passes what every image shares with it (it imports this module, so
    this one cannot import it): the model's classes, palette and reading percentiles, and its
    row measure (``instance_rows``, with an ``origin``) and CSV writer (``csv_bytes``)."""
    from tqdm import tqdm

    path, out_dir = Path(path), Path(out_dir)
    cfg = tile_config(model)
    state = out_dir / STATE_DIR / LARGE_STATE / name
    stat = path.stat()
    with open_regions(path) as regions:
        height, width = regions.height, regions.width
        meta = dict(image=os.path.abspath(path), bytes=stat.st_size, mtime_ns=stat.st_mtime_ns,
                    height=height, width=width, tile_cfg=vars(cfg),
                    percentiles=list(percentiles))
        saved = _image_state(state, meta)
        if 'limits' in saved:
            limits = saved['limits']
        else:
            limits = percentile_limits(regions, tuple(meta['percentiles']))
            atomic_write_bytes(state / 'image.json', json.dumps(
                dict(meta, limits=limits), sort_keys=True).encode())
        merger = LargeImageMerger(height, width, cfg, score_thr)
        outputs = _Outputs(state, name, run_csv, class_names, palette, measure, to_csv)
        tiles = merger.tiles
        last_of_row = {merger.row_of(t): t for t in range(len(tiles))}
        done = [(state / 'tiles' / f'{t:06d}.npz').is_file() for t in range(len(tiles))]
        bar = tqdm(total=len(tiles), desc=name, unit='tile', disable=not progress,
                   initial=0, smoothing=0.05)
        for start in range(0, len(tiles), cfg.batch_size):
            batch = list(range(start, min(start + cfg.batch_size, len(tiles))))
            files = [state / 'tiles' / f'{t:06d}.npz' for t in batch]
            if all(done[t] for t in batch):
                per_tile = [_load_detections(f, height, width) for f in files]
            else:
                for dets, f in zip(_predict_batch(model, regions, [tiles[t] for t in batch],
                                                  limits), files):
                    _save_detections(f, dets)
                # what is merged is what a resumed run reads back: the same bytes either way
                per_tile = [_load_detections(f, height, width) for f in files]
            for t, dets in zip(batch, per_tile):
                merger.add(t, dets)
                if last_of_row[merger.row_of(t)] == t:
                    finished = merger.end_row(merger.row_of(t))
                    if finished is not None:
                        outputs.finish(finished)
            bar.update(len(batch))
        bar.close()
    outputs.write_geojson(out_dir / f'{name}.geojson')
    _write_tiled_tiff(out_dir / f'{name}_labels.tif', height, width, np.uint32,
                      (ids for _, ids, _ in outputs.bands(height, width, LABEL_TILE)))
    _write_tiled_tiff(out_dir / f'{name}_classes.tif', height, width, np.uint8,
                      (classes for _, _, classes in outputs.bands(height, width, LABEL_TILE)))
    return outputs.rows_part.read_bytes()
