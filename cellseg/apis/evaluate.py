"""The test run of ``tools/test.py``: metrics (with the optional report), or the submission."""
from __future__ import annotations

import json
import os.path as osp
import tempfile
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from cellseg.apis.config_helpers import configure_submission_run, test_dataset_root
from cellseg.evaluation.eval_report import write_eval_report
from cellseg.evaluation.metrics.cell_coco_metric import NUCLEI_SCORE_THR
from cellseg.formats.hw3 import load_id_map
from cellseg.formats.submission import summarize_submission, write_submission
from cellseg.utils.fileio import atomic_write_json


def _as_list(item: object) -> list:
    return list(item) if isinstance(item, (list, tuple)) else [item]


def evaluate(cfg: Config, metrics_out: str | None = None, report_dir: str | None = None) -> dict:
    """Run the config's test loop; save the metrics to ``metrics_out`` and write the evaluation
    report (per-class table, PR curves, confusion matrix, worst images) to ``report_dir``."""
    if report_dir:  # CocoMetric keeps its results JSON only when given a prefix
        prefix = osp.join(osp.abspath(report_dir), 'results')
        for ev in _as_list(cfg.test_evaluator):
            ev.outfile_prefix = prefix
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    if metrics_out and is_main_process():
        atomic_write_json(metrics_out, metrics)
    if report_dir and is_main_process():
        evaluator = _as_list(cfg.test_evaluator)[0]
        # the report's nuclei numbers and matching at the metric's threshold, so that the two
        # agree (CellCocoMetric's default where the config names none)
        written = write_eval_report(
            evaluator.ann_file, f'{prefix}.segm.json', report_dir,
            runner.test_dataloader.dataset.metainfo['classes'], images_root=test_dataset_root(cfg),
            score_thr=evaluator.get('nuclei_score_thr', NUCLEI_SCORE_THR))
        print(f'evaluation report: {", ".join(written)} in {report_dir}')
    return metrics


def submit(cfg: Config, out: str | Path) -> dict:
    """Predict the competition's test images and write the checked submission to ``out`` (a
    ``.zip`` path, ``test-results.json`` beside it, or a folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = osp.join(tmp, 'results')
        _, id_map_path = configure_submission_run(cfg, prefix)
        Runner.from_cfg(cfg).test()
        if not is_main_process():
            return {}
        with open(f'{prefix}.segm.json') as f:
            results = json.load(f)
    id_map = load_id_map(id_map_path)
    json_path, zip_path = write_submission(results, out, id_map)
    print(summarize_submission(results, id_map))
    print(f'submission checked against {id_map_path}: {json_path} and {zip_path}')
    return dict(json=str(json_path), zip=str(zip_path), entries=len(results))
