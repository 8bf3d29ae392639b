"""starcompactor: anonymized workload traces from OpenStack Nova.

The code lives in ``pipeline/`` (graphs, sources, sinks, CLI) and
``transforms/`` (pure steps), installed as ``starcompactor.pipeline`` and
``starcompactor.transforms``.
"""
__version__ = '0.1.0'
