"""``tools/test.py --report`` evaluates once: the report is made of the COCOeval and the nuclei
summary the test loop's metrics computed, not of a second evaluation of the results file.

The tool runs as a user runs it, in a process of its own (``tool_runner``), through a wrapper
that counts every ``COCOeval.evaluate`` and ``NucleiMetrics.summary`` of the process."""
from __future__ import annotations

import json
from pathlib import Path

from tool_runner import REPO, run_tool

TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'

COUNTING = '''
import json
import runpy
import sys

sys.path.insert(0, {repo!r})
from pycocotools.cocoeval import COCOeval

from cellseg.evaluation.nuclei_metrics import NucleiMetrics

calls = []
real_evaluate, real_summary = COCOeval.evaluate, NucleiMetrics.summary


def evaluate(self):
    calls.append('COCOeval ' + self.params.iouType)
    return real_evaluate(self)


def summary(self):
    calls.append('NucleiMetrics')
    return real_summary(self)


COCOeval.evaluate, NucleiMetrics.summary = evaluate, summary
sys.argv = [{tool!r}, *sys.argv[1:]]
try:
    runpy.run_path({tool!r}, run_name='__main__')
finally:
    with open({out!r}, 'w') as f:
        json.dump(calls, f)
'''


def test_report_reads_the_test_runs_evaluation(tiny_checkpoint: Path, tiny_root: Path,
                                               tiny_ann: Path, tmp_path: Path) -> None:
    calls_path, metrics_path = tmp_path / 'calls.json', tmp_path / 'metrics.json'
    wrapper = tmp_path / 'counting_test.py'
    wrapper.write_text(COUNTING.format(repo=str(REPO), tool=str(REPO / 'tools' / 'test.py'),
                                       out=str(calls_path)))
    run_tool(wrapper, TINY, tiny_checkpoint, '--data-root', tiny_root, '--ann-dir', tiny_ann,
             '--work-dir', tmp_path, '--test-gt', tiny_root / 'test_gt.json',
             '--metrics-out', metrics_path, '--report', tmp_path / 'report')
    # one COCOeval per IoU type of the metric and one nuclei evaluation, all in the test loop
    assert json.loads(calls_path.read_text()) == ['COCOeval bbox', 'COCOeval segm',
                                                  'NucleiMetrics']
    metrics = json.loads(metrics_path.read_text())
    md = (tmp_path / 'report' / 'per_class.md').read_text()
    # the report's numbers are the run's: its mean AP50 is the metric's segm_mAP_50 (rounded to
    # 3 decimals by mmdet), its PQ the nuclei metric's
    mean = next(line for line in md.splitlines() if line.startswith('| **mean** |'))
    ap50 = float(mean.split('|')[5])
    assert abs(ap50 - metrics['coco/segm_mAP_50']) <= 5e-4 + 1e-9
    pq = md.split('| F1 detection |')[1].splitlines()[2].split('|')[1]
    assert float(pq) == round(metrics['nuclei/pq'], 4)
    assert (tmp_path / 'report' / 'results.segm.json').is_file()
