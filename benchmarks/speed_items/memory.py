"""The ``memory`` item: peak RSS of a process predicting one 2500x2000 image with 1000
detections up to its RLEs, with each pair of heads, in a fresh process each (``speed.py
_memory_child``); the RLEs must be identical."""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

from benchmarks.speed_items.common import (
    GIB,
    REPO,
    SPEED_SCRIPT,
    big_image,
    build_model,
    force_detections,
    load_config,
    peak_rss_bytes,
    pipeline_of,
    report,
    run_child,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The models, weights and heads."""
    parser.add_argument('--memory-config', nargs='+',
                        default=['configs/cell_r50_scratch_dense.py',
                                 'tests/configs/cell_r50_tiny.py'],
                        help='models of the memory item')
    parser.add_argument('--memory-checkpoint',
                        help='weights for the memory item (default: random): random boxes are '
                        'image-sized where trained ones are cell-sized, which decides what '
                        "tiling's merge holds")
    parser.add_argument('--memory-heads', nargs='+', choices=('fcn', 'chunked'),
                        default=['fcn', 'chunked'],
                        help="mask heads of the memory item (mmdet's, the configs')")


def run(args: argparse.Namespace, work: Path) -> None:
    """One measurement per ``--memory-config``."""
    for config in args.memory_config:
        bench_memory(work, config, args.memory_heads, args.memory_checkpoint)


def memory_child(config: str, head: str, image: str, out: str, checkpoint: str = '') -> None:
    """Predict ``image`` with 1000 detections up to its RLEs (what CocoMetric.process keeps) and
    write them and this process's peak RSS to ``out`` (run in a fresh process per head); the
    weights of ``checkpoint`` when given."""
    import torch
    from mmdet.structures.mask import encode_mask_results
    from mmengine.dataset import pseudo_collate
    from mmengine.logging import MMLogger

    MMLogger.get_instance('speed', log_level='WARNING')
    cfg = load_config(REPO / config)
    force_detections(cfg, 1000)
    model = build_model(cfg, head)
    if checkpoint:
        from mmengine.runner import load_checkpoint

        import cellseg.engine.checkpoint_loader  # noqa: F401  (torch >= 2.6 reads them)
        load_checkpoint(model, checkpoint, map_location='cpu')
    batch = pseudo_collate([pipeline_of(cfg, 'test_pipeline')(dict(img_path=image, img_id=1))])
    rss_model = peak_rss_bytes()
    start = time.perf_counter()
    with torch.no_grad():
        sample = model.test_step(batch)[0]
    masks = sample.pred_instances.masks
    rles = encode_mask_results(masks.numpy()) if isinstance(masks, torch.Tensor) else masks
    seconds = time.perf_counter() - start
    with open(out, 'wb') as f:
        pickle.dump(dict(rles=rles, peak=peak_rss_bytes(), before=rss_model, seconds=seconds), f)


def bench_memory(work: Path, config: str, heads: list[str], checkpoint: str | None) -> None:
    """Each head in its own child process; the figures from what the children wrote."""
    image = big_image(work)
    got = {}
    for head in heads:
        out = work / f'memory_{head}.pkl'
        run_child([sys.executable, str(SPEED_SCRIPT), '_memory_child', config, head, str(image),
                   str(out), checkpoint or ''])
        got[head] = pickle.loads(out.read_bytes())
    n = len(got[heads[-1]]['rles'])
    name = Path(config).stem + (', trained weights' if checkpoint else '')
    for head, label in (('fcn', "mmdet's StandardRoIHead + FCNMaskHead + encode_mask_results"),
                        ('chunked', 'ChunkedRoIHead + ChunkedMaskHead')):
        if head not in got:
            continue
        g = got[head]
        report('memory', f'peak RSS, {name}, 2500x2000, {n} detections, {label}',
               f"{g['peak'] / GIB:.2f} GiB (process with model and image: "
               f"{g['before'] / GIB:.2f} GiB; predict + encode {g['seconds']:.1f} s)",
               '' if head == 'fcn' or 'fcn' not in got else
               f"{got['fcn']['peak'] / GIB:.2f} GiB (mmdet)",
               '<= 2 GiB' if head == 'chunked' else '',
               g['peak'] <= 2 * GIB if head == 'chunked' else None)
    if len(got) == 2:
        same = got['fcn']['rles'] == got['chunked']['rles']
        report('memory', 'RLEs identical to the unchunked result', f'{same} ({n} masks)',
               met=same)
