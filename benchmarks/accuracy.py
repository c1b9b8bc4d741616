"""Accuracy of the original recipe against the dense-cell recipe, with and without tiling and TTA.

    python benchmarks/accuracy.py --budget 2000 [--data-root ../shared/data/consep]
        [--work-dir work_dirs/accuracy] [--test-images N] [--tile-size 192 --tile-overlap 96]
        [--dry-run]

Both recipes (``configs/cell_r50_scratch.py`` and ``configs/cell_r50_scratch_tuned.py``), and on
request (``--recipes``) the ablations of the tuned one (``configs/cell_r50_scratch_dense.py``: its
dense settings with the original training; ``configs/ablations/cell_r50_scratch_tuned_noflip.py``:
without flips), train the same number of iterations (``--budget``, batch 4, cosine schedule over
the budget, all train images, no validation) through ``tools/train.py``. Each checkpoint is then
evaluated by ``tools/test.py`` on the data root's ``test_gt.json`` four ways: whole images,
tiled, TTA (the four flips, masks merged) and tiled + TTA, the tiling and TTA settings being
those of ``configs/cell_r50_scratch_dense_tta.py``; on request (``--variants``) also TTA8, the
eight views of ``configs/cell_r50_scratch_dense_tta8.py`` (the four flips of the image and of its
quarter turn). The table printed at the end gives mask AP and AP50 at 100 detections per image
(the leaderboard's count) and at 1000, and AP50 per class, each row with its change from the
original recipe predicting whole images.

CoNSeP's patches are 256 px, below the configs' 512 px tiles, so tiling is run at
``--tile-size`` 192 / ``--tile-overlap`` 96 (4 tiles per image; the overlap exceeds 99.9% of
CoNSeP cell boxes, see tools/anchor_stats.py): it shows what tile borders cost or gain, not what
tiling does to 2500 px HW3 images.

``--cpu-amp`` is passed to ``tools/train.py`` (the recipe's mixed precision without CUDA); given,
the run's names end in ``_bf16`` or ``_fp32`` (``auto``: what this CPU chose), so a bf16 and a
float32 training of the same recipe and seed sit side by side.

``--seed 0,1,2`` trains and evaluates every recipe with each seed in turn and ends with a table
of AP50 per seed, its mean and sample standard deviation per recipe and variant, and the gap
between the recipes against that spread.

A training saves a checkpoint every 50 iterations (the last one kept); one that finds a
checkpoint but not its final one resumes (``tools/train.py --resume``), exactly, so a run cut by
the end of a session goes on in the next.

``--dry-run`` prints the commands without running them. Checkpoints and metrics of an earlier
run with the same budget (and number of test images) in the work dir are reused, so runs can be
split (``--recipes``, ``--variants``, ``--train-only``), e.g. over two processes on a 2-core
machine, and a last call with everything prints the whole table.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from pprint import pformat

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmengine.config import Config  # noqa: E402

from cellseg.apis.cpu_fallback import CPU_AMP_MODES  # noqa: E402
from cellseg.utils.fileio import atomic_write_bytes, atomic_write_json  # noqa: E402

ORIGINAL = 'configs/cell_r50_scratch.py'
TUNED = 'configs/cell_r50_scratch_tuned.py'
TUNED_TTA = 'configs/cell_r50_scratch_dense_tta.py'  # tuned + tiling + TTA settings
TUNED_TTA8 = 'configs/cell_r50_scratch_dense_tta8.py'  # the same with the eight views
# the ablations split the tuned recipe's gain in three: the dense settings alone (anchors,
# proposals, detections; the original training), then the learning-rate changes, then the flips
ABLATIONS = {'dense': 'configs/cell_r50_scratch_dense.py',
             'tuned-noflip': 'configs/ablations/cell_r50_scratch_tuned_noflip.py'}
RECIPES = {'original': ORIGINAL, 'tuned': TUNED, **ABLATIONS}
VARIANTS = ('whole', 'tiled', 'TTA', 'tiled + TTA', 'TTA8')
DEFAULT_VARIANTS = VARIANTS[:4]
DEFAULT_RECIPES = 'original,tuned'
# a budget's training saves a checkpoint this often (the last one kept), so a killed run resumes
CHECKPOINT_EVERY = 50
COLUMNS = (('AP', 'coco/segm_mAP'), ('AP50', 'coco/segm_mAP_50'),
           ('AP@1000', 'coco/segm_mAP_maxdets1000'), ('AP50@1000', 'coco/segm_mAP_50_maxdets1000'))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--budget', type=int, required=True,
                        help='training iterations per recipe (batch 4)')
    parser.add_argument('--data-root', default=osp.join(REPO, '..', 'shared', 'data', 'consep'),
                        help='HW3 data root holding train/, test_release/ and test_gt.json')
    parser.add_argument('--ann-dir', help='COCO files of the data root (default: converted into '
                        'WORK_DIR/ann with data_prep/hw3_to_coco.py)')
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'accuracy'))
    parser.add_argument('--test-images', type=int,
                        help='evaluate on the first N test images only (quick checks)')
    parser.add_argument('--tile-size', type=int, default=192)
    parser.add_argument('--tile-overlap', type=int, default=96)
    parser.add_argument('--variants', default=','.join(DEFAULT_VARIANTS),
                        help=f'test modes to evaluate, comma-separated among {VARIANTS}')
    parser.add_argument('--recipes', default=DEFAULT_RECIPES,
                        help=f'recipes to run, among {tuple(RECIPES)} (the last two are '
                        'ablations of tuned), or paths of config files (.py, relative to the '
                        "repository or absolute), each labelled and its runs named by the file's "
                        'stem: with --train-only, one per process lets two trainings share a '
                        'machine')
    parser.add_argument('--train-only', action='store_true',
                        help='train (or find) the checkpoints, evaluate nothing')
    parser.add_argument('--seed', default='0',
                        help='randomness.seed of the trainings (default 0); checkpoints and '
                        'metrics of another seed are kept apart (names end in _seedN). Several, '
                        'comma-separated (0,1,2): each trained and evaluated in turn, then a '
                        'table of the mean and spread over the seeds')
    parser.add_argument('--cpu-amp', choices=CPU_AMP_MODES,
                        help="tools/train.py's --cpu-amp for the trainings; given, the runs' "
                        "names end in _bf16 or _fp32")
    parser.add_argument('--dry-run', action='store_true', help='print the commands only')
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(',')]
    args.recipes = [r.strip() for r in args.recipes.split(',')]
    try:
        args.seeds = [int(v) for v in args.seed.split(',')]
    except ValueError:
        parser.error(f'--seed: {args.seed!r} is not a comma-separated list of integers')
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seed: {args.seed!r} repeats a seed')
    for v in args.variants:
        if v not in VARIANTS:
            parser.error(f'--variants: {v!r} is none of {VARIANTS}')
    args.recipe_paths = {}
    for r in args.recipes:
        if r in RECIPES:
            args.recipe_paths[r] = RECIPES[r]
        elif r.endswith('.py') and osp.isfile(osp.join(REPO, r)):
            args.recipe_paths[osp.splitext(osp.basename(r))[0]] = r
        else:
            parser.error(f'--recipes: {r!r} is none of {tuple(RECIPES)} nor a config file')
    if len(args.recipe_paths) != len(args.recipes):
        parser.error(f'--recipes: {",".join(args.recipes)!r} names a recipe twice')
    # a config path is labelled by its stem, which also names its runs and the summary
    args.recipes = list(args.recipe_paths)
    return args


def precision_suffix(cpu_amp: str | None) -> str:
    """The run-name suffix of an explicit ``--cpu-amp``: what the training computes in."""
    if cpu_amp is None:
        return ''
    from cellseg.engine.optimizers.cpu_amp_optim_wrapper import cpu_has_bf16
    bf16 = cpu_amp == 'bf16' or (cpu_amp == 'auto' and cpu_has_bf16())
    return '_bf16' if bf16 else '_fp32'


def summary_path(args: argparse.Namespace, work: str, seeds: str, n_test: int) -> str:
    """Where a summary of ``seeds`` (a name part such as ``_seed1``) goes: the precision, and the
    recipes unless they are the default pair, in the name, so that runs split over processes
    (one recipe each) do not overwrite each other's summary."""
    recipes = ('' if args.recipes == DEFAULT_RECIPES.split(',')
               else '_' + '-'.join(args.recipes))
    return osp.join(work, f'accuracy_{args.budget}it{seeds}{precision_suffix(args.cpu_amp)}'
                          f'{recipes}_{n_test}img.json')


