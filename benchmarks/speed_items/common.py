"""What the speed items share: the figures and their table, child processes, the generated data
(cached in the work dir), and the mmdet set-up (configs, models with either pair of heads)."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SPEED_SCRIPT = REPO / 'benchmarks' / 'speed.py'
GIB = 1024**3


# ---- figures ------------------------------------------------------------------------------------

@dataclass
class Figure:
    """One measured figure, its baseline and goal, as printed and tabulated."""

    item: str
    what: str
    value: str
    baseline: str
    goal: str
    met: bool | None  # None: a figure without a goal of its own


FIGURES: list[Figure] = []


def report(item: str, what: str, value: str, baseline: str = '', goal: str = '',
           met: bool | None = None) -> None:
    """Print a figure at once (long runs show progress) and keep it for the final table."""
    FIGURES.append(Figure(item, what, value, baseline, goal, met))
    verdict = '' if met is None else ('  MET' if met else '  NOT MET')
    print(f'[{item}] {what}: {value}' + (f' (baseline {baseline})' if baseline else '')
          + (f' goal {goal}' if goal else '') + verdict, flush=True)


def markdown(figures: list[Figure]) -> str:
    """The figures as a Markdown table (``--markdown``, and the end of every run)."""
    lines = ['| item | figure | measured | baseline | goal | met |', '|---|---|---|---|---|---|']
    for f in figures:
        met = '' if f.met is None else ('yes' if f.met else '**no**')
        lines.append(f'| {f.item} | {f.what} | {f.value} | {f.baseline} | {f.goal} | {met} |')
    return '\n'.join(lines) + '\n'


# ---- processes ----------------------------------------------------------------------------------

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
    writes them) of images drawn by ``cellseg.testing.demo_data.render_image``, one per
    (height, width, cells) of ``shapes``; reused when present."""
    import tifffile

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


def with_train_all(root: Path) -> Path:
    """``root`` with its COCO ``annotations/train_all.json`` (written when missing)."""
    from cellseg.formats.coco_conversion import convert

    if not (root / 'annotations' / 'train_all.json').is_file():
        convert(root, root / 'annotations', folds=0)
    return root


def dense512(work: Path) -> Path:
    """8 images of 512x512 with 150 cells each, and their COCO ``annotations/train_all.json``."""
    return with_train_all(write_hw3_root(work / 'dense512', [(512, 512, 150)] * 8, seed=1))


def consep_like(work: Path, n_images: int) -> Path:
    """``n_images`` of 256x256 with 40 cells each (CoNSeP's patches: 256 px, ~44 cells on
    average), and their COCO ``annotations/train_all.json``."""
    root = write_hw3_root(work / f'consep_like{n_images}', [(256, 256, 40)] * n_images, seed=4)
    return with_train_all(root)


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
    import tifffile

    from cellseg.testing.demo_data import render_image

    path = work / 'big_2500x2000.tif'
    if not path.is_file():
        rgba, _, _ = render_image(np.random.default_rng(3), 2500, 2000, 3000)
        tifffile.imwrite(path, rgba, photometric='rgb', compression='lzw', predictor=True)
    return path


# ---- mmdet set-up -------------------------------------------------------------------------------

def load_config(path: str | Path) -> Any:
    """A config (its custom_imports imported) in mmdet's default scope, random initial weights
    (no backbone checkpoint is read), its heads sized to the four classes of the generated
    benchmark data (and of CoNSeP) where the config leaves the classes to the data (as
    tools/train.py sizes them; left alone, they keep mmdet's 80, and a 4-class checkpoint's
    class layers would not load)."""
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from cellseg.apis.classes import configured_classes, set_classes
    from cellseg.testing.synthetic_cells import SYNTHETIC_CLASSES

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.init_cfg = None
    if configured_classes(cfg) is None:
        set_classes(cfg, SYNTHETIC_CLASSES)
    return cfg


def force_detections(cfg: Any, n: int) -> None:
    """Test settings under which an untrained model keeps exactly ``n`` detections per image:
    every score counts and enough proposals reach the RoI head."""
    test_cfg = cfg.model.test_cfg
    test_cfg.rpn.nms_pre = max(test_cfg.rpn.get('nms_pre', 1000), 3000)
    test_cfg.rpn.max_per_img = max(test_cfg.rpn.get('max_per_img', 1000), 2 * n)
    test_cfg.rcnn.score_thr = 0.0
    test_cfg.rcnn.max_per_img = n


def build_model(cfg: Any, head: str) -> Any:
    """The config's detector on the CPU with mmdet's RoI and mask heads (``'fcn'``:
    ``StandardRoIHead``, ``FCNMaskHead``, ``benchmarks.references.mmdet_roi_head``) or cellseg's
    (``'chunked'``: ``ChunkedRoIHead``, ``ChunkedMaskHead``); fixed seed, so both get the same
    weights. In eval mode."""
    import torch
    from mmdet.registry import MODELS

    import cellseg.models.roi_heads.chunked_roi_head  # noqa: F401  (registers ChunkedRoIHead)
    import cellseg.models.roi_heads.mask_heads.chunked_mask_head  # noqa: F401  (ChunkedMaskHead)
    from benchmarks.references import mmdet_roi_head

    cfg = copy.deepcopy(cfg)
    if head == 'chunked':
        cfg.model.roi_head.type = 'ChunkedRoIHead'
        cfg.model.roi_head.mask_head.type = 'ChunkedMaskHead'
    elif head == 'fcn':
        cfg.model.roi_head = mmdet_roi_head(cfg.model.roi_head)
    else:
        raise ValueError(f"head must be 'fcn' or 'chunked', got {head!r}")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def pipeline_of(cfg: Any, key: str) -> Any:
    """The config's pipeline ``key`` (e.g. ``'test_pipeline'``) as one callable."""
    from mmcv.transforms import Compose

    return Compose(cfg[key])
