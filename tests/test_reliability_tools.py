"""The smaller command lines end a bad input with one line ``error: <file>: <problem>`` and
status 1, no traceback (``cellseg.apis.cli.run_tool``), as tools/train.py and tools/test.py do."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tool_runner import run_tool


def assert_one_line_error(proc: subprocess.CompletedProcess, culprit: Path | str,
                          problem: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert 'Traceback' not in out, out
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {culprit}: ') and problem in last, proc.stderr


def test_eval_labels_missing_folder(tmp_path: Path) -> None:
    (tmp_path / 'pred').mkdir()
    proc = run_tool('tools/eval_labels.py', tmp_path / 'gt', tmp_path / 'pred', ok=False)
    assert_one_line_error(proc, tmp_path / 'gt', 'no such folder')


def test_browse_dataset_without_train_folder(tmp_path: Path) -> None:
    proc = run_tool('tools/browse_dataset.py', tmp_path, '--out-dir', tmp_path / 'out', ok=False)
    assert_one_line_error(proc, tmp_path / 'train', 'no train folder')


@pytest.mark.parametrize('content, problem', [(None, 'No such file or directory'),
                                              ('{"images": ', 'Expecting value')])
def test_anchor_stats_bad_annotation_file(tmp_path: Path, content: str | None,
                                          problem: str) -> None:
    ann = tmp_path / 'train_all.json'
    if content is not None:
        ann.write_text(content)
    proc = run_tool('tools/anchor_stats.py', ann, ok=False)
    assert_one_line_error(proc, ann, problem)


def test_plot_curves_of_an_empty_work_dir(tmp_path: Path) -> None:
    proc = run_tool('tools/plot_curves.py', tmp_path, ok=False)
    assert_one_line_error(proc, tmp_path, 'no */vis_data/scalars.json')


def test_kfold_report_of_missing_runs(tmp_path: Path) -> None:
    proc = run_tool('tools/kfold.py', 'configs/ablations/cell_r50_fold', '--report-only',
                    '--work-root', tmp_path, ok=False)
    assert_one_line_error(proc, tmp_path / 'cell_r50_fold0', 'no validation metrics')


def test_kfold_stops_at_a_failed_fold_naming_it(tmp_path: Path) -> None:
    proc = run_tool('tools/kfold.py', tmp_path / 'no_such_fold', '--folds', '2', '--work-root',
                    tmp_path, ok=False, env={'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {tmp_path / "no_such_fold0.py"}: fold 0 failed (exit status '
                           '1)'), proc.stderr
    assert '== fold 1' not in proc.stdout
