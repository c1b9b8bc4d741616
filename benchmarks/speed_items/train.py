"""The ``train`` item, two parts (``--train-parts``):

- ``loop``: mean iteration of the training loop (``Runner.train()``, all hooks, cell_r50_scratch's
  loader workers) against ``train_step`` (preprocess, forward, backward, optimizer step) of the
  same model on batches already in memory; the tiny test model, with mmdet's
  ``LoadAnnotations`` and with ``LoadCellAnnotations``.
- ``steps``: the mean ``train_step`` of ``configs/cell_r50_scratch.py`` and
``configs/cell_r50_scratch_tuned.py``
  on CoNSeP-sized batches in memory (4 images of 256x256, ~40 cells each), in float32 and in
  bfloat16 (``CpuAmpOptimWrapper``, as ``adapt_to_cpu(cfg, cpu_amp='bf16')`` sets it), with the
  floor (backbone + neck forward and backward alone) and the ratio of each to the step; and
  cell_r50_scratch_tuned with its previous RoI settings (``benchmarks.references``) in the same run,
  the baseline of the tuned step's goal (at most a third of it).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.references import (
    PREVIOUS_TUNED_SETTINGS,
    set_mask_loader,
    use_previous_tuned_settings,
)
from benchmarks.speed_items.common import REPO, consep_like, dense512, load_config, report

PARTS = ('loop', 'steps')
BATCH = 4  # cell_r50_scratch's images per batch (one GPU)
# cell_r50_scratch_tuned's step at most this share of its previous settings' step
TUNED_GOAL = 1 / 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Both parts' options."""
    parser.add_argument('--train-parts', nargs='+', choices=PARTS, default=list(PARTS),
                        help='parts of the train item (default: both)')
    parser.add_argument('--train-iters', type=int, default=10,
                        help='timed training iterations (loop part)')
    parser.add_argument('--train-steps', type=int, default=3,
                        help='timed train_steps per config after one warm-up (steps part)')
    parser.add_argument('--train-bf16', action='store_true',
                        help='time bfloat16 also on a CPU without native bfloat16 (emulated, '
                        'slow); where the CPU has it, bfloat16 runs without this flag')
    parser.add_argument('--train-data-root',
                        help='HW3 data root for the steps part (e.g. ../shared/data/consep; '
                        'default: generated 256x256 images of 40 cells)')
    parser.add_argument('--train-ann',
                        help='its COCO file (default: DATA_ROOT/annotations/train_all.json when '
                        'present, else converted into the work dir)')


def run(args: argparse.Namespace, work: Path) -> None:
    """The parts chosen, in order."""
    if 'loop' in args.train_parts:
        for cell_annotations in (False, True):
            loop_vs_step(work, args.train_iters, cell_annotations)
    if 'steps' in args.train_parts:
        precisions, skipped = precision_plan(args.train_bf16)
        recipe_steps(work, args.train_steps, precisions, args.train_data_root, args.train_ann)
        if skipped:
            report('train', 'bfloat16 train_step and floor', f'skipped: {skipped}')


# ---- loop: the training loop against train_step -------------------------------------------------

