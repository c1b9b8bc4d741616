"""tools/kfold.py's table: each fold's best validation epoch, mean and standard deviation."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from cellseg.apis.kfold_summary import best_validation, fold_table, logged_classes

REPO = Path(__file__).resolve().parents[1]
# the classes as a data root's classes.txt names them: five, none called classK
CLASSES = ('tumour', 'lymphocyte', 'stroma_cell', 'necrosis', 'other')


def write_run(work_dir: Path, ap50_by_epoch: list[float],
              classes: tuple[str, ...] = CLASSES) -> None:
    vis = work_dir / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    rows = [dict(loss=1.0, step=1, epoch=1)]
    for epoch, ap50 in enumerate(ap50_by_epoch, start=1):
        row = {'coco/segm_mAP': ap50 / 2, 'coco/segm_mAP_50': ap50, 'epoch': epoch, 'step': epoch}
        for i, c in enumerate(classes):  # as PerClassCocoMetric(classwise=True) logs them
            row.update({f'coco/segm_{c}_mAP': ap50 / 2, f'coco/segm_{c}_mAP_50': ap50 + i / 100})
        rows.append(row)
    (vis / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in rows) + '\n')


def test_best_epoch_and_table(tmp_path: Path) -> None:
    runs = [[0.1, 0.3, 0.2], [0.2, 0.25, 0.4]]
    for k, aps in enumerate(runs):
        write_run(tmp_path / f'cell_r50_fold{k}', aps)
    best = [best_validation(tmp_path / f'cell_r50_fold{k}') for k in range(2)]
    assert [b['epoch'] for b in best] == [2, 3]
    assert logged_classes(best) == CLASSES
    table = fold_table(best)
    lines = table.splitlines()
    assert lines[0] == ('| fold | epoch | AP | AP50 | tumour AP50 | lymphocyte AP50 | '
                        'stroma_cell AP50 | necrosis AP50 | other AP50 |')
    assert '| 0 | 2 | 0.150 | 0.300 | 0.300 | 0.310 | 0.320 | 0.330 | 0.340 |' in lines
    assert lines[-2].startswith('| mean |  | 0.175 | 0.350 |')
    assert lines[-1].startswith('| std |  | 0.035 | 0.071 |')


def test_kfold_tool_reports_existing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    for k in range(5):
        write_run(tmp_path / f'cell_r50_fold{k}', [0.1 * (k + 1)])
    monkeypatch.setattr(sys, 'argv', ['kfold.py', 'configs/ablations/cell_r50_fold',
                                      '--report-only', '--work-root', str(tmp_path)])
    runpy.run_path(str(REPO / 'tools' / 'kfold.py'), run_name='__main__')
    out = capsys.readouterr().out
    assert '| mean |  | 0.150 | 0.300 |' in out
    assert out.splitlines()[0].endswith('| necrosis AP50 | other AP50 |')
    assert 'n/a' not in out


def test_runs_without_per_class_metrics_get_no_class_columns(tmp_path: Path) -> None:
    write_run(tmp_path / 'run', [0.4], classes=())
    assert fold_table([best_validation(tmp_path / 'run')]).splitlines()[0] == \
        '| fold | epoch | AP | AP50 |'


def test_missing_validation_names_the_work_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        best_validation(tmp_path)
