"""The run summary: what was read, written and left out, from Beam metrics."""
from dataclasses import dataclass, field
from typing import Optional

from apache_beam.metrics.metric import MetricsFilter

from starcompactor.transforms import counters
from starcompactor.transforms.schema import SOURCE_TABLES


def counters_of(result):
    """``{name: value}`` of starcompactor's counters in a finished run."""
    query = result.metrics().query(
        MetricsFilter().with_namespace(counters.NAMESPACE))
    totals = {}
    for counter in query['counters']:
        value = counter.committed
        if value is None:
            value = counter.attempted
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + (value or 0)
    for distribution in query['distributions']:
        value = distribution.committed or distribution.attempted
        if value is not None and value.count:
            totals[distribution.key.metric.name] = value.min
    return totals


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

    @classmethod
    def from_counters(cls, totals, seconds=0.0, files=()):
        tables = {t: TableCount() for t in SOURCE_TABLES}
        for name, value in totals.items():
            kind, _, rest = name.partition('.')
            if kind == counters.READ:
                tables[rest].read += value
            elif kind == counters.IN_TRACE:
                tables[rest].in_trace += value
            elif kind == counters.REJECTED:
                table, _, reason = rest.partition('.')
                tables[table].left_out[reason] = value
        return cls(tables, totals.get(counters.TRACE_ROWS, 0), seconds,
                   tuple(files), totals.get(counters.EPOCH))

    def rejects(self, table):
        return {reason: n for reason, n in
                sorted(self.tables[table].left_out.items()) if n}

    def lines(self):
        yield (f'{self.trace_rows:,} trace rows written in '
               f'{self.seconds:.1f} s')
        for table in SOURCE_TABLES:
            count = self.tables[table]
            reasons = ', '.join(f'{reason} {n:,}' for reason, n
                                in self.rejects(table).items()) or 'none'
            yield (f'  {table:<9}  read {count.read:>10,}  in trace '
                   f'{count.in_trace:>10,}  left out: {reasons}')
        for path in self.files:
            yield f'  wrote {path}'
