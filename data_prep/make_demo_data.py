"""Generate the demo dataset (HW3 layout, with test_gt.json) into a folder.

    python data_prep/make_demo_data.py OUT_DIR [--seed S] [--tiny]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellseg.testing.demo_data import make_demo_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('out_dir', help='folder to write train/, test_release/ and the JSON into')
    parser.add_argument('--seed', type=int, default=0, help='same seed, byte-identical files')
    parser.add_argument('--tiny', action='store_true', help='a few small images, for unit tests')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        s = make_demo_dataset(args.out_dir, seed=args.seed, tiny=args.tiny)
    except FileExistsError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    for split in ('train', 'test'):
        per_class = s[f'{split}_instances_per_class']
        print(f"{split}: {s[f'{split}_images']} images, {sum(per_class.values())} instances ("
              + ', '.join(f'{k} {v}' for k, v in per_class.items()) + ')')
    print(f"image sides {s['smallest_side']}..{s['largest_side']} px; generated in {seconds:.1f} s")
    root = Path(s['root'])
    print(f'wrote {root}/train/<name>/{{image,class1..4}}.tif, {root}/test_release/*.tif, '
          f'{root}/test_image_name_to_ids.json, {root}/test_gt.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
