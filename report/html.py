"""The report as one self-contained HTML page: a section per topic, each
with its plots (base64 PNGs) and tables of the same numbers as the JSON.
"""
import base64
import dataclasses
import datetime as dt
import os
from html import escape

from starcompactor.report import plots
from starcompactor.report.aggregate import DAY


@dataclasses.dataclass
class Figure:
    """A plot; ``png`` None means no data: a "no data" image is shown."""
    title: str
    alt: str
    png: bytes = None

    def image(self):
        if self.png is None:
            return plots.no_data(self.title), f'No data. {self.alt}'
        return self.png, self.alt


@dataclasses.dataclass
class Section:
    """One part of the page: a heading, figures, trusted HTML (tables),
    and, for extra sections, the statistics stored in the JSON."""
    key: str
    title: str
    figures: list = dataclasses.field(default_factory=list)
    html: str = ''
    stats: dict = None


def _table(header, rows):
    head = ''.join(f'<th>{escape(str(h))}</th>' for h in header or ())
    body = ''.join(
        '<tr>' + ''.join(f'<td>{escape(_fmt(v))}</td>' for v in row)
        + '</tr>' for row in rows)
    head = f'<thead><tr>{head}</tr></thead>' if head else ''
    return f'<table>{head}<tbody>{body}</tbody></table>'


def _fmt(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:,.6g}' if abs(value) < 1e6 else f'{value:,.0f}'
    if isinstance(value, int):
        return f'{value:,}'
    return str(value)


def _seconds_text(value):
    if value is None:
        return None
    for size, unit in ((DAY, 'd'), (3600, 'h'), (60, 'min')):
        if value >= size:
            return f'{value / size:.3g} {unit} ({value:,.0f} s)'
    return f'{value:g} s'


def trace_sections(stats, data):
    """The sections on the trace itself; extra sections follow them."""
    counts, span = stats['counts'], stats['span']
    summary = Section('summary', 'Summary', html=_table(
        None,
        [('first event start', span['first_start']),
         ('last event finish', span['last_finish']),
         ('span', _seconds_text(span['seconds'])),
         ('rows (finished events)', counts['rows']),
         ('events with a kind', counts['events']),
         ('instances', counts['instances']),
         ('users', counts['users']), ('projects', counts['projects']),
         ('hosts', counts['hosts'])]))
    kinds = Section('kinds', 'Events and results per kind', html=_table(
        ['event', 'events', 'Success', 'Error', 'other result',
         'failure rate', 'median duration', 'p99 duration', 'max duration'],
        [(k, n, r['Success'], r['Error'], r['other'],
          None if r['failure_rate'] is None
          else f'{100 * r["failure_rate"]:.2f} %',
          _seconds_text(stats['event_durations'].get(k, {}).get('p50_s')),
          _seconds_text(stats['event_durations'].get(k, {}).get('p99_s')),
          _seconds_text(stats['event_durations'].get(k, {}).get('max_s')))
         for (k, n), r in zip(stats['events_per_kind'].items(),
                              stats['results_per_kind'].values())]))
    top = ', '.join(stats['events_per_day']['kinds'])
    per_day = Section('events_per_day', 'Events per day', figures=[Figure(
        'Events per day',
        f'Stacked bar chart of events per UTC day, by event kind ({top}).',
        plots.events_per_day(stats))])
    conc = stats['concurrent_instances']
    concurrency = Section(
        'concurrent_instances', 'Concurrent instances over time',
        figures=[Figure(
            'Concurrent instances',
            'Step plot of instances running over time, from each '
            'instance\'s first event to its terminate finish; instances '
            'never terminated run to the end of the span.',
            plots.concurrency(stats, data))],
        html=_table(['peak', 'first reached at', 'open-ended instances'],
                    [(conc['peak'], conc['peak_time'],
                      stats['instance_lifetimes']['open_ended'])]))
    life = stats['instance_lifetimes']
    lifetimes = Section(
        'instance_lifetimes', 'Instance lifetimes (CDF)',
        figures=[Figure(
            'Instance lifetimes',
            'Cumulative distribution of lifetimes of terminated instances, '
            'log time axis.', plots.lifetimes(data))],
        html=_table(['terminated', 'open-ended (not in the CDF)', 'min',
                     'median', 'p90', 'p99', 'max', 'mean'],
                    [(life['terminated'], life['open_ended'],
                      *(_seconds_text(life.get(k)) for k in (
                          'min_s', 'p50_s', 'p90_s', 'p99_s', 'max_s',
                          'mean_s')))]))
    durations = Section(
        'event_durations', 'Event durations per kind', figures=[Figure(
            'Event durations',
            'Horizontal box plots of event durations for the most common '
            'event kinds, log time axis.', plots.durations(stats, data))])
    flavors = Section(
        'flavors', 'Flavor mix', figures=[Figure(
            'Flavor mix',
            'Scatter plot of instance flavors: vCPUs against memory, marker '
            'size proportional to the number of instances.',
            plots.flavors(stats))],
        html=_table(['vCPUs', 'memory MB', 'instances'],
                    [(f['vcpus'], f['memory_mb'], f['instances'])
                     for f in stats['flavors'][:50]])
        + (f'<p>{len(stats["flavors"]) - 50} more flavors in the JSON.</p>'
           if len(stats['flavors']) > 50 else ''))
    return [summary, kinds, per_day, concurrency, lifetimes, durations,
            flavors]


