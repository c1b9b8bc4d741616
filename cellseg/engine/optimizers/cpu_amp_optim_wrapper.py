"""Mixed precision on a CPU: mmengine's AmpOptimWrapper with a bfloat16 autocast on the CPU."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn


def cpu_has_bf16(cpuinfo: str = '/proc/cpuinfo') -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX).

    Elsewhere torch still runs bfloat16 on the CPU, converting to float32 around every
    operation, which is slower than float32 itself: mixed precision only pays with these flags.
    """
    try:
        with open(cpuinfo) as f:
            flags = set(next((line for line in f if line.startswith('flags')), '').split())
    except OSError:
        return False
    return bool(flags & {'avx512_bf16', 'amx_bf16'})


@OPTIM_WRAPPERS.register_module()
class CpuAmpOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` for a model trained on the CPU: forward under a bfloat16 autocast.

    mmengine's wrapper asserts a GPU, and its loss scaler exists for float16, whose narrow
    exponent underflows small gradients. bfloat16 has float32's exponent, so nothing is scaled
    here: backward, step and the checkpoint state are plain ``OptimWrapper``'s, and only
    ``optim_context`` differs from it. mmcv's CPU ``nms`` and ``RoIAlign`` take float32 only;
    the models cellseg registers give them float32 inside the autocast (``ChunkedRoIHead``,
    ``Float32ProposalRPNHead``). ``tools/train.py`` puts this wrapper in place of the configs'
    ``AmpOptimWrapper`` on a CPU with native bfloat16
    (``cellseg.apis.cpu_fallback.adapt_to_cpu``).
    """

    def __init__(self, dtype: str | torch.dtype = 'bfloat16', **kwargs) -> None:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dtype is not torch.bfloat16:
            raise ValueError(f'CpuAmpOptimWrapper runs bfloat16 only (float16 needs loss scaling '
                             f'and is slow on CPUs), got {dtype}')
        # AmpOptimWrapper.__init__ is skipped on purpose: it asserts a GPU and builds a loss
        # scaler; what its methods read of it is set here.
        OptimWrapper.__init__(self, **kwargs)
        self.cast_dtype = dtype
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with OptimWrapper.optim_context(self, model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
