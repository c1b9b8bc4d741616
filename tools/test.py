"""Evaluate a checkpoint, or write a CodaBench submission for the test images.

    python tools/test.py CONFIG CHECKPOINT [--data-root DIR] [--ann-dir DIR]
    python tools/test.py CONFIG CHECKPOINT --submit work_dirs/x/submission.zip
    python tools/test.py configs/cell_r50_scratch_dense_tta.py CHECKPOINT --tta ...
        (flip TTA, masks too)
    python tools/test.py CONFIG CHECKPOINT --amp ...   (mixed precision, as predict --amp)

Without --submit the config's test loop runs (its annotation file has ground truth) and prints
the metrics. With --submit the model runs on DATA_ROOT's test_release/ images as listed in
test.json, and test-results.json plus a zip holding it are written after the submission checker
(cellseg.formats.submission) passed; the run's log goes beside them (--work-dir to choose).
A bad id map or test file, an output folder that cannot be written, a checkpoint that is
unreadable or names no classes: one line `error: <file>: <problem>`, before the model runs.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cellseg.apis.cli import add_common_args, load_config, run_tool  # noqa: E402
from cellseg.apis.cpu_fallback import adapt_to_cpu  # noqa: E402
from cellseg.apis.evaluate import (  # noqa: E402
    check_submission_inputs,
    evaluate,
    resolve_test_classes,
    submit,
)
from cellseg.apis.test_loop import (  # noqa: E402
    keep_what_the_metrics_count,
    use_mixed_precision,
    use_test_ground_truth,
    use_tta,
)
from cellseg.apis.train import start_cpu_processes  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a cell segmentation model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_common_args(parser)
    parser.add_argument('--test-gt', metavar='JSON', help='evaluate on the test images against '
                        'this COCO ground truth (e.g. the demo\'s or CoNSeP\'s test_gt.json)')
    parser.add_argument('--submit', metavar='PATH', help='predict the test images and write the '
                        'submission: a .zip path (test-results.json beside it) or a folder')
    parser.add_argument('--metrics-out', metavar='JSON', help='also write the metrics here')
    parser.add_argument('--report', metavar='DIR', help='after evaluating, write the evaluation '
                        'report here: per-class table, PR curves, confusion matrix, worst images')
    parser.add_argument('--amp', action='store_true', help='mixed precision: float16 on CUDA, '
                        'bfloat16 on CPUs with native bfloat16 (else float32)')
    parser.add_argument('--tta', action='store_true', help="test-time augmentation: the config's "
                        'tta_model and tta_pipeline (configs/cell_r50_scratch_dense_tta.py)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args)
    if args.submit:  # the id map, its test files and the output folder, before any loading
        check_submission_inputs(cfg, args.submit)
    cfg.load_from = args.checkpoint
    print(resolve_test_classes(cfg, args.checkpoint))
    adapt_to_cpu(cfg)
    start_cpu_processes(cfg)
    if args.amp:
        use_mixed_precision(cfg)
    if args.test_gt:
        use_test_ground_truth(cfg, args.test_gt)
    if args.tta:
        use_tta(cfg)
    keep_what_the_metrics_count(cfg)
    if args.submit:
        return submit(cfg, args.submit, args.work_dir)
    return evaluate(cfg, args.metrics_out, args.report)


if __name__ == '__main__':
    sys.exit(run_tool(main))
