"""Reading a source's splits in parallel: the one read transform every
source's ``reader(splits)`` returns."""
import apache_beam as beam

from starcompactor.transforms.counters import Counted


class ReadSplits(beam.PTransform):
    """PBegin -> what ``read_split`` (a DoFn) yields for each of ``splits``;
    what it counts becomes data too (``counters.Counted``).

    The splits, planned where the pipeline is built, are spread over the
    workers first, so each is read where it lands, in parallel.
    """

    def __init__(self, splits, read_split):
        super().__init__()
        self.splits = splits
        self.read_split = read_split

    def expand(self, pbegin):
        return (pbegin
                | 'Splits' >> beam.Create(self.splits)
                | 'SpreadSplits' >> beam.Reshuffle()
                | 'ReadSplits' >> Counted(self.read_split))
