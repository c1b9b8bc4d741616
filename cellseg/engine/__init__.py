"""Training machinery (importing this registers it): hooks, the CPU mixed-precision wrapper,
and the two mmengine overrides: checkpoint loading for torch >= 2.6 and atomic checkpoints."""
from cellseg.engine import atomic_checkpoints, checkpoint_loader  # noqa: F401  (register on import)
from cellseg.engine.hooks import NonFiniteLossHook, PlotCurvesHook, RNGStateHook
from cellseg.engine.optimizers import CpuAmpOptimWrapper

__all__ = ['CpuAmpOptimWrapper', 'NonFiniteLossHook', 'PlotCurvesHook', 'RNGStateHook']
