"""The ``data`` item: a training sample from its files to packed tensors (image + ~150 masks,
512x512), the config's pipeline (``LoadCellAnnotations``) against the original study's per-item
loader and against the same pipeline with mmdet's ``LoadAnnotations``."""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.references import original_loader, set_mask_loader
from benchmarks.speed_items.common import REPO, dense512, load_config, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """None of its own: ``--rounds`` is shared with the predict item."""


def run(args: argparse.Namespace, work: Path) -> None:
    """Time every loader over the 8 dense images, ``args.rounds`` alternating passes."""
    from mmdet.datasets.transforms import PackDetInputs
    from mmdet.registry import DATASETS

    rounds = args.rounds
    root = dense512(work)
    cfg = load_config(REPO / 'configs' / 'cell_r50_scratch.py')
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = str(root) + '/'
    ds_cfg.ann_file = str(root / 'annotations' / 'train_all.json')
    set_mask_loader(ds_cfg.pipeline, 'LoadCellAnnotations')
    cell_loader = DATASETS.build(copy.deepcopy(ds_cfg))
    set_mask_loader(ds_cfg.pipeline, 'LoadAnnotations')
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
