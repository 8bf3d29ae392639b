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
from starcompactor.pipeline.options import BareMetalOptions, NovaSourceOptions
from starcompactor.pipeline.sources.audit import AuditSource
from starcompactor.pipeline.sources.combined import CombinedSource
from starcompactor.pipeline.sources.dump import NovaDumpSource
from starcompactor.pipeline.sources.mysql import NovaMySQLSource
from starcompactor.pipeline.sources.mysql_connection import MySQLConnection
from starcompactor.pipeline.sources.nova_api import (
    NovaApiHostSource, NovaApiSource, credential_source)
from starcompactor.pipeline.times import parse_iso_utc, to_nova_text
from starcompactor.transforms.schema import (
    BLAZAR_HOSTS, BLAZAR_LEASES, CAPABILITY_TABLES, HOST_SOURCE_TABLES,
    IRONIC_NODES, SOURCE_TABLES)


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


def nova_source(options, tables=SOURCE_TABLES, cut=None):
    """The source that ``NovaSourceOptions`` describe, of the logical
    ``tables`` (``transforms.schema``); ``cut``, the run's, dates what a
    source reading one live state cannot date itself."""
    opts = options.view_as(NovaSourceOptions)
    databases = split_list(opts.databases)
    if opts.databases is not None and not databases:
        raise UserError('--databases must name at least one database')
    if opts.audit_dirs:
        return _audit_source(opts, databases, tables, cut)
    if opts.api:
        if opts.dump or databases:
            raise UserError('--api reads the compute API, which has no '
                            'databases: drop --dump and --databases')
        api = dict(credentials=credential_source(opts.osrc, opts.os_cloud),
                   window=event_window(opts), page_size=opts.api_page_size,
                   concurrency=opts.api_concurrency, rate=opts.api_rate)
        if tables == HOST_SOURCE_TABLES:
            return NovaApiHostSource(cut=cut, **api)
        return NovaApiSource(**api)
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


def service_source(options, database, tables, dumps=None):
    """A source of another service's database beside Nova's, Ironic's or
    Blazar's (``--ironic-database``, ``--blazar-database``): on the same
    server, or in the same dumps (``dumps``: these files instead, one state
    of a series). Its ``tables`` are read as they are: these services keep
    no ``shadow_`` copies, and the event window is for instance events."""
    opts = options.view_as(NovaSourceOptions)
    if opts.api or opts.audit_dirs:
        raise UserError('--ironic-database and --blazar-database name '
                        'databases on the server or in the dumps; the '
                        'compute API and audit exports have none')
    if opts.dump:
        return NovaDumpSource(dumps or opts.dump, [database], archived=False,
                              tables=tables)
    return NovaMySQLSource(mysql_connection(opts), [database], archived=False,
                           tables=tables)


def node_source(options, ironic_database, blazar_database=None):
    """The source of a bare-metal host table: Ironic's nodes and, with
    ``blazar_database``, Blazar's hosts and their capabilities, on the
    server (one source per database) or in the dumps (one source, both
    databases: a dump is scanned once)."""
    parts = [(ironic_database, (IRONIC_NODES,))]
    if blazar_database:
        parts.append((blazar_database, CAPABILITY_TABLES))
    sources = [service_source(options, database, tables)
               for database, tables in parts]
    if isinstance(sources[0], NovaDumpSource):
        return NovaDumpSource(sources[0].paths,
                              [database for database, _ in parts],
                              archived=False, tables=tuple(
                                  t for _, tables in parts for t in tables))
    return CombinedSource(sources)


def identity_sources(options, tables):
    """The sources whose raw identities a trace read from Nova's ``tables``
    must not hold (``verify``): Nova's and, named by ``--ironic-database``
    and ``--blazar-database``, Ironic's nodes and Blazar's hosts (a
    bare-metal trace's hosts are nodes) and leases (in v0.3 PROPERTIES)."""
    bare = options.view_as(BareMetalOptions)
    services = ((bare.ironic_database, (IRONIC_NODES,)),
                (bare.blazar_database, (BLAZAR_HOSTS, BLAZAR_LEASES)))
    return [nova_source(options, tables)] + [
        service_source(options, database, service_tables)
        for database, service_tables in services if database]


def _audit_source(opts, databases, tables, cut):
    """Audit exports, one folder per Nova database: the rows as of ``cut``
    (``transforms.audit``)."""
    if tables != SOURCE_TABLES:
        raise UserError('the audit exports hold instances, actions and '
                        'events only; read hosts with --mysql-... or --dump')
    if opts.api or opts.dump or databases:
        raise UserError('--audit-dir reads audit exports, one folder per '
                        'database: drop --api, --dump and --databases')
    if not opts.archived:
        raise UserError('--no-archived cannot apply to audit exports: an '
                        'archived row is a deleted one there; drop it')
    return AuditSource(opts.audit_dirs, window=event_window(opts), cut=cut)
