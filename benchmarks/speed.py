"""Speed and memory of cellseg's hot paths, each measured beside its baseline in the same run.

    OMP_NUM_THREADS=1 python benchmarks/speed.py [--only ITEM ...] [--work-dir /tmp/cellseg_speed]
        [--markdown FILE]

Items (``--only`` takes any of them; all run by default, in this order):

- ``data``: a training sample from its files to packed tensors (image + ~150 masks, 512x512),
  the config's pipeline (``LoadCellAnnotations``) against what the original study's script did
  per item (re-read the image and the 4 class TIFFs, one dense mask per instance from the float
  maps), and against the same pipeline with mmdet's ``LoadAnnotations``.
- ``train``: mean iteration of the training loop against ``train_step`` (preprocess, forward,
  backward, optimizer step) of the same model on batches already in memory; the tiny test model.
- ``predict``: one 512x512 image with 300 detections from its file to the submission JSON
  (pipeline, model, paste, RLE, results JSON, then the submission read back, checked and
  written with its zip, as ``tools/test.py --submit`` does: images read by a loader worker
  beside the model, the wait for them counted) against the model's forward alone; mmdet's
  ``StandardRoIHead`` + ``FCNMaskHead`` with mmengine's JSON writer, and the configs'
  ``ChunkedRoIHead`` + ``ChunkedMaskHead`` with ``cellseg.evaluation.fast_json_handler``.
- ``memory``: peak RSS of a process predicting one 2500x2000 image with 1000 detections up to its
  RLEs, with each pair of heads, in a fresh process each; the RLEs must be identical.
- ``convert``: ``data_prep/hw3_to_coco.py`` on 209 generated images like the real ones, as it is
  and with a full-image pycocotools encode per instance (the same JSON files required).
- ``eval``: COCO segm evaluation of 100 dense images (~300 detections each) at maxDets 1000,
  ``CellCocoMetric(backend='pycocotools')`` against ``backend='faster_coco_eval'``.

Generated data is cached in the work dir. Every figure is printed with its baseline and goal;
``--markdown`` also writes them as a table. Models have random weights, detections forced to the
counts named above: the network's cost does not depend on what it learned, and random masks are
noisier than trained ones (more runs), so paste, RLE and JSON figures err on the slow side.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402

ITEMS = ('data', 'train', 'predict', 'memory', 'convert', 'eval')
GIB = 1024**3


@dataclass
class Figure:
    item: str
    what: str
    value: str
    baseline: str
    goal: str
    met: bool | None  # None: a figure without a goal of its own


FIGURES: list[Figure] = []


def report(item: str, what: str, value: str, baseline: str = '', goal: str = '',
           met: bool | None = None) -> None:
    FIGURES.append(Figure(item, what, value, baseline, goal, met))
    verdict = '' if met is None else ('  MET' if met else '  NOT MET')
    print(f'[{item}] {what}: {value}' + (f' (baseline {baseline})' if baseline else '')
          + (f' goal {goal}' if goal else '') + verdict, flush=True)


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('/proc/self/status has no VmHWM line')


def run_child(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    """Run ``cmd`` in the repository; return (wall seconds, its output). Peak memory is read by
    the child itself (VmHWM): a forked child's ru_maxrss would count the parent's pages."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ, **(env or {})), text=True)
    if proc.returncode:
        sys.exit(f'{" ".join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}')
    return time.perf_counter() - start, proc.stdout


# ---- generated data -----------------------------------------------------------------------------

def write_hw3_root(root: Path, shapes: list[tuple[int, int, int]], seed: int) -> Path:
    """An HW3 layout (``train/<name>/image.tif`` + float64 ``class{k}.tif``, LZW as the demo data
    writes them) of images drawn by ``cellseg.testing.demo_data.render_image``; reused when present."""
    from cellseg.testing.demo_data import render_image
    from cellseg.utils.fileio import atomic_write_json

    marker = root / 'speed_data.json'
    spec = dict(shapes=[list(s) for s in shapes], seed=seed)
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    shutil.rmtree(root, ignore_errors=True)
    print(f'generating {len(shapes)} images in {root} ...', flush=True)
    for i, (h, w, n) in enumerate(shapes):
        rgba, ids, class_of_id = render_image(np.random.default_rng([seed, i]), h, w, n)
        folder = root / 'train' / f'img{i:04d}'
        folder.mkdir(parents=True)
        tifffile.imwrite(folder / 'image.tif', rgba, photometric='rgb', compression='lzw',
                         predictor=True)
        for k in range(1, 5):
            of_class = class_of_id[ids] == k
            if of_class.any():
                tifffile.imwrite(folder / f'class{k}.tif',
                                 np.where(of_class, ids, 0).astype(np.float64),
                                 photometric='minisblack', compression='lzw')
    atomic_write_json(marker, spec)
    return root


