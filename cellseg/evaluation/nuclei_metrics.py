"""The metrics nuclei papers report: PQ (= DQ x SQ), AJI, Dice, per-class PQ and detection F1.

Definitions follow HoVer-Net (github.com/vqdang/hover_net: ``metrics/stats_utils.py`` and
``compute_stats.py``); per-class PQ follows CoNIC (TissueImageAnalytics/CoNIC ``compute_stats.py``)
and PanNuke (TissueImageAnalytics/PanNuke-metrics ``run.py``). HoVer-Net compares full-image
masks pair by pair; here one joint histogram of (gt id, pred id) pixel pairs gives every
intersection at once: a few passes over the foreground pixels, whatever the instance count.

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


def _renumber(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat image with ids renumbered 1..N in increasing id order, original id of 1..N); the
    order is HoVer-Net's ``remap_label(by_size=False)``'s, so AJI's argmax ties agree."""
    flat = a.ravel()
    top = int(flat.max(initial=0))
    if top > 4 * flat.size + 1024:  # ids too sparse for a lookup table: sort instead
        ids, inv = np.unique(flat, return_inverse=True)
        return (inv if ids[0] == 0 else inv + 1).astype(np.intp), ids[ids > 0]
    flat = flat.astype(np.intp, copy=False)  # bincount refuses uint64
    ids = np.flatnonzero(np.bincount(flat, minlength=top + 1)[1:]) + 1
    if ids.size == top:  # already 1..N, as predict writes them
        return flat, ids
    lut = np.zeros(top + 1, np.intp)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[flat], ids


@dataclass
class Overlap:
    """Everything the metrics need from one (gt, pred) pair of label images.

    Instances are indexed 0..G-1 / 0..P-1 in increasing label order (``gt_ids``/``pred_ids``
    give their labels); ``pair_gt``, ``pair_pred``, ``inter`` list the pairs that share pixels.
    Centroids are (x, y) = mean pixel (column, row), HoVer-Net's ``inst_centroid``."""

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    inter: np.ndarray
    gt_centroid: np.ndarray
    pred_centroid: np.ndarray
    fg: np.ndarray  # flat indices of the pixels in either foreground
    gt_fg: np.ndarray  # gt instance index + 1 (0 = background) of each of those pixels
    pred_fg: np.ndarray
    union: np.ndarray  # of each pair
    iou: np.ndarray


def _centroids(dense: np.ndarray, n: int, area: np.ndarray, xy: tuple) -> np.ndarray:
    sums = [np.bincount(dense, weights=w, minlength=n + 1)[1:] for w in xy]
    return np.stack(sums, axis=1) / np.maximum(area, 1)[:, None]


def overlap_table(gt_labels: np.ndarray, pred_labels: np.ndarray) -> Overlap:
    """The sparse (gt, pred) contingency table of two instance label images (0 = background)."""
    gt, pred = _check_labels(gt_labels, 'gt_labels'), _check_labels(pred_labels, 'pred_labels')
    if gt.shape != pred.shape:
        raise ValueError(f'gt_labels {gt.shape} and pred_labels {pred.shape} differ in shape')
    gf, pf = gt.ravel(), pred.ravel()
    # background in both tells nothing: every later pass runs on the other pixels only
    fg = np.flatnonzero((gf != 0) | (pf != 0))
    g, gt_ids = _renumber(gf[fg])
    p, pred_ids = _renumber(pf[fg])
    n_g, n_p = gt_ids.size, pred_ids.size
    if (n_g + 1) * (n_p + 1) <= 4 * g.size + 1024:  # one dense joint histogram, areas included
        joint = np.bincount(g * (n_p + 1) + p, minlength=(n_g + 1) * (n_p + 1))
        joint = joint.reshape(n_g + 1, n_p + 1)
        gt_area, pred_area = joint[1:].sum(axis=1), joint[:, 1:].sum(axis=0)
        pair_gt, pair_pred = np.nonzero(joint[1:, 1:])
        inter = joint[1:, 1:][pair_gt, pair_pred]
    else:  # many instances: histogram the pixels in both foregrounds sparsely
        gt_area = np.bincount(g, minlength=n_g + 1)[1:]
        pred_area = np.bincount(p, minlength=n_p + 1)[1:]
        both = (g > 0) & (p > 0)
        codes, inter = np.unique((g[both] - 1) * n_p + p[both] - 1, return_counts=True)
        pair_gt, pair_pred = np.divmod(codes, n_p)
    rows, cols = np.divmod(fg, gt.shape[1])
    union = gt_area[pair_gt] + pred_area[pair_pred] - inter
    return Overlap(gt_ids, pred_ids, gt_area, pred_area, pair_gt, pair_pred, inter,
                   _centroids(g, n_g, gt_area, (cols, rows)),
                   _centroids(p, n_p, pred_area, (cols, rows)), fg, g, p, union, inter / union)


