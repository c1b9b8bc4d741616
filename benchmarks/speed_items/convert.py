"""The ``convert`` item: ``data_prep/hw3_to_coco.py`` on 209 generated images like the real ones,
as it is and with a full-image pycocotools encode per instance
(``benchmarks.references.encode_instance_map_per_mask``); the same JSON files required."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from benchmarks.speed_items.common import GIB, REPO, hw3_like, report, run_child

# The conversion in a child process (its own peak RSS); the baseline puts the reference encoder
# where cellseg.formats.hw3.convert_sample calls the run-based one, and counts its calls, so a
# patch that missed (the encoder renamed) fails instead of timing the fast path twice.
_CONVERT = '''
import atexit, runpy, sys
sys.path.insert(0, {repo!r})
sys.argv = ['hw3_to_coco.py'] + {args!r}
calls = [0]
if {baseline!r}:
    from benchmarks.references import encode_instance_map_per_mask
    from cellseg.formats import hw3
    if not hasattr(hw3, 'encode_instances'):
        sys.exit('cellseg.formats.hw3 no longer calls encode_instances: update convert.py')

    def baseline(labels):
        calls[0] += 1
        return encode_instance_map_per_mask(labels)

    hw3.encode_instances = baseline


def report():
    print('reference encoder calls', calls[0])
    print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])


atexit.register(report)
runpy.run_path({script!r}, run_name='__main__')
'''


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """None: the data set is fixed (like the real HW3 training set)."""


def run(args: argparse.Namespace, work: Path) -> None:
    """Both conversions, each in a fresh process with one thread."""
    root = hw3_like(work)
    script = str(REPO / 'data_prep' / 'hw3_to_coco.py')
    outs = {}
    for variant in ('baseline', 'current'):
        out = work / f'convert_{variant}'
        shutil.rmtree(out, ignore_errors=True)
        code = _CONVERT.format(repo=str(REPO), args=[str(root), '--out-dir', str(out)],
                               script=script, baseline=variant == 'baseline')
        wall, log = run_child([sys.executable, '-c', code], dict(OMP_NUM_THREADS='1'))
        lines = log.strip().splitlines()
        peak = int(lines[-1].split()[1]) * 1024
        calls = int(lines[-2].split()[-1])
        if (variant == 'baseline') != (calls > 0):
            sys.exit(f'convert: the {variant} run called the reference encoder {calls} times')
        outs[variant] = (wall, peak, out, next(x for x in lines if ' images, ' in x))
    (w0, r0, out0, log0), (w1, r1, out1, _) = outs['baseline'], outs['current']
    same = all((out0 / p.name).read_bytes() == p.read_bytes() for p in sorted(out1.iterdir()))
    same = same and sorted(p.name for p in out0.iterdir()) == sorted(p.name for p in out1.iterdir())
    report('convert', f'hw3_to_coco.py with one full-image encode per instance (baseline), 209 '
           f'images ({log0})', f'{w0:.1f} s, peak RSS {r0 / GIB:.2f} GiB')
    report('convert', 'hw3_to_coco.py as it is (run-based encoder, cellseg.structures.rle)',
           f'{w1:.1f} s, peak RSS {r1 / GIB:.2f} GiB', f'{w0:.1f} s (baseline)',
           '<= 30 s and <= 1 GiB', w1 <= 30 and r1 <= GIB)
    report('convert', 'annotation files identical', str(same), met=same)
