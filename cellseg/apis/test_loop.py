"""What ``tools/test.py`` makes of the test loop: the competition's test images for a
submission, a ground truth of the test images to evaluate against, test-time augmentation."""
from __future__ import annotations

import json
import os
import os.path as osp

from mmengine.config import Config, ConfigDict

from cellseg.apis.classes import annotation_classes, resolved_classes
from cellseg.apis.data_paths import leaf_datasets, test_dataset_root
from cellseg.formats.coco_conversion import build_test_coco
from cellseg.formats.hw3 import TEST_DIR, TEST_ID_MAP, path_problem
from cellseg.utils.fileio import atomic_write_json

TEST_ANN = 'test.json'


def configure_submission_run(cfg: Config, outfile_prefix: str) -> tuple[str, str]:
    """Switch the test loop to the competition's test images, writing mmdet's COCO results JSON.

    The test images, their ids and sizes come from the data root's
    ``test_image_name_to_ids.json`` alone (checked against ``test_release/``): a data root
    holding only the test set can be submitted. Their image-info COCO file, carrying the model's
    classes, is written beside ``outfile_prefix``. Returns its path and the id map's.
    """
    data_root = test_dataset_root(cfg)
    id_map = osp.join(data_root, TEST_ID_MAP)
    if not osp.isfile(id_map):
        raise FileNotFoundError(f'{id_map}: not found (the competition test set comes with it)')
    classes = resolved_classes(cfg)
    ann_path = os.fspath(atomic_write_json(f'{outfile_prefix}.{TEST_ANN}',
                                           build_test_coco(data_root, classes)))
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.ann_file = ann_path
        ds.data_prefix = dict(img='')
        ds.test_mode = True
    cfg.test_evaluator = dict(type='CocoMetric', ann_file=ann_path, metric=['segm'],
                              format_only=True, outfile_prefix=outfile_prefix)
    return ann_path, id_map


def use_test_ground_truth(cfg: Config, gt_path: str) -> None:
    """Evaluate the test loop against a COCO ground-truth file of the test images.

    Such files (the demo's and CoNSeP's ``test_gt.json``) name images either relative to the data
    root (``test_release/x.tif``) or, like ``test_image_name_to_ids.json``, by bare file name
    inside ``test_release/``; the image prefix is chosen to match. A ``file_name`` that is
    absolute or climbs out with ``..`` is refused naming the image.
    """
    gt_path = osp.abspath(gt_path)
    with open(gt_path) as f:
        gt = json.load(f)
    images = gt.get('images', [])
    if not images:
        raise ValueError(f'{gt_path}: holds no images')
    data_root = test_dataset_root(cfg)
    for image in images:  # a name leading out of the data root would read a file not of it
        outside = path_problem(str(image.get('file_name', '')), data_root)
        if outside is not None:
            raise ValueError(f'{gt_path}: image {image.get("id")}: file_name {outside}')
    first = images[0]['file_name']
    if osp.isfile(osp.join(data_root, first)):
        prefix = ''
    elif osp.isfile(osp.join(data_root, TEST_DIR, first)):
        prefix = TEST_DIR + '/'
    else:
        raise FileNotFoundError(f'{gt_path}: its first image {first} is neither in {data_root} '
                                f'nor in {osp.join(data_root, TEST_DIR)}')
    # Ground truth from elsewhere may name the classes differently (CoNSeP's test_gt.json says
    # 'other', 'inflammatory', ...); the model's k-th class is category id k+1 either way, so the
    # test dataset takes the file's names, in id order, and per-class metrics carry them.
    names = annotation_classes(gt_path)
    classes = resolved_classes(cfg)
    if len(names) != len(classes):
        raise ValueError(f'{gt_path}: {len(names)} categories, but the model has '
                         f'{len(classes)} classes ({", ".join(classes)})')
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.ann_file = gt_path
        ds.data_prefix = dict(img=prefix)
        ds.metainfo = dict(ds.get('metainfo') or {}, classes=names)
    evaluator = cfg.test_evaluator
    for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
        ev.ann_file = gt_path


def use_tta(cfg: Config) -> None:
    """Switch a config's test loop to its test-time augmentation (``tools/test.py --tta``).

    As mmdet's ``tools/test.py --tta``: the model becomes ``tta_model`` wrapping the config's
    model, and every test dataset reads images through ``tta_pipeline``. A config without them
    is an error naming the config.
    """
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        raise ValueError(f'{cfg.filename}: --tta needs {" and ".join(missing)} in the config '
                         '(e.g. configs/cell_r50_scratch_dense_tta.py)')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    for ds in leaf_datasets(cfg.test_dataloader):
        ds.pipeline = cfg.tta_pipeline


def use_mixed_precision(cfg: Config) -> bool:
    """Run the test loop under mmengine's autocast (``test_cfg.fp16``): float16 on CUDA,
    bfloat16 on a CPU with native bfloat16, as ``tools/predict.py --amp`` predicts. A CPU
    without it would emulate bfloat16 more slowly than float32: the loop stays float32 (said on
    stderr by ``inference_precision``). Returns whether the autocast is on."""
    import torch

    from cellseg.apis.predict import inference_precision

    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    on = inference_precision(device, True) is not None
    if on:
        cfg.test_cfg = ConfigDict(dict(cfg.get('test_cfg') or {}, fp16=True))
    return on


def keep_what_the_metrics_count(cfg: Config) -> None:
    """Size the model's per-class cap (``test_cfg.rcnn.max_per_class``,
    ``cellseg.models.detection_budget``) to what the test evaluator counts: the largest maxDets
    (``proposal_nums``) of its COCO metrics, and every detection at or above its nuclei metrics'
    score threshold (``uncapped_score``). The leaderboard's AP counts 100 per image and class;
    asking for AP at 1000 (``test_evaluator.0.proposal_nums=(1,10,100,1000)``) lifts the cap to
    1000. A submission (``format_only``) counts what the leaderboard counts: the config's cap."""
    model = cfg.model.get('module', cfg.model)  # a TTA model wraps the detector
    rcnn = (model.get('test_cfg') or {}).get('rcnn')
    if not rcnn or rcnn.get('max_per_class') is None:
        return
    evaluators = cfg.get('test_evaluator') or []
    counted, thresholds = [], []
    for ev in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
        if ev.get('format_only'):
            continue
        if 'proposal_nums' in ev or 'Coco' in str(ev.get('type', '')):
            counted.append(max(ev.get('proposal_nums', (100, 300, 1000))))
        if 'score_thr' in ev:
            thresholds.append(float(ev.score_thr))
    if counted:
        rcnn.max_per_class = max(counted)
    if thresholds:
        rcnn.uncapped_score = min([*thresholds, rcnn.get('uncapped_score', 1.0)])