def _pq_from_counts(tp: float, fp: float, fn: float, sum_iou: float) -> tuple[float, ...]:
    """(pq, dq, sq) from match counts; 1.0 when there is nothing on either side."""
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = sum_iou / tp if tp else 0.0
    return dq * sq, dq, sq


def _match_counts(ov: Overlap, match_iou: float, gt_sel: np.ndarray | None = None,
                  pred_sel: np.ndarray | None = None) -> tuple[int, int, int, float]:
    """(tp, fp, fn, sum of matched IoUs), optionally among selected gt / pred instances only."""
    keep = ov.iou > match_iou
    n_gt, n_pred = ov.gt_ids.size, ov.pred_ids.size
    if gt_sel is not None and pred_sel is not None:
        keep &= gt_sel[ov.pair_gt] & pred_sel[ov.pair_pred]
        n_gt, n_pred = int(gt_sel.sum()), int(pred_sel.sum())
    tp = int(keep.sum())
    return tp, n_pred - tp, n_gt - tp, float(ov.iou[keep].sum())


# metrics/stats_utils.py, get_fast_pq: pairs are (gt, pred) with IoU > match_iou; at
# match_iou >= 0.5 a gt overlaps at most one pred by more than half its union, so the pairing is
# unique and maximal without the Munkres step; DQ = tp / (tp + fp/2 + fn/2), SQ = mean matched IoU.
def _pq(ov: Overlap, match_iou: float) -> dict[str, float]:
    tp, fp, fn, sum_iou = _match_counts(ov, match_iou)
    pq, dq, sq = _pq_from_counts(tp, fp, fn, sum_iou)
    return dict(pq=pq, dq=dq, sq=sq, tp=tp, fp=fp, fn=fn)


# metrics/stats_utils.py, get_fast_aji (MoNuSeg's AJI): each gt takes the pred of highest IoU
# (a pred may serve several gts); the sum of those intersections is divided by the sum of their
# unions plus the areas of gts without any overlap and of preds no gt took.
def _aji(ov: Overlap) -> float:
    if ov.gt_ids.size == 0 and ov.pred_ids.size == 0:
        return 1.0
    # HoVer-Net ranks by inter / (union + 1e-6); keeping its epsilon keeps its choice between
    # near-equal IoUs, and np.argmax's first maximum is the lowest pred id (lexsort's last key).
    order = np.lexsort((ov.pair_pred, -ov.inter / (ov.union + 1.0e-6), ov.pair_gt))
    first = np.ones(order.size, bool)
    first[1:] = ov.pair_gt[order[1:]] != ov.pair_gt[order[:-1]]
    best = order[first]
    total_union = (ov.union[best].sum() + ov.gt_area.sum() - ov.gt_area[ov.pair_gt[best]].sum()
                   + ov.pred_area.sum() - ov.pred_area[np.unique(ov.pair_pred[best])].sum())
    return float(ov.inter[best].sum() / total_union)


# metrics/stats_utils.py, get_dice_1: Dice of foreground (any instance) against background.
def _dice(ov: Overlap) -> float:
    denom = ov.gt_area.sum() + ov.pred_area.sum()
    # every pixel in both foregrounds lies in exactly one overlapping pair
    return float(2.0 * ov.inter.sum() / denom) if denom else 1.0


def _row(ov: Overlap, match_iou: float) -> dict[str, float]:
    row = _pq(ov, match_iou)
    row.update(aji=_aji(ov), dice=_dice(ov), n_gt=int(ov.gt_ids.size),
               n_pred=int(ov.pred_ids.size))
    return row


def _check_match_iou(match_iou: float) -> None:
    if match_iou < 0.5:
        raise ValueError('match_iou below 0.5 needs a Munkres pairing, which is not implemented')


def image_metrics(gt_labels: np.ndarray, pred_labels: np.ndarray, match_iou: float = 0.5
                  ) -> dict[str, float]:
    """Class-agnostic metrics of one image: ``pq``, ``dq``, ``sq`` (pairs at IoU > match_iou),
    ``aji``, ``dice`` and the counts ``tp``, ``fp``, ``fn``, ``n_gt``, ``n_pred``."""
    _check_match_iou(match_iou)
    return _row(overlap_table(gt_labels, pred_labels), match_iou)


