"""Train a cellseg config (mmdet's tools/train.py arguments, plus --data-root/--ann-dir).

    python tools/train.py configs/cell_r50.py [--work-dir DIR] [--resume [CKPT]]
        [--pretrained coco|imagenet|none|FILE|URL] [--data-root DATA_ROOT] [--ann-dir ANN_DIR]
        [--cfg-options k=v ...] [--launcher pytorch]
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cellseg.apis.cli import add_common_args, run_tool  # noqa: E402
from cellseg.apis.cpu_fallback import CPU_AMP_MODES  # noqa: E402
from cellseg.apis.pretrained import CHOICES  # noqa: E402
from cellseg.apis.train import build_runner, training_config  # noqa: E402
from cellseg.engine.quiet_logs import drop_mmengine_deprecation_notices  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a cell segmentation model')
    parser.add_argument('config', help='config file')
    add_common_args(parser)
    parser.add_argument('--resume', nargs='?', const='auto', help='resume from this checkpoint, '
                        'or without a value from the latest one in the work dir')
    parser.add_argument('--pretrained', metavar='|'.join(CHOICES) + '|FILE|URL',
                        help="the weights to start from instead of the config's: 'coco' "
                        "(mmdet's COCO Mask R-CNN R50-FPN), 'imagenet' (the backbone's), 'none' "
                        '(from scratch), or a checkpoint file or URL')
    parser.add_argument('--cpu-amp', choices=CPU_AMP_MODES, help="the recipe's mixed precision "
                        "without CUDA: 'auto' (default; bfloat16 where the CPU computes it "
                        "natively), 'bf16', 'off' (float32)")
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by total batch size / auto_scale_lr.base_batch_size')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = build_runner(training_config(args), args.cpu_amp,
                          None if args.resume else args.pretrained)
    drop_mmengine_deprecation_notices(runner.logger)
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
