"""A diverging run stops at the first non-finite loss, naming it, before any checkpoint of it."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from tool_runner import run_tool

from cellseg.engine.hooks.non_finite_loss_hook import NonFiniteLossHook

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
# No validation (not needed here), so no best checkpoint either.
NO_VAL = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
          'default_hooks.checkpoint.save_best=None']


def test_diverging_run_stops_before_writing_a_checkpoint(tiny_root: Path, tiny_ann: Path,
                                                          tmp_path: Path) -> None:
    """lr 1e6 makes the second iteration's losses NaN. A checkpoint is due after every iteration,
    so iter_1.pth exists and iter_2.pth (the diverged weights) must not."""
    proc = run_tool('tools/train.py', TINY, '--data-root', tiny_root, '--ann-dir', tiny_ann,
                    '--work-dir', tmp_path, '--cfg-options', 'randomness.seed=0',
                    'optim_wrapper.optimizer.lr=1e6', 'default_hooks.checkpoint.by_epoch=False',
                    'default_hooks.checkpoint.interval=1', *NO_VAL,
                    ok=False, env={'OMP_NUM_THREADS': '1'}, timeout=600)
    assert proc.returncode != 0, proc.stdout[-2000:]
    found = re.search(r'RuntimeError: (non-finite loss \((nan|inf)\) at iteration (\d+) '
                      r'\(epoch 1\): (.*))', proc.stderr)
    assert found, proc.stderr[-3000:]
    message, n = found.group(1), int(found.group(3))
    assert re.search(r'loss_\w+=(nan|inf)', found.group(4)), message
    assert n >= 2  # the first iteration runs on the initial weights
    assert message in next(tmp_path.glob('*/*.log')).read_text()  # in the run's log too
    saved = sorted(tmp_path.glob('*.pth'))
    assert [p.name for p in saved] == [f'iter_{i}.pth' for i in range(1, n)]
    for path in saved:
        state = torch.load(path, map_location='cpu', weights_only=False)['state_dict']
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_message_names_the_terms_iteration_and_epoch() -> None:
    hook = NonFiniteLossHook()
    runner = SimpleNamespace(iter=41, epoch=2, logger=SimpleNamespace(error=lambda msg: None))
    outputs = dict(loss=torch.tensor(float('inf')), loss_cls=torch.tensor(1.0),
                   loss_bbox=torch.tensor(float('inf')), acc=torch.tensor(float('nan')))
    with pytest.raises(RuntimeError, match=r'^non-finite loss \(inf\) at iteration 42 '
                       r'\(epoch 3\): loss_bbox=inf\. '):
        hook.after_train_iter(runner, 0, outputs=outputs)
    outputs.update(loss_mask=torch.tensor(float('nan')))
    with pytest.raises(RuntimeError, match=r'\(nan\) .*: loss_bbox=inf, loss_mask=nan\. '):
        hook.after_train_iter(runner, 0, outputs=outputs)
    # finite losses pass; `acc` is not a loss and is not checked
    hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(2.0), acc=outputs['acc']))


def test_the_check_runs_before_the_checkpoint_hook(tmp_path: Path) -> None:
    cfg = Config.fromfile(TINY)
    cfg.work_dir = str(tmp_path)
    init_default_scope('mmdet')
    runner = Runner.from_cfg(cfg)
    names = [type(h).__name__ for h in runner.hooks]
    assert names.index('NonFiniteLossHook') < names.index('CheckpointHook')
    assert names.index('NonFiniteLossHook') < names.index('LoggerHook')
