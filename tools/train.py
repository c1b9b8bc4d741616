"""Train a cellseg config (mmdet's tools/train.py arguments, plus --data-root/--ann-dir).

    python tools/train.py configs/cell_r50.py [--work-dir DIR] [--resume [CKPT]]
        [--data-root DATA_ROOT] [--ann-dir ANN_DIR] [--cfg-options k=v ...] [--launcher pytorch]
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from cellseg.runtime import adapt_to_cpu, set_data_paths  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a cell segmentation model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--data-root', help='HW3 data root (overrides the config)')
    parser.add_argument('--ann-dir', help='folder of the COCO files from data_prep/hw3_to_coco.py '
                        '(default: DATA_ROOT/annotations)')
    parser.add_argument('--resume', nargs='?', const='auto', help='resume from this checkpoint, '
                        'or without a value from the latest one in the work dir')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by total batch size / auto_scale_lr.base_batch_size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher for several processes')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    set_data_paths(cfg, args.data_root, args.ann_dir)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = build_config(args)
    changes = adapt_to_cpu(cfg)
    runner = Runner.from_cfg(cfg)
    for change in changes:  # logged once the runner's logger exists, so it is in the run's log
        runner.logger.warning(change)
    runner.train()


if __name__ == '__main__':
    main()
