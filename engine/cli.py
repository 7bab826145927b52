"""What every stage script shares: its command line (--config, --gpu, key=value overrides) and the config it loads."""
import argparse
import os

from engine.config import load_config


def build_parser(description, default_config, gpu=True):
    """--config, key=value overrides and, for a command that runs a network (gpu=True), --gpu."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    if gpu:
        parser.add_argument("--gpu", default=None,
                            help="GPU ids such as 0 or 0,1 (one process per GPU), or 'cpu' "
                                 "(default: GPU 0, or the local rank's GPU under torchrun; the CPU without CUDA)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides with dotted keys, values parsed as YAML (e.g. cam.bkgscore=0.15)")
    return parser


def add_resume_options(parser, run_dir):
    """--resume PATH / --restart of a training stage (its Trainer.fit `resume`: "auto", a path or "never");
    run_dir names where its resumable checkpoint lives, for the help."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", metavar="PATH", default="auto",
                       help=f"continue from this checkpoint (default: <{run_dir}>/checkpoints/last.pth when it exists "
                            f"and has the same settings)")
    group.add_argument("--restart", action="store_const", const="never", dest="resume",
                       help=f"train from scratch even if <{run_dir}> holds a checkpoint (it is overwritten)")


def add_overwrite_option(parser, key, what):
    """--overwrite of a per-image stage: sets its config key `key` (e.g. cam.overwrite) to true."""
    parser.add_argument("--overwrite", action="store_true", help=f"redo images whose {what} exists ({key})")
    parser.set_defaults(overwrite_key=key)


def parse_config(parser, schema, argv=None, root=None):
    """-> (the parsed arguments, the config of --config with the overrides, checked against `schema`).

    root: the project's root, against which the config files' relative paths resolve (engine.config); bases
    are also looked for in the folder of the parser's default config there."""
    # intermixed: key=value overrides may come before and after options (a=1 --sweep b=2)
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if getattr(args, "overwrite", False):  # add_overwrite_option
        overrides.append(f"{args.overwrite_key}=true")
    config_dir = os.path.dirname(os.path.join(root, parser.get_default("config"))) if root else None
    return args, load_config(args.config, schema, overrides, root, config_dir)
