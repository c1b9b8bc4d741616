from cellseg.engine.hooks.cell_visualization_hook import CellVisualizationHook
from cellseg.engine.hooks.non_finite_loss_hook import NonFiniteLossHook
from cellseg.engine.hooks.plot_curves_hook import PlotCurvesHook
from cellseg.engine.hooks.rng_state_hook import RNGStateHook

__all__ = ['CellVisualizationHook', 'NonFiniteLossHook', 'PlotCurvesHook', 'RNGStateHook']
