"""What the command lines share: their common options, config loading, data paths, device
fallbacks, the submission run."""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Any

import torch
from mmengine.config import Config, ConfigDict, DictAction

from cellseg.formats.hw3 import CLASS_NAMES, TEST_DIR, TEST_ID_MAP

_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_EVALUATORS = ('val_evaluator', 'test_evaluator')
TEST_ANN = 'test.json'


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options tools/train.py and tools/test.py share (mmdet's, plus the data paths)."""
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--data-root', help='HW3 data root (overrides the config)')
    parser.add_argument('--ann-dir', help='folder of the COCO files from data_prep/hw3_to_coco.py '
                        '(default: DATA_ROOT/annotations)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher for several processes')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the common options applied."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    set_data_paths(cfg, args.data_root, args.ann_dir)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def leaf_datasets(loader: Any) -> list[ConfigDict]:
    """The leaf dataset configs of a dataloader (through RepeatDataset/ConcatDataset wrappers)."""
    out, todo = [], [loader.get('dataset')] if loader else []
    while todo:
        ds = todo.pop()
        if ds is None:
            continue
        if 'datasets' in ds:
            todo.extend(ds['datasets'])
        elif 'dataset' in ds:
            todo.append(ds['dataset'])
        else:
            out.append(ds)
    return out


def _evaluators(cfg: Config) -> list[ConfigDict]:
    out = []
    for key in _EVALUATORS:
        ev = cfg.get(key)
        out.extend(ev if isinstance(ev, list) else [ev] if ev else [])
    return out


def set_data_paths(cfg: Config, data_root: str | None = None,
                   ann_dir: str | None = None) -> None:
    """Point every dataloader and evaluator at another HW3 data root and/or annotation folder.

    Annotation files keep their names (``fold0_train.json``, ...) and move to ``ann_dir``, or to
    ``DATA_ROOT/annotations/`` when only ``data_root`` is given. This lets one config serve data
    anywhere, e.g. a read-only data root with annotations written elsewhere.
    """
    if data_root is None and ann_dir is None:
        return
    if data_root is not None:
        data_root = osp.join(data_root, '')
        cfg.data_root = data_root
    for key in _LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            if data_root is not None:
                ds.data_root = data_root
            target = ann_dir if ann_dir is not None else osp.join(ds.data_root, 'annotations')
            if ds.get('ann_file'):
                ds.ann_file = osp.abspath(osp.join(target, osp.basename(ds.ann_file)))
    for ev in _evaluators(cfg):
        if ev.get('ann_file'):
            target = ann_dir if ann_dir is not None else osp.join(cfg.data_root, 'annotations')
            ev.ann_file = osp.abspath(osp.join(target, osp.basename(ev.ann_file)))


CPU_AMP_MODES = ('auto', 'bf16', 'off')


def adapt_to_cpu(cfg: Config, cpu_amp: str | None = None) -> list[str]:
    """Make a GPU config run on a machine without CUDA; return what was changed, to be logged.

    - ``AmpOptimWrapper`` (the recipe's mixed precision; mmengine's asserts a GPU) becomes
      ``CpuAmpOptimWrapper``, a bfloat16 autocast on the CPU, where the CPU computes bfloat16
      natively, and ``OptimWrapper`` (float32) elsewhere. ``cpu_amp`` (else the config's
      ``cpu_amp``, else ``'auto'``) chooses: ``'auto'`` as just said, ``'bf16'`` bfloat16 even
      without native support (emulated, slow: for tests), ``'off'`` float32.
    - The distributed backend ``nccl`` becomes ``gloo``, so ``tools/dist_train.sh`` runs several
      CPU processes.
    Call before building the runner; log once the runner's logger exists.
    """
    if torch.cuda.is_available():
        return []
    from cellseg.engine.optimizers.cpu_amp_optim_wrapper import cpu_has_bf16

    mode = cpu_amp or cfg.get('cpu_amp') or 'auto'
    if mode not in CPU_AMP_MODES:
        raise ValueError(f'cpu_amp must be one of {CPU_AMP_MODES}, got {mode!r}')
    changes = []
    wrapper = cfg.get('optim_wrapper')
    if wrapper and wrapper.get('type') == 'AmpOptimWrapper':
        for amp_only in ('loss_scale', 'dtype', 'use_fsdp'):
            wrapper.pop(amp_only, None)
        native = cpu_has_bf16()
        if mode == 'bf16' or (mode == 'auto' and native):
            wrapper.type, wrapper.dtype = 'CpuAmpOptimWrapper', 'bfloat16'
            changes.append('No CUDA device: mixed precision as a bfloat16 autocast on the CPU '
                           '(CpuAmpOptimWrapper) in place of the config\'s AmpOptimWrapper'
                           + ('' if native else '; this CPU has no native bfloat16 '
                              '(avx512_bf16/amx_bf16), so it is emulated and slower') + '.')
        else:
            wrapper.type = 'OptimWrapper'
            why = ('cpu_amp is off' if mode == 'off' else
                   'this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), where '
                   'bfloat16 would be slower than float32')
            changes.append('No CUDA device: training in float32 with OptimWrapper instead of the '
                           f"config's AmpOptimWrapper ({why}).")
    dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg')
    if cfg.get('launcher', 'none') != 'none' and dist_cfg and dist_cfg.get('backend') == 'nccl':
        dist_cfg.backend = 'gloo'
        changes.append('No CUDA device: distributed backend gloo instead of nccl.')
    if cfg.get('launcher') == 'pytorch':
        _start_cpu_processes(cfg)
    return changes


def _start_cpu_processes(cfg: Config) -> None:
    """Let ``--launcher pytorch`` (tools/dist_train.sh) run CPU processes with gloo.

    mmengine 0.10.7 assumes GPUs there: its ``init_dist`` calls ``torch.cuda.set_device``, which a
    CPU build of torch lacks (the Runner skips ``init_dist`` when a process group exists, so it is
    created here, env:// from torchrun), and it wraps the model in DDP with
    ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=cfg.env_cfg.get('dist_cfg', {}).get('backend', 'gloo'))
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)


def test_dataset_root(cfg: Config) -> str:
    """The data root of the test dataloader's dataset."""
    return leaf_datasets(cfg.test_dataloader)[0].data_root


def configure_submission_run(cfg: Config, outfile_prefix: str,
                             ann_dir: str | None = None) -> tuple[str, str]:
    """Switch the test loop to the competition's test images, writing mmdet's COCO results JSON.

    The test images come from ``test.json`` (written by ``hw3_to_coco.py`` from the test id map,
    so it carries the ids CodaBench expects). Returns the paths of ``test.json`` and of the id map.
    """
    data_root = test_dataset_root(cfg)
    ann_path = osp.abspath(osp.join(ann_dir or osp.join(data_root, 'annotations'), TEST_ANN))
    id_map = osp.join(data_root, TEST_ID_MAP)
    for path, what in ((ann_path, 'run data_prep/hw3_to_coco.py on the data root first'),
                       (id_map, 'the competition test set comes with it')):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path}: not found ({what})')
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.ann_file = ann_path
        ds.test_mode = True
    cfg.test_evaluator = dict(type='CocoMetric', ann_file=ann_path, metric=['segm'],
                              format_only=True, outfile_prefix=outfile_prefix)
    return ann_path, id_map


