"""The line of the run's start-up log that says what a source reads."""


def about_line(where, databases, archived, window):
    """``<where>, <databases> (<which tables>)[, <event window>]``;
    ``databases`` is already a phrase, e.g. ``database_names(...)``."""
    tables = 'live and shadow_ tables' if archived else 'live tables only'
    parts = [where, f'{databases} ({tables})']
    start, end = window
    if start and end:
        parts.append(f'events from {start}, before {end}')
    elif start:
        parts.append(f'events from {start}')
    elif end:
        parts.append(f'events before {end}')
    return ', '.join(parts)


def database_names(names):
    """'database nova' or 'databases nova_cell0, nova_cell1'."""
    return ('database ' if len(names) == 1 else 'databases ') + \
        ', '.join(names)
