"""``--runner lossy_dask.LossyDaskRunner``: the project's Dask runner, but
losing what a DoFn emits in ``finish_bundle``, as Beam 2.77's own
DaskRunner does (transform_evaluator.py:198-200). Beam's file sinks emit
each bundle's file there, so the run writes empty shards: the test of a run
whose output loses rows. The launcher and the workers import this module
(``PYTHONPATH``)."""
import dataclasses

import apache_beam as beam

from starcompactor.pipeline import dask_runner


class _FinishBundleLost(beam.DoFn):
    def __init__(self, fn):
        self.fn = fn

    def setup(self):
        self.fn.setup()

    def start_bundle(self):
        self.fn.start_bundle()

    def process(self, element, *args, **kwargs):
        return self.fn.process(element, *args, **kwargs)

    def finish_bundle(self):
        self.fn.finish_bundle()    # what it emits is dropped

    def teardown(self):
        self.fn.teardown()


@dataclasses.dataclass
class _LossyBundle(dask_runner._Bundle):  # pylint: disable=protected-access
    def __post_init__(self):
        # Only DoFns with a finish_bundle of their own: a wrapper would
        # hide DoFn parameters (WindowParam, ...) of the others' process.
        if type(self.fn).finish_bundle is not beam.DoFn.finish_bundle:
            self.fn = _FinishBundleLost(self.fn)


dask_runner._Bundle = _LossyBundle  # pylint: disable=protected-access


class LossyDaskRunner(dask_runner.DaskRunner):
    """On a cluster of its own with two workers (--dask_workers is known to
    the command only with --runner DaskRunner)."""

    def run_pipeline(self, pipeline, options):
        options.view_as(dask_runner.LocalDaskClusterOptions).dask_workers = 2
        return super().run_pipeline(pipeline, options)
