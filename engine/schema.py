"""Rules for config values, and `validate`, which checks a loaded config against a schema.

A schema maps each dotted key to a rule (the project's is wsss/schema.py). A key missing from a
config passes here (old configs lack newer keys, which the code reads with a default; a key a stage
needs and does not find is a ConfigError when the stage reads it); a key the schema does not know,
or a value its rule rejects, is a ConfigError naming the key, the value, what is expected and the
config file. Numbers never accept true/false, whole numbers are fine
where a number is expected, and true/false never stands for a number.
"""
import difflib

from engine.errors import UserError


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


def takes_paths(rule):
    """Whether a string value of this rule is a file or folder path."""
    return isinstance(rule, Path) or (isinstance(rule, Either) and any(takes_paths(inner) for inner in rule.rules))


class Choice(Rule):
    def __init__(self, *choices, nullable=False):
        super().__init__(nullable)
        self.choices = choices

    def accepts_value(self, value):  # the type must match too: 1 is not true, false is not 0
        return any(type(value) is type(choice) and value == choice for choice in self.choices)

    def describe(self):
        return "one of " + ", ".join(_yaml_text(choice) for choice in self.choices)


class Integer(Rule):
    """An int; `min` an inclusive bound, `multiple_of` a number it must divide by."""

    def __init__(self, min=None, nullable=False, multiple_of=None):
        super().__init__(nullable)
        self.min, self.multiple_of = min, multiple_of

    def accepts_value(self, value):
        return _is_integer(value) and (self.min is None or value >= self.min) and \
            (self.multiple_of is None or value % self.multiple_of == 0)

    def describe(self, plural=False):
        noun = "integers" if plural else "an integer"
        if self.min == 1:
            noun = "positive integers" if plural else "a positive integer"
        elif self.min is not None:
            noun = f"{noun} >= {self.min}"
        return noun + (f", a multiple of {self.multiple_of}" if self.multiple_of else "")


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


# Mixed precision switches (engine/precision.py AMP_DTYPES); YAML reads a bare `off` as false,
# which engine.precision.amp_dtype takes as off.
AMP = Choice("off", "bf16", "fp16", False)


def _show(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def mistakes(data, schema, source, overrides=None, prefix=""):
    """The messages of every key present in the nested dict `data` that `schema` does not know or whose value
    its rule rejects. source: the config file, named in every message. overrides: {dotted key: 'key=value'}
    for keys set on the command line, so that a bad value says where it came from."""
    overrides, found = overrides or {}, []
    for name, value in data.items():
        key = f"{prefix}{name}"
        rule = schema.get(key)
        if rule is None:
            found.append(f"unknown config key {key} (set to {_show(value)}) in {source}{closest_hint(key, schema)}")
        elif not rule.accepts(value):
            where = f"override {overrides[key]} on {source}" if key in overrides else source
            found.append(f"config key {key} must be {rule.expected}, got {_show(value)} ({where})")
        elif isinstance(rule, Section) and isinstance(value, dict):
            found += mistakes(value, schema, source, overrides, prefix=f"{key}.")
    return found


def validate(data, schema, source, overrides=None, found=()):
    """Check every key present in `data` against `schema`: one ConfigError that names every mistake (with
    those `found` before, in overrides and references)."""
    found = [*found, *mistakes(data, schema, source, overrides)]
    if len(found) == 1:
        raise ConfigError(found[0])
    if found:
        raise ConfigError(f"{len(found)} mistakes in the config: " + "; ".join(found))
