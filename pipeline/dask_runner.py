"""Beam's DaskRunner, made to give the DirectRunner's results.

``--runner DaskRunner`` selects this runner
(``runners.prepare_runner_options``).
It runs a pipeline on the Dask cluster at ``--dask_client_address`` (or
``--dask_scheduler_file``); without one, on a cluster of its own on this
machine (a scheduler and ``--dask_workers`` worker processes), stopped when
the run ends.

Beam 2.77's translation to Dask bags (``apache_beam/runners/dask/``) loses
and mixes up data. This runner keeps Beam's overrides (``dask_overrides``)
and its ops for Create and Flatten, and replaces what is broken (lines of
Beam 2.77's files):

1. What a DoFn emits in ``finish_bundle`` is lost: ``apply_dofn_to_bundle``
   (transform_evaluator.py:198-200) takes the bundle's results before it
   calls ``invoke_finish_bundle()``. Beam's file sinks emit the file each
   bundle wrote from ``finish_bundle`` (``iobase._WriteBundleDoFn``), so no
   shard was ever finalized: an empty trace.
2. Tagged outputs are mixed up: a ParDo's main and tagged outputs go into
   one bag (the tagged ones as WindowedValues, transform_evaluator.py:
   105-110),
   and every consumer of any of them is given that whole bag
   (dask_runner.py:192-194, ``self.bags[input_value.producer]``).
3. A side input is computed again in every bundle that reads it
   (``DaskBagWindowedIterator.__iter__``, transform_evaluator.py:91-96), with
   everything it depends on: the sources read again, and a per-run random
   masking key drawn anew per bundle, so masks would differ between bundles.
4. Only the last bag runs: ``run_pipeline`` computes
   ``list(bags.values())[-1]`` (dask_runner.py:247-252); other branches (a
   second format's sink, the run's counts) never run.
5. ``DaskRunnerResult.metrics()`` raises NotImplementedError
   (dask_runner.py:161-163). The job reads its counts from its own data
   (``pipeline.counts``), so it needs no metrics.
6. The client is never closed: when its cluster stops, it retries the
   scheduler for 30 s before the process can exit.

Not bugs, but changed here: Beam's Create puts up to 128 elements in one
partition and its Reshuffle does nothing (transform_evaluator.py:169-182,
overrides.py:46-48), so a source's splits would all be read by one task:
here each element of a Create is a partition of its own (unless
``--dask_npartitions`` or ``--dask_partition_size`` says otherwise). A
grouping always shuffles as tasks (``shuffle='tasks'``), which works across
machines, never through files on one machine (Dask's choice when no client
is running yet).

Only the global window is translated (windows are not kept in the bags),
which is all this project uses; another window fails when the graph is
built. Beam's ``Read`` is not translated.
"""
import dataclasses
import itertools
import logging
import os
from typing import Optional

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.pvalue import PCollection
from apache_beam.runners.common import (
    DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler)
from apache_beam.runners.dask import dask_runner
from apache_beam.runners.dask.overrides import (
    _Create, _Flatten, _GroupByKeyOnly, dask_overrides)
from apache_beam.runners.dask.transform_evaluator import Create, Flatten
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms import core
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows
from distributed import Client, LocalCluster

from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.options import positive_number

# Arrow tables reach a Dask worker in buffers that need not be aligned (the
# frames of pickle protocol 5); Acero, which runs pyarrow's joins, would warn
# about each and read them unaligned. It copies them instead. Workers import
# this module before they run a task (it defines the task's function).
os.environ.setdefault('ACERO_ALIGNMENT_HANDLING', 'reallocate')


class LocalDaskClusterOptions(PipelineOptions):

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            '--dask_workers', type=positive_number, default=os.cpu_count(),
            help='DaskRunner without --dask_client_address: worker processes '
                 '(one thread each) of the cluster it starts on this machine')


# --------------------------------------------------------------------------
# One bundle of a ParDo: a partition

class _Outputs(dict):
    """Receivers (one per tag, None for the main output) that gather a
    bundle's outputs as ``(tag, value)`` pairs."""

    def __init__(self):
        super().__init__()
        self.pairs = []

    def __missing__(self, tag):
        receiver = self[tag] = _Receiver(tag, self.pairs)
        return receiver


@dataclasses.dataclass
class _Receiver(Receiver):
    tag: Optional[str]
    pairs: list

    def receive(self, windowed_value):
        self.pairs.append((self.tag, windowed_value.value))


@dataclasses.dataclass
class _Bundle:
    """Runs one partition through a ParDo's DoFn as one bundle; returns
    every output (``finish_bundle``'s too) as ``(tag, value)`` pairs. A
    task's arguments are its own copy, so each bundle gets its own DoFn and
    receivers."""
    fn: core.DoFn
    label: str
    args: list
    kwargs: dict
    views: list       # (view class, view options) of each side input

    def __call__(self, elements, *side_inputs):
        outputs = _Outputs()
        handler = _OutputHandler(
            window_fn=GlobalWindows(), main_receivers=outputs[None],
            tagged_receivers=outputs, per_element_output_counter=None,
            output_batch_converter=None, process_yields_batches=False,
            process_batch_yields_elements=False)
        maps = [SideInputMap(view, options,
                             [GlobalWindows.windowed_value(v) for v in values])
                for (view, options), values in zip(self.views, side_inputs)]
        invoker = DoFnInvoker.create_invoker(
            DoFnSignature(self.fn), handler,
            context=DoFnContext(self.label, state=None), side_inputs=maps,
            input_args=self.args, input_kwargs=self.kwargs,
            user_state_context=None,
            bundle_finalizer_param=core.DoFn.BundleFinalizerParam())
        invoker.invoke_setup()
        invoker.invoke_start_bundle()
        for element in elements:
            invoker.invoke_process(GlobalWindows.windowed_value(element))
        invoker.invoke_finish_bundle()
        invoker.invoke_teardown()
        return outputs.pairs


