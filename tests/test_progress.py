"""The progress line of a running job: worker tallies summed, rate and
time left, shown on a terminal or logged."""
import io
import json
import logging
import os
import time

from starcompactor.pipeline import progress
from starcompactor.transforms import counters

TABLES = ('instances', 'actions', 'events')


def write_tally(folder, pid, counts):
    with open(os.path.join(folder, f'{pid}.json'), 'w') as f:
        json.dump(counts, f)


def test_tallies_of_every_worker_process_are_summed(tmp_path):
    write_tally(tmp_path, 11, {'read.events': 300, 'read.instances': 10})
    write_tally(tmp_path, 12, {'read.events': 200, 'trace_rows': 7})
    (tmp_path / '13.json.tmp').write_text('{"read.events": 999')
    assert progress.read_totals(tmp_path) == {
        'read.events': 500, 'read.instances': 10, 'trace_rows': 7}


def test_line_gives_rows_per_table_rate_and_time_left():
    totals = {'read.instances': 1000, 'read.actions': 2500,
              'read.events': 4000}
    assert progress.describe(totals, TABLES, 10_000, 2.0) == (
        'read instances 1,000, actions 2,500, events 4,000 of ~10,000 '
        'events (2,000/s, ~3 s left); 2 s')


def test_line_after_reading_gives_trace_rows_and_minutes():
    totals = {'read.instances': 1000, 'read.actions': 2500,
              'read.events': 10_500, 'trace_rows': 9000}
    assert progress.describe(totals, TABLES, 10_000, 75.0) == (
        'read instances 1,000, actions 2,500, events 10,500; '
        '9,000 trace rows; 1 min 15 s')


def test_counting_in_a_run_writes_this_process_tally(tmp_path, monkeypatch):
    monkeypatch.setenv(counters.PROGRESS_FOLDER_ENV, str(tmp_path))
    counters.tally.add('read.events', 5)
    counters.tally.add('read.events', 6)   # within the second: not written
    assert progress.read_totals(tmp_path) == {'read.events': 5}
    monkeypatch.setattr(counters, 'TALLY_EVERY_S', 0.0)
    counters.tally.add('read.events', 1)
    assert progress.read_totals(tmp_path) == {'read.events': 12}

    other = tmp_path / 'next-run'
    other.mkdir()
    monkeypatch.setenv(counters.PROGRESS_FOLDER_ENV, str(other))
    counters.tally.add('trace_rows', 3)    # a new run starts from zero
    assert progress.read_totals(other) == {'trace_rows': 3}


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_one_line_is_rewritten_then_cleared(tmp_path):
    write_tally(tmp_path, 1, {'read.events': 42})
    screen = Terminal()
    with progress.ProgressDisplay(tmp_path, TABLES, 0, stream=screen):
        time.sleep(1.5)
    text = screen.getvalue()
    assert text.startswith('\rread instances 0, actions 0, events 42; ')
    assert '\n' not in text
    assert text.endswith('\r')


def test_elsewhere_progress_is_logged_periodically(tmp_path, caplog):
    write_tally(tmp_path, 1, {'read.events': 42})
    caplog.set_level(logging.INFO, logger='starcompactor')
    with progress.ProgressDisplay(tmp_path, TABLES, 0, stream=io.StringIO(),
                                  log_every_s=0.2):
        time.sleep(0.7)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2
    assert all(line.startswith('progress: read instances 0, actions 0, '
                               'events 42; ') for line in lines)
