"""Train the k cross-validation folds of a config family and print their table.

    python tools/kfold.py configs/ablations/cell_r50_fold [--folds 5] [--report-only]
        [-- extra tools/train.py arguments, e.g. --data-root DIR --ann-dir DIR]

Fold k's config is CONFIG_PREFIX{k}.py and trains into work_dirs/<its name>. Each fold's best
epoch on its own validation fold (segm AP50, maxDets 100, and the AP50 of each class the runs
logged, named as the data names them) goes into the table with the mean and standard deviation
over folds.
"""
from __future__ import annotations

import argparse
import os.path as osp
import subprocess
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cellseg.apis.cli import run_tool  # noqa: E402
from cellseg.apis.kfold_summary import best_validation, fold_table  # noqa: E402


def main(argv: list[str] | None = None) -> str | int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index('--') + 1:] if '--' in argv else []
    argv = argv[:argv.index('--')] if '--' in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config_prefix', help='e.g. configs/ablations/cell_r50_fold')
    parser.add_argument('--folds', type=int, default=5)
    parser.add_argument('--work-root', default='work_dirs', help='work dirs go under here')
    parser.add_argument('--report-only', action='store_true', help='only read existing runs')
    args = parser.parse_args(argv)
    best = []
    for k in range(args.folds):
        config = f'{args.config_prefix}{k}.py'
        work_dir = osp.join(args.work_root, osp.splitext(osp.basename(config))[0])
        if not args.report_only:
            print(f'== fold {k}: {config} -> {work_dir}', flush=True)
            done = subprocess.run([sys.executable, osp.join(osp.dirname(__file__), 'train.py'),
                                   config, '--work-dir', work_dir, *extra])
            if done.returncode:  # train.py said why; the folds after it are not started
                print(f'error: {config}: fold {k} failed (exit status {done.returncode}); '
                      f'the folds before it are in {args.work_root}', file=sys.stderr)
                return done.returncode
        best.append(best_validation(work_dir))
    table = fold_table(best)  # per-class columns: the classes the runs logged
    print(table)
    return table


if __name__ == '__main__':
    if status := run_tool(main):  # exits only on failure, so it runs in-process as well
        sys.exit(status)
