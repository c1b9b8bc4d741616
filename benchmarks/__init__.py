"""cellseg's benchmarks: ``speed.py`` (its items in ``speed_items/``), ``accuracy.py``, and the
baselines they and the tests compare against (``references.py``).

A package so that tests import ``benchmarks.references`` rather than keeping copies of it; the
scripts still run as files (``python benchmarks/speed.py``).
"""
