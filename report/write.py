"""``write_report``: the statistics of a trace as JSON and as an HTML page,
each file replaced whole or not at all."""
import json
import os
import tempfile

from starcompactor.pipeline.errors import UserError
from starcompactor.report import html
from starcompactor.report.aggregate import compute_stats

HTML_SUFFIX = '.report.html'
JSON_SUFFIX = '.report.json'


def write_report(prefix, html_path=None, json_path=None, extra_sections=(),
                 png_dir=None):
    """Write the HTML and JSON reports of the trace at ``prefix`` (default
    ``PREFIX.report.html`` / ``.json``); return the statistics dict.

    ``extra_sections``: callables ``f(stats) -> Section`` appended to the
    page; each section's ``stats`` go to ``stats['extra'][key]``.
    ``png_dir``: also write each plot there as a PNG file."""
    html_path = html_path or prefix + HTML_SUFFIX
    json_path = json_path or prefix + JSON_SUFFIX
    stats, data = compute_stats(prefix)
    sections = html.trace_sections(stats, data)
    for make in extra_sections:
        section = make(stats)
        sections.append(section)
        if section.stats is not None:
            stats.setdefault('extra', {})[section.key] = section.stats
    _write_atomically(json_path, json.dumps(stats, indent=1) + '\n')
    if png_dir:
        os.makedirs(png_dir, exist_ok=True)
    _write_atomically(html_path, html.render(stats, sections, png_dir))
    return stats


def _write_atomically(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temp = tempfile.mkstemp(dir=directory, prefix='.report-')
        with os.fdopen(handle, 'w', encoding='utf-8') as out:
            out.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as e:
        raise UserError(f'cannot write {path}: {e.strerror or e}')
