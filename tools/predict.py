"""Predict any images with a trained model: label TIFFs, class maps, overlays and a CSV.

    python tools/predict.py CONFIG CHECKPOINT INPUT... --out-dir DIR [--score-thr 0.5]
        [--device cpu|cuda:0] [--cfg-options key=value ...]

INPUT: image files (TIFF, PNG, JPEG; any size), folders of them, or glob patterns (quote them;
`**` recurses). Per image DIR gets <stem>_labels.tif (instance ids, uint16/uint32),
<stem>_classes.tif (0 background, 1..4) and <stem>_overlay.png; DIR/instances.csv lists every
instance. The rules (overlaps, ids, measurements) are in cellseg/apis/predict.py.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import DictAction  # noqa: E402

from cellseg.apis.cli import run_tool  # noqa: E402
from cellseg.apis.predict import collect_images, load_model, predict_files  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('config', help='config file the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='image files, folders of images or glob patterns')
    parser.add_argument('--out-dir', required=True, help='where the outputs go')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='keep detections scoring at least this (default 0.5)')
    parser.add_argument('--device', help='cpu or cuda:0 (default: cuda:0 when available)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. model.tile_cfg=None)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
    if not 0.0 <= args.score_thr <= 1.0:
        print(f'error: --score-thr must be in [0, 1], got {args.score_thr}', file=sys.stderr)
        return 2
    paths = collect_images(args.inputs)  # all inputs checked before the model loads
    model = load_model(args.config, args.checkpoint, args.device, args.score_thr,
                       args.cfg_options)
    s = predict_files(model, paths, args.out_dir, args.score_thr)
    print(f'{s.images} images, {s.instances} instances scoring >= {args.score_thr} ('
          + ', '.join(f'{k} {v}' for k, v in s.per_class.items()) + f') in {s.seconds:.1f} s')
    print(f'wrote <stem>_labels.tif, _classes.tif, _overlay.png, <stem>.geojson and {s.csv.name} '
          f'to {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
