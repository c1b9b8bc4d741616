"""``tools/dist_train.sh`` trains with two CPU processes (gloo), and ``tools/test.py`` loads the
checkpoint they wrote."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from tool_runner import run_tool

from cellseg.utils.scalars import read_scalars

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
PROCESSES = 2
BATCH = 2  # the tiny config's batch per process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_split_the_epoch_and_test_loads_the_checkpoint(
        tiny_root: Path, tiny_ann: Path, tmp_path: Path) -> None:
    work = tmp_path / 'train'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1',
               PYTHONUNBUFFERED='1')
    proc = subprocess.run(
        ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(TINY), str(PROCESSES),
         '--data-root', str(tiny_root), '--ann-dir', str(tiny_ann), '--work-dir', str(work),
         '--cfg-options', 'train_cfg.max_epochs=1', 'randomness.seed=0'],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    log = next(work.glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # the world size
    if not torch.cuda.is_available():
        assert 'distributed backend gloo instead of nccl' in log
    images = len(json.loads((tiny_ann / 'train_all.json').read_text())['images'])
    per_rank = -(-images // (PROCESSES * BATCH))  # DefaultSampler pads to a multiple of 2
    assert per_rank < -(-images // BATCH)  # fewer than one process needs: the data was split
    assert [r['step'] for r in read_scalars(work) if 'loss' in r] == list(range(1, per_rank + 1))
    assert f'Epoch(train) [1][{per_rank}/{per_rank}]' in log

    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == per_rank and ckpt['meta']['epoch'] == 1
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])  # not DDP's names

    metrics_path = tmp_path / 'metrics.json'
    test = run_tool('tools/test.py', TINY, work / 'epoch_1.pth', '--data-root', tiny_root,
                    '--ann-dir', tiny_ann, '--work-dir', tmp_path / 'test', '--metrics-out',
                    metrics_path, env={'OMP_NUM_THREADS': '1'}, timeout=600)
    output = test.stdout + test.stderr
    # load_checkpoint is not strict: a name mismatch would only warn and test random weights
    assert 'Load checkpoint from' in output
    assert 'unexpected key' not in output and 'missing keys' not in output
    metrics = json.loads(metrics_path.read_text())
    assert 0.0 <= metrics['coco/segm_mAP_50'] <= 1.0