def dense512(work: Path) -> Path:
    """8 images of 512x512 with 150 cells each, and their COCO ``annotations/train_all.json``."""
    from cellseg.formats.coco_conversion import convert

    root = write_hw3_root(work / 'dense512', [(512, 512, 150)] * 8, seed=1)
    if not (root / 'annotations' / 'train_all.json').is_file():
        convert(root, root / 'annotations', folds=0)
    return root


def hw3_like(work: Path) -> Path:
    """209 images like the real HW3 training set: 204 of about 400x480 with ~150 cells and 5
    large ones (1000..2000 px a side) at the same cell density (up to ~3000 cells)."""
    rng = np.random.default_rng(7)
    shapes = [(int(rng.integers(380, 421)), int(rng.integers(460, 501)), 150)
              for _ in range(204)]
    for h, w in ((1000, 1200), (1400, 1400), (1600, 1800), (2000, 1800), (2000, 2000)):
        shapes.append((h, w, round(h * w / 1280)))
    return write_hw3_root(work / 'hw3_like', shapes, seed=2)


def big_image(work: Path) -> Path:
    """One 2500x2000 image (TIFF) for the memory item."""
    from cellseg.testing.demo_data import render_image

    path = work / 'big_2500x2000.tif'
    if not path.is_file():
        rgba, _, _ = render_image(np.random.default_rng(3), 2500, 2000, 3000)
        tifffile.imwrite(path, rgba, photometric='rgb', compression='lzw', predictor=True)
    return path


# ---- mmdet set-up -------------------------------------------------------------------------------

def load_config(path: str | Path):
    """A config (its custom_imports imported) in mmdet's default scope."""
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.init_cfg = None
    return cfg


def force_detections(cfg, n: int) -> None:
    """Test settings under which an untrained model keeps exactly ``n`` detections per image:
    every score counts and enough proposals reach the RoI head."""
    test_cfg = cfg.model.test_cfg
    test_cfg.rpn.nms_pre = max(test_cfg.rpn.get('nms_pre', 1000), 3000)
    test_cfg.rpn.max_per_img = max(test_cfg.rpn.get('max_per_img', 1000), 2 * n)
    test_cfg.rcnn.score_thr = 0.0
    test_cfg.rcnn.max_per_img = n


def build_model(cfg, head: str):
    """The config's detector on the CPU with mmdet's RoI and mask heads (``'fcn'``:
    ``StandardRoIHead``, ``FCNMaskHead``) or cellseg's (``'chunked'``: ``ChunkedRoIHead``,
    ``ChunkedMaskHead``); fixed seed, so both get the same weights."""
    import torch
    from mmdet.registry import MODELS

    import cellseg.models.roi_heads.chunked_roi_head  # noqa: F401  (registers ChunkedRoIHead)
    import cellseg.models.roi_heads.mask_heads.chunked_mask_head  # noqa: F401  (registers ChunkedMaskHead)

    cfg = copy.deepcopy(cfg)
    chunked = head == 'chunked'
    cfg.model.roi_head.type = 'ChunkedRoIHead' if chunked else 'StandardRoIHead'
    if not chunked:
        for key in ('bbox_chunk', 'mask_chunk'):
            cfg.model.roi_head.pop(key, None)
    cfg.model.roi_head.mask_head.type = 'ChunkedMaskHead' if chunked else 'FCNMaskHead'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def pipeline_of(cfg, key: str):
    from mmcv.transforms import Compose

    return Compose(cfg[key])


# ---- 1. data pipeline ---------------------------------------------------------------------------

