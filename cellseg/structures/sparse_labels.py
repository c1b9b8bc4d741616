"""The label images of many images at once, kept as runs of pixels.

The nuclei metrics compare a ground-truth label image with a predicted one for every image of a
data set. Painted one image at a time, the per-image overhead of a hundred small array
operations was most of their cost on 256 px images, and pixel by pixel the cost follows the
cells' areas. Here every image of a batch shares one array per quantity, and an instance is its
runs down the image columns, as COCO RLEs already hold it: the work follows the runs, and only
where masks overlap are pixels looked at one by one.

``paint_runs`` is cellseg's one painter of label images (``cellseg.structures.label_images``'s
``paint_labels`` calls it): the higher score wins an overlapped pixel (equal scores: the earlier
mask), instances left without pixels are dropped, and ids follow decreasing score.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils

from cellseg.structures.crop_masks import CropMasks, is_rle, mask_size
from cellseg.structures.rle import foreground_runs, label_map_runs, rle_string_counts


@dataclass(frozen=True)
class SparseLabels:
    """Instance label images of ``n`` images as runs of foreground pixels.

    Images are stacked column by column, the order of COCO RLEs: pixel (y, x) of image k is
    position ``pixel_start[k] + x * heights[k] + y``. Instances are numbered 0..N-1 image after
    image (image k's are ``inst_start[k]:inst_start[k + 1]``, in label-id order). Run j covers
    positions ``starts[j]`` to ``starts[j] + lengths[j] - 1`` and belongs to instance
    ``owner[j]``; runs are sorted by start and never overlap. ``source[i]`` says what instance
    i was: the index of its mask in the painter's input, or its label value."""

    heights: np.ndarray
    pixel_start: np.ndarray
    inst_start: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    owner: np.ndarray
    source: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.heights)

    @property
    def n_instances(self) -> int:
        return int(self.inst_start[-1])

    def image_of_instance(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_images), np.diff(self.inst_start))

    def areas(self) -> np.ndarray:
        return np.bincount(self.owner, weights=self.lengths,
                           minlength=self.n_instances).astype(np.int64)

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, owner)`` of every foreground pixel, run after run."""
        return run_pixels(self.starts, self.lengths), np.repeat(self.owner, self.lengths)

    def centroids(self, areas: np.ndarray | None = None) -> np.ndarray:
        """(x, y) = mean pixel (column, row) of each instance, N x 2 (HoVer-Net's
        ``inst_centroid``); ``areas`` when already known."""
        n = self.n_instances
        area = self.areas() if areas is None else areas
        image = self.image_of_instance()[self.owner]
        height = self.heights[image]
        start = self.starts - self.pixel_start[image]
        col, row0 = np.divmod(start, height)
        last_col = (start + self.lengths - 1) // height
        row1 = row0 + self.lengths
        owner = self.owner
        pieces = last_col - col + 1
        if (pieces > 1).any():  # runs going on past a column's end: one piece per column
            run = np.repeat(np.arange(owner.size), pieces)
            first = np.repeat(np.cumsum(pieces) - pieces, pieces)
            piece_col = col[run] + np.arange(run.size) - first
            row0 = np.where(piece_col == col[run], row0[run], 0)
            row1 = np.where(piece_col == last_col[run], (start + self.lengths)[run]
                            - piece_col * height[run], height[run])
            col, owner = piece_col, owner[run]
        length = row1 - row0
        col_sum = np.bincount(owner, weights=col * length, minlength=n)
        row_sum = np.bincount(owner, weights=(row0 + row1 - 1) * length / 2, minlength=n)
        return np.stack([col_sum, row_sum], axis=1) / np.maximum(area, 1)[:, None]


def run_pixels(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions of every pixel of runs (``lengths`` > 0), run after run: a running sum of
    steps of 1 that jumps at each run's first pixel."""
    step = np.ones(int(lengths.sum()), np.int64)
    if step.size:
        jump = starts.astype(np.int64)
        jump[1:] -= starts[:-1] + lengths[:-1] - 1
        step[np.cumsum(lengths) - lengths] = jump
    return np.cumsum(step)


