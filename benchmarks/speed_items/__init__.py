"""The items of ``benchmarks/speed.py``, one module each.

Each item module has ``add_arguments(parser)`` (its options, or none) and ``run(args, work)``,
which measures and reports through ``common.report``; ``common`` holds the generated data, the
mmdet set-up and the figures' table.
"""

ITEMS = ('data', 'train', 'predict', 'memory', 'convert', 'eval')
