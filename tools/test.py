"""Evaluate a checkpoint, or write a CodaBench submission for the test images.

    python tools/test.py CONFIG CHECKPOINT [--data-root DIR] [--ann-dir DIR]
    python tools/test.py CONFIG CHECKPOINT --submit work_dirs/x/submission.zip
    python tools/test.py configs/cell_r50_dense_tta.py CHECKPOINT --tta ...   (flip TTA, masks too)

Without --submit the config's test loop runs (its annotation file has ground truth) and prints
the metrics. With --submit the model runs on DATA_ROOT's test_release/ images as listed in
test.json, and test-results.json plus a zip holding it are written after the submission checker
(cellseg.submission) passed.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import tempfile

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.dist import is_main_process  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from cellseg.eval_report import write_eval_report  # noqa: E402
from cellseg.fileio import atomic_write_json  # noqa: E402
from cellseg.mask_tta import use_tta  # noqa: E402
from cellseg.runtime import (  # noqa: E402
    adapt_to_cpu,
    add_common_args,
    configure_submission_run,
    load_config,
    test_dataset_root,
    use_test_ground_truth,
)
from cellseg.submission import load_id_map, summarize_submission, write_submission  # noqa: E402


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
    parser.add_argument('--tta', action='store_true', help="test-time augmentation: the "
                        "config's tta_model and tta_pipeline (configs/cell_r50_dense_tta.py)")
    return parser.parse_args(argv)


def _as_list(item: object) -> list:
    return list(item) if isinstance(item, (list, tuple)) else [item]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    adapt_to_cpu(cfg)
    if args.test_gt:
        use_test_ground_truth(cfg, args.test_gt)
    if args.tta:
        use_tta(cfg)
    if not args.submit:
        if args.report:  # CocoMetric keeps its results JSON only when given a prefix
            prefix = osp.join(osp.abspath(args.report), 'results')
            for ev in _as_list(cfg.test_evaluator):
                ev.outfile_prefix = prefix
        runner = Runner.from_cfg(cfg)
        metrics = runner.test()
        if args.metrics_out and is_main_process():
            atomic_write_json(args.metrics_out, metrics)
        if args.report and is_main_process():
            written = write_eval_report(
                _as_list(cfg.test_evaluator)[0].ann_file, f'{prefix}.segm.json', args.report,
                runner.test_dataloader.dataset.metainfo['classes'],
                images_root=test_dataset_root(cfg))
            print(f'evaluation report: {", ".join(written)} in {args.report}')
        return metrics

    with tempfile.TemporaryDirectory() as tmp:
        prefix = osp.join(tmp, 'results')
        _, id_map_path = configure_submission_run(cfg, prefix, args.ann_dir)
        Runner.from_cfg(cfg).test()
        if not is_main_process():
            return {}
        with open(f'{prefix}.segm.json') as f:
            results = json.load(f)
    id_map = load_id_map(id_map_path)
    json_path, zip_path = write_submission(results, args.submit, id_map)
    print(summarize_submission(results, id_map))
    print(f'submission checked against {id_map_path}: {json_path} and {zip_path}')
    return dict(json=str(json_path), zip=str(zip_path), entries=len(results))


if __name__ == '__main__':
    main()