def use_test_ground_truth(cfg: Config, gt_path: str) -> None:
    """Evaluate the test loop against a COCO ground-truth file of the test images.

    Such files (the demo's and CoNSeP's ``test_gt.json``) name images either relative to the data
    root (``test_release/x.tif``) or, like ``test_image_name_to_ids.json``, by bare file name
    inside ``test_release/``; the image prefix is chosen to match.
    """
    import json

    gt_path = osp.abspath(gt_path)
    with open(gt_path) as f:
        gt = json.load(f)
    images = gt.get('images', [])
    if not images:
        raise ValueError(f'{gt_path}: holds no images')
    data_root = test_dataset_root(cfg)
    first = images[0]['file_name']
    if osp.isfile(osp.join(data_root, first)):
        prefix = ''
    elif osp.isfile(osp.join(data_root, TEST_DIR, first)):
        prefix = TEST_DIR + '/'
    else:
        raise FileNotFoundError(f'{gt_path}: its first image {first} is neither in {data_root} '
                                f'nor in {osp.join(data_root, TEST_DIR)}')
    # Ground truth from elsewhere may name the classes differently (CoNSeP's test_gt.json says
    # 'other', 'inflammatory', ...); the model's k-th class is category id k+1 either way, so the
    # test dataset takes the file's names, in id order, and per-class metrics carry them.
    categories = sorted(gt.get('categories', []), key=lambda c: c['id'])
    if [c['id'] for c in categories] != list(range(1, len(CLASS_NAMES) + 1)):
        raise ValueError(f'{gt_path}: categories must have ids 1..{len(CLASS_NAMES)}, got '
                         f"{[c['id'] for c in categories]}")
    names = tuple(c['name'] for c in categories)
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.ann_file = gt_path
        ds.data_prefix = dict(img=prefix)
        if names != CLASS_NAMES:
            ds.metainfo = dict(classes=names)
    evaluator = cfg.test_evaluator
    for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
        ev.ann_file = gt_path


def use_tta(cfg: Config) -> None:
    """Switch a config's test loop to its test-time augmentation (``tools/test.py --tta``).

    As mmdet's ``tools/test.py --tta``: the model becomes ``tta_model`` wrapping the config's
    model, and every test dataset reads images through ``tta_pipeline``. A config without them
    is an error naming the config.
    """
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        raise ValueError(f'{cfg.filename}: --tta needs {" and ".join(missing)} in the config '
                         '(e.g. configs/cell_r50_dense_tta.py)')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.pipeline = cfg.tta_pipeline