def loop_vs_step(work: Path, iters: int, cell_annotations: bool) -> None:
    """The tiny model's training loop (2 loader workers) against its in-memory ``train_step``,
    the latter timed before and after the loop."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from cellseg.apis.cpu_fallback import adapt_to_cpu
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
    set_mask_loader(cfg.train_dataloader.dataset.pipeline,
                    'LoadCellAnnotations' if cell_annotations else 'LoadAnnotations')
    base_cfg = load_config(REPO / 'configs' / 'cell_r50_scratch.py')
    ds = cfg.train_dataloader.dataset
    ds.data_root, ds.ann_file = str(root) + '/', str(ann_file)
    # cell_r50_scratch's loader and logging (the tiny config's are for tests: no workers, a log line
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


# ---- steps: the recipes' train_step, fp32 and bf16, against the floor ---------------------------

@dataclass(frozen=True)
class Recipe:
    """A config timed by the steps part; ``previous``: with cell_r50_scratch_tuned's previous RoI
    settings (the baseline of the tuned recipe)."""

    name: str
    config: str
    previous: bool = False


PREVIOUS = ', '.join(f"{'.'.join(k.split('.')[-2:])}={v}"
                     for k, v in PREVIOUS_TUNED_SETTINGS.items())
RECIPES = (
    Recipe('cell_r50_scratch', 'configs/cell_r50_scratch.py'),
    Recipe('cell_r50_scratch_tuned', 'configs/cell_r50_scratch_tuned.py'),
    Recipe(f'cell_r50_scratch_tuned with its previous settings ({PREVIOUS})',
           'configs/cell_r50_scratch_tuned.py', previous=True),
)


def precision_plan(bf16_flag: bool, native: bool | None = None) -> tuple[list[str], str]:
    """The precisions to time and, when bfloat16 is left out, why. bfloat16 runs where the CPU
    computes it natively (``cpu_has_bf16``), elsewhere only with ``--train-bf16``: torch then
    emulates it, slower than float32, and the steps part would take many times as long."""
    from cellseg.engine.optimizers.cpu_amp_optim_wrapper import cpu_has_bf16

    native = cpu_has_bf16() if native is None else native
    if native or bf16_flag:
        return ['fp32', 'bf16'], ''
    return ['fp32'], ('this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), so '
                      'torch would emulate it, slower than float32; --train-bf16 times it anyway')


def set_precision(cfg: Any, precision: str) -> list[str]:
    """The optim wrapper of ``precision`` as ``tools/train.py`` sets it on a CPU:
    ``adapt_to_cpu(cfg, cpu_amp='bf16')`` (``CpuAmpOptimWrapper``) or ``cpu_amp='off'``
    (``OptimWrapper``). Where CUDA is visible ``adapt_to_cpu`` changes nothing, and this item
    runs on the CPU still: the same change is made here. Returns adapt_to_cpu's messages."""
    import cellseg.engine.optimizers.cpu_amp_optim_wrapper  # noqa: F401  (registers it)
    from cellseg.apis.cpu_fallback import adapt_to_cpu

    if precision not in ('fp32', 'bf16'):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    bf16 = precision == 'bf16'
    changes = adapt_to_cpu(cfg, cpu_amp='bf16' if bf16 else 'off')
    wrapper = cfg.optim_wrapper
    if wrapper.type == 'AmpOptimWrapper':
        for amp_only in ('loss_scale', 'dtype', 'use_fsdp'):
            wrapper.pop(amp_only, None)
        wrapper.type = 'CpuAmpOptimWrapper' if bf16 else 'OptimWrapper'
        if bf16:
            wrapper.dtype = 'bfloat16'
    want = 'CpuAmpOptimWrapper' if bf16 else 'OptimWrapper'
    if wrapper.type != want:
        raise ValueError(f'{cfg.filename}: optim wrapper {wrapper.type}, expected {want} for '
                         f'{precision}')
    return changes


def step_config(recipe: Recipe, precision: str) -> Any:
    """The config of one timed variant: the recipe, its settings, its precision."""
    cfg = load_config(REPO / recipe.config)
    if recipe.previous:
        use_previous_tuned_settings(cfg)
    set_precision(cfg, precision)
    return cfg