def original_loader(folder: Path, image_id: int, pack) -> dict:
    """What the original study's script did per training item: read the image and every class
    TIFF again, and build one dense mask and box per instance from the float maps."""
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks

    from cellseg.formats.hw3 import read_image

    img = np.ascontiguousarray(read_image(folder / 'image.tif')[..., ::-1])
    h, w = img.shape[:2]
    masks, labels, boxes = [], [], []
    for k in range(1, 5):
        path = folder / f'class{k}.tif'
        if not path.is_file():
            continue
        values = tifffile.imread(path)
        for v in np.unique(values):
            if v == 0:
                continue
            mask = (values == v).astype(np.uint8)
            ys, xs = np.nonzero(mask)
            masks.append(mask)
            labels.append(k - 1)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    results = dict(
        img=img, img_shape=(h, w), ori_shape=(h, w), img_path=str(folder / 'image.tif'),
        img_id=image_id,
        gt_bboxes=HorizontalBoxes(np.asarray(boxes, np.float32).reshape(-1, 4)),
        gt_bboxes_labels=np.asarray(labels, np.int64),
        gt_masks=BitmapMasks(np.stack(masks) if masks else np.zeros((0, h, w), np.uint8), h, w),
        gt_ignore_flags=np.zeros(len(masks), bool))
    return pack(results)


def set_mask_loader(cfg, loader: str) -> None:
    """Load training masks with ``loader``: ``'LoadCellAnnotations'`` (the configs' choice) or
    mmdet's ``'LoadAnnotations'`` (the baseline)."""
    import cellseg.datasets.transforms.load_cell_annotations  # noqa: F401  (registers the transform)

    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] in ('LoadAnnotations', 'LoadCellAnnotations'):
            t['type'] = loader


def bench_data(work: Path, rounds: int) -> None:
    from mmdet.datasets.transforms import PackDetInputs
    from mmdet.registry import DATASETS

    root = dense512(work)
    cfg = load_config(REPO / 'configs' / 'cell_r50.py')
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = str(root) + '/'
    ds_cfg.ann_file = str(root / 'annotations' / 'train_all.json')
    set_mask_loader(cfg, 'LoadCellAnnotations')
    cell_loader = DATASETS.build(copy.deepcopy(ds_cfg))
    set_mask_loader(cfg, 'LoadAnnotations')
    mmdet_loader = DATASETS.build(ds_cfg)
    folders = sorted((root / 'train').iterdir())
    pack = PackDetInputs()
    masks = [len(cell_loader[i]['data_samples'].gt_instances) for i in range(len(folders))]
    base = [len(original_loader(f, i, pack)['data_samples'].gt_instances)
            for i, f in enumerate(folders)]
    if masks != base:
        sys.exit(f'data: the loaders give different instance counts: {masks} vs {base}')
    loaders = dict(original=lambda i: original_loader(folders[i], i, pack),
                   mmdet=mmdet_loader.__getitem__, cell=cell_loader.__getitem__,
                   # the arrays too, which the mask head builds in the main process
                   cell_arrays=lambda i: cell_loader[i]['data_samples'].gt_instances.masks.masks)
    totals = dict.fromkeys(loaders, 0.0)
    for _ in range(rounds):  # alternating, so load changes on the machine hit all alike
        for name, load in loaders.items():
            start = time.perf_counter()
            for i in range(len(folders)):
                load(i)
            totals[name] += time.perf_counter() - start
    per = {k: v / (rounds * len(folders)) for k, v in totals.items()}
    orig, ours, arrays = per['original'], per['cell'], per['cell_arrays']
    what = f'512x512, {np.mean(masks):.0f} masks'
    report('data', f'time per training sample ({what}), original loader', f'{orig * 1e3:.1f} ms')
    report('data', "time per training sample, the config's pipeline with mmdet's "
           'LoadAnnotations', f"{per['mmdet'] * 1e3:.1f} ms", f'{orig * 1e3:.1f} ms (original)')
    report('data', "time per training sample, the config's pipeline (LoadCellAnnotations)",
           f'{ours * 1e3:.1f} ms', f'{orig * 1e3:.1f} ms (original)')
    report('data', 'time per training sample, with LoadCellAnnotations and the mask arrays built',
           f'{arrays * 1e3:.1f} ms', f'{orig * 1e3:.1f} ms (original)')
    report('data', 'speed-up over the original loader (mask arrays built)', f'{orig / arrays:.1f}x',
           f"1x ({orig / per['mmdet']:.1f}x with mmdet's LoadAnnotations)", '>= 3x',
           orig / arrays >= 3)
    report('data', 'one loader process keeps up with 4 workers on a 0.15 s GPU step of 4',
           f'{ours:.3f} s per sample', f'{orig:.3f} s per sample (original)',
           '<= 0.15 s per sample', ours <= 0.15)


