"""Choosing the Nova source a run reads from, by its options.

Every source offers the same small interface, so jobs never care which one
they read:

- ``plan()`` -> ``(splits, estimated_events)``, checking the input on the
  way (a wrong password, a missing database or table, a file that is no
  dump fails here, before the run starts);
- ``reader(splits)`` -> a PTransform ``PBegin -> (table, Arrow batch)``
  pairs (``read.ReadSplits`` of a DoFn reading one split): ``table`` is
  'instances', 'actions' or 'events', the batch in
  ``transforms.schema.source_schema(table)``; one PCollection for all three,
  which the join groups without merging PCollections first;
- ``describe()`` -> a JSON-able description for the manifest (no secrets);
- ``about()`` -> one plain-English line on what is read, for the run's
  start-up log (``about.about_line``), e.g. ``dump nova-demo.sql.gz (1.0 MB,
  gzip), every database in it (live and shadow_ tables)``; call it after
  ``plan()``, which checks the input is there;
- ``raw_identities(among=None)`` -> the raw values masking must hide, for
  leak checks (with ``among``, only those among the given candidates).
"""
from starcompactor.pipeline.errors import UserError
from starcompactor.pipeline.options import NovaSourceOptions
from starcompactor.pipeline.sources.dump import NovaDumpSource
from starcompactor.pipeline.sources.mysql import NovaMySQLSource
from starcompactor.pipeline.sources.mysql_connection import MySQLConnection
from starcompactor.pipeline.times import parse_iso_utc, to_nova_text


def split_list(text):
    return [item.strip() for item in (text or '').split(',') if item.strip()]


def event_window(opts):
    """``(start, end)`` as Nova-format text, either may be None."""
    window = [parse_iso_utc(t, flag) if t else None
              for t, flag in ((opts.start, '--start'), (opts.end, '--end'))]
    if all(window) and window[0] >= window[1]:
        raise UserError('--start must be before --end')
    return tuple(to_nova_text(t) if t else None for t in window)


def mysql_connection(opts):
    return MySQLConnection(opts.mysql_host, opts.mysql_port, opts.mysql_user,
                           opts.mysql_password_file)


def nova_source(options):
    """The source that ``NovaSourceOptions`` describe."""
    opts = options.view_as(NovaSourceOptions)
    databases = split_list(opts.databases)
    if opts.databases is not None and not databases:
        raise UserError('--databases must name at least one database')
    if opts.dump:
        return NovaDumpSource(opts.dump, databases or None,
                              archived=opts.archived,
                              window=event_window(opts))
    return NovaMySQLSource(mysql_connection(opts), databases or ['nova'],
                           archived=opts.archived, window=event_window(opts))