class Runner:
    """Runs (or, dry, prints) the commands, timing each."""

    def __init__(self, dry: bool) -> None:
        self.dry = dry

    def __call__(self, script: str, *args: str) -> None:
        cmd = [sys.executable, osp.join(REPO, script), *map(str, args)]
        print('$ ' + ' '.join(cmd), flush=True)
        if self.dry:
            return
        start = time.time()
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f'{script} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n'
                     f'{proc.stderr[-3000:]}')
        print(f'  done in {time.time() - start:.0f} s', flush=True)


def write(path: str, text: str, dry: bool) -> str:
    print(f'{"would write" if dry else "writing"} {path}')
    if not dry:
        atomic_write_bytes(path, text.encode())
    return path


def budget_config(recipe: str, budget: int) -> str:
    """A child of ``recipe`` training ``budget`` iterations on all train images, unvalidated.

    The recipe's cosine decay is stretched over the budget; a linear warm-up it has is kept, cut
    to at most a tenth of the budget. A training set inside dataset wrappers (e.g.
    ``ClassBalancedDataset``) gets the annotation file at its innermost dataset, the wrappers
    kept.
    """
    base = Config.fromfile(osp.join(REPO, recipe))
    train_set = dict(ann_file='annotations/train_all.json')
    wrapped = base.train_dataloader.dataset
    while 'dataset' in wrapped:
        train_set, wrapped = dict(dataset=train_set), wrapped['dataset']
    if 'datasets' in wrapped:
        raise ValueError(f'{recipe}: no budget version of a training set of several datasets')
    schedulers = []
    for sched in base.param_scheduler:
        if sched['type'] == 'LinearLR':
            schedulers.append(dict(type='LinearLR', start_factor=sched['start_factor'],
                                   by_epoch=False, begin=0,
                                   end=max(1, min(sched['end'], budget // 10))))
        elif sched['type'] == 'CosineAnnealingLR':
            schedulers.append(dict(type='CosineAnnealingLR', T_max=budget,
                                   eta_min=sched['eta_min'], begin=0, end=budget,
                                   by_epoch=False))
        else:
            raise ValueError(f"{recipe}: no budget version of scheduler {sched['type']}")
    return f'''# generated by benchmarks/accuracy.py: {recipe} trained {budget} iterations
_base_ = {osp.join(REPO, recipe)!r}
train_dataloader = dict(dataset={train_set!r})
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={budget})
val_dataloader = None
val_cfg = None
val_evaluator = None
param_scheduler = {pformat(schedulers)}
default_hooks = dict(checkpoint=dict(by_epoch=False, interval={min(budget, CHECKPOINT_EVERY)},
                                     max_keep_ckpts=1, save_best=None),
                     logger=dict(interval=max(1, min(50, {budget} // 10))))
log_processor = dict(by_epoch=False)
'''


class ConfigExpr:
    """Text that ``pformat`` writes as it is in a generated config: a reference to its base."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def tiled_tta_config(recipe: str, tta_source: str = TUNED_TTA) -> str:
    """``recipe`` with the tiling and TTA settings of ``tta_source``
    (``configs/cell_r50_scratch_dense_tta.py`` or its eight-view child)."""
    src = Config.fromfile(osp.join(REPO, tta_source))
    base = Config.fromfile(osp.join(REPO, recipe))
    tta_model = src.tta_model.to_dict()
    # TUNED_TTA takes max_per_img from its parent, and so does the generated config from its
    # own: loaded, src holds the tuned model's number, not the recipe's
    tta_model['tta_cfg']['max_per_img'] = ConfigExpr('_base_.model.test_cfg.rcnn.max_per_img')
    extra = [m for m in src.custom_imports.imports if m not in base.custom_imports.imports]
    return f'''# generated by benchmarks/accuracy.py: {recipe} with {tta_source}'s tiling and TTA
_base_ = {osp.join(REPO, recipe)!r}
custom_imports = dict(imports=_base_.custom_imports.imports + {extra!r})
model = dict(type='TiledMaskRCNN', tile_cfg={pformat(src.model.tile_cfg.to_dict())})
tta_model = {pformat(tta_model)}
tta_pipeline = {pformat([t.to_dict() if hasattr(t, 'to_dict') else t
                         for t in src.tta_pipeline])}
'''


def evaluation_gt(gt_path: str, n: int | None, out: str, dry: bool) -> tuple[str, int]:
    """The ground truth to evaluate on: ``gt_path``, or a copy of it holding its first ``n``
    images. (``tools/test.py --test-gt`` matches categories by id, so CoNSeP's, named by cell
    type, evaluates as it is.)"""
    with open(gt_path) as f:
        gt = json.load(f)
    images = sorted(gt['images'], key=lambda im: im['id'])
    if n is None or n >= len(images):
        return gt_path, len(images)
    images = images[:n]
    ids = {im['id'] for im in images}
    gt = dict(gt, images=images, annotations=[a for a in gt['annotations']
                                              if a['image_id'] in ids])
    return write(out, json.dumps(gt), dry), len(images)


def class_names(gt_path: str) -> list[str]:
    """The ground truth's category names by id: the metric names its per-class keys by them
    (CoNSeP's test_gt.json: other, inflammatory, epithelial, spindle-shaped)."""
    with open(gt_path) as f:
        return [c['name'] for c in sorted(json.load(f)['categories'], key=lambda c: c['id'])]


def table(rows: list[tuple[str, dict]], reference: dict, classes: list[str]) -> str:
    """Metrics by row, each with its change from ``reference`` (n/a: no instance of a class)."""
    head = [name for name, _ in COLUMNS] + [f'{c} AP50' for c in classes]
    keys = [key for _, key in COLUMNS] + [f'coco/segm_{c}_mAP_50' for c in classes]
    width = max(len(name) for name, _ in rows) + 2
    cols = [max(15, len(h) + 2) for h in head]
    lines = [' ' * width + ''.join(f'{h:>{c}}' for h, c in zip(head, cols))]
    for name, metrics in rows:
        cells = []
        for key in keys:
            v, r = metrics.get(key, float('nan')), reference.get(key, float('nan'))
            if v != v:  # nan
                cells.append('n/a')
            elif metrics is reference or r != r:
                cells.append(f'{v:.3f}')
            else:
                cells.append(f'{v:.3f} {v - r:+.3f}')
        lines.append(f'{name:<{width}}' + ''.join(f'{v:>{c}}' for v, c in zip(cells, cols)))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Runner(args.dry_run)
    work = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root)
    gt_path = osp.join(data_root, 'test_gt.json')
    if not osp.isfile(gt_path):
        sys.exit(f'{gt_path}: not found (the benchmark evaluates against a test ground truth)')

    ann_dir = osp.abspath(args.ann_dir) if args.ann_dir else osp.join(work, 'ann')
    if not osp.isfile(osp.join(ann_dir, 'train_all.json')):
        run('data_prep/hw3_to_coco.py', data_root, '--out-dir', ann_dir)
    gt_path, n_test = evaluation_gt(gt_path, args.test_images,
                                    osp.join(work, f'test_gt_first{args.test_images}.json'),
                                    args.dry_run)
    described = {'whole': 'whole images', 'TTA': 'TTA (4 flips)', 'tiled + TTA': 'tiled + TTA',
                 'tiled': f'tiled ({args.tile_size} px tiles, {args.tile_overlap} px overlap)',
                 'TTA8': 'TTA8 (the 8 views of the square)'}
    recipes = ', '.join(f'{args.recipe_paths[r]} ({r})' for r in args.recipes)
    print(f'\nTraining {recipes}: {args.budget} iterations (batch 4) each, seed '
          f'{args.seed}, on {data_root}/train; evaluated on {n_test} images of {gt_path}: '
          + ', '.join(described[v] for v in args.variants) + '.')

    results = {seed: run_seed(args, seed, run, work, data_root, ann_dir, gt_path, n_test)
               for seed in args.seeds}
    if args.dry_run or args.train_only or len(args.seeds) < 2:
        return 0
    text, summary = seed_table(results)
    print(f'\nMask AP50 over seeds {args.seed} ({args.budget} iterations, {n_test} test images; '
          'sd: sample standard deviation):')
    print(text)
    out = summary_path(args, work, '_seeds' + '-'.join(map(str, args.seeds)), n_test)
    atomic_write_json(out, dict(budget=args.budget, test_gt=gt_path, test_images=n_test,
                                seeds=args.seeds, rows=summary,
                                results={str(k): dict(v) for k, v in results.items()}))
    print(f'\nsaved {out}')
    return 0


def run_seed(args: argparse.Namespace, seed: int, run: Runner, work: str, data_root: str,
             ann_dir: str, gt_path: str, n_test: int) -> list[tuple[str, dict]]:
    """Train (or reuse) every recipe with ``seed`` and evaluate each requested variant; prints
    the table and saves the summary of this seed. Returns its (row label, metrics) pairs."""
    tile_opts = [f'model.tile_cfg.size={args.tile_size}',
                 f'model.tile_cfg.overlap={args.tile_overlap}']
    results: list[tuple[str, dict]] = []
    for label in args.recipes:
        recipe = args.recipe_paths[label]
        name = osp.splitext(osp.basename(recipe))[0]
        run_name = (f'{name}_{args.budget}it' + (f'_seed{seed}' if seed else '')
                    + precision_suffix(args.cpu_amp))
        train_dir = osp.join(work, run_name)
        ckpt = osp.join(train_dir, f'iter_{args.budget}.pth')
        cfg_path = write(osp.join(work, 'configs', f'{name}_{args.budget}it.py'),
                         budget_config(recipe, args.budget), args.dry_run)
        metrics = {variant: osp.join(work, 'metrics', f'{run_name}_'
                                     f'{variant.replace(" + ", "_")}_{n_test}img.json')
                   for variant in args.variants}
        evaluated = not args.train_only and all(map(osp.isfile, metrics.values()))
        if osp.isfile(ckpt):
            print(f'reusing {ckpt}')
        elif evaluated:
            # the metrics of an earlier session's run (kept when its checkpoints were not)
            print(f'not training {run_name}: the metrics of every variant exist')
        else:
            # a run killed on the way (a session's end) goes on from its last checkpoint
            resume = ['--resume'] if osp.isfile(osp.join(train_dir, 'last_checkpoint')) else []
            run('tools/train.py', cfg_path, '--data-root', data_root, '--ann-dir', ann_dir,
                '--work-dir', train_dir, *resume, '--cfg-options', f'randomness.seed={seed}',
                *(['--cpu-amp', args.cpu_amp] if args.cpu_amp else []))
        if args.train_only:
            continue
        tiled_cfg = write(osp.join(work, 'configs', f'{name}_tiled_tta.py'),
                          tiled_tta_config(recipe), args.dry_run)
        tta8_cfg = write(osp.join(work, 'configs', f'{name}_tiled_tta8.py'),
                         tiled_tta_config(recipe, TUNED_TTA8), args.dry_run)
        variants = {'whole': (recipe, []),
                    'tiled': (tiled_cfg, ['--cfg-options', *tile_opts]),
                    'TTA': (tiled_cfg, ['--tta', '--cfg-options', 'model.tile_cfg=None']),
                    'tiled + TTA': (tiled_cfg, ['--tta', '--cfg-options', *tile_opts]),
                    'TTA8': (tta8_cfg, ['--tta', '--cfg-options', 'model.tile_cfg=None'])}
        for variant in args.variants:
            config, extra = variants[variant]
            out = metrics[variant]
            if osp.isfile(out):
                print(f'reusing {out}')
            else:
                run('tools/test.py', config, ckpt, '--data-root', data_root, '--ann-dir',
                    ann_dir, '--work-dir', osp.join(work, 'test', f'{run_name}_{variant}'),
                    '--test-gt', gt_path, '--metrics-out', out, *extra)
            if not args.dry_run:
                with open(out) as f:
                    results.append((f'{label} {name}: {variant}', json.load(f)))
    if args.dry_run or args.train_only:
        return results
    print(f'\nMask AP on {n_test} test images ({gt_path}); the recipes trained {args.budget} '
          f'iterations, seed {seed}. Columns: AP and AP50 at 100 detections per image '
          '(CodaBench), at 1000, AP50 per class; each with its change from the first row.')
    print(table(results, results[0][1], class_names(gt_path)))
    summary = summary_path(args, work, f'_seed{seed}' if seed else '', n_test)
    atomic_write_json(summary, dict(budget=args.budget, test_gt=gt_path, test_images=n_test,
                                    results=dict(results)))
    print(f'\nsaved {summary}')
    return results


def seed_table(results: dict[int, list[tuple[str, dict]]]) -> tuple[str, dict[str, dict]]:
    """Per row (recipe and variant): AP50 of each seed, its mean, sample sd and range, and the
    means of AP and AP50 at 1000 detections; then, for each variant, the gap between the first
    recipe and each other one against the seeds' spread. Returns the text and the numbers."""
    import statistics

    seeds = list(results)
    labels = [label for label, _ in results[seeds[0]]]
    rows: dict[str, dict] = {}
    for label in labels:
        metrics = [dict(results[s])[label] for s in seeds]
        ap50 = [m['coco/segm_mAP_50'] for m in metrics]
        rows[label] = dict(
            ap50=ap50, mean=statistics.fmean(ap50),
            sd=statistics.stdev(ap50) if len(ap50) > 1 else float('nan'),
            ap_mean=statistics.fmean(m['coco/segm_mAP'] for m in metrics),
            ap50_1000_mean=statistics.fmean(m.get('coco/segm_mAP_50_maxdets1000', float('nan'))
                                            for m in metrics))
    width = max(len(label) for label in labels) + 2
    lines = [' ' * width + ''.join(f'{"seed " + str(s):>11}' for s in seeds)
             + f'{"mean":>9}{"sd":>8}{"range":>15}{"AP mean":>10}{"AP50@1000":>11}']
    for label, r in rows.items():
        lines.append(f'{label:<{width}}' + ''.join(f'{v:>11.3f}' for v in r['ap50'])
                     + f"{r['mean']:>9.3f}{r['sd']:>8.3f}"
                     + f"{min(r['ap50']):>8.3f}-{max(r['ap50']):.3f}"
                     + f"{r['ap_mean']:>10.3f}{r['ap50_1000_mean']:>11.3f}")
    for variant in dict.fromkeys(label.split(': ', 1)[1] for label in labels):
        same = [label for label in labels if label.endswith(f': {variant}')]
        first = rows[same[0]]
        for label in same[1:]:
            r = rows[label]
            gap = r['mean'] - first['mean']
            wins = sum(b > a for a, b in zip(first['ap50'], r['ap50']))
            lines.append(f'{label.split(":")[0]} - {same[0].split(":")[0]} ({variant}): AP50 '
                         f"gap {gap:+.3f}, sds {first['sd']:.3f} / {r['sd']:.3f}; higher in "
                         f'{wins} of {len(seeds)} seeds; the gap is '
                         + ('larger' if abs(gap) > first['sd'] + r['sd'] else 'not larger')
                         + ' than the two sds together')
    return '\n'.join(lines), rows


if __name__ == '__main__':
    sys.exit(main())