# ---- 2. training loop overhead ------------------------------------------------------------------

def bench_train(work: Path, iters: int, cell_annotations: bool) -> None:
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from cellseg.apis.config_helpers import adapt_to_cpu
    from cellseg.utils.fileio import atomic_write_json

    root = dense512(work)
    coco = json.loads((root / 'annotations' / 'train_all.json').read_text())
    # the 8 images listed several times, so one epoch holds every timed iteration
    repeat = -(-(iters + 4) * 2 // len(coco['images']))
    images, anns = [], []
    for r in range(repeat):
        for img in coco['images']:
            images.append(dict(img, id=img['id'] + r * 1000))
        for a in coco['annotations']:
            anns.append(dict(a, id=len(anns) + 1, image_id=a['image_id'] + r * 1000))
    ann_file = atomic_write_json(root / 'annotations' / 'train_repeated.json',
                                 dict(coco, images=images, annotations=anns))

    cfg = load_config(REPO / 'tests' / 'configs' / 'cell_r50_tiny.py')
    adapt_to_cpu(cfg)  # as tools/train.py does: no AMP without CUDA
    set_mask_loader(cfg, 'LoadCellAnnotations' if cell_annotations else 'LoadAnnotations')
    base_cfg = load_config(REPO / 'configs' / 'cell_r50.py')
    ds = cfg.train_dataloader.dataset
    ds.data_root, ds.ann_file = str(root) + '/', str(ann_file)
    # cell_r50's loader and logging (the tiny config's are for tests: no workers, a log line
    # per iteration); no validation and no checkpoint, which happen between epochs
    cfg.train_dataloader.num_workers = base_cfg.train_dataloader.num_workers
    cfg.train_dataloader.persistent_workers = True
    cfg.default_hooks.logger.interval = base_cfg.default_hooks.logger.interval
    cfg.log_processor.window_size = base_cfg.log_processor.window_size
    cfg.default_hooks.checkpoint = None
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 10**6
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.param_scheduler[0].T_max = cfg.param_scheduler[0].end = 1
    cfg.work_dir = str(work / 'train_run')
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    model = runner.model
    batch = cfg.train_dataloader.batch_size

    loader = runner.build_dataloader(dict(cfg.train_dataloader, num_workers=0,
                                          persistent_workers=False))
    cached = []
    for data in loader:
        cached.append(data)
        if len(cached) == 4:
            break
    optim = runner.build_optim_wrapper(copy.deepcopy(cfg.optim_wrapper))

    def in_memory(n: int) -> list[float]:
        model.train()
        times = []
        for i in range(n + 1):
            data = copy.deepcopy(cached[i % len(cached)])  # the step changes its samples
            start = time.perf_counter()
            model.train_step(data, optim)
            times.append(time.perf_counter() - start)
        return times[1:]  # the first step allocates the optimizer state

    class IterEnds(Hook):
        priority = 'LOWEST'

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.starts: list[float] = []

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            self.starts.append(time.perf_counter())

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self.ends.append(time.perf_counter())
            if len(self.ends) > iters + 2:
                raise StopIteration  # enough: end the epoch here (caught below)

    before = in_memory(iters // 2)
    hook = IterEnds()
    runner.register_hook(hook)
    try:
        runner.train()
    except StopIteration:
        pass
    # the first two iterations start the workers and fill their prefetch queues
    loop = np.diff(hook.ends)[1:][:iters]
    waits = (np.asarray(hook.starts[1:]) - np.asarray(hook.ends[:-1]))[1:][:iters]
    after = in_memory(iters - iters // 2)
    step = np.mean(before + after)
    ratio = float(np.mean(loop)) / step
    masks = 'LoadCellAnnotations' if cell_annotations else "mmdet's LoadAnnotations"
    report('train', f'mean iteration, training loop (tiny model, batch {batch}, 512x512, '
           f'{len(loop)} iterations, {masks})',
           f'{np.mean(loop):.3f} s (median {np.median(loop):.3f})',
           f'{step:.3f} s (median {np.median(before + after):.3f}) train_step on batches in '
           'memory')
    report('train', 'of which waiting for the next batch', f'{np.mean(waits) * 1e3:.0f} ms')
    report('train', f'loop / in-memory step, {masks}', f'{ratio:.3f}', '1.000',
           '<= 1.05' if cell_annotations else '', ratio <= 1.05 if cell_annotations else None)


# ---- 3. prediction end to end -------------------------------------------------------------------

def forward_only(model, batch) -> int:
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


@contextlib.contextmanager
def json_handler(handler):
    """mmengine's ``dump`` of ``.json`` files through ``handler`` for the duration."""
    from mmengine.fileio.handlers.registry_utils import file_handlers

    saved = file_handlers['json']
    file_handlers['json'] = handler
    try:
        yield
    finally:
        file_handlers['json'] = saved


def bench_predict(work: Path, config: str, rounds: int, n_images: int) -> None:
    import torch
    from mmdet.evaluation import CocoMetric
    from mmengine.dataset import pseudo_collate
    from mmengine.fileio.handlers import JsonHandler

    from cellseg.evaluation.fast_json_handler import FastJsonHandler
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

    def one_image(model, metric, images) -> tuple[int, float]:
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
    # tools/test.py reads images in the test loader's workers (cell_r50: 2) while the model runs,
    # so reading is timed as it happens there: one worker per head, prefetching
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
                # the baseline writes its JSON as mmengine does (json.dump); the configs' runs
                # through cellseg.evaluation.fast_json_handler. Then, as tools/test.py --submit does for both, the
                # results are read back, checked and written as test-results.json and its zip.
                writer = JsonHandler() if head == 'fcn' else FastJsonHandler()
                start = time.perf_counter()
                with json_handler(writer):
                    metrics[head].compute_metrics(metrics[head].results)
                with open(out_dir / 'results.segm.json') as f:
                    submitted = json.load(f)
                json_path, _ = write_submission(submitted, out_dir / head / 'submission.zip',
                                                id_map)
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
    for head, label in (('fcn', "mmdet's RoI and mask heads, mmengine's json.dump"),
                        ('chunked', 'ChunkedRoIHead + ChunkedMaskHead, cellseg.evaluation.fast_json_handler')):
        fwd, e2e = results[head]
        report('predict', f'end to end / forward, {name}, 512x512, 300 detections, {label}',
               f'{e2e / fwd:.3f} ({e2e * 1e3:.0f} ms / {fwd * 1e3:.0f} ms; overhead '
               f'{(e2e - fwd) * 1e3:.0f} ms, of which waiting for the loader '
               f'{t_wait[head] / k * 1e3:.1f} ms)', '1.000 (forward alone)',
               '<= 1.10' if head == 'chunked' else '', e2e / fwd <= 1.10 if head == 'chunked'
               else None)
    report('predict', 'submission JSON identical with either head', str(same), met=same)


# ---- 4. memory ----------------------------------------------------------------------------------

def memory_child(config: str, head: str, image: str, out: str, checkpoint: str = '') -> None:
    """Predict ``image`` with 1000 detections up to its RLEs (what CocoMetric.process keeps) and
    write them and this process's peak RSS to ``out`` (run in a fresh process per head); the
    weights of ``checkpoint`` when given."""
    import pickle

    import torch
    from mmdet.structures.mask import encode_mask_results
    from mmengine.dataset import pseudo_collate
    from mmengine.logging import MMLogger

    MMLogger.get_instance('speed', log_level='WARNING')
    cfg = load_config(REPO / config)
    force_detections(cfg, 1000)
    model = build_model(cfg, head)
    if checkpoint:
        from mmengine.runner import load_checkpoint

        import cellseg.engine.checkpoint_loader  # noqa: F401  (torch >= 2.6 reads mmengine checkpoints)
        load_checkpoint(model, checkpoint, map_location='cpu')
    batch = pseudo_collate([pipeline_of(cfg, 'test_pipeline')(dict(img_path=image, img_id=1))])
    rss_model = peak_rss_bytes()
    start = time.perf_counter()
    with torch.no_grad():
        sample = model.test_step(batch)[0]
    masks = sample.pred_instances.masks
    rles = encode_mask_results(masks.numpy()) if isinstance(masks, torch.Tensor) else masks
    seconds = time.perf_counter() - start
    with open(out, 'wb') as f:
        pickle.dump(dict(rles=rles, peak=peak_rss_bytes(), before=rss_model, seconds=seconds), f)


def bench_memory(work: Path, config: str, heads: list[str], checkpoint: str | None) -> None:
    import pickle

    image = big_image(work)
    got = {}
    for head in heads:
        out = work / f'memory_{head}.pkl'
        run_child([sys.executable, str(Path(__file__).resolve()), '_memory_child', config,
                   head, str(image), str(out), checkpoint or ''])
        got[head] = pickle.loads(out.read_bytes())
    n = len(got[heads[-1]]['rles'])
    name = Path(config).stem + (', trained weights' if checkpoint else '')
    for head, label in (('fcn', "mmdet's StandardRoIHead + FCNMaskHead + encode_mask_results"),
                        ('chunked', 'ChunkedRoIHead + ChunkedMaskHead')):
        if head not in got:
            continue
        g = got[head]
        report('memory', f'peak RSS, {name}, 2500x2000, {n} detections, {label}',
               f"{g['peak'] / GIB:.2f} GiB (process with model and image: "
               f"{g['before'] / GIB:.2f} GiB; predict + encode {g['seconds']:.1f} s)",
               '' if head == 'fcn' or 'fcn' not in got else
               f"{got['fcn']['peak'] / GIB:.2f} GiB (mmdet)",
               '<= 2 GiB' if head == 'chunked' else '',
               g['peak'] <= 2 * GIB if head == 'chunked' else None)
    if len(got) == 2:
        same = got['fcn']['rles'] == got['chunked']['rles']
        report('memory', 'RLEs identical to the unchunked result', f'{same} ({n} masks)',
               met=same)


# ---- 5. conversion ------------------------------------------------------------------------------

def encode_instance_map_per_mask(labels: np.ndarray) -> list[dict]:
    """The baseline encoder (cellseg's first, and what the original script did): one pycocotools
    ``encode`` of a full-image mask per instance, painted into one reused buffer."""
    import pycocotools.mask as mask_utils

    from cellseg.formats.hw3 import iter_instances

    buf = np.zeros(labels.shape, dtype=np.uint8, order='F')
    out = []
    for inst_id, sl in iter_instances(labels):
        buf[sl] = labels[sl] == inst_id
        rle = mask_utils.encode(buf)
        buf[sl] = 0
        rle['counts'] = rle['counts'].decode('ascii')
        out.append(dict(id=inst_id, segmentation=rle,
                        bbox=[float(v) for v in mask_utils.toBbox(rle)],
                        area=float(mask_utils.area(rle))))
    return out


_CONVERT = '''
import atexit, runpy, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {bench!r})
sys.argv = ['hw3_to_coco.py'] + {args!r}
if {baseline!r}:
    import speed
    from cellseg.formats import hw3
    hw3.encode_instance_map = speed.encode_instance_map_per_mask
atexit.register(lambda: print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]))
runpy.run_path({script!r}, run_name='__main__')
'''


def bench_convert(work: Path) -> None:
    root = hw3_like(work)
    script = str(REPO / 'data_prep' / 'hw3_to_coco.py')
    outs = {}
    for variant in ('baseline', 'current'):
        out = work / f'convert_{variant}'
        shutil.rmtree(out, ignore_errors=True)
        code = _CONVERT.format(repo=str(REPO), bench=str(Path(__file__).resolve().parent),
                               args=[str(root), '--out-dir', str(out)], script=script,
                               baseline=variant == 'baseline')
        wall, log = run_child([sys.executable, '-c', code], dict(OMP_NUM_THREADS='1'))
        lines = log.strip().splitlines()
        peak = int(lines[-1].split()[1]) * 1024
        outs[variant] = (wall, peak, out, next(x for x in lines if ' images, ' in x))
    (w0, r0, out0, log0), (w1, r1, out1, _) = outs['baseline'], outs['current']
    same = all((out0 / p.name).read_bytes() == p.read_bytes() for p in sorted(out1.iterdir()))
    same = same and sorted(p.name for p in out0.iterdir()) == sorted(p.name for p in out1.iterdir())
    report('convert', f'hw3_to_coco.py with one full-image encode per instance (baseline), 209 '
           f'images ({log0})', f'{w0:.1f} s, peak RSS {r0 / GIB:.2f} GiB')
    report('convert', 'hw3_to_coco.py as it is (run-based encoder, cellseg.structures.rle)',
           f'{w1:.1f} s, peak RSS {r1 / GIB:.2f} GiB', f'{w0:.1f} s (baseline)',
           '<= 30 s and <= 1 GiB', w1 <= 30 and r1 <= GIB)
    report('convert', 'annotation files identical', str(same), met=same)


# ---- 6. evaluation ------------------------------------------------------------------------------

def dense_predictions(gt: dict, seed: int = 0) -> list[dict]:
    """~300 detections per image: every cell found again, slightly shifted, grown or shrunk
    (scores high), and as many false detections, cells moved to where none is (scores low)."""
    import cv2
    import pycocotools.mask as mask_utils

    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for a in gt['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    kernel = np.ones((3, 3), np.uint8)
    preds = []
    for img in gt['images']:
        anns = by_image.get(img['id'], [])
        if not anns:
            continue
        masks = mask_utils.decode([a['segmentation'] for a in anns])  # H x W x n
        out, labels, scores = [], [], []
        for j, a in enumerate(anns):
            for fake in (False, True):
                m = masks[..., j]
                if fake:
                    m = np.roll(m, (int(rng.integers(20, 60)), int(rng.integers(20, 60))), (0, 1))
                else:
                    m = np.roll(m, tuple(int(v) for v in rng.integers(-2, 3, size=2)), (0, 1))
                    op = rng.integers(3)
                    if op == 1:
                        m = cv2.dilate(m, kernel)
                    elif op == 2:
                        m = cv2.erode(m, kernel)
                out.append(m)
                labels.append(a['category_id'] if rng.random() < 0.9 or fake
                              else int(rng.integers(1, 5)))
                scores.append(float(rng.uniform(0.05, 0.6) if fake else rng.uniform(0.3, 1.0)))
        rles = mask_utils.encode(np.asfortranarray(np.stack(out, axis=2)))
        for rle, k, s in zip(rles, labels, scores):
            preds.append(dict(image_id=img['id'], category_id=k, score=round(s, 4),
                              segmentation=dict(size=rle['size'],
                                                counts=rle['counts'].decode('ascii'))))
    return preds


def eval_case(work: Path) -> tuple[Path, Path]:
    """Ground truth of the first 100 hw3-like images and the cached detections of them."""
    from cellseg.formats.coco_conversion import build_train_coco
    from cellseg.utils.fileio import atomic_write_json

    gt_path, pred_path = work / 'eval_gt100.json', work / 'eval_pred100.json'
    if not (gt_path.is_file() and pred_path.is_file()):
        gt = build_train_coco(hw3_like(work))
        keep = {im['id'] for im in gt['images'][:100]}
        gt = dict(gt, images=gt['images'][:100],
                  annotations=[a for a in gt['annotations'] if a['image_id'] in keep])
        atomic_write_json(gt_path, gt)
        atomic_write_json(pred_path, dense_predictions(gt))
    return gt_path, pred_path


def evaluate_with(backend: str, gt_path: Path, predictions: list[dict]) -> tuple[dict, float]:
    from mmengine.logging import MMLogger

    from cellseg.evaluation.metrics.cell_coco_metric import CellCocoMetric
    from cellseg.formats.hw3 import CLASS_NAMES

    metric = CellCocoMetric(ann_file=str(gt_path), metric=['segm'], backend=backend)
    metric.dataset_meta = dict(classes=CLASS_NAMES)
    metric.cat_ids = metric._coco_api.get_cat_ids(cat_names=CLASS_NAMES)
    metric.img_ids = metric._coco_api.get_img_ids()
    predictions = copy.deepcopy(predictions)
    start = time.perf_counter()
    out = metric._evaluate('segm', predictions, MMLogger.get_instance('speed'))
    return out, time.perf_counter() - start


def bench_eval(work: Path) -> None:
    gt_path, pred_path = eval_case(work)
    preds = json.loads(pred_path.read_text())
    n_img = len({p['image_id'] for p in preds})
    ref, t_ref = evaluate_with('pycocotools', gt_path, preds)
    fast, t_fast = evaluate_with('faster_coco_eval', gt_path, preds)
    keys = ('segm_mAP', 'segm_mAP_50', 'segm_mAP_maxdets1000', 'segm_mAP_50_maxdets1000')
    same = all(round(ref[k], 3) == round(fast[k], 3) for k in keys)
    report('eval', f'COCO segm evaluation, {n_img} images, {len(preds) / n_img:.0f} detections '
           'each, maxDets 1000 (loadRes + evaluate + accumulate)',
           f'{t_fast:.1f} s faster_coco_eval', f'{t_ref:.1f} s pycocotools')
    report('eval', 'speed-up', f'{t_ref / t_fast:.1f}x', '1x', '>= 3x', t_ref / t_fast >= 3)
    report('eval', 'AP, AP50 (at 100 and 1000 detections) identical to 3 decimals',
           ', '.join(f'{k} {fast[k]:.4f}/{ref[k]:.4f}' for k in keys), 'pycocotools', 'equal',
           same)


# ---- command line -------------------------------------------------------------------------------

def markdown(figures: list[Figure]) -> str:
    lines = ['| item | figure | measured | baseline | goal | met |', '|---|---|---|---|---|---|']
    for f in figures:
        met = '' if f.met is None else ('yes' if f.met else '**no**')
        lines.append(f'| {f.item} | {f.what} | {f.value} | {f.baseline} | {f.goal} | {met} |')
    return '\n'.join(lines) + '\n'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', nargs='+', choices=ITEMS, help='items to run (default: all)')
    parser.add_argument('--work-dir', default='/tmp/cellseg_speed',
                        help='generated data and outputs (reused between runs)')
    parser.add_argument('--markdown', help='also write the figures as a Markdown table here')
    parser.add_argument('--rounds', type=int, default=3, help='passes over the data per timing')
    parser.add_argument('--train-iters', type=int, default=10, help='timed training iterations')
    parser.add_argument('--predict-config', nargs='+',
                        default=['configs/cell_r50_dense.py', 'tests/configs/cell_r50_tiny.py'],
                        help='models of the predict item')
    parser.add_argument('--predict-images', type=int, default=4)
    parser.add_argument('--memory-config', nargs='+',
                        default=['configs/cell_r50_dense.py', 'tests/configs/cell_r50_tiny.py'],
                        help='models of the memory item')
    parser.add_argument('--memory-checkpoint',
                        help='weights for the memory item (default: random): random boxes are '
                        'image-sized where trained ones are cell-sized, which decides what '
                        "tiling's merge holds")
    parser.add_argument('--memory-heads', nargs='+', choices=('fcn', 'chunked'),
                        default=['fcn', 'chunked'],
                        help="mask heads of the memory item (mmdet's, the configs')")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['_memory_child']:
        memory_child(*argv[1:])
        return 0
    args = parse_args(argv)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    import torch
    from mmengine.logging import MMLogger

    MMLogger.get_instance('speed', log_level='WARNING')  # no weight-init tables

    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'load average {os.getloadavg()[0]:.1f}, torch {torch.__version__} with '
          f'{torch.get_num_threads()} threads, '
          f"{'CUDA' if torch.cuda.is_available() else 'no CUDA'}", flush=True)
    items = args.only or ITEMS
    for item in ITEMS:
        if item not in items:
            continue
        start = time.perf_counter()
        if item == 'data':
            bench_data(work, args.rounds)
        elif item == 'train':
            for cell_annotations in (False, True):
                bench_train(work, args.train_iters, cell_annotations)
        elif item == 'predict':
            for config in args.predict_config:
                bench_predict(work, config, args.rounds, args.predict_images)
        elif item == 'memory':
            for config in args.memory_config:
                bench_memory(work, config, args.memory_heads, args.memory_checkpoint)
        elif item == 'convert':
            bench_convert(work)
        elif item == 'eval':
            bench_eval(work)
        print(f'[{item}] took {time.perf_counter() - start:.0f} s', flush=True)
    print('\n' + markdown(FIGURES))
    if args.markdown:
        Path(args.markdown).write_text(markdown(FIGURES))
    return 0


if __name__ == '__main__':
    sys.exit(main())
