"""Instances an operator wants out of a published trace (say, the cloud's own
``admin`` user and project), named by the options ``--exclude-users`` and
``--exclude-projects`` with the raw ``user_id`` / ``project_id`` values of
Nova's instances table.

Nothing is left out unless asked for, and what is left out is counted: the
join (``transforms.join``) counts the events, actions and instances that
would have been in the trace under ``excluded_user`` or ``excluded_project``,
so that ``in_trace`` without the options is ``in_trace`` plus those counts.
A row that would not have been in the trace anyway (an unfinished event, an
instance without finished events) keeps its own reason.
"""
from dataclasses import dataclass
from typing import Tuple

import pyarrow as pa
import pyarrow.compute as pc

from starcompactor.transforms import counters as c


@dataclass(frozen=True)
class Exclusions:
    """Raw user and project ids whose instances stay out of the trace."""
    users: Tuple[str, ...] = ()
    projects: Tuple[str, ...] = ()

    def __repr__(self):
        # The values are raw identities: never in a log or an error message.
        return (f'Exclusions({len(self.users)} users, '
                f'{len(self.projects)} projects)')

    def split(self, table):
        """Rows of ``table`` (with ``user_id`` and ``project_id`` columns)
        -> (rows kept, ``[(reason, rows excluded), ...]``). A row of an
        excluded user in an excluded project counts as ``excluded_user``."""
        excluded = []
        for reason, column, values in (
                (c.EXCLUDED_USER, 'user_id', self.users),
                (c.EXCLUDED_PROJECT, 'project_id', self.projects)):
            if values:
                hit = pc.is_in(table.column(column),
                               value_set=pa.array(values, pa.string()))
                excluded.append((reason, table.filter(hit)))
                table = table.filter(pc.invert(hit))
        return table, excluded
