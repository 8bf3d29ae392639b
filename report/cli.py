"""``starcompactor report``: the command line of ``write_report``."""
from starcompactor.pipeline.arguments import StrictParser
from starcompactor.report.write import HTML_SUFFIX, JSON_SUFFIX, write_report


def argument_parser():
    parser = StrictParser(
        prog='starcompactor report',
        description='Statistics and plots of a trace, as a self-contained '
                    'HTML page and a JSON file.')
    parser.add_argument('prefix', metavar='PREFIX',
                        help='the trace: PREFIX-SSSSS-of-NNNNN.csv (or .avro '
                             'when there is no CSV)')
    parser.add_argument('--html', metavar='OUT.html',
                        help=f'default: PREFIX{HTML_SUFFIX}')
    parser.add_argument('--json', metavar='OUT.json',
                        help=f'default: PREFIX{JSON_SUFFIX}')
    parser.add_argument('--png-dir', metavar='DIR',
                        help='also write each plot as a PNG file into DIR')
    return parser


def main(argv):
    args = argument_parser().parse_strict(argv)
    html_path = args.html or args.prefix + HTML_SUFFIX
    json_path = args.json or args.prefix + JSON_SUFFIX
    stats = write_report(args.prefix, html_path, json_path,
                         png_dir=args.png_dir)
    counts, span = stats['counts'], stats['span']
    print(f'starcompactor report: {counts["rows"]:,} rows, '
          f'{counts["instances"]:,} instances, '
          f'{span["first_start"] or "-"} .. {span["last_finish"] or "-"}')
    print(f'  wrote {html_path}')
    print(f'  wrote {json_path}')
