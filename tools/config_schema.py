"""What every config key may hold, and `validate`, which checks a loaded config against it.

SCHEMA maps each dotted key to a rule. A key missing from a config is fine (old configs lack
newer keys; the code falls back on its defaults); a key the schema does not know, or a value its
rule rejects, is a ConfigError naming the key, the value, what is expected and the config file.
Numbers never accept true/false, whole numbers are fine where a number is expected, and true/false
never stands for a number.
"""
import difflib

from tools.crf import CRF_PARAM_KEYS
from tools.errors import UserError


class ConfigError(UserError):
    pass


def closest_hint(key, known_keys):
    """'; did you mean <the most similar known key>?', or '' when none is close."""
    close = difflib.get_close_matches(key, list(known_keys), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _yaml_text(value):
    """A value as one writes it in YAML (true, null, off), for the 'expected' part of a message."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


# ---------------------------------------------------------------------------------------------
# Rules: accepts(value) -> bool; `expected` completes "config key <key> must be ...".

class Rule:
    def __init__(self, nullable=False):
        self.nullable = nullable

    def accepts(self, value):
        return (self.nullable and value is None) or self.accepts_value(value)

    def accepts_value(self, value):
        raise NotImplementedError

    @property
    def expected(self):
        return ("null or " if self.nullable else "") + self.describe()

    def describe(self):
        raise NotImplementedError


class Boolean(Rule):
    def accepts_value(self, value):
        return isinstance(value, bool)

    def describe(self):
        return "true or false"


class Path(Rule):
    """A file or folder path (a string)."""

    def accepts_value(self, value):
        return isinstance(value, str)

    def describe(self):
        return "a path (a string)"


class Choice(Rule):
    def __init__(self, *choices, nullable=False):
        super().__init__(nullable)
        self.choices = choices

    def accepts_value(self, value):  # the type must match too: 1 is not true, false is not 0
        return any(type(value) is type(choice) and value == choice for choice in self.choices)

    def describe(self):
        return "one of " + ", ".join(_yaml_text(choice) for choice in self.choices)


class Integer(Rule):
    def __init__(self, min=None, nullable=False):
        super().__init__(nullable)
        self.min = min

    def accepts_value(self, value):
        return _is_integer(value) and (self.min is None or value >= self.min)

    def describe(self, plural=False):
        noun = "integers" if plural else "an integer"
        if self.min == 1:
            return "positive integers" if plural else "a positive integer"
        return noun if self.min is None else f"{noun} >= {self.min}"


class Number(Rule):
    """An int or float; `positive` means > 0, `min`/`max` are inclusive bounds."""

    def __init__(self, min=None, max=None, positive=False, nullable=False):
        super().__init__(nullable)
        self.min, self.max, self.positive = min, max, positive

    def accepts_value(self, value):
        return (_is_number(value) and (not self.positive or value > 0)
                and (self.min is None or value >= self.min) and (self.max is None or value <= self.max))

    def describe(self, plural=False):
        noun = "numbers" if plural else "a number"
        if self.positive:
            if self.max is None:
                return "positive numbers" if plural else "a positive number"
            return f"{noun} in (0, {self.max}]"
        if self.min is not None and self.max is not None:
            return f"{noun} in [{self.min}, {self.max}]"
        if self.min is not None:
            return f"{noun} >= {self.min}"
        return noun if self.max is None else f"{noun} <= {self.max}"


class ListOf(Rule):
    """A non-empty list of `item` (an Integer or Number rule); `length` fixes its length, `ascending`
    asks for each element to be <= the next."""

    def __init__(self, item, length=None, ascending=False, nullable=False):
        super().__init__(nullable)
        self.item, self.length, self.ascending = item, length, ascending

    def accepts_value(self, value):
        if not isinstance(value, list) or not value or not all(self.item.accepts(element) for element in value):
            return False
        if self.length is not None and len(value) != self.length:
            return False
        return not self.ascending or all(a <= b for a, b in zip(value, value[1:]))

    def describe(self):
        size = "a non-empty list of" if self.length is None else f"a list of {self.length}"
        order = ", the smallest first" if self.ascending else ""
        return f"{size} {self.item.describe(plural=True)}{order}"


class Either(Rule):
    """Any of several rules (a number or a list of numbers, true/false or a path)."""

    def __init__(self, *rules, nullable=False, expected=None):
        super().__init__(nullable)
        self.rules, self.text = rules, expected

    def accepts_value(self, value):
        return any(rule.accepts(value) for rule in self.rules)

    def describe(self):
        return self.text or " or ".join(rule.expected for rule in self.rules)


class Section(Rule):
    """A mapping of further keys, each with its own entry in SCHEMA."""

    def accepts_value(self, value):
        return isinstance(value, dict)

    def describe(self):
        return "a section (a mapping of keys)"


# ---------------------------------------------------------------------------------------------
# The schema. Choices repeat the names the code defines (net/resnet.py BACKBONES, net/pooling.py
# POOLS, net/resnet_cam.py CODEBOOKS, tools/precision.py AMP_DTYPES) so that loading a config does
# not import torch; tests/test_config.py checks they agree.

# YAML reads a bare `off` as false; tools/precision.amp_dtype takes false as off.
AMP = Choice("off", "bf16", "fp16", False)
BKGSCORE = Number(min=0, max=1)  # CAMs are normalised to [0, 1]; the background score competes with them
WORKERS = Integer(min=0, nullable=True)  # null: every usable core, 0: no worker processes

SCHEMA = {
    "exp": Section(),
    "exp.work_dir": Path(),
    "exp.checkpoint": Path(nullable=True),  # null/empty: filled in by fill_defaults
    "exp.cam_dir": Path(nullable=True),

    "dataset": Section(),
    "dataset.root_dir": Path(),
    "dataset.cls_labels": Path(),
    "dataset.n_classes": Integer(min=1),
    "dataset.skip_undecodable": Boolean(),
    "dataset.synthetic": Section(nullable=True),  # datasets/synthetic.py ensure_dataset's parameters
    "dataset.synthetic.n_train_aug": Integer(min=1),
    "dataset.synthetic.n_train": Integer(min=0),
    "dataset.synthetic.n_val": Integer(min=0),
    "dataset.synthetic.min_size": Integer(min=32),
    "dataset.synthetic.max_size": Integer(min=32),
    "dataset.synthetic.max_objects": Integer(min=1),
    "dataset.synthetic.seed": Integer(min=0),

    "model": Section(),
    "model.backbone": Choice("resnet50", "resnet101"),
    "model.pretrained": Either(Boolean(), Path(),
                               expected="true (ImageNet weights), false (random weights) or a path to a .pth file"),
    "model.vwe": Boolean(),
    "model.k_words": Integer(min=1),
    "model.codebook": Choice("learned", "memory_bank"),
    "model.decov_weight": Number(min=0),
    "model.memory_rho": Number(positive=True, max=1),
    "model.pool": Choice("hspp", "gap"),
    "model.hspp_gamma": Number(min=0),
    "model.hspp_levels": ListOf(Integer(min=1)),
    "model.detach_stage2": Boolean(),
    "model.freeze_bn": Boolean(),

    "train": Section(),
    "train.split": Path(),
    "train.batch_size": Integer(min=1),
    "train.max_epochs": Integer(min=1),
    "train.crop_size": Integer(min=1),
    "train.resize_long": ListOf(Integer(min=1), length=2, ascending=True, nullable=True),
    "train.hflip": Boolean(),
    "train.num_workers": Integer(min=0),
    "train.seed": Integer(min=0),  # numpy generators refuse negative seeds
    "train.deterministic": Boolean(),
    "train.amp": AMP,
    "train.channels_last": Boolean(),
    "train.save_iters": Integer(min=1),  # train_cam.py saves when step % save_iters == 0
    "train.log_interval": Integer(min=1),
    "train.tensorboard": Boolean(),
    "train.opt": Section(),
    "train.opt.lr": Number(positive=True),
    "train.opt.new_layers_lr_mult": Number(positive=True),
    "train.opt.weight_decay": Number(min=0),
    "train.opt.momentum": Number(min=0),
    "train.opt.power": Number(min=0),

    "val": Section(),
    "val.split": Path(),
    "val.crop_size": Integer(min=1),

    "cam": Section(),
    "cam.split": Path(),
    "cam.scales": ListOf(Number(positive=True)),
    "cam.bkgscore": Either(BKGSCORE, ListOf(BKGSCORE)),  # a list: eval_cam.py scores each threshold
    "cam.num_workers": Integer(min=0),
    "cam.amp": AMP,
    "cam.channels_last": Boolean(),
    "cam.overwrite": Boolean(),

    "eval": Section(),
    "eval.gt_dir": Path(nullable=True),  # null/empty: filled in by fill_defaults
    "eval.json": Path(nullable=True),
    "eval.png_dir": Path(nullable=True),
    "eval.num_workers": WORKERS,

    "labels": Section(),
    "labels.dir": Path(),
    "labels.overlay_dir": Path(nullable=True),
    "labels.picture_dir": Path(),
    "labels.bkgscore": Number(min=0, max=1, nullable=True),  # null: cam.bkgscore
    "labels.crf": Boolean(),
    "labels.crf_params": Section(),  # tools/crf.py check_crf_params also asks for every key
    **{f"labels.crf_params.{name}": Integer(min=1) if name == "iterations" else Number(positive=True)
       for name in CRF_PARAM_KEYS},
    "labels.num_workers": WORKERS,
    "labels.overwrite": Boolean(),
}


def _show(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def validate(data, source, overrides=None, prefix=""):
    """Check every key present in the nested dict `data` against SCHEMA; ConfigError on the first mistake.

    source: the config file, named in every message. overrides: {dotted key: 'key=value'} for keys
    set on the command line, so that a bad value says where it came from.
    """
    overrides = overrides or {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        rule = SCHEMA.get(key)
        if rule is None:
            raise ConfigError(f"unknown config key {key} (set to {_show(value)}) in {source}{closest_hint(key, SCHEMA)}")
        if not rule.accepts(value):
            where = f"override {overrides[key]} on {source}" if key in overrides else source
            raise ConfigError(f"config key {key} must be {rule.expected}, got {_show(value)} ({where})")
        if isinstance(rule, Section) and isinstance(value, dict):
            validate(value, source, overrides, prefix=f"{key}.")
