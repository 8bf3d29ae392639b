"""``starcompactor report``: the command line of ``write_report``."""
from starcompactor.pipeline.arguments import StrictParser
from starcompactor.report import capacity
from starcompactor.report.write import HTML_SUFFIX, JSON_SUFFIX, write_report


def argument_parser():
    parser = StrictParser(
        prog='starcompactor report',
        description='Statistics and plots of a trace, as a self-contained '
                    'HTML page and a JSON file.')
    parser.add_argument('prefix', metavar='PREFIX',
                        help='the trace: PREFIX-SSSSS-of-NNNNN.parquet, '
                             'else .csv, else .avro')
    parser.add_argument('--html', metavar='OUT.html',
                        help=f'default: PREFIX{HTML_SUFFIX}')
    parser.add_argument('--json', metavar='OUT.json',
                        help=f'default: PREFIX{JSON_SUFFIX}')
    parser.add_argument('--png-dir', metavar='DIR',
                        help='also write each plot as a PNG file into DIR')
    parser.add_argument('--hosts', metavar='HOSTS',
                        help='the host table (starcompactor hosts or trace) '
                             'for the host capacity plot; default: the '
                             'table beside an OUT-instances trace, '
                             'OUT-hosts, if there is one')
    return parser


def main(argv):
    args = argument_parser().parse_strict(argv)
    html_path = args.html or args.prefix + HTML_SUFFIX
    json_path = args.json or args.prefix + JSON_SUFFIX
    hosts = args.hosts or capacity.host_table_beside(args.prefix)
    stats = write_report(args.prefix, html_path, json_path,
                         extra_sections=[capacity.section(hosts)] if hosts
                         else [], png_dir=args.png_dir)
    counts, span = stats['counts'], stats['span']
    print(f'starcompactor report: {counts["rows"]:,} rows, '
          f'{counts["instances"]:,} instances, '
          f'{span["first_start"] or "-"} .. {span["last_finish"] or "-"}')
    if hosts:
        host_capacity = stats['extra']['host_capacity']
        print(f'  host capacity from {hosts}: {host_capacity["hosts"]:,} '
              f'hosts, {host_capacity["events"]:,} events')
    print(f'  wrote {html_path}')
    print(f'  wrote {json_path}')
