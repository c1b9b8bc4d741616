"""mmengine's notices about its own deprecated internals, kept out of a training run's log.

mmengine 0.10.7's ``CheckpointHook.before_train`` always builds a ``FileClient`` for the
checkpoint folder (``file_client_args=None``, the default, still builds one), and that logs two
WARNING lines in every training run: '"FileClient" will be deprecated in future ...' and
'"HardDiskBackend" is the alias of "LocalBackend" ...'. No config setting avoids them and a user
can do nothing about them, so the filter drops exactly those two messages and nothing else.
"""
from __future__ import annotations

import logging

__all__ = ['MMENGINE_NOTICES', 'MMEngineDeprecationFilter', 'drop_mmengine_deprecation_notices']

MMENGINE_NOTICES = ('"FileClient" will be deprecated in future.',
                    '"HardDiskBackend" is the alias of "LocalBackend"')


class MMEngineDeprecationFilter(logging.Filter):
    """Drops the records whose message starts with one of ``MMENGINE_NOTICES``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(MMENGINE_NOTICES)


def drop_mmengine_deprecation_notices(logger: logging.Logger) -> None:
    """Add the filter to ``logger`` (a runner's), once."""
    if not any(isinstance(f, MMEngineDeprecationFilter) for f in logger.filters):
        logger.addFilter(MMEngineDeprecationFilter())
