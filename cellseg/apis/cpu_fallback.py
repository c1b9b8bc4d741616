"""A GPU config made to run on a machine without CUDA: the precision the CPU computes, the
distributed backend it has."""
from __future__ import annotations

import torch
from mmengine.config import Config

CPU_AMP_MODES = ('auto', 'bf16', 'off')


def adapt_to_cpu(cfg: Config, cpu_amp: str | None = None) -> list[str]:
    """Make a GPU config run on a machine without CUDA; return what was changed, to be logged.

    - ``AmpOptimWrapper`` (the recipe's mixed precision; mmengine's asserts a GPU) becomes
      ``CpuAmpOptimWrapper``, a bfloat16 autocast on the CPU, where the CPU computes bfloat16
      natively, and ``OptimWrapper`` (float32) elsewhere. ``cpu_amp`` (else the config's
      ``cpu_amp``, else ``'auto'``) chooses: ``'auto'`` as just said, ``'bf16'`` bfloat16 even
      without native support (emulated, slow: for tests), ``'off'`` float32.
    - The distributed backend ``nccl`` becomes ``gloo``, and the model's DDP wrapper takes no
      device ids, so ``tools/dist_train.sh`` runs several CPU processes (whose process group
      ``cellseg.apis.train.start_cpu_processes`` starts).
    Call before building the runner; log once the runner's logger exists.
    """
    if torch.cuda.is_available():
        return []
    from cellseg.engine.optimizers.cpu_amp_optim_wrapper import cpu_has_bf16

    mode = cpu_amp or cfg.get('cpu_amp') or 'auto'
    if mode not in CPU_AMP_MODES:
        raise ValueError(f'cpu_amp must be one of {CPU_AMP_MODES}, got {mode!r}')
    changes = []
    wrapper = cfg.get('optim_wrapper')
    if wrapper and wrapper.get('type') == 'AmpOptimWrapper':
        for amp_only in ('loss_scale', 'dtype', 'use_fsdp'):
            wrapper.pop(amp_only, None)
        native = cpu_has_bf16()
        if mode == 'bf16' or (mode == 'auto' and native):
            wrapper.type, wrapper.dtype = 'CpuAmpOptimWrapper', 'bfloat16'
            changes.append('No CUDA device: mixed precision as a bfloat16 autocast on the CPU '
                           '(CpuAmpOptimWrapper) in place of the config\'s AmpOptimWrapper'
                           + ('' if native else '; this CPU has no native bfloat16 '
                              '(avx512_bf16/amx_bf16), so it is emulated and slower') + '.')
        else:
            wrapper.type = 'OptimWrapper'
            why = ('cpu_amp is off' if mode == 'off' else
                   'this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), where '
                   'bfloat16 would be slower than float32')
            changes.append('No CUDA device: training in float32 with OptimWrapper instead of the '
                           f"config's AmpOptimWrapper ({why}).")
    dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg')
    if cfg.get('launcher', 'none') != 'none' and dist_cfg and dist_cfg.get('backend') == 'nccl':
        dist_cfg.backend = 'gloo'
        changes.append('No CUDA device: distributed backend gloo instead of nccl.')
    if cfg.get('launcher', 'none') != 'none' and cfg.get('model_wrapper_cfg') is None:
        # mmengine wraps the model in DDP with device_ids=[LOCAL_RANK], which DDP rejects for a
        # CPU module
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
    return changes
