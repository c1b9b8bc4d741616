"""The training run of ``tools/train.py``: classes, weights and device settled before the
Runner is built, so that what can fail fails before the first iteration."""
from __future__ import annotations

import argparse
import os.path as osp
import re
from pathlib import Path

from mmengine.config import Config
from mmengine.runner import Runner

from cellseg.apis.classes import checkpoint_classes, configured_classes, resolve_classes
from cellseg.apis.cli import load_config
from cellseg.apis.cpu_fallback import adapt_to_cpu
from cellseg.apis.data_paths import first_annotation_file
from cellseg.apis.pretrained import choose_pretrained, fetch_weights, reinitialised_weights
from cellseg.engine.checkpoint_loader import CheckpointError, is_url, read_checkpoint


def training_config(args: argparse.Namespace) -> Config:
    """The config of ``tools/train.py``'s arguments: the common options, ``--auto-scale-lr``
    and ``--resume`` (without a file: the work dir's latest checkpoint)."""
    cfg = load_config(args)
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


LAST_CHECKPOINT = 'last_checkpoint'  # mmengine's CheckpointHook: the path of the latest save
_RESUMABLE = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')


def _resumable_checkpoints(work_dir: Path) -> list[Path]:
    """The ``epoch_N.pth``/``iter_N.pth`` of a work dir, newest (highest N) first."""
    found = [(int(m.group(1)), p) for p in work_dir.glob('*.pth')
             if (m := _RESUMABLE.match(p.name))]
    return [p for _, p in sorted(found, key=lambda t: -t[0])]


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from, or None when it reads (then kept for the Runner)."""
    if not path.is_file():
        return 'missing'
    try:
        read_checkpoint(path)
    except (CheckpointError, OSError) as e:
        return f'unreadable ({str(e).removeprefix(f"{path}: ")})'
    return None


def resolve_resume(cfg: Config) -> tuple[str, bool] | None:
    """Settle ``--resume`` without a file (``resume=True``, no ``load_from``) on a checkpoint of
    the work dir itself, set as ``cfg.load_from``; return the line to log and whether it is a
    warning (another file than ``last_checkpoint`` names), None when the work dir holds nothing
    to resume (training starts from the beginning, as mmengine does) or when
    ``last_checkpoint`` names a readable file of the work dir (mmengine resumes from it and
    says so).

    mmengine would take the path in ``work_dir/last_checkpoint`` as it is, so a work dir copied
    elsewhere resumes from the original folder's file, and a missing file there makes it train
    from scratch over the older checkpoints. Here the file named there is looked up in this
    work dir (by name), and when it is missing or unreadable the newest readable
    ``epoch_N``/``iter_N`` checkpoint of the work dir is taken, saying so. With none readable
    the run is refused naming them: a work dir with checkpoints is never restarted silently."""
    if not cfg.get('resume') or cfg.get('load_from'):
        return None
    work_dir = Path(osp.abspath(cfg.work_dir))
    pointer = work_dir / LAST_CHECKPOINT
    own = _resumable_checkpoints(work_dir) if work_dir.is_dir() else []
    named = None
    notes = []
    if pointer.is_file():
        text = pointer.read_text(encoding='utf-8').strip()
        if text:
            named = Path(text) if osp.isabs(text) else work_dir / text
            if osp.realpath(named.parent) != osp.realpath(work_dir):
                notes.append(f'{pointer} names {named}, outside this work dir (a copied work '
                             f'dir?): its own {named.name} is used')
                named = work_dir / named.name
    if named is None and not own:
        return None
    candidates = ([named] if named is not None else []) + [p for p in own if p != named]
    problems = []
    for path in candidates:
        why = _unreadable(path)
        if why is None:
            break
        problems.append(f'{path}: {why}')
    else:
        raise CheckpointError(
            f'{named or pointer}: --resume found no readable checkpoint in {work_dir} ('
            + '; '.join(problems) + '); restore one, give --resume FILE, or train into '
            'another --work-dir to start from the beginning')
    if problems:
        notes.append('; '.join(problems) + f'; resuming from {path}, the newest readable '
                     'checkpoint of the work dir')
    if not notes and named is not None and str(named) == text:
        return None  # the usual case: mmengine's own auto-resume reads this file and logs it
    cfg.load_from = str(path)
    return ('; '.join(notes), True) if notes else (f'resuming from {path}', False)


def _resumed_checkpoint(cfg: Config) -> str | None:
    """The local checkpoint ``--resume`` continues from once ``resolve_resume`` has run: the
    ``load_from`` it set or was given, else the file ``last_checkpoint`` names (which mmengine
    resumes from itself); None when nothing is resumed or the checkpoint is a URL."""
    if not cfg.get('resume'):
        return None
    if cfg.get('load_from'):
        return None if is_url(cfg.load_from) else cfg.load_from
    pointer = Path(osp.abspath(cfg.work_dir)) / LAST_CHECKPOINT
    text = pointer.read_text(encoding='utf-8').strip() if pointer.is_file() else ''
    return text or None


def check_resume_classes(cfg: Config, checkpoint: str) -> None:
    """Refuse resuming ``checkpoint`` on data of other classes (the heads would not load and
    the optimizer's state would not fit them), naming the checkpoint, the annotation file and
    both class lists, before the Runner is built. Call after ``resolve_classes(cfg)``. A
    checkpoint that names no classes (not one of tools/train.py) is not checked here."""
    saved = checkpoint_classes(checkpoint)  # read once: the Runner's resume takes this dict
    data = configured_classes(cfg)
    if saved is not None and data is not None and tuple(saved) != tuple(data):
        raise CheckpointError(
            f'{checkpoint}: --resume: the checkpoint was trained on {len(saved)} classes '
            f'{list(saved)}, but {first_annotation_file(cfg) or cfg.filename} has {len(data)} '
            f'{list(data)}; train into another --work-dir (--pretrained FILE to start from its '
            'weights) or resume with the data it was trained on')


def start_cpu_processes(cfg: Config) -> None:
    """Start the process group of ``--launcher pytorch`` (tools/dist_train.sh) on a machine
    without CUDA, env:// from torchrun, with the config's backend (``adapt_to_cpu`` made it
    gloo). mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device``, which a CPU build
    of torch lacks; the Runner skips ``init_dist`` when a process group exists."""
    import torch
    import torch.distributed as dist

    if cfg.get('launcher') != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return
    dist.init_process_group(backend=cfg.env_cfg.get('dist_cfg', {}).get('backend', 'gloo'))


def build_runner(cfg: Config, cpu_amp: str | None = None,
                 pretrained: str | None = None) -> Runner:
    """The Runner of a training: heads sized to the data's classes, the weights to start from
    chosen (``pretrained``, see ``choose_pretrained``) and downloaded, a checkpoint to resume
    from read and checked, the CPU's precision chosen; each decision logged once."""
    notes = [resolve_classes(cfg)]
    if pretrained is not None:
        notes.append(choose_pretrained(cfg, pretrained))
    fetch_weights(cfg)  # a machine without a network stops here, naming the URL
    warnings = []
    resumed = resolve_resume(cfg)  # before the checkpoint is read and the Runner built
    if resumed is not None:
        (warnings if resumed[1] else notes).append(resumed[0])
    if (resume_from := _resumed_checkpoint(cfg)) is not None:
        check_resume_classes(cfg, resume_from)
    checkpoint = None
    if cfg.get('load_from') and (not cfg.get('resume') or not is_url(cfg.load_from)):
        # a refused or broken file stops here; the dict is kept for the Runner's own load
        checkpoint = read_checkpoint(cfg.load_from)
    changes = adapt_to_cpu(cfg, cpu_amp)
    start_cpu_processes(cfg)
    runner = Runner.from_cfg(cfg)
    if checkpoint is not None and not cfg.get('resume'):
        fresh = reinitialised_weights(runner.model, checkpoint)
        notes.append(f'load_from {cfg.load_from}: every weight but {len(fresh)} loaded; '
                     f're-initialised (absent there or of another shape): '
                     f'{", ".join(fresh) or "none"}')
    for note in notes:
        runner.logger.info(note)  # logged once the runner's logger exists: in the run's log
    for change in changes + warnings:
        runner.logger.warning(change)
    return runner