def _instance_classes(ov: Overlap, side: str, classes: np.ndarray | Mapping[int, int],
                      shape: tuple[int, ...]) -> np.ndarray:
    """Class of each gt (``side='gt'``) or pred instance of ``ov``.

    ``classes``: a class map of the image (pixel value = class of that pixel's instance) or a
    mapping {instance label: class}. From a map an instance takes its most frequent nonzero
    class (0 only when all its pixels are 0; ties: the lowest class): the rule of HoVer-Net's
    ``models/hovernet/post_proc.py`` (``process``) for ``inst_type``."""
    ids, dense = (ov.gt_ids, ov.gt_fg) if side == 'gt' else (ov.pred_ids, ov.pred_fg)
    if isinstance(classes, Mapping):
        return np.array([int(classes.get(int(i), 0)) for i in ids], np.int64)
    cmap = _check_labels(classes, f'{side}_classes')
    if cmap.shape != shape:
        raise ValueError(f'{side}_classes: shape {cmap.shape}, its label image has {shape}')
    cmap = cmap.ravel()[ov.fg].astype(np.intp)
    k = int(cmap.max(initial=0)) + 1
    votes = np.bincount(dense * k + cmap, minlength=(ids.size + 1) * k).reshape(-1, k)[1:, 1:]
    cls = np.argmax(votes, axis=1) + 1 if k > 1 else np.zeros(ids.size, np.intp)
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


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float('nan')


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
        with_classes = gt_classes is not None
        if with_classes != (pred_classes is not None):
            raise ValueError('give both gt_classes and pred_classes, or neither')
        if self._with_classes is not None and with_classes != self._with_classes:
            raise ValueError('give class maps for every image or for none')
        self._with_classes = with_classes
        ov = overlap_table(gt_labels, pred_labels)
        row = _row(ov, self.match_iou)
        if with_classes:
            shape = np.shape(gt_labels)
            gt_cls = _instance_classes(ov, 'gt', gt_classes, shape)
            pred_cls = _instance_classes(ov, 'pred', pred_classes, shape)
            present = set(np.unique(gt_cls[gt_cls > 0]).tolist())
            counts = {c: _match_counts(ov, self.match_iou, gt_cls == c, pred_cls == c)
                      for c in present | set(np.unique(pred_cls[pred_cls > 0]).tolist())}
            self._class_counts.append(counts)
            self._gt_class_present.append(present)
        else:
            gt_cls = np.zeros(ov.gt_ids.size, np.int64)
            pred_cls = np.zeros(ov.pred_ids.size, np.int64)
        pairs, un_gt, un_pred = pair_centroids(ov.gt_centroid, ov.pred_centroid, self.radius)
        self._det.append((gt_cls[pairs[:, 0]], pred_cls[pairs[:, 1]], gt_cls[un_gt],
                          pred_cls[un_pred]))
        self.rows.append(row)
        return row

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
        out['mpq'] = _nanmean(list(pq_class.values()))
        per_image = []
        for counts, present in zip(self._class_counts, self._gt_class_present):
            pqs = [_pq_from_counts(*counts[c])[0] for c in classes if c in present]
            if pqs:
                per_image.append(float(np.mean(pqs)))
        out['mpq_per_image'] = _nanmean(per_image)
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


def detections_to_label_image(masks: Sequence[np.ndarray | Mapping], scores: Sequence[float],
                              labels: Sequence[int], score_thr: float = 0.5,
                              shape: tuple[int, int] | None = None, label_offset: int = 0
                              ) -> tuple[np.ndarray, np.ndarray]:
    """(instance label image, class-of-pixel image) of the detections scoring >= ``score_thr``.

    A thin wrapper of ``cellseg.structures.label_images`` (``paint_labels``, ``class_map``), so
    the rules are those of ``tools/predict.py``'s label images: the higher score wins an
    overlapped pixel (equal scores: the earlier detection wins), instances left without pixels
    are dropped, ids 1..N follow decreasing score. ``masks``: HxW boolean arrays or pycocotools
    RLE dicts. The uint8 class map holds ``label + label_offset`` (use 1 for MMDetection's
    0-based labels); class ids must come out in 1..255, as 0 is background. ``shape`` is needed
    when no mask is given.
    """
    from cellseg.structures.label_images import class_map, crops_of_masks, label_image, mask_size

    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels, np.int64).ravel() + label_offset
    if not len(masks) == len(scores) == len(labels):
        raise ValueError(f'{len(masks)} masks, {len(scores)} scores and {len(labels)} labels')
    keep = np.flatnonzero(scores >= score_thr)
    if keep.size and labels[keep].min() < 1:
        raise ValueError('class ids must be >= 1 (0 is background): set label_offset=1 for '
                         '0-based labels')
    if shape is None:
        if not len(masks):
            raise ValueError('no mask to take the image shape from: pass shape')
        shape = mask_size(masks[0])
    crops = crops_of_masks([masks[i] for i in keep], shape)
    inst, class_of_id, _ = label_image(crops, scores[keep], labels[keep], shape)
    return inst, class_map(inst, class_of_id)


