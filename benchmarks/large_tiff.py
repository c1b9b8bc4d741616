"""A 20,000 x 20,000 whole-slide TIFF of generated cells, predicted tile by tile from disk
(cellseg/apis/predict_large.py): peak memory (VmHWM of the predicting process), cells found,
time and seconds per megapixel, and that the GeoJSON and the CSV were written.

    python benchmarks/large_tiff.py [--checkpoint CKPT] [--size 20000] [--score-thr 0.2]
        [--work-dir DIR]

The image is written TIFF tile by TIFF tile (512 px, deflate, BigTIFF), each tile drawn by the
demo generator (``cellseg.testing.synthetic_cells.render_image``) at the demo mosaic's density,
so the whole image is never in memory here either. Without ``--checkpoint`` the tiny test model
(tests/configs/cell_r50_tiny.py) is trained one epoch on generated demo data first, as
tests/conftest.py does: a small model is enough for the memory figure. The prediction runs in a
process of its own, which prints its peak RSS; the run fails if it exceeds ``--max-rss-gib``.
It prints the numbers; it is not a test (docs/speed.md keeps them).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TIFF_TILE = 512
# the demo mosaic's density (benchmarks/large_image.py: 230 cells per 500 x 500 block)
CELLS_PER_MPX = 230 / 0.25


def write_slide(path: Path, size: int, seed: int) -> int:
    """An RGB ``size`` x ``size`` tiled BigTIFF, generated one TIFF tile at a time; returns the
    cells drawn."""
    import numpy as np
    import tifffile

    from cellseg.testing.synthetic_cells import render_image

    rng = np.random.default_rng(seed)
    drawn = 0

    def tiles():
        nonlocal drawn
        for y in range(0, size, TIFF_TILE):
            for x in range(0, size, TIFF_TILE):
                h, w = min(TIFF_TILE, size - y), min(TIFF_TILE, size - x)
                rgba, ids, _ = render_image(rng, h, w, round(CELLS_PER_MPX * h * w / 1e6))
                drawn += int(ids.max())
                yield np.ascontiguousarray(rgba[..., :3])

    tmp = path.with_suffix('.tmp.tif')
    tifffile.imwrite(tmp, tiles(), shape=(size, size, 3), dtype=np.uint8,
                     tile=(TIFF_TILE, TIFF_TILE), photometric='rgb', compression='zlib',
                     bigtiff=True)
    tmp.replace(path)
    return drawn


def train_tiny(work: Path) -> Path:
    """The tiny test model trained one epoch on generated demo data (tests/conftest.py's)."""
    from cellseg.formats.coco_conversion import convert
    from cellseg.testing.demo_data import make_demo_dataset

    root = work / 'tiny_data'
    make_demo_dataset(root, seed=0, tiny=True)
    convert(root, root / 'annotations', folds=2, seed=0)
    subprocess.run([sys.executable, str(REPO / 'tools' / 'train.py'),
                    str(REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'), '--data-root', str(root),
                    '--ann-dir', str(root / 'annotations'), '--work-dir', str(work / 'train'),
                    '--cfg-options', 'train_cfg.max_epochs=1', 'randomness.seed=0'], check=True,
                   stdout=subprocess.DEVNULL)
    return work / 'train' / 'epoch_1.pth'


def count_features(path: Path) -> int:
    """Features of a FeatureCollection too large to parse here, counted in blocks; its two ends
    checked."""
    mark = b'{"type":"Feature",'
    count, tail = 0, b''
    with open(path, 'rb') as f:
        head = f.read(64)
        if not head.startswith(b'{"type":"FeatureCollection","features":['):
            raise SystemExit(f'{path}: not a FeatureCollection')
        f.seek(0)
        while block := f.read(1 << 24):
            data = tail + block
            count += data.count(mark)
            tail = data[-(len(mark) - 1):]
            last = data
    if not last.endswith(b']}'):
        raise SystemExit(f'{path}: the FeatureCollection is not closed')
    return count


def child(checkpoint: str, image: str, out_dir: str, score_thr: float) -> None:
    """The prediction, as tools/predict.py runs it, then this process's peak RSS as JSON."""
    from cellseg.apis.predict import load_model, predict_files
    from cellseg.apis.prediction_folder import prediction_run, prepare_output_dir

    prepare_output_dir(out_dir, prediction_run(checkpoint, score_thr), overwrite=True)
    model = load_model(checkpoint, device='cpu', score_thr=score_thr)
    start = time.perf_counter()
    summary = predict_files(model, [Path(image)], out_dir, score_thr)
    seconds = time.perf_counter() - start
    status = Path('/proc/self/status').read_text()
    hwm_kib = int(next(line for line in status.splitlines() if line.startswith('VmHWM')).split()[1])
    print(json.dumps(dict(seconds=seconds, instances=summary.instances, failed=len(summary.failed),
                          vm_hwm_gib=hwm_kib / 2**20, per_class=summary.per_class)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', type=Path, help='default: train the tiny model 1 epoch')
    parser.add_argument('--size', type=int, default=20000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--score-thr', type=float, default=0.2,
                        help='output threshold (default 0.2: the one-epoch tiny model scores '
                        'few cells above 0.3)')
    parser.add_argument('--max-rss-gib', type=float, default=3.0)
    parser.add_argument('--work-dir', type=Path, default=REPO / 'work_dirs' / 'large_tiff')
    parser.add_argument('--child', nargs=3, metavar=('CKPT', 'IMAGE', 'OUT'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.score_thr)
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    image = args.work_dir / f'slide_{args.size}.tif'
    if image.is_file():
        print(f'{image}: reused')
    else:
        start = time.perf_counter()
        drawn = write_slide(image, args.size, args.seed)
        print(f'{image}: {args.size}x{args.size} px, {drawn} cells drawn, '
              f'{image.stat().st_size / 2**20:.0f} MiB, '
              f'written in {time.perf_counter() - start:.0f} s')
    checkpoint = args.checkpoint or train_tiny(args.work_dir)
    out = args.work_dir / 'predict'
    done = subprocess.run([sys.executable, __file__, '--score-thr', str(args.score_thr),
                           '--child', str(checkpoint), str(image), str(out)],
                          stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f'the prediction failed (status {done.returncode})')
    result = json.loads(done.stdout.strip().splitlines()[-1])
    mpx = args.size * args.size / 1e6
    stem = image.stem
    with open(out / 'instances.csv', newline='') as f:
        rows = sum(1 for row in csv.DictReader(f) if row['image'] == stem)
    features = count_features(out / f'{stem}.geojson')
    print(f'checkpoint {checkpoint}, score >= {args.score_thr}')
    by_class = ', '.join(f'{k} {v}' for k, v in result['per_class'].items())
    print(f'cells found: {result["instances"]} ({by_class})')
    print(f'time: {result["seconds"]:.0f} s for {mpx:.0f} Mpx, {result["seconds"] / mpx:.2f} s/MP')
    print(f'peak RSS of the predicting process (VmHWM): {result["vm_hwm_gib"]:.2f} GiB '
          f'(limit {args.max_rss_gib} GiB)')
    print(f'written: {out / "instances.csv"} ({rows} rows), {out / (stem + ".geojson")} '
          f'({features} features), {stem}_labels.tif, {stem}_classes.tif')
    if result['failed'] or rows != result['instances'] or features != rows:
        raise SystemExit('the outputs disagree or the image failed')
    if result['vm_hwm_gib'] > args.max_rss_gib:
        raise SystemExit(f'peak RSS {result["vm_hwm_gib"]:.2f} GiB is over {args.max_rss_gib} GiB')


if __name__ == '__main__':
    main()