def image_layout(shapes: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(heights, pixel_start)`` of images of ``shapes`` (height, width) stacked as in
    ``SparseLabels``."""
    hw = np.asarray(shapes, np.int64).reshape(-1, 2)
    return hw[:, 0].copy(), np.concatenate([[0], np.cumsum(hw[:, 0] * hw[:, 1])])


def _compressed(masks: Sequence, shape: tuple[int, int], name: str) -> list:
    """The compressed ``counts`` of each mask (COCO RLE, any form, or HxW array) of one image,
    every mask checked to be of ``shape``."""
    if masks and all(type(m) is dict for m in masks):  # the usual case: no per-mask checks
        sizes = np.array([m['size'] for m in masks], np.int64).reshape(len(masks), -1)
        counts = [m['counts'] for m in masks]
        if (sizes.shape[1] == 2 and (sizes == shape).all()
                and not any(type(c) is list for c in counts)):
            return counts
    out = []
    for i, m in enumerate(masks):
        if mask_size(m) != shape:
            raise ValueError(f'{name}: mask {i} has shape {mask_size(m)}, expected {shape}')
        if not is_rle(m):
            m = mask_utils.encode(np.asfortranarray(np.asarray(m).astype(np.uint8)))
        elif isinstance(m['counts'], list):
            m = mask_utils.frPyObjects(dict(m), *shape)
        out.append(m['counts'])
    return out


def _resolve_overlaps(starts: np.ndarray, lengths: np.ndarray, rank: np.ndarray
                      ) -> tuple[np.ndarray, ...]:
    """Runs (sorted by start) of masks that may overlap each other, made disjoint: the lowest
    ``rank`` keeps a pixel. Runs overlapping no other run pass as they are; each cluster of
    overlapping ones (a contiguous span of positions) is painted pixel by pixel into one small
    buffer and cut into runs again. Returns (starts, lengths, rank) sorted by start."""
    ends = starts + lengths
    reach = np.maximum.accumulate(ends)
    # a cluster of runs begins where a run starts past every earlier run's end
    new = np.ones(starts.size, bool)
    new[1:] = starts[1:] >= reach[:-1]
    cluster = np.cumsum(new) - 1
    alone = (np.bincount(cluster) == 1)[cluster]
    if alone.all():
        return starts, lengths, rank
    t_start, t_length, t_rank = starts[~alone], lengths[~alone], rank[~alone]
    t_cluster = cluster[~alone]
    first = np.flatnonzero(np.concatenate([[True], t_cluster[1:] != t_cluster[:-1]]))
    span_start = t_start[first]
    span = np.maximum.reduceat(t_start + t_length, first) - span_start
    offset = np.cumsum(span) - span
    index = np.repeat(np.arange(first.size), np.diff(np.append(first, t_start.size)))
    buf = np.full(int(span.sum()), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(buf, run_pixels(t_start - span_start[index] + offset[index], t_length),
                  np.repeat(t_rank, t_length))
    cut = np.ones(buf.size, bool)
    cut[1:] = buf[1:] != buf[:-1]
    cut[offset] = True
    run_start = np.flatnonzero(cut)
    span_of = np.searchsorted(offset, run_start, side='right') - 1
    starts = np.concatenate([starts[alone], run_start - offset[span_of] + span_start[span_of]])
    lengths = np.concatenate([lengths[alone], np.diff(np.append(run_start, buf.size))])
    rank = np.concatenate([rank[alone], buf[run_start]])
    order = np.argsort(starts, kind='stable')
    return starts[order], lengths[order], rank[order]


def paint_masks(masks: Sequence[Sequence], scores: Sequence[np.ndarray],
                shapes: Sequence[tuple[int, int]], names: Sequence[str] | None = None
                ) -> SparseLabels:
    """The label images of the masks of ``len(shapes)`` images, painted by score
    (``paint_runs``).

    ``masks[k]``: image k's masks (COCO RLEs, compressed or not, or HxW arrays of
    ``shapes[k]``), ``scores[k]`` theirs. ``source`` indexes the masks of all images in order
    (image 0's first). ``names[k]`` names image k in errors (a mask of another size, an RLE that
    does not cover its image or holds a negative run)."""
    names = names or [f'image {k}' for k in range(len(shapes))]
    heights, pixel_start = image_layout(shapes)
    per_image = np.array([len(m) for m in masks], np.int64)
    strings = [c for k, m in enumerate(masks)
               for c in _compressed(m, tuple(int(v) for v in shapes[k]), names[k])]
    counts, owner = rle_string_counts(strings)
    image_of_mask = np.repeat(np.arange(len(shapes)), per_image)
    n_masks = len(strings)
    covered = np.bincount(owner, weights=counts, minlength=n_masks)
    size = (pixel_start[1:] - pixel_start[:-1])[image_of_mask]
    bad = np.flatnonzero((covered != size) | (np.bincount(owner, weights=counts < 0,
                                                         minlength=n_masks) > 0))
    if bad.size:
        k = int(image_of_mask[bad[0]])
        h, w = (int(v) for v in shapes[k])
        raise ValueError(f'{names[k]}: the RLE of mask {bad[0] - per_image[:k].sum()} does not '
                         f'cover its {h}x{w} image with non-negative runs')
    start, length, mask = foreground_runs(counts, owner, n_masks)
    start = start + pixel_start[image_of_mask[mask]]
    return paint_runs(start, length, mask, scores, per_image, heights, pixel_start)


def crop_runs(masks: CropMasks) -> tuple[np.ndarray, ...]:
    """``(starts, lengths, mask)``: the runs down the columns of their image of ``masks``, each
    crop's pixels read once, column by column. A crop reaching outside the image raises
    ValueError."""
    height, width = masks.height, masks.width
    crops = masks.crops
    kept = [i for i, c in enumerate(crops) if c.pixels.size]
    bad = [i for i in kept if crops[i].y0 < 0 or crops[i].x0 < 0 or crops[i].y1 > height
           or crops[i].x1 > width]
    if bad:
        c = crops[bad[0]]
        raise ValueError(f'mask {bad[0]} (rows {c.y0}..{c.y1 - 1}, columns {c.x0}..{c.x1 - 1}) '
                         f'reaches outside its {height}x{width} image')
    if not kept:
        return (np.zeros(0, np.int64),) * 3
    flat = np.concatenate([crops[i].pixels.ravel(order='F') for i in kept])
    ph = np.array([crops[i].pixels.shape[0] for i in kept], np.int64)
    pw = np.array([crops[i].pixels.shape[1] for i in kept], np.int64)
    base = np.cumsum(ph * pw) - ph * pw
    # a run ends at the end of its crop's column: mark where every column starts
    col_first = np.repeat(base, pw) + (np.arange(pw.sum()) - np.repeat(np.cumsum(pw) - pw, pw)
                                       ) * np.repeat(ph, pw)
    new_col = np.zeros(flat.size + 1, bool)
    new_col[col_first] = True
    new_col[-1] = True
    before = np.concatenate([[False], flat[:-1]]) & ~new_col[:-1]
    after = np.append(flat[1:], False) & ~new_col[1:]
    starts = np.flatnonzero(flat & ~before)
    ends = np.flatnonzero(flat & ~after) + 1
    crop = np.searchsorted(base, starts, side='right') - 1
    col, row = np.divmod(starts - base[crop], ph[crop])
    y0 = np.array([crops[i].y0 for i in kept], np.int64)
    x0 = np.array([crops[i].x0 for i in kept], np.int64)
    return ((x0[crop] + col) * height + y0[crop] + row, ends - starts,
            np.asarray(kept, np.int64)[crop])


def paint_runs(starts: np.ndarray, lengths: np.ndarray, mask: np.ndarray,
               scores: Sequence[np.ndarray], per_image: np.ndarray, heights: np.ndarray,
               pixel_start: np.ndarray) -> SparseLabels:
    """The one painter: label images of masks given as runs, by score.

    Run j covers ``lengths[j]`` pixels from position ``starts[j]`` of the stacked images
    (``image_layout``) and belongs to mask ``mask[j]``; masks are numbered image after image,
    ``per_image[k]`` of them in image k, ``scores[k]`` theirs. The higher score wins a pixel,
    equal scores the earlier mask; a mask left without pixels is dropped, and each image's
    instances follow decreasing score (``source``: their mask numbers)."""
    n_images = len(per_image)
    n_masks = int(np.sum(per_image))
    image_of_mask = np.repeat(np.arange(n_images), per_image)
    # painting order: image by image, then decreasing score, equal scores in input order
    flat_scores = np.concatenate([np.asarray(s, np.float64).ravel() for s in scores]
                                 + [np.zeros(0)])
    if flat_scores.size != n_masks:
        raise ValueError(f'{n_masks} masks and {flat_scores.size} scores')
    order = np.lexsort((np.arange(n_masks), -flat_scores, image_of_mask))
    rank = np.empty(n_masks, np.int64)
    rank[order] = np.arange(n_masks)
    by_start = np.argsort(starts, kind='stable')
    starts, lengths, run_rank = _resolve_overlaps(starts[by_start], lengths[by_start],
                                                  rank[mask[by_start]])
    kept = np.flatnonzero(np.bincount(run_rank, minlength=n_masks))  # ranks holding pixels
    inst_of_rank = np.zeros(n_masks, np.int64)
    inst_of_rank[kept] = np.arange(kept.size)
    inst_start = np.concatenate([[0], np.cumsum(np.bincount(image_of_mask[order[kept]],
                                                            minlength=n_images))])
    return SparseLabels(heights, pixel_start, inst_start, starts, lengths,
                        inst_of_rank[run_rank], order[kept])


def label_image_of(labels: SparseLabels, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Image k of ``labels`` (of ``shape``) as an HxW array: instance i of the image is id
    i + 1, 0 is background; uint16, or uint32 past 65535 instances."""
    height, width = (int(v) for v in shape)
    n = int(labels.inst_start[k + 1] - labels.inst_start[k])
    out = np.zeros(height * width, np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32)
    lo = labels.pixel_start[k]
    a, b = np.searchsorted(labels.starts, [lo, labels.pixel_start[k + 1]])
    lengths = labels.lengths[a:b]
    out[run_pixels(labels.starts[a:b] - lo, lengths)] = np.repeat(
        labels.owner[a:b] - labels.inst_start[k] + 1, lengths)
    return np.ascontiguousarray(out.reshape(width, height).T)  # stacked column by column


