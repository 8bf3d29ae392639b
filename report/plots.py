"""The report's plots, drawn with matplotlib (Agg, imported on first use)
and returned as PNG bytes; None when there is nothing to draw.
"""
import io

import numpy as np

from starcompactor.report.aggregate import DAY, OTHER, hist_quantile

DURATION_KINDS = 10    # kinds shown in the duration plot


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _ticker():
    _pyplot()
    import matplotlib.ticker
    return matplotlib.ticker


def _png(fig):
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100, bbox_inches='tight')
    plt.close(fig)
    return buffer.getvalue()


def no_data(title):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.6))
    ax.set_axis_off()
    ax.text(0.5, 0.5, f'{title}: no data', ha='center', va='center',
            fontsize=14, color='0.4', transform=ax.transAxes)
    return _png(fig)


def _dates(seconds):
    return np.array(seconds, dtype='datetime64[s]')


def events_per_day(stats):
    daily = stats['events_per_day']
    if not daily['days']:
        return None
    plt = _pyplot()
    counts = np.array([d['by_kind'] for d in daily['days']], np.int64)
    first = np.datetime64(daily['days'][0]['date'], 'D')
    # Long spans: sum into buckets of several days (at most ~500 drawn).
    width = -(-len(counts) // 500)
    if width > 1:
        padded = np.zeros((-(-len(counts) // width) * width, counts.shape[1]),
                          np.int64)
        padded[:len(counts)] = counts
        counts = padded.reshape(-1, width, counts.shape[1]).sum(axis=1)
    edges = first + np.arange(len(counts) + 1) * width
    colors = plt.get_cmap('tab10').colors
    shown = [i for i, _ in enumerate(daily['kinds']) if counts[:, i].any()]
    labels = [daily['kinds'][i] for i in shown]
    palette = ['0.7' if k == OTHER and i == len(daily['kinds']) - 1
               else colors[i % 10] for i, k in zip(shown, labels)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if len(counts) <= 90:
        bottom = np.zeros(len(counts), np.int64)
        for i, label, color in zip(shown, labels, palette):
            ax.bar(edges[:-1], counts[:, i], width=width, bottom=bottom,
                   align='edge', label=label, color=color, linewidth=0)
            bottom += counts[:, i]
    else:   # one polygon per kind: fast for thousands of days
        ys = [np.append(counts[:, i], counts[-1, i]) for i in shown]
        ax.stackplot(edges, *ys, labels=labels, colors=palette, step='post',
                     linewidth=0)
    ax.set_ylabel('events per day (UTC)' if width == 1
                  else f'events per {width} days (UTC)')
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.autofmt_xdate()
    return _png(fig)


def concurrency(stats, data):
    if not len(data.change_times):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    if len(data.change_times) <= 20_000:
        times = np.concatenate([[data.change_times[0]], data.change_times])
        values = np.concatenate([[0], data.change_values])
        ax.step(_dates(times), values, where='post', linewidth=1)
        ax.set_ylabel('running instances')
    else:   # too many steps to draw: the daily maxima
        daily = stats['concurrent_instances']['daily_max']
        days = np.array([d['date'] for d in daily], dtype='datetime64[D]')
        ax.step(days, [d['max'] for d in daily], where='post', linewidth=1)
        ax.set_ylabel('running instances (daily maximum)')
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    fig.autofmt_xdate()
    return _png(fig)


def lifetimes(data):
    if not len(data.lifetimes):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.maximum(data.lifetimes, 1)   # 0 s drawn at 1 s on the log axis
    y = np.arange(1, len(x) + 1) / len(x)
    if len(x) > 5000:   # enough points for the eye
        keep = np.unique(np.linspace(0, len(x) - 1, 5000).astype(np.int64))
        x, y = x[keep], y[keep]
    ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0], y]),
            where='post')
    ax.set_xscale('log')
    ax.set_ylim(0, 1.1)
    ax.set_xlabel('lifetime, seconds (log; < 1 s drawn at 1 s)')
    ax.set_ylabel('fraction of terminated instances')
    for seconds, label in ((60, '1 min'), (3600, '1 h'), (DAY, '1 d'),
                           (30 * DAY, '30 d')):
        ax.axvline(seconds, color='0.85', linewidth=0.8, zorder=0)
        ax.text(seconds, 1.03, label, fontsize=7, color='0.5',
                ha='center', va='bottom')
    ax.grid(True, which='major', axis='y', color='0.92')
    return _png(fig)


def durations(stats, data):
    kinds = [k for k in stats['event_durations']][:DURATION_KINDS]
    if not kinds:
        return None
    plt = _pyplot()
    boxes = []
    for kind in kinds:
        s, h = stats['event_durations'][kind], data.hist[kind]

        def q(p):
            return max(hist_quantile(h, p, s['min_s'], s['max_s']), 0.5)
        boxes.append({'label': f'{kind} (n={s["count"]})',
                      'whislo': q(0.05), 'q1': q(0.25), 'med': q(0.5),
                      'q3': q(0.75), 'whishi': q(0.95),
                      'mean': max(s['mean_s'], 0.5), 'fliers': []})
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(kinds) + 1.5))
    ax.bxp(boxes[::-1], orientation='horizontal', showmeans=True,
           showfliers=False)
    ax.set_xscale('log')
    ax.set_xlabel('event duration, seconds (log; box 25-75 %, whiskers '
                  '5-95 %, triangle: mean; 0 s drawn at 0.5 s)')
    ax.tick_params(axis='y', labelsize=8)
    return _png(fig)


def flavors(stats):
    known = [f for f in stats['flavors']
             if f['vcpus'] is not None and f['memory_mb'] is not None]
    if not known:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    counts = np.array([f['instances'] for f in known])
    x = [f['vcpus'] for f in known]
    y = [f['memory_mb'] / 1024 for f in known]
    ax.scatter(x, y, s=30 + 1500 * counts / counts.max(), alpha=0.5,
               edgecolors='k', linewidths=0.5)
    for xi, yi, n in list(zip(x, y, counts))[:30]:
        ax.annotate(str(n), (xi, yi), fontsize=7, ha='center', va='center')
    plain = _ticker().FuncFormatter(lambda v, _: f'{v:g}')
    if max(x) > 4 * max(min(x), 1):
        ax.set_xscale('log', base=2)
        ax.xaxis.set_major_formatter(plain)
    if max(y) > 4 * max(min(y), 1 / 1024):
        ax.set_yscale('log', base=2)
        ax.yaxis.set_major_formatter(plain)
    ax.set_xlabel('vCPUs')
    ax.set_ylabel('memory, GiB')
    ax.margins(0.15)
    return _png(fig)


def capacity(data, end=None):
    """Host capacity over time (``capacity.Capacity``): vCPUs, memory and
    disk of the hosts in service, one step panel each, held from the last
    change to ``end`` (seconds; the trace's last finish) if later."""
    if not len(data.times):
        return None
    plt = _pyplot()
    times = np.append(data.times, max(end or 0, data.times[-1]))
    values = np.vstack([data.values, data.values[-1:]])
    panels = ((1, 'vCPUs', 1), (2, 'memory, GiB', 1024), (3, 'disk, GB', 1))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 7), sharex=True)
    for ax, (column, label, unit) in zip(axes, panels):
        ax.step(_dates(times), values[:, column] / unit, where='post',
                linewidth=1)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, axis='y', color='0.92')
    fig.autofmt_xdate()
    return _png(fig)
