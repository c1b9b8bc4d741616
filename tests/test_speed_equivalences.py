"""The fast paths of benchmarks/speed.py give exactly what the plain ones give.

The baselines are ``benchmarks/references.py``'s, the ones the benchmark times:

- chunked paste + RLE (``ChunkedMaskHead``) == mmdet's ``FCNMaskHead`` + ``encode_mask_results``;
- RoIs a chunk at a time (``ChunkedRoIHead``) == mmdet's ``StandardRoIHead``;
- one-pass label-map encoding (``encode_instances``) == one full-image pycocotools encode per
  instance (``encode_instance_map_per_mask``);
- RLE parsing to pixels == pycocotools' ``decode``;
- ``CropMasks`` / ``LoadCellAnnotations`` == ``BitmapMasks`` / ``LoadAnnotations``.
"""
from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.structures.mask import BitmapMasks, encode_mask_results
from mmengine.config import ConfigDict

from cellseg.models.roi_heads.mask_heads.chunked_mask_head import ChunkedMaskHead
from cellseg.models.roi_heads.mask_heads.mask_paste import paste_masks_to_rles
from cellseg.structures.crop_masks import CropMasks
from cellseg.structures.rle import (
    encode_instances,
    encode_windows,
)
from cellseg.testing.demo_data import render_image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a package beside cellseg/, not installed
    sys.path.insert(0, str(REPO))

from benchmarks.references import (  # noqa: E402  (needs the repository on the path)
    encode_instance_map_per_mask,
    mmdet_roi_head,
    set_mask_loader,
)


def _detections(seed: int, n: int, height: int, width: int):
    """Boxes of all sizes clipped to the image (as the box head clips them), including
    zero-size and border boxes, with mask logits of 4 classes."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-20, [width + 20, height + 20], size=(n, 2))
    size = rng.uniform(0.3, 50, size=(n, 2))
    size[:4] = rng.uniform(100, 300, size=(4, 2))  # a few larger than a chunk
    size[4] = 0
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    boxes[5] = [width, 3, width, 9]  # zero-width box on the right border
    boxes[6] = [0, 0, width, height]  # the whole image
    logits = torch.from_numpy(rng.normal(0, 3, size=(n, 4, 28, 28)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 4, size=n))
    return torch.from_numpy(boxes.astype(np.float32)), logits, labels


@pytest.mark.parametrize('scale', [1.0, 0.75])
@pytest.mark.parametrize('chunk_pixels', [2**22, 3000])
def test_chunked_mask_head_equals_fcn_mask_head(scale: float, chunk_pixels: int) -> None:
    height, width = 150, 230
    boxes, logits, labels = _detections(0, 120, round(height * scale), round(width * scale))
    meta = dict(scale_factor=(scale, scale), ori_shape=(height, width))
    cfg = ConfigDict(mask_thr_binary=0.5)
    torch.manual_seed(0)
    plain = FCNMaskHead(num_classes=4)
    chunked = ChunkedMaskHead(num_classes=4, paste_chunk_pixels=chunk_pixels)
    for rescale in (True, False):
        b1, b2 = boxes.clone(), boxes.clone()
        want = encode_mask_results(plain._predict_by_feat_single(
            logits, b1, labels, meta, cfg, rescale=rescale).numpy())
        got = chunked._predict_by_feat_single(logits, b2, labels, meta, cfg, rescale=rescale)
        assert got == want
        assert torch.equal(b1, b2)  # boxes are rescaled in place, as mmdet's head does


def test_chunked_mask_head_layers_compute_fcn_mask_head_logits() -> None:
    """The channels-last deconvolution and logits agree with FCNMaskHead's to float32 rounding;
    gradients still flow."""
    torch.manual_seed(0)
    plain = FCNMaskHead(num_classes=4).eval()
    chunked = ChunkedMaskHead(num_classes=4).eval()
    chunked.load_state_dict(plain.state_dict())
    x = torch.randn(9, 256, 14, 14)
    with torch.no_grad():
        y = x
        for conv in plain.convs:
            y = conv(y)
        torch.testing.assert_close(
            chunked.upsample(y.contiguous(memory_format=torch.channels_last)), plain.upsample(y),
            rtol=1e-6, atol=1e-6)
        want, got = plain(x), chunked(x)
    assert got.shape == want.shape == (9, 4, 28, 28)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    chunked.train()
    chunked(x).sum().backward()
    assert chunked.convs[0].conv.weight.grad is not None


def test_chunked_roi_head_predicts_what_standard_roi_head_predicts() -> None:
    """Chunks of RoIs (7 box and 5 mask RoIs at a time, over 2 images) give StandardRoIHead's
    detections; training keeps one pass with gradients."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.structures import InstanceData

    from cellseg.models.roi_heads.chunked_roi_head import ChunkedRoIHead

    register_all_modules()
    cfg = Config.fromfile(str(Path(__file__).parent / 'configs' / 'cell_r50_tiny.py'))
    roi_cfg = copy.deepcopy(cfg.model.roi_head)
    roi_cfg.update(train_cfg=cfg.model.train_cfg.rcnn,
                   test_cfg=ConfigDict(cfg.model.test_cfg.rcnn, max_per_img=40, score_thr=0.0))
    torch.manual_seed(0)
    chunked = MODELS.build(dict(roi_cfg, bbox_chunk=7, mask_chunk=5)).eval()
    assert type(chunked) is ChunkedRoIHead
    # mmdet's RoI head, with the same (chunked) mask head: the RoI chunks alone are compared
    plain = MODELS.build(mmdet_roi_head(roi_cfg, mask_head=False)).eval()
    assert type(plain).__name__ == 'StandardRoIHead'
    plain.load_state_dict(chunked.state_dict())
    gen = torch.Generator().manual_seed(1)
    feats = tuple(torch.randn(2, 32, 64 // s, 64 // s, generator=gen) for s in (1, 2, 4, 8, 16))
    proposals = []
    for _ in range(2):
        xy = torch.rand(50, 2, generator=gen) * 200
        wh = torch.rand(50, 2, generator=gen) * 50 + 2
        proposals.append(InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                      scores=torch.rand(50, generator=gen)))
    metas = [dict(img_shape=(256, 256), ori_shape=(256, 256), scale_factor=(1.0, 1.0))] * 2
    samples = [DetDataSample(metainfo=dict(m, batch_input_shape=(256, 256))) for m in metas]
    with torch.no_grad():
        got = chunked.predict(feats, copy.deepcopy(proposals), samples, rescale=True)
        want = plain.predict(feats, copy.deepcopy(proposals), samples, rescale=True)
    for g, w in zip(got, want):
        assert len(g) == len(w) == 40
        torch.testing.assert_close(g.scores, w.scores, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g.bboxes, w.bboxes, rtol=1e-5, atol=1e-4)
        assert torch.equal(g.labels, w.labels)
        assert g.masks == w.masks  # RLEs of the ChunkedMaskHead
    chunked.train()  # training: mmdet's one pass, gradients reach the heads
    rois = torch.cat([torch.zeros(20, 1), proposals[0].bboxes[:20]], 1)
    chunked._bbox_forward(feats, rois)['cls_score'].sum().backward()
    assert chunked.bbox_head.fc_cls.weight.grad is not None
    with pytest.raises(ValueError, match='mask_chunk'):
        MODELS.build(dict(roi_cfg, mask_chunk=0))


def test_paste_thresholds_and_soft_masks_fall_back() -> None:
    boxes, logits, labels = _detections(1, 60, 90, 110)
    meta = dict(scale_factor=(1.0, 1.0), ori_shape=(90, 110))
    plain, chunked = FCNMaskHead(num_classes=4), ChunkedMaskHead(num_classes=4)
    for thr in (0.3, 0.5, 0.9):
        cfg = ConfigDict(mask_thr_binary=thr)
        want = encode_mask_results(plain._predict_by_feat_single(
            logits, boxes.clone(), labels, meta, cfg).numpy())
        probs = logits.sigmoid()[range(len(labels)), labels][:, None]
        assert paste_masks_to_rles(probs, boxes.clone(), 90, 110, thr, 500) == want
    soft = chunked._predict_by_feat_single(logits, boxes.clone(), labels, meta,
                                           ConfigDict(mask_thr_binary=-1))
    assert isinstance(soft, torch.Tensor) and soft.dtype == torch.uint8


def test_encode_windows_joins_runs_across_columns() -> None:
    rng = np.random.default_rng(2)
    height, width = 12, 20
    for _ in range(50):
        w = int(rng.integers(1, 8))
        windows = rng.random((4, height, w)) < rng.uniform(0.1, 0.95)
        x0 = rng.integers(0, width - w + 1, size=4)
        full = np.zeros((height, width, 4), np.uint8)
        for i in range(4):
            full[:, x0[i]:x0[i] + w, i] = windows[i]
        want = mask_utils.encode(np.asfortranarray(full))
        assert encode_windows(windows, np.zeros(4, int), x0, height, width) == want


def test_label_map_encoding_equals_the_per_mask_reference() -> None:
    """The run-based encoder of the converter (and the demo data) gives, instance by instance,
    what one full-image pycocotools encode each gives (the convert item's baseline)."""
    _, ids, _ = render_image(np.random.default_rng(3), 300, 320, 300)  # past 255 instances
    ids[:, -1] = 500  # a column-long instance at the border, and a sparse large id
    ids[0, :40] = 77
    want = encode_instance_map_per_mask(ids)
    assert len(want) == len(set(np.unique(ids).tolist()) - {0})
    assert encode_instances(ids) == want
    # as the converter meets them: one class file of an image, ids with gaps
    _, ids, class_of_id = render_image(np.random.default_rng(9), 90, 110, 40)
    one_class = np.where(class_of_id[ids] == class_of_id[ids].max(), ids, 0)
    assert encode_instances(one_class) == encode_instance_map_per_mask(one_class)
    assert encode_instances(np.zeros((5, 4), np.int64)) == []
    assert encode_instance_map_per_mask(np.zeros((5, 4), np.int64)) == []
    found = [inst['id'] for inst in encode_instances(ids)]
    assert found == sorted(set(np.unique(ids).tolist()) - {0})


def test_crop_masks_from_rles_equal_pycocotools_decode() -> None:
    rng = np.random.default_rng(4)
    masks = (rng.random((37, 41, 6)) < 0.5).astype(np.uint8)
    masks[..., 0] = 0
    masks[..., 1] = 1
    masks[..., 2] = 0
    masks[-1, -1, 2] = 1
    _, ids, _ = render_image(np.random.default_rng(5), 37, 41, 8)
    masks[..., 3] = ids == 1
    rles = mask_utils.encode(np.asfortranarray(masks))
    for rle in rles[::2]:  # both forms of counts
        rle['counts'] = rle['counts'].decode('ascii')
    got = CropMasks.from_rles(rles)
    assert np.array_equal(got.masks, masks.transpose(2, 0, 1))
    with pytest.raises(ValueError):
        CropMasks.from_rles([dict(size=[37, 41], counts='0a')])  # ends inside a count


def _crops_and_dense(seed: int = 6) -> tuple[CropMasks, BitmapMasks]:
    _, ids, _ = render_image(np.random.default_rng(seed), 60, 70, 25)
    rles = [inst['segmentation'] for inst in encode_instances(ids)]
    rles.append(mask_utils.encode(np.zeros((60, 70), np.uint8, order='F')))  # an empty mask
    dense = mask_utils.decode(rles).transpose(2, 0, 1)
    return CropMasks.from_rles(rles, 60, 70), BitmapMasks(dense, 60, 70)


@pytest.mark.parametrize('op', [
    lambda m: m[np.arange(len(m))],
    lambda m: m[np.array([3, 1, 3, 0])],
    lambda m: m[np.arange(len(m)) % 3 == 0],
    lambda m: m[2:9],
    lambda m: m[4],
    lambda m: m[np.array([], np.int64)],
    lambda m: m.crop(np.array([10, 5, 50, 44])),
    lambda m: m.crop(np.array([-5, -5, 100, 100])),
    lambda m: m.pad((64, 96)),
    lambda m: m.flip('horizontal'),
    lambda m: m.flip('vertical'),
    lambda m: m.flip('diagonal'),
    lambda m: m.rescale(0.5),
    lambda m: pickle.loads(pickle.dumps(m)),
])
def test_crop_masks_equal_bitmap_masks(op) -> None:
    crops, dense = _crops_and_dense()
    got, want = op(crops), op(dense)
    assert len(got) == len(want)
    assert (got.height, got.width) == (want.height, want.width)
    assert np.array_equal(got.areas, want.areas)
    assert np.array_equal(got.get_bboxes('hbox').tensor.numpy(),
                          want.get_bboxes('hbox').tensor.numpy())
    assert np.array_equal(got.masks, want.masks)
    # built as an array, it still pickles as its crops
    assert pickle.loads(pickle.dumps(got)).masks.tobytes() == want.masks.tobytes()


def test_crop_masks_codecs_and_turns_equal_their_array_forms() -> None:
    """Every way into and out of ``CropMasks`` gives the pixels of the full-size arrays:
    RLEs (pycocotools' bytes), bool tensors, arrays, quarter turns (``np.rot90``), placing into
    a larger frame, and concatenation."""
    crops, dense = _crops_and_dense()
    arrays = dense.masks.astype(bool)
    want_rles = mask_utils.encode(np.asfortranarray(arrays.transpose(1, 2, 0).astype(np.uint8)))
    assert [r['counts'] for r in crops.to_rles()] == [r['counts'] for r in want_rles]
    assert torch.equal(crops.to_bool_tensor(), torch.from_numpy(arrays))
    from_tensor = CropMasks.from_masks(torch.from_numpy(arrays), 60, 70)
    from_arrays = CropMasks.from_masks(list(arrays), 60, 70)
    for other in (from_tensor, from_arrays):
        assert np.array_equal(other.masks, dense.masks)
    for k in range(4):
        turned = crops.turned(k)
        assert np.array_equal(turned.masks, np.rot90(dense.masks, k, axes=(1, 2)))
        assert np.array_equal(turned.turned(-k).masks, dense.masks)
    placed = crops.placed(5, 7, 80, 90)
    assert np.array_equal(placed.masks[:, 5:65, 7:77], dense.masks)
    assert placed.masks.sum() == dense.masks.sum()
    both = CropMasks.cat([crops, crops[np.array([2, 0])]])
    assert np.array_equal(both.masks, np.concatenate([dense.masks, dense.masks[[2, 0]]]))
    with pytest.raises(ValueError, match='expected'):
        CropMasks.from_masks(list(arrays), 61, 70)


def test_load_cell_annotations_equals_load_annotations(tiny_root, tiny_ann) -> None:
    """The training pipeline with LoadCellAnnotations gives the same samples, also when the
    random crop cuts (a crop smaller than the tiny images here)."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import cellseg.datasets.transforms.load_cell_annotations  # noqa: F401

    register_all_modules()
    tiny = Path(__file__).parent / 'configs' / 'cell_r50_tiny.py'
    cfg = Config.fromfile(str(tiny)).train_dataloader.dataset
    cfg.data_root = str(tiny_root) + '/'
    cfg.ann_file = str(tiny_ann / 'train_all.json')
    for crop in (None, (40, 48)):
        plain, cell = copy.deepcopy(cfg), copy.deepcopy(cfg)
        for ds in (plain, cell):
            if crop:
                next(t for t in ds.pipeline if t.type == 'RandomCrop').crop_size = crop
        # the configs load with LoadCellAnnotations; mmdet's LoadAnnotations is the reference
        set_mask_loader(plain.pipeline, 'LoadAnnotations')
        assert any(t.type == 'LoadCellAnnotations' for t in cell.pipeline)
        plain, cell = DATASETS.build(plain), DATASETS.build(cell)
        for i in range(len(plain)):
            np.random.seed(i)
            want = plain[i]
            np.random.seed(i)
            got = pickle.loads(pickle.dumps(cell[i]))  # as a loader worker sends it
            w, g = want['data_samples'].gt_instances, got['data_samples'].gt_instances
            assert isinstance(g.masks, CropMasks)
            assert torch.equal(want['inputs'], got['inputs'])
            assert torch.equal(w.labels, g.labels)
            assert torch.equal(w.bboxes.tensor, g.bboxes.tensor)
            assert np.array_equal(w.masks.masks, g.masks.masks)
