"""Stop a diverging run at the first NaN or infinite loss, before it writes a checkpoint."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from mmdet.engine.hooks import CheckInvalidLossHook
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, get_rank


@HOOKS.register_module()
class NonFiniteLossHook(CheckInvalidLossHook):
    """mmdet's ``CheckInvalidLossHook``, checking every iteration and saying what went wrong.

    What differs from the parent:

    - The check raises ``RuntimeError("non-finite loss (nan) at iteration N (epoch E): ...")``
      naming every loss term that is not finite (the parent uses an ``assert``, which ``python
      -O`` removes and whose message is ``None``); the message is also written to the run's log.
    - Priority ``VERY_HIGH``: ``after_train_iter`` runs before every default hook, in particular
      before ``CheckpointHook`` (``VERY_LOW``), so a checkpoint of NaN weights is never written,
      whether checkpoints are saved by iteration or at the end of an epoch (an epoch's last
      iteration is checked before ``after_train_epoch`` runs).
    - With several processes, every rank stops at the same iteration: each rank's verdict is
      all-reduced, so a NaN on one rank does not leave the others blocked in the next collective.

    ``N`` and ``E`` are 1-based and match the log's ``Epoch(train) [E]`` and the scalar ``step``.
    ``outputs`` is what ``model.train_step`` returns: mmengine's ``parse_losses`` log vars, the
    total ``loss`` first, then each term (``loss_rpn_cls``, ``loss_mask``, ... and ``acc``, which
    is not a loss and is not checked).
    """

    priority = 'VERY_HIGH'

    def __init__(self, interval: int = 1) -> None:
        super().__init__(interval=interval)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[Any] = None,
                         outputs: Optional[Mapping] = None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        bad = {}
        for name, value in outputs.items():
            if 'loss' not in name:
                continue
            value = torch.as_tensor(value).detach()
            if not torch.isfinite(value).all():
                bad[name] = value
        # One small collective per iteration (a no-op without torch.distributed); every rank must
        # take part even when its own losses are fine.
        flag = torch.tensor([float(bool(bad))])
        all_reduce(flag, op='max')
        if not flag.item():
            return
        where = f'at iteration {runner.iter + 1} (epoch {runner.epoch + 1})'
        if bad:
            kind = 'nan' if any(torch.isnan(v).any() for v in bad.values()) else 'inf'
            terms = [n for n in bad if n != 'loss'] or ['loss']
            detail = ', '.join(f'{n}={_fmt(bad[n])}' for n in terms)
            message = (f'non-finite loss ({kind}) {where}: {detail}. Training stopped before a '
                       'checkpoint of the diverged weights was written; lower the learning rate '
                       'or clip gradients, then restart or resume from an earlier checkpoint.')
        else:
            message = (f'non-finite loss {where} on another rank (this is rank {get_rank()}, '
                       'whose losses are finite; see that rank\'s error). Training stopped before '
                       'a checkpoint of the diverged weights was written.')
        runner.logger.error(message)
        raise RuntimeError(message)


def _fmt(value: torch.Tensor) -> str:
    return f'{value.item():g}' if value.numel() == 1 else f'{value.tolist()}'
