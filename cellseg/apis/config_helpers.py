"""What the command lines share: their common options, config loading, data paths, device
fallbacks, the submission run."""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
from typing import Any

import torch
from mmengine.config import Config, ConfigDict, DictAction

from cellseg.formats.hw3 import TEST_DIR, TEST_ID_MAP, path_problem

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

    With ``ann_dir``, annotation files keep their names (``fold0_train.json``, ...) and move
    there. With ``data_root`` alone, each annotation file keeps its place relative to the data
    root, as the config gives it (``annotations/fold0_train.json``, the demo's ``test_gt.json``).
    This lets one config serve data anywhere, e.g. a read-only data root with annotations
    written elsewhere.
    """
    if data_root is None and ann_dir is None:
        return
    old_root = cfg.get('data_root') or ''
    if data_root is not None:
        data_root = osp.join(data_root, '')
        cfg.data_root = data_root

    def moved(path: str, root: str) -> str:
        if ann_dir is not None:
            return osp.abspath(osp.join(ann_dir, osp.basename(path)))
        if osp.isabs(path) or not (old_root and path.startswith(old_root)):
            return path  # relative to the dataset's data_root, or elsewhere on purpose
        return osp.join(root, path[len(old_root):])

    for key in _LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            if data_root is not None:
                ds.data_root = data_root
            if ds.get('ann_file'):
                ds.ann_file = moved(ds.ann_file, ds.data_root)
    for ev in _evaluators(cfg):
        if ev.get('ann_file'):
            ev.ann_file = moved(ev.ann_file, cfg.data_root)


def annotation_classes(ann_file: str | os.PathLike) -> tuple[str, ...]:
    """The class names of a COCO file, by category id; ids must be 1..K."""
    with open(ann_file, encoding='utf-8') as f:
        categories = sorted(json.load(f).get('categories') or [], key=lambda c: c['id'])
    if [c['id'] for c in categories] != list(range(1, len(categories) + 1)) or not categories:
        raise ValueError(f'{ann_file}: categories must have ids 1..K (K >= 1), got '
                         f'{[c["id"] for c in categories]}')
    return tuple(str(c['name']) for c in categories)


def checkpoint_classes(checkpoint: str | os.PathLike) -> tuple[str, ...] | None:
    """The classes a checkpoint was trained on (mmengine saves the training dataset's metainfo
    in its ``meta``), or None for a checkpoint without them. The checkpoint is read once: the
    next load of the same file (the Runner's, ``init_detector``'s) takes the dict read here."""
    from cellseg.engine.checkpoint_loader import read_checkpoint

    meta = read_checkpoint(checkpoint).get('meta')
    classes = ((meta or {}).get('dataset_meta') or {}).get('classes')
    return tuple(classes) if classes else None


def configured_classes(cfg: Config) -> tuple[str, ...] | None:
    """The classes a config names itself (``metainfo=dict(classes=...)`` of its datasets)."""
    for key in _LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            classes = (ds.get('metainfo') or {}).get('classes')
            if classes:
                return tuple(classes)
    return None


def _set_num_classes(node: Any, n: int) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'num_classes':
                node[key] = n
            else:
                _set_num_classes(value, n)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _set_num_classes(value, n)


def set_classes(cfg: Config, classes: tuple[str, ...]) -> None:
    """Give every dataset ``classes`` (and a palette of as many colours) and size every head
    (each ``num_classes`` of the model) to them."""
    from cellseg.visualization.visualize import palette_for

    palette = palette_for({}, len(classes))
    for key in _LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            ds.metainfo = dict(ds.get('metainfo') or {}, classes=tuple(classes), palette=palette)
    _set_num_classes(cfg.model, len(classes))


def first_annotation_file(cfg: Config) -> str | None:
    """The first annotation file of the config's datasets that exists (where the data's
    classes are read), or None."""
    for key in _LOADERS:
        for ds in leaf_datasets(cfg.get(key)):
            ann = ds.get('ann_file')
            if ann:
                path = ann if osp.isabs(ann) else osp.join(ds.get('data_root') or '', ann)
                if osp.isfile(path):
                    return path
    return None


def resolve_classes(cfg: Config, checkpoint: str | os.PathLike | None = None) -> str:
    """Size the datasets and heads to the classes of the data, or of the checkpoint when one is
    given and remembers them; return the line to log.

    The data's classes are the categories of its annotation files (``hw3_to_coco.py`` writes
    ``class1..classK`` or the names of ``classes.txt``). A config that names its classes keeps
    them, and data or a checkpoint with other classes is an error, never a silent mismatch.
    """
    source, classes = None, None
    if checkpoint is not None:
        classes = checkpoint_classes(checkpoint)
        source = f'checkpoint {checkpoint}'
    if classes is None:
        source = first_annotation_file(cfg)
        if source is None:
            raise FileNotFoundError(f'{cfg.filename}: none of its annotation files exists, so '
                                    'the classes are unknown (run data_prep/hw3_to_coco.py and '
                                    'pass --data-root/--ann-dir)')
        classes = annotation_classes(source)
    named = configured_classes(cfg)
    if named is not None and tuple(named) != tuple(classes):
        raise ValueError(f'{cfg.filename} names the classes {list(named)}, but {source} has '
                         f'{list(classes)}')
    set_classes(cfg, classes)
    return f'classes from {source}: {len(classes)} ({", ".join(classes)}); heads sized to them'


def resolved_classes(cfg: Config) -> tuple[str, ...]:
    """The classes the config's model is sized to: those ``resolve_classes`` set (from the
    checkpoint or the data), else, for a config not resolved yet, those of its annotation files
    (resolved here)."""
    if configured_classes(cfg) is None:
        resolve_classes(cfg)
    return configured_classes(cfg)


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


def configure_submission_run(cfg: Config, outfile_prefix: str) -> tuple[str, str]:
    """Switch the test loop to the competition's test images, writing mmdet's COCO results JSON.

    The test images, their ids and sizes come from the data root's
    ``test_image_name_to_ids.json`` alone (checked against ``test_release/``): a data root
    holding only the test set can be submitted. Their image-info COCO file, carrying the model's
    classes, is written beside ``outfile_prefix``. Returns its path and the id map's.
    """
    from cellseg.formats.coco_conversion import build_test_coco
    from cellseg.utils.fileio import atomic_write_json

    data_root = test_dataset_root(cfg)
    id_map = osp.join(data_root, TEST_ID_MAP)
    if not osp.isfile(id_map):
        raise FileNotFoundError(f'{id_map}: not found (the competition test set comes with it)')
    classes = resolved_classes(cfg)
    ann_path = os.fspath(atomic_write_json(f'{outfile_prefix}.{TEST_ANN}',
                                           build_test_coco(data_root, classes)))
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.ann_file = ann_path
        ds.data_prefix = dict(img='')
        ds.test_mode = True
    cfg.test_evaluator = dict(type='CocoMetric', ann_file=ann_path, metric=['segm'],
                              format_only=True, outfile_prefix=outfile_prefix)
    return ann_path, id_map


def use_test_ground_truth(cfg: Config, gt_path: str) -> None:
    """Evaluate the test loop against a COCO ground-truth file of the test images.

    Such files (the demo's and CoNSeP's ``test_gt.json``) name images either relative to the data
    root (``test_release/x.tif``) or, like ``test_image_name_to_ids.json``, by bare file name
    inside ``test_release/``; the image prefix is chosen to match. A ``file_name`` that is
    absolute or climbs out with ``..`` is refused naming the image.
    """
    import json

    gt_path = osp.abspath(gt_path)
    with open(gt_path) as f:
        gt = json.load(f)
    images = gt.get('images', [])
    if not images:
        raise ValueError(f'{gt_path}: holds no images')
    data_root = test_dataset_root(cfg)
    for image in images:  # a name leading out of the data root would read a file not of it
        outside = path_problem(str(image.get('file_name', '')), data_root)
        if outside is not None:
            raise ValueError(f'{gt_path}: image {image.get("id")}: file_name {outside}')
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
    names = annotation_classes(gt_path)
    classes = resolved_classes(cfg)
    if len(names) != len(classes):
        raise ValueError(f'{gt_path}: {len(names)} categories, but the model has '
                         f'{len(classes)} classes ({", ".join(classes)})')
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.ann_file = gt_path
        ds.data_prefix = dict(img=prefix)
        ds.metainfo = dict(ds.get('metainfo') or {}, classes=names)
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
                         '(e.g. configs/cell_r50_scratch_dense_tta.py)')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.pipeline = cfg.tta_pipeline
