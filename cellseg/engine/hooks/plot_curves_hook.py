"""PlotCurvesHook: the training curves as a picture in the work dir when a run ends."""
from __future__ import annotations

import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from cellseg.utils.scalars import LEADERBOARD_KEY, read_scalars
from cellseg.visualization.visualize import plot_training_curves, save_figure


@HOOKS.register_module()
class PlotCurvesHook(Hook):
    """Write ``WORK_DIR/<filename>`` (losses, learning rate, validation ``metric`` per epoch; see
    ``cellseg.visualization.visualize.plot_training_curves``) in ``after_run``, from the scalars
    mmengine logged under ``WORK_DIR/*/vis_data/scalars.json``. ``tools/plot_curves.py`` draws
    the same picture of any work dir, during or after a run.
    """

    # after LoggerHook and the rest: the last scalars are written by then
    priority = 'LOWEST'

    def __init__(self, filename: str = 'curves.png', metric: str = LEADERBOARD_KEY) -> None:
        self.filename = filename
        self.metric = metric

    def after_run(self, runner) -> None:
        if not is_main_process():  # every rank runs hooks; one picture is enough
            return
        rows = read_scalars(runner.work_dir)
        if not any('loss' in r for r in rows):  # a test-only run logs no training curves
            return
        path = osp.join(runner.work_dir, self.filename)
        try:
            save_figure(plot_training_curves(rows, title=osp.basename(osp.normpath(
                runner.work_dir)), metric=self.metric), path)
        except Exception as e:  # a picture must not turn a finished training into a failed one
            runner.logger.warning(f'PlotCurvesHook: could not write {path}: '
                                  f'{type(e).__name__}: {e}')
            return
        runner.logger.info(f'training curves written to {path}')
