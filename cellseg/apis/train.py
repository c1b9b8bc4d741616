"""The training run of ``tools/train.py``: classes, weights and device settled before the
Runner is built, so that what can fail fails before the first iteration."""
from __future__ import annotations

from mmengine.config import Config
from mmengine.runner import Runner

from cellseg.apis.config_helpers import adapt_to_cpu, resolve_classes
from cellseg.apis.pretrained import choose_pretrained, fetch_weights, reinitialised_weights
from cellseg.engine.checkpoint_loader import is_url, read_checkpoint


def build_runner(cfg: Config, cpu_amp: str | None = None,
                 pretrained: str | None = None) -> Runner:
    """The Runner of a training: heads sized to the data's classes, the weights to start from
    chosen (``pretrained``, see ``choose_pretrained``) and downloaded, a checkpoint to resume
    from read and checked, the CPU's precision chosen; each decision logged once."""
    notes = [resolve_classes(cfg)]
    if pretrained is not None:
        notes.append(choose_pretrained(cfg, pretrained))
    fetch_weights(cfg)  # a machine without a network stops here, naming the URL
    checkpoint = None
    if cfg.get('load_from') and (not cfg.get('resume') or not is_url(cfg.load_from)):
        # a refused or broken file stops here; the dict is kept for the Runner's own load
        checkpoint = read_checkpoint(cfg.load_from)
    changes = adapt_to_cpu(cfg, cpu_amp)
    runner = Runner.from_cfg(cfg)
    if checkpoint is not None and not cfg.get('resume'):
        fresh = reinitialised_weights(runner.model, checkpoint)
        notes.append(f'load_from {cfg.load_from}: every weight but {len(fresh)} loaded; '
                     f're-initialised (absent there or of another shape): '
                     f'{", ".join(fresh) or "none"}')
    for note in notes:
        runner.logger.info(note)  # logged once the runner's logger exists: in the run's log
    for change in changes:
        runner.logger.warning(change)
    return runner
