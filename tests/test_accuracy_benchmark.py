"""benchmarks/accuracy.py builds the runs it claims: both recipes at the same budget, each
keeping its own schedule shape, evaluated in the requested test modes."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
CONSEP = REPO.parent / 'shared' / 'data' / 'consep'
# the dry runs read the default data root's test_gt.json
needs_consep = pytest.mark.skipif(not (CONSEP / 'test_gt.json').is_file(),
                                  reason='needs ../shared/data/consep')


def accuracy_module():
    spec = importlib.util.spec_from_file_location('accuracy', REPO / 'benchmarks' / 'accuracy.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('recipe, warmup', [('configs/cell_r50_scratch.py', None),
                                            ('configs/cell_r50_scratch_tuned.py', 20),
                                            ('configs/cell_r50_scratch_dense.py', None),
                                            ('configs/ablations/cell_r50_scratch_tuned_noflip.py',
                                             20)])
def test_budget_config_trains_the_budget_with_the_recipes_schedule(tmp_path, recipe, warmup):
    accuracy = accuracy_module()
    path = tmp_path / 'budget.py'
    path.write_text(accuracy.budget_config(recipe, 200))
    cfg = Config.fromfile(str(path))
    base = Config.fromfile(str(REPO / recipe))
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 200
    assert cfg.train_dataloader.dataset.ann_file.endswith('train_all.json')
    assert cfg.val_dataloader is None
    # resumable: a checkpoint every 50 iterations, the last kept (and the final one at 200)
    assert cfg.default_hooks.checkpoint.interval == 50
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 1
    assert cfg.optim_wrapper.optimizer.lr == base.optim_wrapper.optimizer.lr
    assert cfg.model.rpn_head.anchor_generator == base.model.rpn_head.anchor_generator
    cosine = [s for s in cfg.param_scheduler if s.type == 'CosineAnnealingLR']
    assert len(cosine) == 1 and cosine[0].T_max == 200 and not cosine[0].by_epoch
    warmups = [s.end for s in cfg.param_scheduler if s.type == 'LinearLR']
    assert warmups == ([] if warmup is None else [warmup])


def test_ablations_each_leave_out_one_share_of_the_tuned_recipe() -> None:
    accuracy = accuracy_module()
    cfg = {label: Config.fromfile(str(REPO / path)) for label, path in accuracy.RECIPES.items()}
    assert set(cfg) == {'original', 'tuned', 'dense', 'tuned-noflip'}

    def pipeline(c: Config) -> list:
        return c.train_dataloader.dataset.pipeline

    def training(c: Config) -> tuple:
        return c.optim_wrapper, c.param_scheduler

    def without_roi_bounds(c: Config) -> dict:
        # the tuned training's RoI bounds (128 sampled, 16 mask positives per image) are
        # training settings, and its tiling a test setting, not the dense model's
        model = copy.deepcopy(c.model.to_dict())
        model['roi_head'].pop('mask_pos_per_img', None)
        model['train_cfg']['rcnn']['sampler']['num'] = 512
        assert model.pop('type') == 'TiledMaskRCNN' and model.pop('tile_cfg')['size'] == 512
        model['type'] = 'MaskRCNN'
        return model

    assert any(t['type'] == 'RandomFlip' for t in pipeline(cfg['tuned']))
    assert cfg['tuned'].model.roi_head.mask_pos_per_img == 16
    assert cfg['tuned'].model.train_cfg.rcnn.sampler.num == 128
    # dense: the tuned model (anchors, proposals, detections), the original training
    assert cfg['dense'].model == without_roi_bounds(cfg['tuned']) != cfg['original'].model
    assert 'mask_pos_per_img' not in cfg['dense'].model.roi_head
    assert training(cfg['dense']) == training(cfg['original']) != training(cfg['tuned'])
    assert pipeline(cfg['dense']) == pipeline(cfg['original'])
    # tuned-noflip: the tuned model and training, the original pipeline (no flips)
    assert cfg['tuned-noflip'].model == cfg['tuned'].model
    assert training(cfg['tuned-noflip']) == training(cfg['tuned'])
    assert pipeline(cfg['tuned-noflip']) == pipeline(cfg['original'])


@pytest.mark.parametrize('recipe', ['configs/cell_r50_scratch.py',
                                    'configs/cell_r50_scratch_tuned.py'])
def test_tiled_tta_config_keeps_the_recipes_detections_per_image(tmp_path, recipe) -> None:
    accuracy = accuracy_module()
    path = tmp_path / 'tiled_tta.py'
    path.write_text(accuracy.tiled_tta_config(recipe))
    cfg = Config.fromfile(str(path))
    base = Config.fromfile(str(REPO / recipe))
    src = Config.fromfile(str(REPO / accuracy.TUNED_TTA))
    # the original recipe keeps 100 detections, the TTA config's parent 1000
    assert cfg.tta_model.tta_cfg.max_per_img == base.model.test_cfg.rcnn.max_per_img
    assert cfg.model.test_cfg == base.model.test_cfg and cfg.model.type == 'TiledMaskRCNN'
    assert {k: v for k, v in cfg.tta_model.tta_cfg.items() if k != 'max_per_img'} == {
        k: v for k, v in src.tta_model.tta_cfg.items() if k != 'max_per_img'}
    assert cfg.tta_pipeline == src.tta_pipeline


def test_options_are_checked() -> None:
    accuracy = accuracy_module()
    args = accuracy.parse_args(['--budget', '8', '--variants', 'whole, TTA', '--recipes', 'tuned'])
    assert args.variants == ['whole', 'TTA'] and args.recipes == ['tuned']
    with pytest.raises(SystemExit):
        accuracy.parse_args(['--budget', '8', '--variants', 'rotated'])
    with pytest.raises(SystemExit):
        accuracy.parse_args(['--budget', '8', '--recipes', 'x50'])


def test_seeds_are_a_list_without_repeats() -> None:
    accuracy = accuracy_module()
    assert accuracy.parse_args(['--budget', '8']).seeds == [0]
    assert accuracy.parse_args(['--budget', '8', '--seed', '0, 1,2']).seeds == [0, 1, 2]
    for bad in ('1,1', 'one'):
        with pytest.raises(SystemExit):
            accuracy.parse_args(['--budget', '8', '--seed', bad])


def dry_run(tmp_path, capsys, *options: str) -> tuple[list[str], list[str]]:
    """The tools/train.py and tools/test.py lines ``accuracy.py --dry-run`` prints (budget 8)."""
    assert accuracy_module().main(['--budget', '8', '--dry-run', '--work-dir', str(tmp_path),
                                   '--ann-dir', str(tmp_path / 'ann'), *options]) == 0
    lines = capsys.readouterr().out.splitlines()
    return ([line for line in lines if 'tools/train.py' in line],
            [line for line in lines if 'tools/test.py' in line])


@needs_consep
def test_dry_run_plans_equal_budgets_and_the_chosen_test_modes(tmp_path, capsys) -> None:
    trains, tests = dry_run(tmp_path, capsys, '--variants', 'whole,tiled + TTA',
                            '--test-images', '5')
    assert len(trains) == 2
    assert 'cell_r50_scratch_8it.py' in trains[0] and 'cell_r50_scratch_tuned_8it.py' in trains[1]
    assert len(tests) == 4  # two modes for each recipe
    assert sum('--tta' in t for t in tests) == 2
    assert all('test_gt_first5.json' in t for t in tests)
    assert not (tmp_path / 'cell_r50_scratch_8it').exists()  # nothing ran


@needs_consep
def test_another_seed_trains_and_evaluates_apart(tmp_path, capsys) -> None:
    [train], [test] = dry_run(tmp_path, capsys, '--variants', 'whole', '--recipes', 'tuned',
                              '--seed', '2')
    assert train.endswith('randomness.seed=2')
    assert f"--work-dir {tmp_path / 'cell_r50_scratch_tuned_8it_seed2'} " in train
    assert 'cell_r50_scratch_tuned_8it_seed2/iter_8.pth' in test
    assert 'metrics/cell_r50_scratch_tuned_8it_seed2_whole_' in test


@needs_consep
@pytest.mark.parametrize('cpu_amp, native, suffix', [
    ('off', True, '_fp32'), ('bf16', False, '_bf16'), ('auto', True, '_bf16'),
    ('auto', False, '_fp32')])
def test_an_explicit_precision_trains_and_evaluates_apart(tmp_path, capsys, monkeypatch,
                                                          cpu_amp, native, suffix) -> None:
    from cellseg.engine.optimizers import cpu_amp_optim_wrapper
    monkeypatch.setattr(cpu_amp_optim_wrapper, 'cpu_has_bf16', lambda: native)
    [train], [test] = dry_run(tmp_path, capsys, '--variants', 'whole', '--recipes', 'tuned',
                              '--cpu-amp', cpu_amp)
    assert train.endswith(f'--cpu-amp {cpu_amp}')
    assert f"--work-dir {tmp_path / ('cell_r50_scratch_tuned_8it' + suffix)} " in train
    assert f'cell_r50_scratch_tuned_8it{suffix}/iter_8.pth' in test
    assert f'metrics/cell_r50_scratch_tuned_8it{suffix}_whole_' in test


@needs_consep
def test_a_run_cut_short_resumes_and_a_finished_one_is_reused(tmp_path, capsys) -> None:
    run_dir = tmp_path / 'cell_r50_scratch_tuned_8it'
    run_dir.mkdir()
    (run_dir / 'last_checkpoint').write_text(str(run_dir / 'iter_5.pth'))
    [train], _ = dry_run(tmp_path, capsys, '--variants', 'whole', '--recipes', 'tuned')
    assert f'--work-dir {run_dir} --resume --cfg-options' in train
    [fresh], _ = dry_run(tmp_path, capsys, '--variants', 'whole', '--recipes', 'original')
    assert '--resume' not in fresh
    (run_dir / 'iter_8.pth').write_bytes(b'')  # finished: evaluated, not trained again
    trains, [test] = dry_run(tmp_path, capsys, '--variants', 'whole', '--recipes', 'tuned')
    assert trains == [] and f"{run_dir / 'iter_8.pth'} " in test


@needs_consep
def test_a_run_whose_metrics_exist_is_neither_trained_nor_evaluated(tmp_path, capsys) -> None:
    metrics = tmp_path / 'metrics'
    metrics.mkdir()
    (metrics / 'cell_r50_scratch_tuned_8it_whole_112img.json').write_text('{}')
    trains, tests = dry_run(tmp_path, capsys, '--variants', 'whole', '--recipes', 'tuned')
    assert trains == [] and tests == []
    # a variant without metrics still needs the checkpoint: trained
    trains, tests = dry_run(tmp_path, capsys, '--variants', 'whole,TTA', '--recipes', 'tuned')
    assert len(trains) == 1 and len(tests) == 1 and '--tta' in tests[0]


@needs_consep
def test_without_a_precision_the_names_are_those_of_earlier_runs(tmp_path, capsys) -> None:
    [train], _ = dry_run(tmp_path, capsys, '--variants', 'whole', '--recipes', 'tuned')
    assert '--cpu-amp' not in train and train.endswith('randomness.seed=0')
    assert f"--work-dir {tmp_path / 'cell_r50_scratch_tuned_8it'} " in train


@needs_consep
def test_eight_view_variant_takes_the_eight_view_pipeline(tmp_path, capsys) -> None:
    accuracy = accuracy_module()
    path = tmp_path / 'tta8.py'
    path.write_text(accuracy.tiled_tta_config('configs/cell_r50_scratch_tuned.py',
                                              accuracy.TUNED_TTA8))
    cfg = Config.fromfile(str(path))
    src = Config.fromfile(str(REPO / accuracy.TUNED_TTA8))
    four = Config.fromfile(str(REPO / accuracy.TUNED_TTA))
    assert cfg.tta_pipeline == src.tta_pipeline != four.tta_pipeline
    views = 1
    for choice in cfg.tta_pipeline[1].transforms:
        views *= len(choice)
    assert views == 8
    assert 'TTA8' not in accuracy.parse_args(['--budget', '8']).variants  # on request only
    _, tests = dry_run(tmp_path, capsys, '--variants', 'TTA,TTA8', '--recipes', 'tuned')
    assert len(tests) == 2 and all('--tta' in t for t in tests)
    assert 'tiled_tta8.py' in tests[1] and '_TTA8_' in tests[1] and 'tiled_tta8' not in tests[0]


def test_table_gives_each_row_its_change_from_the_reference(tmp_path) -> None:
    accuracy = accuracy_module()
    gt = tmp_path / 'gt.json'
    gt.write_text('{"images": [], "annotations": [], "categories": '
                  '[{"id": 2, "name": "b"}, {"id": 1, "name": "a"}]}')
    classes = accuracy.class_names(str(gt))
    assert classes == ['a', 'b']
    ref = {'coco/segm_mAP': 0.1, 'coco/segm_mAP_50': 0.2, 'coco/segm_a_mAP_50': 0.3,
           'coco/segm_b_mAP_50': 0.0}
    tuned = dict(ref, **{'coco/segm_mAP_50': 0.35, 'coco/segm_b_mAP_50': 0.05})
    lines = accuracy.table([('original', ref), ('tuned', tuned)], ref, classes).splitlines()
    assert 'a AP50' in lines[0] and 'b AP50' in lines[0]
    assert '0.350 +0.150' in lines[2] and '0.050 +0.050' in lines[2] and '0.300 +0.000' in lines[2]
    assert 'n/a' in lines[1]  # AP@1000 missing from these metrics


@needs_consep
def test_several_seeds_train_and_evaluate_each_apart(tmp_path, capsys) -> None:
    trains, tests = dry_run(tmp_path, capsys, '--variants', 'whole', '--seed', '0,3')
    assert len(trains) == 4 and len(tests) == 4  # two recipes x two seeds
    assert [t.rsplit('=', 1)[1] for t in trains] == ['0', '0', '3', '3']
    assert f"--work-dir {tmp_path / 'cell_r50_scratch_8it'} " in trains[0]
    assert f"--work-dir {tmp_path / 'cell_r50_scratch_tuned_8it_seed3'} " in trains[3]
    assert 'metrics/cell_r50_scratch_8it_seed3_whole_' in tests[2]


def test_seed_table_gives_mean_spread_and_the_gap_against_it() -> None:
    accuracy = accuracy_module()

    def metrics(ap50: float) -> dict:
        return {'coco/segm_mAP': ap50 / 2, 'coco/segm_mAP_50': ap50,
                'coco/segm_mAP_50_maxdets1000': ap50 + 0.01}

    runs = {seed: [('original cell_r50_scratch: whole', metrics(a)),
                   ('tuned cell_r50_scratch_tuned: whole', metrics(b))]
            for seed, a, b in ((0, 0.10, 0.20), (1, 0.12, 0.19), (2, 0.14, 0.15))}
    text, rows = accuracy.seed_table(runs)
    orig = rows['original cell_r50_scratch: whole']
    tuned = rows['tuned cell_r50_scratch_tuned: whole']
    assert orig['ap50'] == [0.10, 0.12, 0.14]
    assert orig['mean'] == pytest.approx(0.12) and orig['sd'] == pytest.approx(0.02)
    assert tuned['mean'] == pytest.approx(0.18) and tuned['ap_mean'] == pytest.approx(0.09)
    assert orig['ap50_1000_mean'] == pytest.approx(0.13)
    lines = text.splitlines()
    assert 'seed 2' in lines[0] and 'mean' in lines[0] and 'sd' in lines[0]
    assert '0.120' in lines[1] and '0.100-0.140' in lines[1]
    # gap 0.06 against sds 0.020 + 0.026: larger; the tuned run is higher in all three seeds
    assert 'gap +0.060' in lines[3] and 'higher in 3 of 3 seeds' in lines[3]
    assert lines[3].endswith('the gap is larger than the two sds together')
    close = {s: [r[0], ('tuned cell_r50_scratch_tuned: whole', metrics(r[0][1]['coco/segm_mAP_50']
                                                              + d))]
             for (s, r), d in zip(runs.items(), (0.01, -0.01, 0.0))}
    assert accuracy.seed_table(close)[0].endswith('not larger than the two sds together')


def test_runs_split_over_processes_keep_their_own_summaries(tmp_path) -> None:
    accuracy = accuracy_module()
    paths = {accuracy.summary_path(accuracy.parse_args(['--budget', '8', *extra]), '/w', tag, 5)
             for extra in ([], ['--recipes', 'original'], ['--recipes', 'tuned'],
                           ['--recipes', 'tuned', '--cpu-amp', 'bf16'])
             for tag in ('', '_seed1')}
    assert len(paths) == 8
    assert accuracy.summary_path(accuracy.parse_args(['--budget', '8']), '/w', '_seed1', 5) == \
        '/w/accuracy_8it_seed1_5img.json'  # the default pair keeps the earlier runs' names


def test_a_config_path_is_a_recipe_named_by_its_stem(tmp_path) -> None:
    accuracy = accuracy_module()
    path = 'configs/ablations/cell_r50_scratch_tuned_noflip.py'
    args = accuracy.parse_args(['--budget', '8', '--recipes', f'tuned,{path}'])
    assert args.recipes == ['tuned', 'cell_r50_scratch_tuned_noflip']
    assert args.recipe_paths == {'tuned': accuracy.TUNED, 'cell_r50_scratch_tuned_noflip': path}
    # the summary's name carries the stem, not the path's folders
    assert accuracy.summary_path(args, '/w', '_seed1', 5) == \
        '/w/accuracy_8it_seed1_tuned-cell_r50_scratch_tuned_noflip_5img.json'
    for bad in ('configs/ablations/missing.py', 'configs/ablations', f'{path},{path}'):
        with pytest.raises(SystemExit):
            accuracy.parse_args(['--budget', '8', '--recipes', bad])


@needs_consep
def test_a_config_path_trains_and_evaluates_under_its_stem(tmp_path, capsys) -> None:
    path = 'configs/ablations/cell_r50_scratch_tuned_noflip.py'
    [train], [test] = dry_run(tmp_path, capsys, '--variants', 'whole', '--recipes', path,
                              '--seed', '1')
    assert f"{tmp_path / 'configs' / 'cell_r50_scratch_tuned_noflip_8it.py'} " in train
    assert f"--work-dir {tmp_path / 'cell_r50_scratch_tuned_noflip_8it_seed1'} " in train
    assert test.split()[3] == path  # evaluated with the config itself
    assert 'metrics/cell_r50_scratch_tuned_noflip_8it_seed1_whole_' in test


def test_budget_config_reaches_a_wrapped_training_set(tmp_path) -> None:
    accuracy = accuracy_module()
    recipe = tmp_path / 'rfs.py'
    recipe.write_text(f"_base_ = {str(REPO / accuracy.TUNED)!r}\n"
                      "train_dataloader = dict(dataset=dict(_delete_=True, "
                      "type='ClassBalancedDataset', oversample_thr=1.0, "
                      "dataset=_base_.train_dataloader.dataset))\n")
    path = tmp_path / 'budget.py'
    path.write_text(accuracy.budget_config(str(recipe), 200))
    cfg = Config.fromfile(str(path))
    wrapper = cfg.train_dataloader.dataset
    assert wrapper.type == 'ClassBalancedDataset' and 'ann_file' not in wrapper
    assert wrapper.oversample_thr == 1.0
    assert wrapper.dataset.ann_file == 'annotations/train_all.json'
    assert wrapper.dataset.pipeline == Config.fromfile(str(recipe)).train_pipeline
    assert cfg.train_cfg.max_iters == 200
