"""A large image of generated cells, predicted by tools/predict.py: how many cells come back,
against how many were drawn and against the detections one image was capped at before (the
model's ``test_cfg.rcnn.max_per_img``), with the time and peak memory of the prediction.

    python benchmarks/large_image.py CHECKPOINT [--size 4000] [--work-dir DIR]

The image is a mosaic of the demo generator's images (``cellseg.testing.synthetic_cells``),
blocks of ``--block`` px each drawn with ``--cells`` cells, written as a tiled TIFF. The
checkpoint is best the demo's (``make demo``: ``work_dirs/demo/train/epoch_20.pth``), trained
on such cells. The run prints the numbers; it is not a test.
"""
from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cellseg.testing.synthetic_cells import render_image  # noqa: E402


def write_mosaic(path: Path, size: int, block: int, cells: int, seed: int) -> Counter:
    """An RGB size x size TIFF of rendered blocks; returns the cells drawn, by class."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.uint8)
    drawn: Counter = Counter()
    for y in range(0, size, block):
        for x in range(0, size, block):
            h, w = min(block, size - y), min(block, size - x)
            rgba, ids, class_of_id = render_image(rng, h, w, cells)
            image[y:y + h, x:x + w] = rgba[..., :3]
            present = np.unique(ids)
            drawn.update(int(class_of_id[i]) for i in present[present > 0])
    tifffile.imwrite(path, image, tile=(512, 512), compression='zlib', photometric='rgb')
    return drawn


def predict(checkpoint: Path, image: Path, out: Path, *options: str) -> tuple[Counter, float, str]:
    """tools/predict.py in a process of its own: instances by class, seconds, its log."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / 'tools' / 'predict.py'), str(checkpoint),
                           str(image), '--out-dir', str(out), '--overwrite', '--device', 'cpu',
                           *options], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f'predict failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}')
    with open(out / 'instances.csv', newline='') as f:
        found = Counter(row['class_name'] for row in csv.DictReader(f))
    return found, seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', type=Path)
    parser.add_argument('--size', type=int, default=4000)
    parser.add_argument('--block', type=int, default=500)
    parser.add_argument('--cells', type=int, default=230, help='cells drawn per block')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--work-dir', type=Path, default=REPO / 'work_dirs' / 'large_image')
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    image = args.work_dir / f'mosaic_{args.size}.tif'
    drawn = write_mosaic(image, args.size, args.block, args.cells, args.seed)
    print(f'{image}: {args.size}x{args.size} px, {sum(drawn.values())} cells drawn '
          f'({", ".join(f"class{k} {v}" for k, v in sorted(drawn.items()))})')

    found, seconds, log = predict(args.checkpoint, image, args.work_dir / 'predict')
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(f'predicted, every cell kept: {sum(found.values())} instances '
          f'({", ".join(f"{k} {v}" for k, v in sorted(found.items()))}) in {seconds:.0f} s, '
          f'peak RSS {peak:.2f} GiB')
    capped = [line for line in log.splitlines() if 'max_per_img' in line]
    print(f'cap warnings logged: {len(capped)}' + (f' (first: {capped[0]})' if capped else ''))

    # the behaviour before: the merged image cut to the model's max_per_img
    from cellseg.apis.saved_config import config_from_checkpoint
    from cellseg.engine.checkpoint_loader import load_local_checkpoint

    saved = load_local_checkpoint(str(args.checkpoint), 'cpu')
    cap = config_from_checkpoint(saved, args.checkpoint).model.test_cfg.rcnn.max_per_img
    old, old_s, _ = predict(args.checkpoint, image, args.work_dir / 'predict_capped',
                            '--cfg-options', f'model.tile_cfg.max_per_img={cap}')
    print(f'as before, the image cut to test_cfg.rcnn.max_per_img={cap}: {sum(old.values())} '
          f'instances ({", ".join(f"{k} {v}" for k, v in sorted(old.items()))}) in {old_s:.0f} s')


if __name__ == '__main__':
    main()
