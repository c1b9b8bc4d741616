"""Print box size statistics of a COCO file and the FPN anchors they suggest.

    python tools/anchor_stats.py ANN_JSON [--anchors-per-position 9]

ANN_JSON is a file written by data_prep/hw3_to_coco.py (e.g. train_all.json). The suggested
``scales``/``ratios``/``strides`` go into ``model.rpn_head.anchor_generator`` of a config.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cellseg.apis.anchor_stats import report  # noqa: E402
from cellseg.apis.cli import run_tool  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('ann_json', help='COCO annotation file')
    parser.add_argument('--anchors-per-position', type=int, default=9,
                        help='most anchors (scales x ratios) per grid point (default 9; '
                        "mmdet's default config has 3)")
    args = parser.parse_args(argv)
    text, suggested = report(args.ann_json, args.anchors_per_position)
    print(text)
    print(f"anchor_generator=dict(type='AnchorGenerator', scales={suggested['scales']}, "
          f"ratios={suggested['ratios']}, strides={suggested['strides']})")
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
