"""What writing a synthetic history wrote."""
from starcompactor.synth.tables import SHADOW_PREFIX


class Result:
    """Rows written per (database, table), and the seconds it took."""

    def __init__(self, counts, seconds):
        self.counts, self.seconds = counts, seconds

    def total(self, table, shadow=None):
        """Rows of a live table and/or its shadow_ copy (shadow=None: both,
        True: the shadow_ copy only, False: the live table only)."""
        names = {False: (table,), True: (SHADOW_PREFIX + table,),
                 None: (table, SHADOW_PREFIX + table)}[shadow]
        return sum(n for (_, t), n in self.counts.items() if t in names)

    @property
    def databases(self):
        return sorted({db for db, _ in self.counts})

    def summary(self, where):
        return (f'{self.total("instances"):,} instances '
                f'({self.total("instances", True):,} archived), '
                f'{self.total("instance_actions"):,} actions, '
                f'{self.total("instance_actions_events"):,} events into '
                f'{", ".join(self.databases)} at {where} '
                f'in {self.seconds:.1f} s')
