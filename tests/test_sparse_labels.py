"""The one painter (cellseg.structures.sparse_labels.paint_runs), fed with COCO RLEs of many images
at once (paint_masks) or with one image's mask crops (label_images.paint_labels), against label
images painted here pixel by pixel, and the areas and centroids of its runs against pixel
arithmetic."""
from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from cellseg.structures.crop_masks import CropMasks
from cellseg.structures.label_images import paint_labels
from cellseg.structures.sparse_labels import label_images, paint_masks, rle_images


def dense(labels, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Image k of ``labels`` as an HxW array of instance + 1 - its first instance (ids 1..n)."""
    out = np.zeros(shape[0] * shape[1], np.int64)
    positions, owner = labels.pixels()
    lo, hi = labels.pixel_start[k], labels.pixel_start[k + 1]
    inside = (positions >= lo) & (positions < hi)
    out[positions[inside] - lo] = owner[inside] - labels.inst_start[k] + 1
    return out.reshape(shape[1], shape[0]).T  # stacked column by column


def plain_painting(masks: list[np.ndarray], scores: np.ndarray, shape: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(label image, mask of each id) painted the plain way: full-size masks one after the
    other, lowest score first and of equal scores the later first, so that the higher score
    (equal: the earlier mask) keeps a pixel; ids 1..N by decreasing score among the masks left
    with pixels."""
    owner = np.full(shape, -1)
    for i in sorted(range(len(masks)), key=lambda i: (scores[i], -i)):
        owner[masks[i]] = i
    index = np.array(sorted({int(i) for i in owner[owner >= 0]}, key=lambda i: (-scores[i], i)),
                     np.int64)
    ids = np.zeros(shape, np.int64)
    for k, i in enumerate(index):
        ids[owner == i] = k + 1
    return ids, index


def random_case(rng: np.random.Generator, n_images: int, same_height: bool):
    shapes, masks, scores = [], [], []
    for _ in range(n_images):
        h = 17 if same_height else int(rng.integers(1, 30))
        w = int(rng.integers(1, 30))
        yy, xx = np.mgrid[:h, :w]
        ms = []
        for _ in range(int(rng.integers(0, 9))):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, 8)
            ms.append((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)  # overlapping disks
        if ms and rng.random() < 0.5:
            ms.append(np.zeros((h, w), bool))  # empty
            ms.append(np.ones((h, w), bool))  # every column, runs across column ends
        # a quarter of the scores tied, so the input order must break ties
        s = np.round(rng.random(len(ms)) * 4) / 4
        shapes.append((h, w))
        masks.append(ms)
        scores.append(s)
    return shapes, masks, scores


def as_rles(masks: list[np.ndarray]) -> list[dict]:
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    for r in rles[::2]:
        r['counts'] = r['counts'].decode('ascii')  # str and bytes both
    return rles


@pytest.mark.parametrize('same_height', [True, False], ids=['one-height', 'mixed-heights'])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_painting_equals_plain_painting(seed: int, same_height: bool) -> None:
    rng = np.random.default_rng(seed)
    shapes, masks, scores = random_case(rng, 6, same_height)
    rles = [as_rles(ms) for ms in masks]
    labels = paint_masks(rles, scores, shapes)
    from_arrays = paint_masks(masks, scores, shapes)
    assert all(np.array_equal(getattr(labels, f), getattr(from_arrays, f))
               for f in ('starts', 'lengths', 'owner', 'source', 'inst_start'))
    first_mask = np.cumsum([0] + [len(m) for m in masks])
    tangled = 0
    for k, shape in enumerate(shapes):
        want, index = plain_painting(masks[k], scores[k], shape)
        assert np.array_equal(dense(labels, k, shape), want)
        got_index = labels.source[labels.inst_start[k]:labels.inst_start[k + 1]] - first_mask[k]
        assert np.array_equal(got_index, index)
        # the same painter fed with one image's mask crops, as tools/predict.py paints
        ids, crop_index = paint_labels(CropMasks.from_masks(masks[k], *shape), scores[k])
        assert np.array_equal(ids, want) and np.array_equal(crop_index, index)
        tangled += int(sum(m.sum() for m in masks[k]) > (want > 0).sum())
    assert tangled >= 2  # overlapping masks were resolved in several images
    # runs sorted and disjoint, as SparseLabels promises
    assert (labels.starts[1:] >= labels.starts[:-1] + labels.lengths[:-1]).all()


@pytest.mark.parametrize('same_height', [True, False], ids=['one-height', 'mixed-heights'])
def test_areas_and_centroids_are_the_pixel_counts_and_means(same_height: bool) -> None:
    rng = np.random.default_rng(7)
    shapes, masks, scores = random_case(rng, 5, same_height)
    labels = paint_masks(masks, scores, shapes)
    areas, centroids = labels.areas(), labels.centroids()
    checked = 0
    for k, shape in enumerate(shapes):
        img = dense(labels, k, shape)
        for i in range(labels.inst_start[k], labels.inst_start[k + 1]):
            ys, xs = np.nonzero(img == i - labels.inst_start[k] + 1)
            assert areas[i] == ys.size
            assert centroids[i] == pytest.approx([xs.mean(), ys.mean()], abs=1e-9)
            checked += 1
    assert checked > 10


def test_ground_truth_painting_gives_overlaps_to_the_later_mask() -> None:
    a, b = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    a[1:4, 1:4], b[2:5, 2:5] = True, True
    labels = rle_images([as_rles([a, b])], [(6, 6)])
    img = dense(labels, 0, (6, 6))
    assert labels.source.tolist() == [1, 0]  # id 1 is the later annotation
    assert (img == 1).sum() == 9 and (img == 2).sum() == 9 - 4


def test_label_images_keep_their_ids_in_increasing_order() -> None:
    one = np.zeros((5, 4), np.uint64)
    one[0:2, 0:2], one[3:5, 1:4] = 10 ** 12, 7
    two = np.zeros((3, 6), np.int32)
    labels = label_images([one, two])
    assert labels.source.tolist() == [7, 10 ** 12] and labels.inst_start.tolist() == [0, 2, 2]
    assert np.array_equal(dense(labels, 0, (5, 4)), np.where(one == 7, 1, np.where(one, 2, 0)))
    assert labels.areas().tolist() == [6, 4]


def test_bad_masks_name_the_image() -> None:
    good = as_rles([np.ones((4, 5), bool)])
    with pytest.raises(ValueError, match=r'scan 3: mask 0 has shape \(4, 5\), expected \(5, 4\)'):
        paint_masks([good], [np.ones(1)], [(5, 4)], ['scan 3'])
    short = [dict(size=[4, 5], counts=[3, 4])]  # covers 7 of 20 pixels
    with pytest.raises(ValueError, match='scan 3: the RLE of mask 0 does not cover its 4x5'):
        paint_masks([short], [np.ones(1)], [(4, 5)], ['scan 3'])
