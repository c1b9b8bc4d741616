"""The predict item with trained weights (``--predict-checkpoint``): what a user's prediction and
an evaluation cost per image and per megapixel, against the network's floor measured in the same
run, before and after the prediction budgets (``cellseg.models.detection_budget``), in float32
and under the mixed-precision autocast ``tools/predict.py --amp`` uses.

- floor: the backbone and neck forward of the image, float32 (and bfloat16, for reference);
- predict: ``tools/predict.py --score-thr 0.5`` per image, start-up not counted: read, predict,
  label/class TIFFs, overlay, GeoJSON and CSV rows (``predict_image`` + ``write_image_outputs``);
- eval: the model at its config's threshold (what ``tools/test.py`` runs per image);
- before: the budgets the configs had until issue 25 (2000 proposals from 3000 candidates per
  level, no per-class cap); after: ``--predict-config-now``'s test settings (a checkpoint
  keeps the config it was trained with, so its own settings may be the old ones).

Beside the times, the arithmetic of the 'after' variants and of the floor (convolutions and
matrix products, counted by ``torch.utils.flop_counter``): its ratio is what the time ratio
would be if every other step were free and the heads computed as fast per FLOP as the backbone.

Every variant predicts every image in turn, image by image (load changes on the machine hit
all), after one warm-up pass; the figures are medians over images of the per-image times.
"""
from __future__ import annotations

import argparse
import glob
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.speed_items.common import REPO, load_config, report

BEFORE = {'model.test_cfg.rpn.nms_pre': 3000, 'model.test_cfg.rpn.max_per_img': 2000,
          'model.test_cfg.rpn.nms_pre_per_mpx': None,
          'model.test_cfg.rpn.max_per_img_per_mpx': None,
          'model.test_cfg.rcnn.max_per_img_per_mpx': None,
          'model.test_cfg.rcnn.max_per_class': None}
GOALS = {'predict': 4.0, 'eval': 6.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--predict-checkpoint',
                        help='a trained checkpoint: adds the trained-model figures')
    parser.add_argument('--predict-inputs',
                        default=str(REPO.parent / 'shared/data/consep/test_release/*.tif'),
                        help='images of the trained-model figures (a glob)')
    parser.add_argument('--predict-trained-images', type=int, default=16)
    parser.add_argument('--predict-config-now', default='configs/cell_r50_scratch_tuned.py',
                        help="the config whose model.test_cfg is 'after'")


def run_trained(args: argparse.Namespace, work: Path) -> None:
    import numpy as np
    import torch

    from cellseg.apis.predict import load_model, reading_percentiles
    from cellseg.formats.images import read_image

    paths = sorted(glob.glob(args.predict_inputs))[:args.predict_trained_images]
    if not paths:
        raise SystemExit(f'{args.predict_inputs}: no images')
    ckpt = args.predict_checkpoint
    models = {}
    now = load_config(REPO / args.predict_config_now).model.test_cfg.to_dict()
    for settings, options in (('before', BEFORE), ('after', {'model.test_cfg': now})):
        models['predict', settings] = load_model(ckpt, device='cpu', score_thr=0.5,
                                                 cfg_options=options)
        models['eval', settings] = load_model(ckpt, device='cpu', cfg_options=options)
    floor_model = models['eval', 'after']
    out = Path(tempfile.mkdtemp(dir=work))
    dtypes = {'fp32': None, 'bf16': torch.bfloat16}

    def floor(path: str, dtype: torch.dtype | None) -> float:
        image = read_image(path, percentiles=reading_percentiles(floor_model))
        h, w = image.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None]
        with torch.no_grad(), torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
            start = time.perf_counter()
            floor_model.extract_feat(floor_model.data_preprocessor(
                {'inputs': [x[0]], 'data_samples': None}, False)['inputs'])
            return time.perf_counter() - start

    times: dict[tuple, list[float]] = {}
    counts: dict[tuple, list[int]] = {}
    pixels = []
    for r in range(2):  # pass 0 warms up
        for i, path in enumerate(paths):
            if r:
                h, w = read_image(path).shape[:2]
                pixels.append(h * w)
            for prec, dtype in dtypes.items():
                t = floor(path, dtype)
                if r:
                    times.setdefault(('floor', '', prec), []).append(t)
                for (mode, settings), model in models.items():
                    t, n = (timed_predict(model, path, out, f'{settings}_{prec}_{i}', dtype)
                            if mode == 'predict' else timed_evaluate(model, path, dtype))
                    if r:
                        times.setdefault((mode, settings, prec), []).append(t)
                        counts.setdefault((mode, settings, prec), []).append(n)
    mpx = statistics.median(pixels) / 1e6
    base = statistics.median(times['floor', '', 'fp32'])
    size = f'{len(paths)} images of median {mpx:.3f} MP, {torch.get_num_threads()} threads'
    for key, ts in times.items():
        mode, settings, prec = key
        t = statistics.median(ts)
        what = (f'{mode} ({settings}), {prec}, {Path(ckpt).name}' if settings else
                f'backbone+neck forward (the floor), {prec}')
        goal = GOALS.get(mode) if settings == 'after' and prec == 'fp32' else None
        detections = (f', {statistics.mean(counts[key]):.1f} instances per image'
                      if key in counts else '')
        report('predict', f'{what}; {size}',
               f'{t * 1e3:.0f} ms per image, {t / mpx:.2f} s/MP, {t / base:.2f}x the float32 '
               f'floor{detections}', f'{base * 1e3:.0f} ms (float32 floor)',
               f'<= {goal:.0f}x' if goal else '', t / base <= goal if goal else None)
    arithmetic(models, paths, out, floor)
    for prec in dtypes:
        same = all((out / f'before_{prec}_{i}_labels.tif').read_bytes()
                   == (out / f'after_{prec}_{i}_labels.tif').read_bytes()
                   for i in range(len(paths)))
        report('predict', f'label TIFFs of before and after identical, {prec}', str(same))