# ---- COCO ground truth and detections -----------------------------------------------------------

#: per image: (masks as COCO RLEs or HxW arrays, scores, class ids 1..K = place in cat_ids + 1)
ImageDetections = tuple[Sequence, np.ndarray, np.ndarray]


def coco_gt_instances(coco, img_id: int, cat_ids: Sequence[int]) -> tuple[list, np.ndarray]:
    """(mask crops, class ids 1..K) of an image's ground-truth annotations of ``cat_ids`` (the
    k-th category is class k + 1), in annotation order; crowd and ignored annotations, which
    COCOeval does not count as instances, are left out. ``coco``: a pycocotools ``COCO``;
    polygons, RLEs and uncompressed RLEs all pass through its ``annToRLE``."""
    from cellseg.structures.label_images import crops_of_rles

    col = {c: k + 1 for k, c in enumerate(cat_ids)}
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
            if a['category_id'] in col and not a.get('iscrowd', 0) and not a.get('ignore', 0)]
    crops = crops_of_rles([coco.annToRLE(a) for a in anns])
    return crops, np.array([col[a['category_id']] for a in anns], np.int64)


def coco_nuclei_metrics(coco, detections: Mapping[int, ImageDetections], cat_ids: Sequence[int],
                        img_ids: Sequence[int] | None = None, score_thr: float = 0.5,
                        match_iou: float = 0.5, radius: float = 12.0,
                        gt_cache: dict | None = None) -> NucleiMetrics:
    """``NucleiMetrics`` of detections against a COCO ground truth, class maps included.

    Each image (``img_ids``, default all of ``coco``) becomes a pair of label images as
    ``tools/predict.py`` writes them: the detections scoring >= ``score_thr``, overlaps given to
    the higher score (``cellseg.structures.label_images``); and the ground truth
    (``coco_gt_instances``), where an overlap, which label-image data sets do not have, goes to
    the later annotation. An image without detections is an empty prediction. Classes are
    1..len(cat_ids), all reported. ``gt_cache``: a dict kept between calls on the same
    ``coco``, holding each image's ground-truth label image (as its foreground pixels, so memory
    follows the cells, not the images) so it is decoded and painted once.
    """
    from cellseg.structures.label_images import crops_of_masks, label_image

    metrics = NucleiMetrics(classes=range(1, len(cat_ids) + 1), match_iou=match_iou,
                            radius=radius)
    empty: ImageDetections = ([], np.zeros(0), np.zeros(0, np.int64))
    for img_id in sorted(coco.getImgIds()) if img_ids is None else img_ids:
        info = coco.imgs[img_id]
        shape = (int(info['height']), int(info['width']))
        if gt_cache is not None and img_id in gt_cache:
            fg, ids, gt_cls = gt_cache[img_id]
            gt_lab = np.zeros(shape, ids.dtype)
            gt_lab.ravel()[fg] = ids
        else:
            gt_crops, gt_classes = coco_gt_instances(coco, img_id, cat_ids)
            # no scores: the later annotation keeps an overlapped pixel, as it is painted last
            gt_lab, gt_cls, _ = label_image(
                gt_crops, np.arange(len(gt_crops), dtype=np.float64), gt_classes, shape)
            if gt_cache is not None:
                fg = np.flatnonzero(gt_lab)
                fg = fg.astype(np.int32) if gt_lab.size < 2 ** 31 else fg
                gt_cache[img_id] = fg, gt_lab.ravel()[fg], gt_cls
        masks, scores, classes = detections.get(img_id, empty)
        scores = np.asarray(scores, np.float64).ravel()
        keep = np.flatnonzero(scores >= score_thr)
        try:
            crops = crops_of_masks([masks[i] for i in keep], shape)
        except ValueError as e:
            raise ValueError(f'image {img_id} ({shape[0]}x{shape[1]} in the ground truth): {e}'
                             ) from e
        pred_lab, pred_cls, _ = label_image(crops, scores[keep],
                                            np.asarray(classes, np.int64).ravel()[keep], shape)
        metrics.add(gt_lab, pred_lab, dict(enumerate(gt_cls.tolist(), 1)),
                    dict(enumerate(pred_cls.tolist(), 1)))
    return metrics
