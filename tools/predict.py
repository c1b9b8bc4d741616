"""Predict any images with a trained model: label TIFFs, class maps, overlays, GeoJSON and a CSV.

    python tools/predict.py CHECKPOINT INPUT... --out-dir DIR [--score-thr 0.5]
        [--config CONFIG] [--device cpu|cuda:0] [--amp] [--cfg-options key=value ...]
        [--from-disk-above MPX] [--overwrite]

INPUT: image files (TIFF, PNG, JPEG; any size; whole-slide TIFF, OME-TIFF, and SVS/NDPI with
tiffslide or openslide installed), folders of them, or glob patterns (quoted; `**`
recurses). The outputs, and what happens to bad images, killed runs and earlier outputs, are
described in cellseg/apis/predict.py and docs/outputs.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import DictAction  # noqa: E402

from cellseg.apis.cli import run_tool  # noqa: E402
from cellseg.apis.predict import (  # noqa: E402
    check_images,
    collect_images,
    load_model,
    predict_files,
)
from cellseg.apis.prediction_folder import prediction_run, prepare_output_dir  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='checkpoint file (its training config is used)')
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='image files, folders of images or glob patterns')
    parser.add_argument('--out-dir', required=True, help='where the outputs go')
    parser.add_argument('--config', help="a config file instead of the checkpoint's own")
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='keep detections scoring at least this (default 0.5)')
    parser.add_argument('--device', help='cpu or cuda:0 (default: cuda:0 when available)')
    parser.add_argument('--amp', action='store_true', help='mixed precision: float16 on CUDA, '
                        'bfloat16 on CPUs with native bfloat16 (else float32)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. model.tile_cfg=None)')
    parser.add_argument('--from-disk-above', type=float, metavar='MPX', help='read images of '
                        'more megapixels than this tile by tile from disk (default 64; slides '
                        'and pyramidal TIFFs always are; cellseg/apis/predict_large.py)')
    parser.add_argument('--overwrite', action='store_true', help='replace the outputs of '
                        'another prediction in --out-dir (otherwise refused)')
    args = parser.parse_args(argv)
    if not 0.0 <= args.score_thr <= 1.0:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if args.checkpoint.endswith('.py') and args.config is None:  # CONFIG CHECKPOINT INPUT...
        args.config, args.checkpoint = args.checkpoint, args.inputs.pop(0)
        if not args.inputs:
            parser.error('the following arguments are required: INPUT')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
    # everything that can be checked before the model loads: inputs, output folder
    paths, unreadable = check_images(collect_images(args.inputs))
    run = prediction_run(args.checkpoint, args.score_thr, args.config, args.cfg_options,
                         args.amp)
    prepare_output_dir(args.out_dir, run, args.overwrite)
    model = load_model(args.checkpoint, args.config, args.device, args.score_thr,
                       args.cfg_options, amp=args.amp)
    s = predict_files(model, paths, args.out_dir, args.score_thr, failed=unreadable,
                      large_image_pixels=args.from_disk_above and int(args.from_disk_above * 1e6))
    print(f'{s.images} images predicted' + (f', {s.skipped} done earlier' if s.skipped else '')
          + f'; {s.instances} instances scoring >= {args.score_thr} ('
          + ', '.join(f'{k} {v}' for k, v in s.per_class.items()) + f') in {s.seconds:.1f} s')
    print(f'wrote <stem>_labels.tif, _classes.tif, _overlay.png (not for images read from disk '
          f'tile by tile), <stem>.geojson and {s.csv.name} to {args.out_dir}')
    if s.failed:
        print(f'error: {len(s.failed)} of {len(paths) + len(unreadable)} images failed, listed in '
              f'{Path(args.out_dir) / "failed.csv"}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
