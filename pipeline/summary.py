"""The run summary: what was read, written and left out, from the counts
the run's pipeline made (``pipeline.counts``)."""
from dataclasses import dataclass, field
from typing import Optional

from starcompactor.transforms import counters
from starcompactor.transforms.schema import SOURCE_TABLES


@dataclass
class TableCount:
    read: int = 0
    in_trace: int = 0
    left_out: dict = field(default_factory=dict)   # reason -> rows

    @property
    def balanced(self):
        return self.read == self.in_trace + sum(self.left_out.values())


@dataclass
class Summary:
    tables: dict
    trace_rows: int
    seconds: float = 0.0
    files: tuple = ()
    epoch: Optional[int] = None     # seconds since 1970; None: empty trace
    api: dict = field(default_factory=dict)   # the Nova API source's counts
    linked: dict = field(default_factory=dict)   # counters.LINKED counts

    @classmethod
    def from_counters(cls, totals, seconds=0.0, files=(),
                      tables=SOURCE_TABLES, rows=counters.TRACE_ROWS):
        """The summary of one trace table: its source ``tables`` (counts
        of other tables, which another table of the run made, are not
        its) and its trace rows, counted as ``rows``."""
        tables = {t: TableCount() for t in tables}
        api, linked = {}, {}
        for name, value in totals.items():
            kind, _, rest = name.partition('.')
            table, _, reason = rest.partition('.')
            if kind in (counters.READ, counters.IN_TRACE,
                        counters.REJECTED) and table not in tables:
                continue
            if kind == counters.READ:
                tables[rest].read += value
            elif kind == counters.IN_TRACE:
                tables[rest].in_trace += value
            elif kind == counters.REJECTED:
                tables[table].left_out[reason] = value
            elif kind == counters.API:
                api[rest] = value
            elif kind == counters.LINKED:
                linked[rest] = value
        return cls(tables, totals.get(rows, 0), seconds, tuple(files),
                   totals.get(counters.EPOCH), api, linked)

    def imbalance(self, rows_written):
        """What does not add up, in words, or None. Every table must have
        read = in trace + left out, and every format's files (rows per
        format in ``rows_written``) must hold the trace's rows."""
        for table, count in self.tables.items():
            if not count.balanced:
                left_out = sum(count.left_out.values())
                return (f'{table}: read {count.read:,}, but in trace '
                        f'{count.in_trace:,} + left out {left_out:,}')
        for fmt, rows in rows_written.items():
            if rows != self.trace_rows:
                return (f'{self.trace_rows:,} trace rows made, but the {fmt} '
                        f'files hold {rows:,}')
        return None

    def rejects(self, table):
        return {reason: n for reason, n in
                sorted(self.tables[table].left_out.items()) if n}

    def lines(self):
        yield (f'{self.trace_rows:,} trace rows written in '
               f'{self.seconds:.1f} s')
        width = max(map(len, self.tables))
        for table, count in self.tables.items():
            reasons = ', '.join(f'{reason} {n:,}' for reason, n
                                in self.rejects(table).items()) or 'none'
            yield (f'  {table:<{width}}  read {count.read:>10,}  in trace '
                   f'{count.in_trace:>10,}  left out: {reasons}')
        if self.api:
            api = self.api
            yield (f'  {"api":<{width}}  requests '
                   f'{api.get("requests_made", 0):,}  '
                   f'retried {api.get("requests_retried", 0):,}  failed '
                   f'{api.get("requests_failed", 0):,}  sizes unknown '
                   f'(flavor gone) {api.get("sizes_unknown", 0):,}')
        for path in self.files:
            yield f'  wrote {path}'
