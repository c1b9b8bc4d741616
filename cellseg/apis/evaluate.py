"""The test run of ``tools/test.py``: metrics (with the optional report), or the submission.

What can fail is checked before the model runs: the submission's id map, the test files it
lists and the output folder (``check_submission_inputs``), the checkpoint's classes
(``resolve_test_classes``)."""
from __future__ import annotations

import json
import os.path as osp
import tempfile
from pathlib import Path

from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from cellseg.apis.classes import checkpoint_classes, configured_classes, resolve_classes
from cellseg.apis.data_paths import test_dataset_root
from cellseg.apis.test_loop import configure_submission_run
from cellseg.engine.checkpoint_loader import CheckpointError, read_checkpoint
from cellseg.evaluation.eval_report import write_eval_report, write_report
from cellseg.evaluation.metrics import NucleiMetric, PerClassCocoMetric
from cellseg.evaluation.metrics.nuclei_metric import SCORE_THR
from cellseg.formats.hw3 import load_id_map, test_image_infos
from cellseg.formats.submission import (
    check_submission_folder,
    summarize_submission,
    write_submission,
)
from cellseg.utils.fileio import atomic_write_json


def _as_list(item: object) -> list:
    return list(item) if isinstance(item, (list, tuple)) else [item]


def _class_layer_size(checkpoint: dict) -> int | None:
    """The number of classes a Mask R-CNN checkpoint's heads were built for: the mask head's
    ``conv_logits`` has one output per class, the box head's ``fc_cls`` one more
    (background); None when it has neither."""
    state = checkpoint.get('state_dict', checkpoint)
    for suffix, extra in (('mask_head.conv_logits.weight', 0), ('fc_cls.weight', 1)):
        for key, value in state.items():
            if key.endswith(suffix) and hasattr(value, 'shape'):
                return int(value.shape[0]) - extra
    return None


def resolve_test_classes(cfg: Config, checkpoint: str) -> str:
    """``resolve_classes`` for a test run. A checkpoint that names its classes (every one
    ``tools/train.py`` writes) gives them. One that does not (trained elsewhere, or its
    ``meta`` stripped) is used with the classes of the data only when its class layers have as
    many outputs; otherwise, or when no annotation file gives classes, it is refused naming
    it, before the model is built."""
    if checkpoint_classes(checkpoint) is not None:
        return resolve_classes(cfg, checkpoint)
    n = _class_layer_size(read_checkpoint(checkpoint))
    why = ('holds no class names (meta.dataset_meta.classes, which tools/train.py saves)')
    if n is None:
        raise CheckpointError(f'{checkpoint}: {why} and no class layer (mask_head.conv_logits, '
                              'fc_cls): not a checkpoint of a Mask R-CNN')
    try:
        line = resolve_classes(cfg)
    except FileNotFoundError:
        raise CheckpointError(f'{checkpoint}: {why}, and no annotation file of {cfg.filename} '
                              'gives them (pass --data-root/--ann-dir of the data it was trained '
                              'on)') from None
    classes = configured_classes(cfg)
    if len(classes) != n:
        raise CheckpointError(f'{checkpoint}: {why}, and its class layers have {n} classes, not '
                              f'the {len(classes)} of the data ({", ".join(classes)})')
    return f'{line} (the checkpoint names no classes; its class layers have as many)'


def check_submission_inputs(cfg: Config, out: str | Path) -> None:
    """What a submission run checks before the checkpoint and the model are loaded: the id map
    and every test file it lists (present, readable, of the listed size, inside
    ``test_release/``), and that the submission's folder can be written."""
    test_image_infos(test_dataset_root(cfg), warn_unlisted=False)  # said once, by the run
    check_submission_folder(out)


def _is_coco_metric(ev: dict) -> bool:
    metric = METRICS.get(ev.get('type'))
    return isinstance(metric, type) and issubclass(metric, CocoMetric)


def evaluate(cfg: Config, metrics_out: str | None = None, report_dir: str | None = None) -> dict:
    """Run the config's test loop; save the metrics to ``metrics_out`` and write the evaluation
    report (per-class table, PR curves, confusion matrix, worst images) to ``report_dir``.

    The report is made of what the test loop's metrics computed (``PerClassCocoMetric``'s
    COCOeval of the masks, ``NucleiMetric``'s summary), so nothing is evaluated twice; what the
    config's evaluator lacks (a plain ``CocoMetric``, no nuclei metric) the report computes from
    the results file the COCO metric wrote into ``report_dir``."""
    if report_dir:  # CocoMetric keeps its results JSON only when given a prefix
        prefix = osp.join(osp.abspath(report_dir), 'results')
        for ev in _as_list(cfg.test_evaluator):
            if _is_coco_metric(ev):
                ev.outfile_prefix = prefix
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    if metrics_out and is_main_process():
        atomic_write_json(metrics_out, metrics)
    if report_dir and is_main_process():
        done = runner.test_loop.evaluator.metrics
        coco = next((m for m in done if isinstance(m, PerClassCocoMetric)
                     and 'segm' in m.coco_evals), None)
        nuclei = next((m for m in done if isinstance(m, NucleiMetric)), None)
        # the report's matching and nuclei numbers at the nuclei metric's threshold, so that
        # the two agree
        score_thr = nuclei.score_thr if nuclei else SCORE_THR
        common = dict(class_names=runner.test_dataloader.dataset.metainfo['classes'],
                      images_root=test_dataset_root(cfg), score_thr=score_thr)
        if coco is not None:
            written = write_report(coco.coco_evals['segm'], nuclei and nuclei.summary,
                                   report_dir, **common)
        else:
            ann_file = next(ev.ann_file for ev in _as_list(cfg.test_evaluator)
                            if _is_coco_metric(ev))
            written = write_eval_report(ann_file, f'{prefix}.segm.json', report_dir, **common)
        print(f'evaluation report: {", ".join(written)} in {report_dir}')
    return metrics


def submit(cfg: Config, out: str | Path, work_dir: str | None = None) -> dict:
    """Predict the competition's test images and write the checked submission to ``out`` (a
    ``.zip`` path, ``test-results.json`` beside it, or a folder). The run's log goes to
    ``work_dir``, by default the submission's folder (``<timestamp>/`` beside the zip), not to
    ``./work_dirs`` of wherever the command runs."""
    cfg.work_dir = osp.abspath(work_dir or check_submission_folder(out))
    with tempfile.TemporaryDirectory() as tmp:
        prefix = osp.join(tmp, 'results')
        _, id_map_path = configure_submission_run(cfg, prefix)
        Runner.from_cfg(cfg).test()
        if not is_main_process():
            return {}
        with open(f'{prefix}.segm.json') as f:
            results = json.load(f)
    id_map = load_id_map(id_map_path)
    # the model's classes (the checkpoint's, set by resolve_test_classes): category ids 1..K
    classes = configured_classes(cfg)
    json_path, zip_path = write_submission(results, out, id_map, len(classes))
    print(summarize_submission(results, id_map, classes))
    print(f'submission checked against {id_map_path}: {json_path} and {zip_path}')
    return dict(json=str(json_path), zip=str(zip_path), entries=len(results))
