"""Convert an HW3 data root to COCO annotation files.

    python data_prep/hw3_to_coco.py DATA_ROOT --out-dir ANN_DIR [--folds K] [--seed S]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellseg.apis.cli import run_tool  # noqa: E402
from cellseg.formats.coco_conversion import convert  # noqa: E402
from cellseg.formats.hw3 import CLASSES_TXT  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('data_root', help='folder holding train/ (and test_release/)')
    parser.add_argument('--out-dir', required=True, help='where the COCO JSON files go')
    parser.add_argument('--folds', type=int, default=5, help='cross-validation folds (0: none)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the fold split')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    # a bad file, a fold count the images cannot take or an output folder that cannot be
    # written: one line `error: <file>: <problem>` (run_tool), and no file written
    s = convert(args.data_root, args.out_dir, args.folds, args.seed)
    if s['no_train']:
        named = ', '.join(s['classes']) or f'not named (no {CLASSES_TXT}; the model names them)'
        print(f"no train/ in {args.data_root}: test images only ({s['test_images']}), "
              f'classes {named}')
        print('wrote ' + ', '.join(Path(p).name for p in s['written']) + f' to {args.out_dir}')
        return 0
    print(f"classes: {', '.join(s['classes'])}")
    print(f"{s['images']} images, {s['instances']} instances "
          f"({s['images_without_instances']} images without instances) in {s['seconds']:.1f} s")
    print('instances per class: ' + ', '.join(f'{k} {v}' for k, v in
                                              s['instances_per_class'].items()))
    for f, c in enumerate(s['fold_instances_per_class']):
        print(f'fold {f} val instances per class: {c}')
    if s['test_images'] is not None:
        print(f"test images: {s['test_images']}")
    print('wrote ' + ', '.join(Path(p).name for p in s['written']) + f' to {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