def step_batches(work: Path, n_batches: int, data_root: str | None,
                 ann_file: str | None) -> tuple[list[dict], str]:
    """``n_batches`` batches of 4 training samples through cell_r50_scratch_tuned's pipeline (seeded
    flips), collated as the loader collates them, and a description of them."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    n = n_batches * BATCH
    if data_root:
        root = Path(data_root).resolve()
        ann = Path(ann_file) if ann_file else root / 'annotations' / 'train_all.json'
        if not ann.is_file():
            if ann_file:
                raise FileNotFoundError(f'{ann}: not found')
            from cellseg.formats.coco_conversion import convert

            ann = work / 'train_ann' / root.name / 'train_all.json'
            if not ann.is_file():
                convert(root, ann.parent, folds=0)
        source = f'{root.name}, first {n} images'
    else:
        root = consep_like(work, n)
        ann = root / 'annotations' / 'train_all.json'
        source = 'generated'
    cfg = load_config(REPO / 'configs' / 'cell_r50_scratch_tuned.py')
    ds = cfg.train_dataloader.dataset
    ds.data_root, ds.ann_file = str(root) + '/', str(ann)
    dataset = DATASETS.build(ds)
    if len(dataset) < n:
        raise ValueError(f'{ann}: {len(dataset)} images, the steps part needs {n}')
    np.random.seed(0)
    samples = [dataset[i] for i in range(n)]
    shapes = {tuple(s['inputs'].shape[1:]) for s in samples}
    cells = np.mean([len(s['data_samples'].gt_instances) for s in samples])
    size = ', '.join(f'{h}x{w}' for h, w in sorted(shapes))
    return ([pseudo_collate(samples[i:i + BATCH]) for i in range(0, n, BATCH)],
            f'batch {BATCH} x {size}, {cells:.0f} cells per image, {source}')


@dataclass
class Variant:
    """One recipe in one precision: its model, optim wrapper and measurements."""

    recipe: Recipe
    precision: str
    cfg: Any
    model: Any
    optim: Any
    steps: list[float]  # wall seconds of each timed step
    cpu: list[float]  # this process's CPU seconds of each (all threads): less load-bound
    box_rois: list[int]
    mask_rois: list[int]


def build_variant(recipe: Recipe, precision: str) -> Variant:
    """The variant's detector (seeded: every variant starts from the same weights where the
    layers agree) in train mode, its optim wrapper, and hooks counting the RoIs each head sees."""
    import torch
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper

    cfg = step_config(recipe, precision)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    v = Variant(recipe, precision, cfg, model, build_optim_wrapper(model, cfg.optim_wrapper),
                [], [], [], [])
    roi_head = model.roi_head
    roi_head.bbox_head.register_forward_hook(lambda m, i, o: v.box_rois.append(len(i[0])))
    roi_head.mask_head.register_forward_hook(lambda m, i, o: v.mask_rois.append(len(i[0])))
    return v


def time_step(v: Variant, batch: dict) -> tuple[float, float]:
    """One ``train_step`` (preprocess, forward, losses, backward, optimizer step): its wall and
    CPU seconds."""
    data = copy.deepcopy(batch)  # the step changes its samples
    start, cpu = time.perf_counter(), time.process_time()
    v.model.train_step(data, v.optim)
    return time.perf_counter() - start, time.process_time() - cpu


def time_floor(v: Variant, inputs: Any) -> tuple[float, float]:
    """Backbone and neck alone: ``extract_feat`` of the preprocessed images, then backward of
    the sum of its outputs, under the variant's autocast (none in float32). The gradients are
    dropped afterwards, so the next step starts from none, as after its own update."""
    import torch

    start, cpu = time.perf_counter(), time.process_time()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=v.precision == 'bf16'):
        feats = v.model.extract_feat(inputs)
        total = sum(f.float().sum() for f in feats)
    total.backward()
    seconds = time.perf_counter() - start, time.process_time() - cpu
    v.model.zero_grad(set_to_none=True)
    return seconds


def recipe_steps(work: Path, steps: int, precisions: list[str], data_root: str | None,
                 ann_file: str | None) -> None:
    """Every recipe in every precision, interleaved step by step (so the machine's load changes
    hit all alike), one warm-up round first; then the floors; then the figures."""
    batches, what = step_batches(work, max(1, min(steps, 2)), data_root, ann_file)
    variants = [build_variant(r, p) for p in precisions for r in RECIPES]
    # the floor of each precision, on the first recipe's model (all share backbone and neck)
    archs = {json.dumps([v.cfg.model.backbone, v.cfg.model.neck], sort_keys=True, default=str)
             for v in variants}
    if len(archs) != 1:
        raise ValueError('the recipes differ in backbone or neck: one floor does not fit all')
    floor_of = {p: next(v for v in variants if v.precision == p) for p in precisions}
    inputs = [floor_of[precisions[0]].model.data_preprocessor(copy.deepcopy(b), True)['inputs']
              for b in batches]
    floors: dict[str, list[tuple[float, float]]] = {p: [] for p in precisions}
    for r in range(steps + 1):  # round 0 warms up (allocates the optimizer state)
        for v in variants:
            if r <= 1:  # the RoIs of the timed steps only
                v.box_rois.clear()
                v.mask_rois.clear()
            wall, cpu_s = time_step(v, batches[r % len(batches)])
            if r:
                v.steps.append(wall)
                v.cpu.append(cpu_s)
        for p, v in floor_of.items():
            t = time_floor(v, inputs[r % len(inputs)])
            if r:
                floors[p].append(t)
    mean = {(v.recipe, v.precision): float(np.mean(v.steps)) for v in variants}
    cpu = {(v.recipe, v.precision): float(np.mean(v.cpu)) for v in variants}
    n_img = steps * BATCH
    for p in precisions:
        floor, floor_cpu = (float(np.mean(col)) for col in zip(*floors[p]))
        for v in (v for v in variants if v.precision == p):
            step = mean[v.recipe, p]
            vs_fp32 = ('' if p == 'fp32' else f"{mean[v.recipe, 'fp32']:.2f} s fp32 (bf16/fp32 "
                       f"{step / mean[v.recipe, 'fp32']:.3f})")
            report('train', f'train_step, {v.recipe.name}, {p}, {what}, mean of {steps} after '
                   'a warm-up', f'{step:.2f} s (median {np.median(v.steps):.2f}; CPU '
                   f'{cpu[v.recipe, p]:.1f} s; {sum(v.box_rois) / n_img:.0f} box and '
                   f'{sum(v.mask_rois) / n_img:.0f} mask RoIs per image)', vs_fp32)
            report('train', f'floor: backbone+neck forward/backward alone, {p}, against '
                   f'{v.recipe.name}', f'{floor:.2f} s = {floor / step:.3f} of the step (CPU '
                   f'{floor_cpu:.1f} s = {floor_cpu / cpu[v.recipe, p]:.3f})',
                   f'{step:.2f} s train_step')
    tuned, previous = RECIPES[1], RECIPES[2]
    pairs = [(p, p) for p in precisions] + ([('bf16', 'fp32')] if 'bf16' in precisions else [])
    for p, q in pairs:
        ratio = mean[tuned, p] / mean[previous, q]
        report('train', f'train_step, cell_r50_scratch_tuned {p} / with its previous settings {q}',
               f'{ratio:.3f} ({mean[tuned, p]:.2f} s / {mean[previous, q]:.2f} s; CPU time '
               f'{cpu[tuned, p] / cpu[previous, q]:.3f})', f'1.000 ({PREVIOUS})',
               f'<= {TUNED_GOAL:.3f}', ratio <= TUNED_GOAL)
