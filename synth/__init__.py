"""A synthetic, deterministic Nova history, for tests, benchmarks and demos:
the cell databases real Nova (34.0.0, cells v2) would leave behind.

``generate(instances, seed=...)`` streams the rows of ``instances``,
``instance_actions``, ``instance_actions_events`` and their ``shadow_``
copies, and the hosts' ``compute_nodes`` and ``services``, per cell
database; ``load_mysql`` writes them into MariaDB/MySQL,
``write_dump`` into a ``mariadb-dump --databases`` style file (``.sql`` or
``.sql.gz``), ``write_audit`` as audit-table exports (Parquet, as MySQL
triggers and a back-fill record it). The same arguments (and seed) always
give the same rows.

The modules, one concern each:

* ``model``: the history model (arrivals, lifecycles, failures, archiving)
  and the proportions it gives; ``generate``, ``instances_for_events``.
* ``hosts``: the hosts' history (added, disabled, resized, replaced,
  retired, archived), consistent with the instances placed on them.
* ``tables``: the tables filled, the columns of their rows.
* ``nova_schema``: Nova's real cell schema (``sql/nova_cell.sql``).
* ``inserts``: rows as SQL literals and extended INSERT statements.
* ``mysql_loader``: ``load_mysql``, into a server.
* ``dump_writer``: ``write_dump``, into a dump file.
* ``audit_writer``: ``write_audit``, as audit-table exports.
* ``cli``: ``starcompactor synth``.
"""
from starcompactor.synth.audit_writer import write_audit
from starcompactor.synth.cli import argument_parser, main, run
from starcompactor.synth.dump_writer import write_dump
from starcompactor.synth.model import (
    DEFAULT_CELLS, History, generate, instances_for_events)
from starcompactor.synth.mysql_loader import load_mysql
from starcompactor.synth.result import Result
from starcompactor.synth.tables import COLUMNS, TABLES

__all__ = ['COLUMNS', 'DEFAULT_CELLS', 'History', 'Result', 'TABLES',
           'argument_parser', 'generate', 'instances_for_events',
           'load_mysql', 'main', 'run', 'write_audit', 'write_dump']
