"""``CombinedSource``: several sources read as one, e.g. Ironic's and
Blazar's databases on one server (the interface is documented in
``starcompactor.pipeline.sources``)."""
import apache_beam as beam


class _ReadEach(beam.PTransform):
    """PBegin -> every source's pairs, its own reader reading its splits."""

    def __init__(self, parts):
        super().__init__()
        self.parts = parts

    def expand(self, pbegin):
        return ([pbegin | f'Read{i}' >> source.reader(splits)
                 for i, (source, splits) in enumerate(self.parts)]
                | 'Together' >> beam.Flatten())


class CombinedSource:
    """``sources`` (each of its own databases and tables), planned, read,
    described and searched for identities together."""

    def __init__(self, sources):
        self.sources = list(sources)
        self.databases = [d for s in self.sources for d in s.databases]
        self.tables = tuple(t for s in self.sources for t in s.tables)

    def plan(self):
        """Each source's splits, and their estimated events, summed."""
        plans = [source.plan() for source in self.sources]
        return ([splits for splits, _ in plans],
                sum(events for _, events in plans))

    def reader(self, splits):
        return _ReadEach(list(zip(self.sources, splits)))

    def describe(self):
        return {'kind': 'combined',
                'sources': [source.describe() for source in self.sources]}

    def about(self):
        return '; '.join(source.about() for source in self.sources)

    def raw_identities(self, among=None):
        found = set()
        for source in self.sources:
            found |= source.raw_identities(among)
        return found
