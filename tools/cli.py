"""What the three stage scripts share: argument parsing, device choice and clean user errors."""
import argparse
import sys

from tools.config import load_config
from tools.errors import UserError

DEFAULT_CONFIG = "configs/voc.yaml"


def build_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    parser.add_argument("--gpu", default=None,
                        help="GPU ids such as 0 or 0,1, or 'cpu' (default: GPU 0 when CUDA is available, else CPU)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides with dotted keys, values parsed as YAML (e.g. cam.bkgscore=0.15)")
    return parser


def parse_config(parser, argv=None):
    args = parser.parse_args(argv)
    return args, load_config(args.config, args.overrides)


def select_device(gpu):
    """'cpu' or no CUDA -> CPU; '0,1' -> the first listed GPU (numbering as nvidia-smi shows it)."""
    import torch

    if gpu is not None and str(gpu).strip().lower() == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if gpu is not None:
            print(f"note: --gpu {gpu} asked for, but CUDA is not available; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    if gpu is None:
        return torch.device("cuda", 0)
    try:
        ids = [int(part) for part in str(gpu).split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--gpu {gpu}: expected GPU ids like 0 or 0,1, or 'cpu'") from None
    count = torch.cuda.device_count()
    bad = [index for index in ids if not 0 <= index < count]
    if not ids or bad:
        raise UserError(f"--gpu {gpu}: this machine has {count} GPU(s), numbered 0..{count - 1}")
    if len(ids) > 1:
        print(f"note: --gpu {gpu}: this stage runs on one device, GPU {ids[0]}", file=sys.stderr)
    return torch.device("cuda", ids[0])


def run_main(main):
    """Call main(); a UserError becomes one line on stderr and exit code 2 (no traceback)."""
    try:
        main()
    except UserError as error:
        message = str(error).strip()
        if message.startswith("Caught ") and "Original Traceback" in message:
            # Raised in a DataLoader worker: torch wraps our message in the worker's traceback.
            message = message.splitlines()[-1].split(": ", 1)[-1]
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

