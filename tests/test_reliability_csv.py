"""CSV files open in a spreadsheet as text, never as formulas (OWASP's rule for CSV injection):
``cellseg.utils.spreadsheet`` and the evaluation report's CSVs, read back with Python's own csv
module as a spreadsheet would split them."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cellseg.evaluation.eval_report import write_eval_report
from cellseg.utils.spreadsheet import SafeDictWriter, spreadsheet_safe

# what issue 26 tried: a classes.txt line and an image name
FORMULA_CLASS = "=cmd|' /C calc'!A0"
FORMULA_IMAGE = '=1+1.png'


@pytest.mark.parametrize('text', ['=1+1', '+1', '-1', '@SUM(A1)', '\tx', '\rx', FORMULA_CLASS,
                                  '-1.5'])
def test_text_starting_a_formula_gets_a_quote(text: str) -> None:
    assert spreadsheet_safe(text) == "'" + text


@pytest.mark.parametrize('value', ['class1', 'a=b', ' =x', '', "'=x", 'ü=1'])
def test_other_text_is_unchanged(value: str) -> None:
    assert spreadsheet_safe(value) == value


@pytest.mark.parametrize('value', [-1.5, -3, 0, 2.25, None, True])
def test_numbers_stay_numbers(value: object) -> None:
    assert spreadsheet_safe(value) is value


def test_safe_dict_writer_escapes_header_and_values() -> None:
    buf = io.StringIO()
    writer = SafeDictWriter(buf, fieldnames=['image', FORMULA_CLASS, 'score'],
                            lineterminator='\n')
    writer.writeheader()
    writer.writerows([{'image': FORMULA_IMAGE, FORMULA_CLASS: '@x', 'score': -0.5}])
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows == [['image', "'" + FORMULA_CLASS, 'score'],
                    ["'" + FORMULA_IMAGE, "'@x", '-0.5']]


def test_eval_report_csvs_hold_no_formula(tiny_root: Path, tmp_path: Path) -> None:
    """Class names and an image name that are formulas, through write_eval_report: every cell
    of the three CSVs that starts a formula is escaped, numbers are numbers."""
    gt = json.loads((tiny_root / 'test_gt.json').read_text())
    names = [FORMULA_CLASS, '+class2', '-class3', '@class4']
    for c in gt['categories']:
        c['name'] = names[c['id'] - 1]
    gt['images'][0]['file_name'] = FORMULA_IMAGE
    gt_path = tmp_path / 'gt.json'
    gt_path.write_text(json.dumps(gt))
    results = [dict(image_id=a['image_id'], category_id=a['category_id'], score=0.9,
                    segmentation=a['segmentation'], bbox=a['bbox']) for a in gt['annotations']]
    results_path = tmp_path / 'results.segm.json'
    results_path.write_text(json.dumps(results))
    out = tmp_path / 'report'
    write_eval_report(gt_path, results_path, out, names)

    cells = []
    for name in ('per_class.csv', 'confusion.csv', 'per_image.csv'):
        with open(out / name, newline='') as f:
            cells += [c for row in csv.reader(f) for c in row]
    assert not [c for c in cells if c.startswith(('=', '+', '-', '@', '\t', '\r'))]
    assert {"'" + n for n in names} <= set(cells)  # the names, escaped, in headers and rows
    assert "'" + FORMULA_IMAGE in cells
    with open(out / 'per_class.csv', newline='') as f:
        table = list(csv.DictReader(f))
    assert [r['class'] for r in table] == ["'" + n for n in names] + ['mean']
    assert all(float(r['AP50']) == 1.0 for r in table if r['AP50'] != 'n/a')