def rle_images(rles: Sequence[Sequence], shapes: Sequence[tuple[int, int]],
               names: Sequence[str] | None = None) -> SparseLabels:
    """``paint_masks`` with the later mask winning an overlap, as painting them in order
    would (ground-truth annotations, which should not overlap at all)."""
    return paint_masks(rles, [np.arange(len(r), dtype=np.float64) for r in rles], shapes, names)


def label_images(images: Sequence[np.ndarray]) -> SparseLabels:
    """``SparseLabels`` of 2-D instance label images (integer ids, 0 = background); instances
    follow increasing id and ``source`` holds the ids."""
    heights, pixel_start = image_layout([np.shape(a) for a in images])
    starts, lengths, owner, source, inst_start = [], [], [], [], [0]
    for k, a in enumerate(images):
        ids, own, run_starts, run_lengths = label_map_runs(a)
        starts.append(run_starts + pixel_start[k])
        lengths.append(run_lengths)
        owner.append(own + inst_start[-1])
        source.append(ids)
        inst_start.append(inst_start[-1] + ids.size)
    starts, lengths, owner = (np.concatenate(v + [np.zeros(0, np.int64)]).astype(np.int64)
                              for v in (starts, lengths, owner))
    order = np.argsort(starts, kind='stable')
    return SparseLabels(heights, pixel_start, np.array(inst_start, np.int64), starts[order],
                        lengths[order], owner[order],
                        np.concatenate(source) if source else np.zeros(0, np.int64))
