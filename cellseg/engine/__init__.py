"""Training machinery: hooks and optimizer wrappers (importing this registers them)."""
from cellseg.engine.hooks import RNGStateHook
from cellseg.engine.optimizers import CpuAmpOptimWrapper

__all__ = ['CpuAmpOptimWrapper', 'RNGStateHook']