def _tagged(pairs, tag):
    return [value for output_tag, value in pairs if output_tag == tag]


def _concat(lists):
    return list(itertools.chain.from_iterable(lists))


def _key(item):
    return item[0]


def _grouped(group):
    """``(key, [(key, windowed value), ...])`` -> ``(key, [value, ...])``."""
    key, items = group
    return key, [windowed.value for _, windowed in items]


def _nothing(partition):
    return []


# --------------------------------------------------------------------------
# The graph

class _ToBags(PipelineVisitor):
    """Each PCollection of a pipeline (after ``dask_overrides``) as a dask
    bag of its elements."""

    def __init__(self, bag_kwargs):
        self.bag_kwargs = bag_kwargs or {'partition_size': 1}
        self.bags = {}        # PCollection -> Bag
        self.whole = {}       # PCollection -> Delayed: all its elements
        self.consumed = set()

    def visit_transform(self, node):
        for pcoll in node.outputs.values():
            if not isinstance(pcoll.windowing.windowfn, GlobalWindows):
                raise NotImplementedError(
                    f'{node.full_label}: only the global window runs on '
                    f'Dask here')
        inputs = [pcoll for pcoll in node.main_inputs.values()
                  if isinstance(pcoll, PCollection)]
        self.consumed.update(inputs)
        bags = [self.bags[pcoll] for pcoll in inputs]
        transform = node.transform
        if type(transform) is core.ParDo:   # not its subclasses: as Beam
            outputs = self._pardo(node, bags[0])
        elif isinstance(transform, _Create):
            outputs = Create(node, self.bag_kwargs).apply(None)
        elif isinstance(transform, _Flatten):
            outputs = Flatten(node).apply(bags)
        elif isinstance(transform, _GroupByKeyOnly):
            outputs = bags[0].groupby(_key, shuffle='tasks').map(_grouped)
        else:   # Reshuffle, WindowInto, GroupAlsoByWindow: nothing to do
            outputs = bags[0]
        for tag, pcoll in node.outputs.items():
            self.bags[pcoll] = (outputs[tag] if isinstance(outputs, dict)
                                else outputs)

    def _pardo(self, node, bag):
        transform = node.transform
        side_inputs = [self._whole(si.pvalue) for si in node.side_inputs]
        # pylint: disable=protected-access
        views = [(type(si), si._view_options()) for si in node.side_inputs]
        bundle = _Bundle(transform.fn, transform.label, transform.args,
                         transform.kwargs, views)
        pairs = bag.map_partitions(bundle, *side_inputs)
        return {tag: pairs.map_partitions(_tagged, tag)
                for tag in node.outputs}

    def _whole(self, pcoll):
        """A side input: its elements computed once, as one value. Dask
        copies the graph of a collection (a bag, an Item) given as an
        argument, for each use (``ProhibitReuse``), but refers to a Delayed
        by its key."""
        self.consumed.add(pcoll)
        if pcoll not in self.whole:
            self.whole[pcoll] = self.bags[pcoll].reduction(
                list, _concat).to_delayed(optimize_graph=False)
        return self.whole[pcoll]

    def leaves(self):
        """What runs the whole graph: every PCollection nothing reads, its
        elements dropped on the workers."""
        return [bag.map_partitions(_nothing) for pcoll, bag in
                self.bags.items() if pcoll not in self.consumed]


def to_dask(pipeline, bag_kwargs=None):
    """``pipeline`` as dask bags whose computation (together, as
    ``Client.compute`` does) runs it."""
    pipeline.replace_all(dask_overrides())
    bags = _ToBags(bag_kwargs)
    pipeline.visit(bags)
    return bags.leaves()


# --------------------------------------------------------------------------
# The runner

@dataclasses.dataclass
class DaskRunResult(dask_runner.DaskRunnerResult):
    """Closes the client, and stops a cluster the run started, once the run
    is over."""
    cluster: Optional[LocalCluster] = None

    def wait_until_finish(self, duration=None):
        try:
            return super().wait_until_finish(duration)
        finally:
            if PipelineState.is_terminal(self._state):
                self.close()

    def cancel(self):
        try:
            return super().cancel()
        finally:
            self.close()

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner with the translation of this module."""

    def run_pipeline(self, pipeline, options):
        client_options = options.view_as(dask_runner.DaskOptions) \
            .get_all_options(drop_default=True, current_only=True)
        # pylint: disable=protected-access
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(
            client_options)
        leaves = to_dask(pipeline, bag_kwargs)
        # Dask logs every worker's start and stop at INFO.
        logging.getLogger('distributed').setLevel(logging.WARNING)
        cluster = None
        if not (client_options.get('address') or
                client_options.get('scheduler_file')):
            cluster = LocalCluster(
                n_workers=options.view_as(LocalDaskClusterOptions)
                .dask_workers,
                threads_per_worker=1, processes=True, dashboard_address=None,
                # Its HTTP server (health, metrics): not on 8787, maybe taken
                scheduler_kwargs={'dashboard_address': ':0'},
                # A task's failure reaches the command as its exception, told
                # in one line; workers would log it again with a traceback,
                # and log lost connections while the cluster stops.
                silence_logs=logging.CRITICAL)
            client_options['address'] = cluster
        try:
            client = Client(**client_options)
        except OSError as e:
            if cluster is not None:
                cluster.close()
            raise UserError(f'cannot reach the Dask scheduler: {e}') from None
        return DaskRunResult(client, client.compute(leaves), cluster)
