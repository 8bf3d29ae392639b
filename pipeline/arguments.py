"""Strict command lines: every argument is one of the command's options or a
Beam pipeline option, or the command fails before it reads or writes
anything. A typo must never change what gets published (``--epoh`` would
otherwise leave the default epoch in place, ``--mask-uiud`` the uuids raw).
"""
import argparse
import difflib

from starcompactor.pipeline.errors import UsageError


class _DefaultsShown(argparse.HelpFormatter):
    """Help that shows an option's default where it has a real one (not
    None, not a flag's False), as ArgumentDefaultsHelpFormatter would."""

    def _get_help_string(self, action):
        text = action.help or ''
        shown = not (action.default is None or action.default is False
                     or action.default == argparse.SUPPRESS)
        if shown and '%(default)' not in text and action.option_strings:
            text += ' (default: %(default)s)'
        return text


class StrictParser(argparse.ArgumentParser):
    """``argparse`` whose errors are ``UsageError`` (one line, exit 2), that
    takes no abbreviation of an option, and whose help shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('allow_abbrev', False)
        kwargs.setdefault('formatter_class', _DefaultsShown)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(message, self.prog)

    def option_strings(self):
        return [s for action in self._actions for s in action.option_strings]

    def parse_strict(self, argv, beam_options=False):
        """``parse_args``, refusing whatever is not an option of this parser
        (or, with ``beam_options``, of a registered Beam ``PipelineOptions``
        class) by name, with a "did you mean" hint."""
        args, rest = self.parse_known_args(argv)
        known = self.option_strings()
        if beam_options and rest:
            beam = beam_option_parser()
            rest = beam.parse_known_args(rest)[1]
            known += beam.option_strings()
        if rest:
            raise UsageError(unknown_argument_message(rest[0], known),
                             self.prog)
        return args


def did_you_mean(name, known):
    """`` (did you mean X?)`` for the closest of ``known``, or nothing."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    return f' (did you mean {close[0]}?)' if close else ''


def unknown_argument_message(argument, known):
    if not argument.startswith('-'):
        return f'unexpected argument {argument!r}'
    name = argument.split('=', 1)[0]
    return f'unknown option {name}{did_you_mean(name, known)}'


def beam_option_parser():
    """A parser of every registered Beam pipeline option, built the way
    ``PipelineOptions.get_all_options`` builds its own."""
    from apache_beam.options.pipeline_options import PipelineOptions
    parser = StrictParser(add_help=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser
