"""The ``predict`` item: the mask head's layers on 64 RoIs, mmdet's ``FCNMaskHead`` against
``ChunkedMaskHead``; one 512x512 image with 300 detections from its file to the submission
JSON (pipeline, model, paste, RLE, results JSON, then the submission read back, checked and
written with its zip, as ``tools/test.py --submit`` does: images read by a loader worker beside
the model, the wait for them counted) against the model's forward alone; mmdet's
``StandardRoIHead`` + ``FCNMaskHead`` against the configs' ``ChunkedRoIHead`` +
``ChunkedMaskHead``, both writing their JSON with mmengine's writer."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.speed_items import predict_trained
from benchmarks.speed_items.common import (
    REPO,
    build_model,
    dense512,
    force_detections,
    load_config,
    pipeline_of,
    report,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The models and the image count; the trained model's options (``predict_trained``)."""
    parser.add_argument('--predict-config', nargs='*',
                        default=['configs/cell_r50_scratch_dense.py',
                                 'tests/configs/cell_r50_tiny.py'],
                        help='models of the predict item')
    parser.add_argument('--predict-images', type=int, default=4)
    predict_trained.add_arguments(parser)


def run(args: argparse.Namespace, work: Path) -> None:
    """One measurement per ``--predict-config``, then the trained model's figures when a
    checkpoint is given (``predict_trained``)."""
    bench_mask_heads(args.rounds)
    for config in args.predict_config:
        bench_predict(work, config, args.rounds, args.predict_images)
    if args.predict_checkpoint:
        predict_trained.run_trained(args, work)


def forward_only(model: Any, batch: dict) -> int:
    """The network alone: preprocessing, backbone, RPN, box head and mask logits, no paste."""
    from mmdet.structures.bbox import bbox2roi

    data = model.data_preprocessor(batch, False)
    samples = data['data_samples']
    x = model.extract_feat(data['inputs'])
    proposals = model.rpn_head.predict(x, samples, rescale=False)
    roi_head = model.roi_head
    dets = roi_head.predict_bbox(x, [s.metainfo for s in samples], proposals,
                                 rcnn_test_cfg=roi_head.test_cfg, rescale=False)
    rois = bbox2roi([d.bboxes for d in dets])
    roi_head._mask_forward(x, rois)['mask_preds'].sum().item()
    return len(rois)


def bench_mask_heads(rounds: int, n_rois: int = 64) -> None:
    """The mask head's layers on ``n_rois`` RoI features (a 256 px CoNSeP patch keeps about 40
    cells at score 0.5): mmdet's ``FCNMaskHead`` against ``ChunkedMaskHead`` (channels-last
    deconvolution and logits on the CPU), same weights, in float32."""
    import torch
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead

    from cellseg.models.roi_heads.mask_heads.chunked_mask_head import ChunkedMaskHead

    torch.manual_seed(0)
    plain = FCNMaskHead(num_classes=4).eval()
    chunked = ChunkedMaskHead(num_classes=4).eval()
    chunked.load_state_dict(plain.state_dict())
    x = torch.randn(n_rois, 256, 14, 14)
    times = {}
    with torch.no_grad():
        for name, head in (('fcn', plain), ('chunked', chunked)):
            head(x)  # warm-up
            start = time.perf_counter()
            for _ in range(max(rounds, 3)):
                out = head(x)
            times[name] = (time.perf_counter() - start) / max(rounds, 3)
        diff = (plain(x) - chunked(x)).abs().max().item()
    report('predict', f'mask head layers, {n_rois} RoIs, float32, ChunkedMaskHead / FCNMaskHead',
           f"{times['chunked'] / times['fcn']:.2f} ({times['chunked'] * 1e3:.0f} ms / "
           f"{times['fcn'] * 1e3:.0f} ms; largest logit difference {diff:.1e} of "
           f'{out.abs().max().item():.1f})', '1.00 (FCNMaskHead)')