def capacity_section(trace_stats, stats, data):
    """Host capacity over time, from the trace's host table
    (``capacity.capacity_stats``); its numbers go to the JSON as
    ``extra.host_capacity``."""
    end = trace_stats['span']['last_finish']
    if end is not None:
        end = int(dt.datetime.strptime(end, '%Y-%m-%dT%H:%M:%SZ').replace(
            tzinfo=dt.timezone.utc).timestamp())
    series = ('hosts', 'vcpus', 'memory_mb', 'disk_gb')
    rows = [(what, *(None if at is None else at[name] for name in series))
            for what, at in (('peak', stats['peak']),
                             ('at the end', stats['final']))]
    note = (f'From the host table {stats["host_table"]["prefix"]}: '
            f'{stats["hosts"]:,} hosts, {stats["events"]:,} events, '
            f'{stats["first_event"]} .. {stats["last_event"]}.')
    return Section(
        'host_capacity', 'Host capacity over time', figures=[Figure(
            'Host capacity',
            'Step plots of the total vCPUs, memory and disk of the hosts '
            'in service (created and enabled) over time, from the host '
            'events.', plots.capacity(data, end))],
        html=_table(['', 'hosts in service', 'vCPUs', 'memory MB',
                     'disk GB'], rows)
        + f'<p class="note">{escape(note)}</p>',
        stats=stats)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child { text-align: left; }
img { max-width: 100%; }
nav a { margin-right: 1em; }
.note { color: #666; font-size: 0.85em; }
"""


def render(stats, sections, png_dir=None):
    """The page of ``sections``; with ``png_dir``, each plot is also
    written there as ``KEY-N.png``."""
    title = f'Trace report: {stats["trace"]["prefix"]}'
    parts = [
        '<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
        f'<title>{escape(title)}</title><style>{_STYLE}</style>',
        '</head><body>', f'<h1>{escape(title)}</h1>',
        f'<p class="note">{stats["trace"]["shards"]} '
        f'{escape(stats["trace"]["format"])} shard(s); starcompactor '
        f'{escape(stats["starcompactor_version"])}. The same numbers '
        'are in the JSON report.</p>',
        '<nav>' + ''.join(
            f'<a href="#{escape(s.key)}">{escape(s.title)}</a>'
            for s in sections) + '</nav>']
    for section in sections:
        parts.append(f'<section id="{escape(section.key)}">'
                     f'<h2>{escape(section.title)}</h2>')
        for number, figure in enumerate(section.figures, start=1):
            png, alt = figure.image()
            if png_dir:
                with open(os.path.join(png_dir, f'{section.key}-{number}.png'),
                          'wb') as f:
                    f.write(png)
            data = base64.b64encode(png).decode('ascii')
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" '
                f'alt="{escape(alt)}" '
                f'title="{escape(figure.title)}"></figure>')
        parts.append(section.html)
        parts.append('</section>')
    parts.append('</body></html>')
    return '\n'.join(parts)
