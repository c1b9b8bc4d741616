"""What the command lines share: the options of tools/train.py and tools/test.py, the config
they make of them, and how every command line ends: an expected failure (bad input, a refused
or missing checkpoint, an unreachable download) is one line ``error: <file>: <problem>`` on
stderr and exit status 1, no traceback; ``CELLSEG_DEBUG=1`` shows the traceback instead."""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from collections.abc import Callable

from mmengine.config import Config, DictAction

from cellseg.apis.data_paths import set_data_paths

DEBUG_ENV = 'CELLSEG_DEBUG'


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


def error_line(error: BaseException) -> str:
    """``error: <file>: <problem>`` for an expected failure."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f'error: {error.filename}: {error.strerror}'
    return f'error: {error}'


def run_tool(main: Callable[[list[str] | None], object],
             argv: list[str] | None = None) -> int:
    """Run a tool's ``main`` and turn its expected failures (``ValueError``, which cellseg's
    format, checkpoint and config errors are, and ``OSError``) into one line and status 1. The
    exit status is what ``main`` returns when that is an int, else 0."""
    try:
        status = main(argv)
        return status if isinstance(status, int) else 0
    except (ValueError, OSError) as e:
        if os.environ.get(DEBUG_ENV, '') not in ('', '0'):
            raise
        print(error_line(e), file=sys.stderr)
        return 1
