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
  which the join groups without merging PCollections first; every step
  that counts (``counters.count``) runs inside ``counters.Counted``, as
  ``ReadSplits`` runs its DoFn, so that its counts reach the summary;
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
from starcompactor.pipeline.sources.nova_api import (
    NovaApiSource, credential_source)
from starcompactor.pipeline.times import parse_iso_utc, to_nova_text
from starcompactor.transforms.schema import SOURCE_TABLES


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


def nova_source(options, tables=SOURCE_TABLES):
    """The source that ``NovaSourceOptions`` describe, of the logical
    ``tables`` (``transforms.schema``)."""
    opts = options.view_as(NovaSourceOptions)
    databases = split_list(opts.databases)
    if opts.databases is not None and not databases:
        raise UserError('--databases must name at least one database')
    if opts.api:
        if tables != SOURCE_TABLES:
            raise UserError('the compute API source reads instances only; '
                            'read hosts with --mysql-... or --dump')
        if opts.dump or databases:
            raise UserError('--api reads the compute API, which has no '
                            'databases: drop --dump and --databases')
        return NovaApiSource(credential_source(opts.osrc, opts.os_cloud),
                             window=event_window(opts),
                             page_size=opts.api_page_size,
                             concurrency=opts.api_concurrency,
                             rate=opts.api_rate)
    if opts.osrc or opts.os_cloud:
        raise UserError('--osrc and --os-cloud give credentials for the '
                        'compute API: add --api')
    if opts.dump:
        return NovaDumpSource(opts.dump, databases or None,
                              archived=opts.archived,
                              window=event_window(opts), tables=tables)
    return NovaMySQLSource(mysql_connection(opts), databases or ['nova'],
                           archived=opts.archived, window=event_window(opts),
                           tables=tables)
