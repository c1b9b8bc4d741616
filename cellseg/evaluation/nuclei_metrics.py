"""The metrics nuclei papers report: PQ (= DQ x SQ), AJI, Dice, per-class PQ and detection F1.

Definitions follow HoVer-Net (github.com/vqdang/hover_net: ``metrics/stats_utils.py`` and
``compute_stats.py``); per-class PQ follows CoNIC (TissueImageAnalytics/CoNIC ``compute_stats.py``)
and PanNuke (TissueImageAnalytics/PanNuke-metrics ``run.py``). HoVer-Net compares full-image
masks pair by pair; here the runs of pixels of both label images (``SparseLabels``, a whole
batch of images at once) meet in one sorted pass, and one joint histogram of (gt, pred) pairs
gives every intersection: the cost follows the runs, whatever the instance and image counts.

Edge cases, where the reference code divides by zero or crashes:

* ground truth and prediction both empty: PQ, DQ, SQ, AJI and Dice are 1.0, and so is
  ``f1_detection`` of a data set without any instance (nothing to find and nothing found is a
  correct prediction; HoVer-Net raises ZeroDivisionError or returns NaN);
* one side empty: all five are 0.0, which is what HoVer-Net's formulas give;
* SQ with no match is 0.0, as HoVer-Net's ``sum_iou / (tp + 1e-6)``; otherwise SQ is the exact
  mean IoU of the matches (no epsilon);
* a class with no instance in ground truth nor prediction over the whole data set, the type
  accuracy when no pair was made and ``mpq_per_image`` when no gt instance has a class are NaN:
  there is nothing to score, and any number would bias a mean. ``mpq`` skips NaN classes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from cellseg.structures.sparse_labels import SparseLabels, label_images


def _check_labels(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f'{name}: expected a 2-D label image, got shape {a.shape}')
    if a.dtype.kind == 'b':
        return a.astype(np.int64)
    if a.dtype.kind not in 'iu':
        raise ValueError(f'{name}: label images must hold integers, got dtype {a.dtype}')
    if a.dtype.kind == 'i' and a.size and a.min() < 0:
        raise ValueError(f'{name}: label images must not hold negative values')
    return a


def sparse_labels_of(images: Sequence[np.ndarray], name: str) -> SparseLabels:
    """``SparseLabels`` of instance label images (0 = background), checked; ``source`` holds
    the labels, instances follow increasing label (HoVer-Net's ``remap_label(by_size=False)``
    order, so AJI's argmax ties agree). ``name`` names the images in errors."""
    return label_images([_check_labels(a, name) for a in images])


@dataclass
class Overlap:
    """Everything the metrics need from the (gt, pred) label images of ``n_images`` images.

    Instances are numbered image after image (``SparseLabels``); ``pair_gt``, ``pair_pred``,
    ``inter`` list the pairs that share pixels, ``pair_image`` their image. Centroids are
    (x, y) = mean pixel (column, row), HoVer-Net's ``inst_centroid``."""

    gt: SparseLabels
    pred: SparseLabels
    gt_area: np.ndarray
    pred_area: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_image: np.ndarray
    inter: np.ndarray
    union: np.ndarray
    iou: np.ndarray
    gt_centroid: np.ndarray
    pred_centroid: np.ndarray

    @property
    def n_images(self) -> int:
        return self.gt.n_images

    def per_image(self, side: str, values: np.ndarray | None = None) -> np.ndarray:
        """Count (or sum of ``values``) of the gt or pred instances of each image."""
        labels = self.gt if side == 'gt' else self.pred
        return np.bincount(labels.image_of_instance(), weights=values, minlength=self.n_images)


def overlap_of(gt: SparseLabels, pred: SparseLabels,
               gt_area: np.ndarray | None = None, gt_centroid: np.ndarray | None = None
               ) -> Overlap:
    """The sparse (gt, pred) contingency table of every image of ``gt`` and ``pred`` (the same
    images); ``gt_area``, ``gt_centroid`` when already known (a cached ground truth)."""
    if gt.n_images != pred.n_images or not np.array_equal(gt.pixel_start, pred.pixel_start):
        raise ValueError('gt and pred label images differ in number or shape')
    n_gt, n_pred = np.diff(gt.inst_start), np.diff(pred.inst_start)
    gt_area = gt.areas() if gt_area is None else gt_area
    pred_area = pred.areas()
    # both sides are disjoint runs sorted by start: the gt runs a pred run meets are those
    # ending after its start and starting before its end
    gt_end, pred_end = gt.starts + gt.lengths, pred.starts + pred.lengths
    lo = np.searchsorted(gt_end, pred.starts, side='right')
    met = np.maximum(np.searchsorted(gt.starts, pred_end, side='left') - lo, 0)
    pr = np.repeat(np.arange(pred.starts.size), met)
    gr = np.repeat(lo, met) + np.arange(pr.size) - np.repeat(np.cumsum(met) - met, met)
    shared = (np.minimum(gt_end[gr], pred_end[pr]) - np.maximum(gt.starts[gr], pred.starts[pr]))
    g, p = gt.owner[gr], pred.owner[pr]
    image = gt.image_of_instance()[g]
    # one dense joint histogram over every image's G x P table while that is small
    cells = n_gt * n_pred
    base = np.cumsum(cells) - cells
    code = base[image] + (g - gt.inst_start[image]) * n_pred[image] + p - pred.inst_start[image]
    if cells.sum() <= 4 * code.size + 2 ** 20:
        joint = np.bincount(code, weights=shared, minlength=int(cells.sum()))
        codes = np.flatnonzero(joint)
        inter = joint[codes].astype(np.int64)
    else:
        codes, where = np.unique(code, return_inverse=True)
        inter = np.bincount(where, weights=shared, minlength=codes.size).astype(np.int64)
    # images without a table cell share their base with the next one: 'right' picks the last
    pair_image = np.searchsorted(base, codes, side='right') - 1
    local_g, local_p = np.divmod(codes - base[pair_image], np.maximum(n_pred[pair_image], 1))
    pair_gt, pair_pred = local_g + gt.inst_start[pair_image], local_p + pred.inst_start[pair_image]
    union = gt_area[pair_gt] + pred_area[pair_pred] - inter
    return Overlap(gt, pred, gt_area, pred_area, pair_gt, pair_pred, pair_image, inter, union,
                   inter / np.maximum(union, 1),
                   gt.centroids(gt_area) if gt_centroid is None else gt_centroid,
                   pred.centroids(pred_area))


def overlap_table(gt_labels: np.ndarray, pred_labels: np.ndarray) -> Overlap:
    """The ``Overlap`` of one pair of instance label images (0 = background)."""
    gt = sparse_labels_of([gt_labels], 'gt_labels')
    pred = sparse_labels_of([pred_labels], 'pred_labels')
    if np.shape(gt_labels) != np.shape(pred_labels):
        raise ValueError(f'gt_labels {np.shape(gt_labels)} and pred_labels '
                         f'{np.shape(pred_labels)} differ in shape')
    return overlap_of(gt, pred)


def _pq_from_counts(tp: float, fp: float, fn: float, sum_iou: float) -> tuple[float, ...]:
    """(pq, dq, sq) from match counts; 1.0 when there is nothing on either side."""
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = sum_iou / tp if tp else 0.0
    return dq * sq, dq, sq


def _match_counts(ov: Overlap, match_iou: float, gt_sel: np.ndarray | None = None,
                  pred_sel: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Per image: (tp, fp, fn, sum of matched IoUs), optionally among selected gt / pred
    instances only."""
    keep = ov.iou > match_iou
    if gt_sel is not None and pred_sel is not None:
        keep &= gt_sel[ov.pair_gt] & pred_sel[ov.pair_pred]
    n_gt = ov.per_image('gt', None if gt_sel is None else gt_sel.astype(np.float64))
    n_pred = ov.per_image('pred', None if pred_sel is None else pred_sel.astype(np.float64))
    tp = np.bincount(ov.pair_image[keep], minlength=ov.n_images)
    sum_iou = np.bincount(ov.pair_image[keep], weights=ov.iou[keep], minlength=ov.n_images)
    return tp, n_pred - tp, n_gt - tp, sum_iou


# metrics/stats_utils.py, get_fast_pq: pairs are (gt, pred) with IoU > match_iou; at
# match_iou >= 0.5 a gt overlaps at most one pred by more than half its union, so the pairing is
# unique and maximal without the Munkres step; DQ = tp / (tp + fp/2 + fn/2), SQ = mean matched IoU.
# metrics/stats_utils.py, get_fast_aji (MoNuSeg's AJI): each gt takes the pred of highest IoU
# (a pred may serve several gts); the sum of those intersections is divided by the sum of their
# unions plus the areas of gts without any overlap and of preds no gt took.
def _aji(ov: Overlap) -> np.ndarray:
    """AJI of each image; 1.0 where both sides are empty."""
    # HoVer-Net ranks by inter / (union + 1e-6); keeping its epsilon keeps its choice between
    # near-equal IoUs, and np.argmax's first maximum is the lowest pred id (lexsort's last key).
    order = np.lexsort((ov.pair_pred, -ov.inter / (ov.union + 1.0e-6), ov.pair_gt))
    first = np.ones(order.size, bool)
    first[1:] = ov.pair_gt[order[1:]] != ov.pair_gt[order[:-1]]
    best = order[first]
    n, image = ov.n_images, ov.pair_image[best]
    taken = np.unique(ov.pair_pred[best])
    total_union = (np.bincount(image, weights=ov.union[best], minlength=n)
                   + ov.per_image('gt', ov.gt_area.astype(np.float64))
                   - np.bincount(image, weights=ov.gt_area[ov.pair_gt[best]], minlength=n)
                   + ov.per_image('pred', ov.pred_area.astype(np.float64))
                   - np.bincount(ov.pred.image_of_instance()[taken],
                                 weights=ov.pred_area[taken], minlength=n))
    total_inter = np.bincount(image, weights=ov.inter[best], minlength=n)
    empty = total_union == 0  # no instance on either side
    return np.where(empty, 1.0, total_inter / np.where(empty, 1, total_union))


# metrics/stats_utils.py, get_dice_1: Dice of foreground (any instance) against background.
def _dice(ov: Overlap) -> np.ndarray:
    """Dice of each image; 1.0 where both foregrounds are empty."""
    denom = (ov.per_image('gt', ov.gt_area.astype(np.float64))
             + ov.per_image('pred', ov.pred_area.astype(np.float64)))
    # every pixel in both foregrounds lies in exactly one overlapping pair
    inter = np.bincount(ov.pair_image, weights=ov.inter, minlength=ov.n_images)
    return np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1), 1.0)


def _rows(ov: Overlap, match_iou: float) -> list[dict[str, float]]:
    """``image_metrics`` of every image of ``ov``."""
    tp, fp, fn, sum_iou = _match_counts(ov, match_iou)
    aji, dice = _aji(ov), _dice(ov)
    n_gt, n_pred = np.diff(ov.gt.inst_start), np.diff(ov.pred.inst_start)
    rows = []
    for i in range(ov.n_images):
        pq, dq, sq = _pq_from_counts(int(tp[i]), int(fp[i]), int(fn[i]), float(sum_iou[i]))
        rows.append(dict(pq=pq, dq=dq, sq=sq, tp=int(tp[i]), fp=int(fp[i]), fn=int(fn[i]),
                         aji=float(aji[i]), dice=float(dice[i]), n_gt=int(n_gt[i]),
                         n_pred=int(n_pred[i])))
    return rows


def _check_match_iou(match_iou: float) -> None:
    if match_iou < 0.5:
        raise ValueError('match_iou below 0.5 needs a Munkres pairing, which is not implemented')


def image_metrics(gt_labels: np.ndarray, pred_labels: np.ndarray, match_iou: float = 0.5
                  ) -> dict[str, float]:
    """Class-agnostic metrics of one image: ``pq``, ``dq``, ``sq`` (pairs at IoU > match_iou),
    ``aji``, ``dice`` and the counts ``tp``, ``fp``, ``fn``, ``n_gt``, ``n_pred``."""
    _check_match_iou(match_iou)
    return _rows(overlap_table(gt_labels, pred_labels), match_iou)[0]


def _instance_classes(labels: SparseLabels, side: str, classes: np.ndarray | Mapping[int, int],
                      shape: tuple[int, ...]) -> np.ndarray:
    """Class of each instance of the one image of ``labels`` (from ``sparse_labels_of``).

    ``classes``: a class map of the image (pixel value = class of that pixel's instance) or a
    mapping {instance label: class}. From a map an instance takes its most frequent nonzero
    class (0 only when all its pixels are 0; ties: the lowest class): the rule of HoVer-Net's
    ``models/hovernet/post_proc.py`` (``process``) for ``inst_type``."""
    if isinstance(classes, Mapping):
        return np.array([int(classes.get(int(i), 0)) for i in labels.source], np.int64)
    cmap = _check_labels(classes, f'{side}_classes')
    if cmap.shape != shape:
        raise ValueError(f'{side}_classes: shape {cmap.shape}, its label image has {shape}')
    positions, owner = labels.pixels()
    cmap = np.ravel(cmap, order='F')[positions].astype(np.intp)
    n, k = labels.n_instances, int(cmap.max(initial=0)) + 1
    votes = np.bincount(owner * k + cmap, minlength=n * k).reshape(-1, k)[:, 1:]
    cls = np.argmax(votes, axis=1) + 1 if k > 1 else np.zeros(n, np.intp)
    return np.where(votes.sum(axis=1) > 0, cls, 0)


# metrics/stats_utils.py, pair_coordinates: Munkres on the Euclidean distances of all centroids,
# then pairs farther apart than `radius` are dropped (compute_stats.py uses radius 12).
def pair_centroids(gt_xy: np.ndarray, pred_xy: np.ndarray, radius: float = 12.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pairs Mx2 of (gt index, pred index), unpaired gt indices, unpaired pred indices)."""
    rows = cols = np.zeros(0, np.intp)
    # HoVer-Net puts a dummy point at (0, 0) in an empty side, which could pair with a real one
    # near the corner; an empty side here simply pairs nothing.
    if len(gt_xy) and len(pred_xy):
        dist = cdist(gt_xy, pred_xy)
        rows, cols = linear_sum_assignment(dist)
        ok = dist[rows, cols] <= radius
        rows, cols = rows[ok], cols[ok]
    free_gt, free_pred = np.ones(len(gt_xy), bool), np.ones(len(pred_xy), bool)
    free_gt[rows] = free_pred[cols] = False
    return np.stack([rows, cols], axis=1), np.flatnonzero(free_gt), np.flatnonzero(free_pred)


class NucleiMetrics:
    """Accumulates images and summarises them the way the nuclei papers do.

    Per image, then averaged over images (HoVer-Net ``compute_stats.py`` ``run_nuclei_inst_stat``):
    ``pq``, ``dq``, ``sq``, ``aji``, ``dice``. Pooled over the data set (``run_nuclei_type_stat``):
    ``f1_detection`` (centroids within ``radius`` px paired per image, counts summed) and, with
    class maps, ``type_accuracy`` and ``f1_class<c>`` = 2 tp / (2 tp + 2 fp + 2 fn + fp_d + fn_d)
    (HoVer-Net's weights ``w = [2, 2, 1, 1]``; tp/fp/fn of class c among paired instances,
    fp_d/fn_d its unpaired instances).

    Per-class PQ (class maps given): gt instances of class c matched against predicted instances
    of class c only. ``pq_class<c>`` and ``mpq`` are CoNIC's mPQ+: tp, fp, fn and matched IoUs of
    each class are summed over the data set, PQ taken, then ``mpq`` = mean over classes. So an
    image without class c just adds its predicted c instances as false positives, and no
    per-image 0/0 arises. ``mpq_per_image`` is PanNuke's: PQ of each class present in an image's
    ground truth (absent classes skipped, their false positives unpunished), averaged per image,
    then over the images having any.

    ``classes``: the class ids to report; default every nonzero class met in ground truth or
    prediction (HoVer-Net takes the gt types only, but a class only predicted is worth its 0).
    """

    def __init__(self, classes: Sequence[int] | None = None, match_iou: float = 0.5,
                 radius: float = 12.0) -> None:
        _check_match_iou(match_iou)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.match_iou, self.radius = match_iou, radius
        self.rows: list[dict[str, float]] = []
        self._class_counts: list[dict[int, tuple[int, int, int, float]]] = []
        self._gt_class_present: list[set[int]] = []
        self._det: list[tuple[np.ndarray, ...]] = []
        self._with_classes: bool | None = None

    def add(self, gt_labels: np.ndarray, pred_labels: np.ndarray,
            gt_classes: np.ndarray | Mapping[int, int] | None = None,
            pred_classes: np.ndarray | Mapping[int, int] | None = None) -> dict[str, float]:
        """Add one image; returns its row (``image_metrics`` keys).

        ``gt_classes`` / ``pred_classes``: a class map of the label image's shape (pixel value =
        class id 1..K of that pixel's instance, 0 = background) or a mapping {instance label:
        class id}. Give both or neither, and the same for every image."""
        if (gt_classes is None) != (pred_classes is None):
            raise ValueError('give both gt_classes and pred_classes, or neither')
        ov = overlap_table(gt_labels, pred_labels)
        classes = None
        if gt_classes is not None:
            shape = np.shape(gt_labels)
            classes = (_instance_classes(ov.gt, 'gt', gt_classes, shape),
                       _instance_classes(ov.pred, 'pred', pred_classes, shape))
        return self.add_overlap(ov, *(classes or (None, None)))[0]

    def add_overlap(self, ov: Overlap, gt_classes: np.ndarray | None = None,
                    pred_classes: np.ndarray | None = None) -> list[dict[str, float]]:
        """Add every image of ``ov``, with the class (1..K; 0 = none) of each gt and pred
        instance or without classes; returns their rows."""
        with_classes = gt_classes is not None
        if with_classes != (pred_classes is not None):
            raise ValueError('give both gt_classes and pred_classes, or neither')
        if self._with_classes is not None and with_classes != self._with_classes:
            raise ValueError('give class maps for every image or for none')
        self._with_classes = with_classes
        rows = _rows(ov, self.match_iou)
        n = ov.n_images
        if with_classes:
            gt_cls = np.asarray(gt_classes, np.int64)
            pred_cls = np.asarray(pred_classes, np.int64)
            seen = np.union1d(gt_cls[gt_cls > 0], pred_cls[pred_cls > 0]).tolist()
            per_class = {c: _match_counts(ov, self.match_iou, gt_cls == c, pred_cls == c)
                         for c in seen}
            for i in range(n):
                # a class counts in an image when either side has it (tp + fn = its gt)
                counts = {c: (int(tp[i]), int(fp[i]), int(fn[i]), float(s[i]))
                          for c, (tp, fp, fn, s) in per_class.items() if tp[i] + fp[i] + fn[i]}
                self._class_counts.append(counts)
                self._gt_class_present.append({c for c, k in counts.items() if k[0] + k[2]})
        else:
            gt_cls = np.zeros(int(ov.gt.inst_start[-1]), np.int64)
            pred_cls = np.zeros(int(ov.pred.inst_start[-1]), np.int64)
        g0, p0 = ov.gt.inst_start, ov.pred.inst_start
        for i in range(n):
            gc, pc = gt_cls[g0[i]:g0[i + 1]], pred_cls[p0[i]:p0[i + 1]]
            pairs, un_gt, un_pred = pair_centroids(ov.gt_centroid[g0[i]:g0[i + 1]],
                                                   ov.pred_centroid[p0[i]:p0[i + 1]],
                                                   self.radius)
            self._det.append((gc[pairs[:, 0]], pc[pairs[:, 1]], gc[un_gt], pc[un_pred]))
        self.rows.extend(rows)
        return rows

    def summary(self) -> dict[str, float]:
        """``n_images``, ``pq``, ``dq``, ``sq``, ``aji``, ``dice``, ``f1_detection``; with class
        maps also ``mpq``, ``mpq_per_image``, ``type_accuracy``, ``pq_class<c>``,
        ``f1_class<c>`` for each class c."""
        if not self.rows:
            raise ValueError('no image was added')
        out: dict[str, float] = {'n_images': len(self.rows)}
        for key in ('pq', 'dq', 'sq', 'aji', 'dice'):
            out[key] = float(np.mean([r[key] for r in self.rows]))
        pt, pp, ut, up = (np.concatenate(parts) for parts in zip(*self._det))
        tp_d, fp_d, fn_d = len(pt), len(up), len(ut)
        denom = 2 * tp_d + fp_d + fn_d
        out['f1_detection'] = 2 * tp_d / denom if denom else 1.0
        if not self._with_classes:
            return out
        classes = self.classes or sorted({c for cnt in self._class_counts for c in cnt})
        pq_class = {}
        for c in classes:
            tp, fp, fn, s = (sum(col) for col in zip(
                *(counts.get(c, (0, 0, 0, 0.0)) for counts in self._class_counts)))
            pq_class[c] = _pq_from_counts(tp, fp, fn, s)[0] if tp + fp + fn else float('nan')
        pqs = np.array(list(pq_class.values()), np.float64)
        # NaN classes are skipped; none left (no instance at all) is NaN, without nanmean's warning
        out['mpq'] = float(np.nanmean(pqs)) if (pqs == pqs).any() else float('nan')
        per_image = []
        for counts, present in zip(self._class_counts, self._gt_class_present):
            pqs = [_pq_from_counts(*counts[c])[0] for c in classes if c in present]
            if pqs:
                per_image.append(float(np.mean(pqs)))
        out['mpq_per_image'] = float(np.mean(per_image)) if per_image else float('nan')
        out['type_accuracy'] = float((pt == pp).mean()) if tp_d else float('nan')
        out.update({f'pq_class{c}': pq_class[c] for c in classes})
        for c in classes:
            t, p = pt == c, pp == c
            # HoVer-Net's _f1_type also adds tn among the pairs having c on either side: that
            # count is always 0, so it is left out here.
            den = (2 * (t & p).sum() + 2 * (~t & p).sum() + 2 * (t & ~p).sum()
                   + (up == c).sum() + (ut == c).sum())
            out[f'f1_class{c}'] = float(2 * (t & p).sum() / den) if den else float('nan')
        return out
