"""``starcompactor report``: statistics and plots of a written trace.

Reads the shards ``PREFIX-SSSSS-of-NNNNN.csv`` (or ``.avro`` when there is
no CSV) one record batch at a time, in memory that does not grow with the
number of events, and writes

* ``PREFIX.report.json``: the statistics, and
* ``PREFIX.report.html``: one self-contained page (plots as base64 PNGs)
  showing the same numbers.

``write_report(prefix, html_path, json_path)`` does both and returns the
statistics dict, for other commands to reuse.

Modules, in the order the data flows:

* ``read``: a shard's record batches (CSV through pyarrow, Avro through
  fastavro);
* ``aggregate``: the streaming aggregates, the statistics dict, the
  definitions of its numbers and the memory bound;
* ``plots``: the matplotlib figures, as PNG bytes;
* ``html``: the page's sections and the page;
* ``write``: ``write_report``, both files written atomically;
* ``cli``: ``main(argv)``, the command line.

Extra sections (e.g. host capacity over time from a host-event trace) plug
in through ``write_report(..., extra_sections=[...])``: each is a callable
taking the statistics dict and returning a ``Section``; its figures and
HTML are appended to the page and its ``stats`` stored under
``stats['extra'][section.key]``.
"""
from starcompactor.report.aggregate import compute_stats
from starcompactor.report.cli import main
from starcompactor.report.html import Figure, Section
from starcompactor.report.write import write_report
