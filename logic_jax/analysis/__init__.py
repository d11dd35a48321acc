"""The analyses of the small model's circuits (paper.md Part 1, claims 1-5), one seed at a time.

Each module measures one thing as a pure function of ``(forward, params, batch)`` for ONE
seed; ``pipeline.py`` loops them over the seeds of a checkpoint, ``report.py`` turns the
numbers into tables (report.md, summary.json) and ``figures.py`` draws them.

Layers: the paper counts from 1 ("layer 2", "layer 3" of a 3-layer model); hook names count
from 0 (``blocks.1``, ``blocks.2``). Functions here take 0-indexed block numbers and the
report writes both (``common.layer_name``).
"""
