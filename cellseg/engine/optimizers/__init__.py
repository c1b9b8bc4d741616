from cellseg.engine.optimizers.cpu_amp_optim_wrapper import CpuAmpOptimWrapper, cpu_has_bf16

__all__ = ['CpuAmpOptimWrapper', 'cpu_has_bf16']
