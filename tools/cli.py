"""What the three stage scripts share: argument parsing and clean user errors."""
import argparse
import os
import sys

from tools.config import load_config
from tools.errors import UserError

DEFAULT_CONFIG = "configs/voc.yaml"


def build_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    parser.add_argument("--gpu", default=None,
                        help="GPU ids such as 0 or 0,1 (one process per GPU), or 'cpu' "
                             "(default: GPU 0, or the local rank's GPU under torchrun; the CPU without CUDA)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides with dotted keys, values parsed as YAML (e.g. cam.bkgscore=0.15)")
    return parser


def parse_config(parser, argv=None):
    # intermixed: key=value overrides may come before and after options (a=1 --sweep b=2)
    args = parser.parse_intermixed_args(argv)
    return args, load_config(args.config, args.overrides)


def run_main(main):
    """Call main(); a UserError becomes one line on stderr and exit code 2 (no traceback).

    In a distributed job (RANK set) ranks other than 0 prefix their rank, and stay silent on
    errors every rank raises alike.
    """
    try:
        main()
    except UserError as error:
        message = str(error).strip()
        if message.startswith("Caught ") and "Original Traceback" in message:
            # Raised in a DataLoader worker: torch wraps our message in the worker's traceback.
            message = message.splitlines()[-1].split(": ", 1)[-1]
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0 or not error.every_rank:
            print(f"error: {'' if rank == 0 else f'[rank {rank}] '}{message}", file=sys.stderr)
        sys.exit(2)

