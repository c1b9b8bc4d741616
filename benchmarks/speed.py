"""Speed and memory of cellseg's hot paths, each measured beside its baseline in the same run.

    OMP_NUM_THREADS=1 python benchmarks/speed.py [--only ITEM ...] [--work-dir /tmp/cellseg_speed]
        [--markdown FILE]

Items (``--only`` takes any of them; all run by default, in this order), one module each in
``benchmarks/speed_items/``; the baselines they time are in ``benchmarks/references.py``:

- ``data``: a training sample from its files to packed tensors (image + ~150 masks, 512x512),
  the config's pipeline (``LoadCellAnnotations``) against what the original study's script did
  per item (re-read the image and the 4 class TIFFs, one dense mask per instance from the float
  maps), and against the same pipeline with mmdet's ``LoadAnnotations``.
- ``train``: mean iteration of the training loop against ``train_step`` (preprocess, forward,
  backward, optimizer step) of the same model on batches already in memory; the tiny test model.
  Then the mean ``train_step`` of cell_r50_scratch and cell_r50_scratch_tuned on CoNSeP-sized
  batches (4 x 256x256, ~40 cells), float32 and bfloat16 (``CpuAmpOptimWrapper``; on a CPU
  without native bfloat16 only with ``--train-bf16``), beside the backbone+neck forward/backward
  alone (the floor), and cell_r50_scratch_tuned against its previous RoI settings (goal: a third
  of their step).
- ``predict``: the mask head's layers on 64 RoIs (``FCNMaskHead`` against ``ChunkedMaskHead``);
  one 512x512 image with 300 detections from its file to the submission JSON
  (pipeline, model, paste, RLE, results JSON, then the submission read back, checked and
  written with its zip, as ``tools/test.py --submit`` does: images read by a loader worker
  beside the model, the wait for them counted) against the model's forward alone; mmdet's
  ``StandardRoIHead`` + ``FCNMaskHead`` against the configs' ``ChunkedRoIHead`` +
  ``ChunkedMaskHead``.
- ``memory``: peak RSS of a process predicting one 2500x2000 image with 1000 detections up to its
  RLEs, with each pair of heads, in a fresh process each; the RLEs must be identical.
- ``convert``: ``data_prep/hw3_to_coco.py`` on 209 generated images like the real ones, as it is
  and with a full-image pycocotools encode per instance (the same JSON files required).
- ``eval``: COCO segm evaluation of 100 dense images (~300 detections each) by
  ``PerClassCocoMetric`` at maxDets 100 (validation) and at 100 and 1000 (the test run); and the
  nuclei metrics (PQ, AJI, Dice, mPQ, F1) of the same detections against that time.

Generated data is cached in the work dir. Every figure is printed with its baseline and goal;
``--markdown`` also writes them as a table. Models have random weights, detections forced to the
counts named above: the network's cost does not depend on what it learned, and random masks are
noisier than trained ones (more runs), so paste, RLE and JSON figures err on the slow side.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.speed_items import ITEMS  # noqa: E402


def item_module(item: str):
    """The module of one item (``benchmarks.speed_items.<item>``)."""
    return importlib.import_module(f'benchmarks.speed_items.{item}')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The shared options, then each item's own (``add_arguments`` of its module)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', nargs='+', choices=ITEMS, help='items to run (default: all)')
    parser.add_argument('--work-dir', default='/tmp/cellseg_speed',
                        help='generated data and outputs (reused between runs)')
    parser.add_argument('--markdown', help='also write the figures as a Markdown table here')
    parser.add_argument('--rounds', type=int, default=3,
                        help='passes over the data per timing (data, predict)')
    for item in ITEMS:
        item_module(item).add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the items chosen, print every figure and the table (and write it with
    ``--markdown``). ``_memory_child ...`` is the memory item's child process."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['_memory_child']:
        item_module('memory').memory_child(*argv[1:])
        return 0
    args = parse_args(argv)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    import torch
    from mmengine.logging import MMLogger

    from benchmarks.speed_items.common import FIGURES, markdown

    MMLogger.get_instance('speed', log_level='WARNING')  # no weight-init tables

    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'load average {os.getloadavg()[0]:.1f}, torch {torch.__version__} with '
          f'{torch.get_num_threads()} threads, '
          f"{'CUDA' if torch.cuda.is_available() else 'no CUDA'}", flush=True)
    items = args.only or ITEMS
    for item in ITEMS:
        if item not in items:
            continue
        start = time.perf_counter()
        item_module(item).run(args, work)
        print(f'[{item}] took {time.perf_counter() - start:.0f} s (load average now '
              f'{os.getloadavg()[0]:.1f})', flush=True)
    print('\n' + markdown(FIGURES))
    if args.markdown:
        Path(args.markdown).write_text(markdown(FIGURES))
    return 0


if __name__ == '__main__':
    sys.exit(main())