def bench_predict(work: Path, config: str, rounds: int, n_images: int) -> None:
    """Both heads on the same images, image by image, after one warm-up round."""
    import torch
    from mmdet.evaluation import CocoMetric
    from mmengine.dataset import pseudo_collate

    from cellseg.formats.hw3 import ImageInfo
    from cellseg.formats.submission import write_submission

    root = dense512(work)
    cfg = load_config(REPO / config)
    force_detections(cfg, 300)
    pipeline = pipeline_of(cfg, 'test_pipeline')
    paths = sorted((root / 'train').glob('*/image.tif'))[:n_images]
    ann_file = str(root / 'annotations' / 'train_all.json')
    out_dir = work / 'predict_json'
    out_dir.mkdir(exist_ok=True)
    id_map = {i + 1: ImageInfo(p.parent.name + '.tif', i + 1, 512, 512)
              for i, p in enumerate(paths)}

    def new_metric() -> CocoMetric:
        """The submission run's metric: RLEs per image, the results JSON at the end."""
        metric = CocoMetric(ann_file=ann_file, metric=['segm'], format_only=True,
                            outfile_prefix=str(out_dir / 'results'))
        metric.dataset_meta = dict(classes=('class1', 'class2', 'class3', 'class4'))
        return metric

    class Images(torch.utils.data.Dataset):
        """The test pipeline (file to packed tensors) per image, as the test loader runs it."""

        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> dict:
            return pipeline(dict(img_path=str(paths[i]), img_id=i + 1))

    def one_image(model: Any, metric: CocoMetric, images: Iterator) -> tuple[int, float]:
        """tools/test.py --submit for one image: the next batch from the loader, test_step,
        CocoMetric.process. Returns the detections and the time spent waiting for the batch."""
        start = time.perf_counter()
        batch = next(images)
        waited = time.perf_counter() - start
        samples = model.test_step(batch)
        metric.process(batch, [s.to_dict() for s in samples])
        return len(samples[0].pred_instances), waited

    start = time.perf_counter()
    batches = [pseudo_collate([pipeline(dict(img_path=str(p), img_id=i + 1))])
               for i, p in enumerate(paths)]
    t_read = (time.perf_counter() - start) / len(paths)
    heads = ('fcn', 'chunked')
    models = {head: build_model(cfg, head) for head in heads}
    # tools/test.py reads images in the test loader's workers (cell_r50_scratch: 2) while the model
    # runs, so reading is timed as it happens there: one worker per head, prefetching
    loaders = {head: torch.utils.data.DataLoader(Images(), batch_size=1, num_workers=1,
                                                 collate_fn=pseudo_collate,
                                                 persistent_workers=True) for head in heads}
    t_fwd, t_e2e, t_wait = (dict.fromkeys(heads, 0.0) for _ in range(3))
    results = {}
    with torch.no_grad():
        for r in range(rounds + 1):  # round 0 warms up
            metrics = {head: new_metric() for head in heads}
            images = {head: iter(loaders[head]) for head in heads}
            # image by image, both heads, both measures: load changes on the machine hit all
            for b in batches:
                for head in heads:
                    start = time.perf_counter()
                    n_rois = forward_only(models[head], b)
                    mid = time.perf_counter()
                    n_dets, waited = one_image(models[head], metrics[head], images[head])
                    end = time.perf_counter()
                    if n_rois != 300 or n_dets != 300:
                        sys.exit(f'predict: expected 300 detections, got {n_rois}, {n_dets}')
                    if r:
                        t_fwd[head] += mid - start
                        t_e2e[head] += end - mid
                        t_wait[head] += waited
            for head in heads:
                # the results JSON as mmdet writes it; then, as tools/test.py --submit does,
                # read back, checked and written as test-results.json and its zip
                start = time.perf_counter()
                metrics[head].compute_metrics(metrics[head].results)
                with open(out_dir / 'results.segm.json') as f:
                    submitted = json.load(f)
                json_path, _ = write_submission(submitted, out_dir / head / 'submission.zip',
                                                id_map, len(metrics[head].dataset_meta['classes']))
                if r:
                    t_e2e[head] += time.perf_counter() - start
                results[head + '_json'] = json_path.read_text()
    k = rounds * len(paths)
    for head in heads:
        results[head] = (t_fwd[head] / k, t_e2e[head] / k)
    same = results['fcn_json'] == results['chunked_json']
    name = Path(config).stem
    report('predict', f'reading one image (test pipeline, in the main process), {name}',
           f'{t_read * 1e3:.1f} ms')
    for head, label in (('fcn', "mmdet's RoI and mask heads"),
                        ('chunked', 'ChunkedRoIHead + ChunkedMaskHead')):
        fwd, e2e = results[head]
        report('predict', f'end to end / forward, {name}, 512x512, 300 detections, {label}',
               f'{e2e / fwd:.3f} ({e2e * 1e3:.0f} ms / {fwd * 1e3:.0f} ms; overhead '
               f'{(e2e - fwd) * 1e3:.0f} ms, of which waiting for the loader '
               f'{t_wait[head] / k * 1e3:.1f} ms)', '1.000 (forward alone)',
               '<= 1.10' if head == 'chunked' else '', e2e / fwd <= 1.10 if head == 'chunked'
               else None)
    report('predict', 'submission JSON identical with either head', str(same), met=same)
