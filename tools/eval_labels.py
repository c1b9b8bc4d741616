"""Nuclei metrics (PQ, DQ, SQ, AJI, Dice, mPQ, detection F1) of label TIFF folders.

    python tools/eval_labels.py GT_DIR PRED_DIR [--gt-classes DIR [--pred-classes DIR]]
        [--classes 1 2 3 4] [--radius 12] [--per-image] [--out FILE.json]

PRED_DIR may be a predict output folder (<stem>_labels.tif, <stem>_classes.tif); the pairing
rules are in cellseg/apis/label_folders.py, the metrics in cellseg/evaluation/nuclei_metrics.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellseg.apis.cli import run_tool  # noqa: E402
from cellseg.apis.label_folders import evaluate_label_folders  # noqa: E402
from cellseg.utils.fileio import atomic_write_json, json_safe  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('gt_dir', help='ground-truth instance label TIFFs')
    parser.add_argument('pred_dir', help='predicted instance label TIFFs')
    parser.add_argument('--gt-classes', help='ground-truth class maps (enables class metrics)')
    parser.add_argument('--pred-classes', help='predicted class maps (default: PRED_DIR)')
    parser.add_argument('--classes', type=int, nargs='+', help='class ids to report')
    parser.add_argument('--radius', type=float, default=12.0,
                        help='centroid pairing radius of the detection F1, px (default 12)')
    parser.add_argument('--per-image', action='store_true', help='print per-image rows too')
    parser.add_argument('--out', help='write summary and per-image rows to this JSON file')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # bad inputs: one line `error: <file>: <problem>` and status 1 (run_tool)
    result = evaluate_label_folders(args.gt_dir, args.pred_dir, args.gt_classes,
                                    args.pred_classes, args.classes, radius=args.radius)
    for row in result['images'] if args.per_image else []:
        print(row['image'], *(f'{k}={row[k]:.4f}' for k in ('pq', 'dq', 'sq', 'aji', 'dice')))
    for key, value in result['summary'].items():
        print(f'{key:<16} {value:>8.4f}' if isinstance(value, float) else f'{key:<16} {value:>8}')
    if args.out:
        atomic_write_json(args.out, json_safe(result))
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
