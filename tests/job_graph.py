"""What a runner is sent for a pipeline, as bytes to search for secrets: for
a portable runner, the Runner API graph, every pickled payload in it
decompressed, and the pipeline options as the job service receives them;
for the Dask runner, the task graph as the client sends it to the
scheduler."""
import base64
import binascii
import bz2
import re
import zlib

from apache_beam.runners.portability.portable_runner import JobServiceHandle
from dask._expr import FinalizeCompute
from dask.base import collections_to_expr
from distributed.protocol import serialize, to_serialize

from starcompactor.pipeline.dask_runner import to_dask

_B64_RUN = re.compile(rb'[A-Za-z0-9+/]{24,}={0,2}')


def _unpickled_payloads(data: bytes):
    """Decompressed bodies of Beam's pickled payloads (base64 of bz2 or
    zlib) found anywhere in data, so a secret inside a pickled DoFn, coder
    or side input can be found by a plain substring search."""
    for match in _B64_RUN.finditer(data):
        run = match.group()
        run = run[:len(run) - len(run) % 4] if not run.endswith(b'=') else run
        try:
            raw = base64.b64decode(run, validate=True)
        except (binascii.Error, ValueError):
            continue
        for decompress in (bz2.decompress, zlib.decompress):
            try:
                yield decompress(raw)
                break
            except (OSError, ValueError, zlib.error, EOFError):
                continue


def pipeline_proto_text(pipeline, options=None) -> bytes:
    """Everything a portable runner receives for this pipeline (options:
    the pipeline's own unless given). With --environment_type=LOOPBACK the
    SDK worker is this process, so nothing else leaves it for the runner."""
    proto = pipeline.to_runner_api().SerializeToString()
    parts = [proto, *_unpickled_payloads(proto)]
    options = options if options is not None else pipeline._options
    struct = JobServiceHandle.encode_pipeline_options(
        options.get_all_options(retain_unknown_options=True))
    parts.append(struct.SerializeToString())
    return b'\n'.join(parts)


def dask_graph_text(pipeline) -> bytes:
    """The task graph ``DaskRunner`` has ``Client.compute`` send the
    scheduler for this pipeline, serialized as the client does it
    (distributed/client.py, ``compute`` and ``_graph_to_futures``), with any
    pickled Beam payload in it decompressed. Only the Dask options that name
    the scheduler reach the client, no pipeline option."""
    expr = FinalizeCompute(collections_to_expr(to_dask(pipeline))).optimize()
    header, frames = serialize(to_serialize(expr), on_error='raise')
    data = b'\n'.join(bytes(frame) for frame in frames)
    return b'\n'.join([data, *_unpickled_payloads(data)])