def timed_predict(model: Any, path: str, out: Path, name: str,
                  dtype: Any = None) -> tuple[float, int]:
    """``tools/predict.py --score-thr 0.5``'s work for one image, its outputs written to ``out``
    as ``name``: seconds, instances. ``dtype``: the autocast's (None: float32)."""
    from cellseg.apis.predict import model_classes, predict_image, write_image_outputs

    names, palette = model_classes(model)
    model.autocast_dtype = dtype
    start = time.perf_counter()
    image, masks, labels, scores = predict_image(model, path, 0.5)
    rows = write_image_outputs(out, name, image, masks, labels, scores, names, palette).rows
    return time.perf_counter() - start, len(rows)


def timed_evaluate(model: Any, path: str, dtype: Any = None) -> tuple[float, int]:
    """The model on one image at its config's threshold, as ``tools/test.py`` runs it (image
    read before the clock starts): seconds, detections."""
    import numpy as np
    import torch
    from mmdet.apis import inference_detector

    from cellseg.apis.predict import reading_percentiles
    from cellseg.formats.images import read_image

    image = read_image(path, percentiles=reading_percentiles(model))
    start = time.perf_counter()
    with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
        result = inference_detector(model, np.ascontiguousarray(image[..., ::-1]))
    return time.perf_counter() - start, len(result.pred_instances)


def arithmetic(models: dict, paths: list[str], out: Path, floor) -> None:
    """GFLOP per image of the floor and of the 'after' variants in float32 (mean over images),
    each against the floor's."""
    from torch.utils.flop_counter import FlopCounterMode

    counted = []
    for path in paths:
        with FlopCounterMode(display=False) as counter:
            floor(path, None)
        counted.append(counter.get_total_flops())
    base = statistics.mean(counted)
    report('predict', 'backbone+neck forward (the floor), arithmetic', f'{base / 1e9:.1f} GFLOP')
    for mode in ('predict', 'eval'):
        model = models[mode, 'after']
        counted = []
        for i, path in enumerate(paths):
            with FlopCounterMode(display=False) as counter:
                if mode == 'predict':
                    timed_predict(model, path, out, f'flops_{i}')
                else:
                    timed_evaluate(model, path)
            counted.append(counter.get_total_flops())
        total = statistics.mean(counted)
        report('predict', f'{mode} (after), arithmetic',
               f'{total / 1e9:.1f} GFLOP, {total / base:.2f}x the floor\'s', '',
               f'<= {GOALS[mode]:.0f}x (time)')
