"""One config object from a YAML file plus `key=value` overrides, shared by every stage.

A file may start with `_base_: other.yaml` or `_base_: [a.yaml, b.yaml]` (next to the file, else in
the project's config folder): the bases are merged in order, the file over them. `${section.key}`
inside a string value refers to another key, after the overrides, so a derived default (a path
under exp.work_dir, say) is written once, in a base file.

Paths: a relative path written in a config file is relative to the project's root (the repository),
wherever the command runs; one given on the command line (key=value, --config) is relative to the
current folder, as a shell user expects. The config file itself is looked for in the current folder,
then in the root.
"""
import copy
import difflib
import glob
import os
import re

import yaml

from engine.schema import ConfigError, closest_hint, takes_paths, validate


class Config:
    """Nested, attribute-accessible view of the YAML (cfg.train.batch_size); `to_dict()` gives it back."""

    def __init__(self, data, prefix=""):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name):
        data = object.__getattribute__(self, "_data")
        if name not in data:
            raise ConfigError(f"config key {self._prefix}{name} is missing; add it to the config (or to a file "
                              f"it names in _base_)")
        value = data[name]
        return Config(value, f"{self._prefix}{name}.") if isinstance(value, dict) else value

    def __setattr__(self, name, value):
        self._data[name] = value

    def __contains__(self, name):
        return name in self._data

    def get(self, dotted, default=None):
        node = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def to_dict(self):
        return copy.deepcopy(self._data)

    def __repr__(self):
        return yaml.safe_dump(self._data, sort_keys=False)


def _all_keys(data, prefix=""):
    for key, value in data.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from _all_keys(value, prefix + key + ".")


def _closest_hint(key, data):
    return closest_hint(key, _all_keys(data))


_SCIENTIFIC = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def apply_override(data, assignment, schema):
    """Apply one `dotted.key=value` (value parsed as YAML) to the nested dict, in place. A key the
    schema knows may be set even where the file leaves it (and its section) out."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value (e.g. train.batch_size=8)")
    key, raw_value = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError:
        raise ConfigError(f"override {key}: cannot parse value {raw_value!r} as YAML") from None
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    node = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or (part not in node and ".".join(parts[:depth + 1]) not in schema):
            raise ConfigError(f"unknown config key {key}{closest_hint(key, schema)}")
        if depth == len(parts) - 1:
            if isinstance(node.get(part), dict) and value is not None:  # null switches a section off
                raise ConfigError(f"config key {key} is a section; set one of its keys, "
                                  f"e.g. {key}.{next(iter(node[part]), 'x')}=...")
            node[part] = value  # its type and range are checked with the whole config (validate)
        else:
            node = node.setdefault(part, {})  # a known section the file leaves out


_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


class _BadReference(ConfigError):
    def __init__(self, message, reference):
        super().__init__(message)
        self.reference = reference  # the dotted key it names


def _lookup(data, dotted):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise _BadReference(f"config reference ${{{dotted}}} names no key{_closest_hint(dotted, data)}", dotted)
        node = node[part]
    return node


def _resolve_string(data, text):
    for _ in range(20):  # references may point at values that hold references themselves
        full = _REFERENCE.fullmatch(text)
        if full:
            text = _lookup(data, full.group(1))
        else:
            text = _REFERENCE.sub(lambda match: str(_lookup(data, match.group(1))), text)
        if not (isinstance(text, str) and "${" in text):
            return text
    raise ConfigError(f"config reference cycle in {text!r}")


def resolve_references(data, node=None, errors=None, prefix=""):
    """Replace `${section.key}` inside string values by that key's value (after overrides), in place. A
    reference that names no key raises a ConfigError, or, when `errors` is given (a dict), is recorded there
    as {the key it names: message}, once however many keys use it."""
    for key, value in (data if node is None else node).items():
        if isinstance(value, dict):
            resolve_references(data, value, errors, f"{prefix}{key}.")
        elif isinstance(value, str) and "${" in value:
            try:
                (data if node is None else node)[key] = _resolve_string(data, value)
            except ConfigError as error:
                if errors is None:
                    raise
                errors.setdefault(getattr(error, "reference", value), f"{error} (in {prefix}{key}: {value})")
    return data


def _merge(base, child):
    """Deep-merge `child` into a copy of `base` (child wins)."""
    merged = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _missing_file_hint(path):
    """'; did you mean X?' and the YAML files of the folder `path` names, when it exists."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"; the folder {folder} does not exist either"
    found = sorted(glob.glob(os.path.join(folder, "*.y*ml")))
    if not found:
        return f"; {folder} holds no YAML file"
    close = difflib.get_close_matches(path, found, n=1, cutoff=0.6)
    names = ", ".join(os.path.basename(name) for name in found)
    return (f"; did you mean {close[0]}?" if close else "") + f" ({folder} holds {names})"


def read_yaml(path, base_dirs=(), _including=()):
    """A config file as a dict, merged over its `_base_` file or files (next to this file, else in the first of
    `base_dirs` that holds them), in order."""
    if os.path.abspath(path) in _including:
        raise ConfigError(f"config file {path} names itself as a _base_, through {' -> '.join(_including)}")
    if not os.path.isfile(path):
        named_by = f", a _base_ of {_including[-1]} (looked for next to it" + \
            "".join(f" and in {folder}" for folder in base_dirs) + ")" if _including else ""
        raise ConfigError(f"config file {path}{named_by} does not exist{_missing_file_hint(path)}")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (exp, dataset, model, ...)")
    bases = data.pop("_base_", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not (isinstance(bases, list) and all(isinstance(base, str) for base in bases)):
        raise ConfigError(f"config file {path}: _base_ must be a file name or a list of file names, got {bases!r}")
    merged = {}
    for base in bases:
        candidates = [os.path.join(os.path.dirname(path), base)] + [os.path.join(folder, base) for folder in base_dirs]
        found = next((candidate for candidate in candidates if os.path.isfile(candidate)), candidates[0])
        merged = _merge(merged, read_yaml(found, base_dirs, (*_including, os.path.abspath(path))))
    return _merge(merged, data)


def anchor_paths(data, schema, root, prefix=""):
    """Make the relative paths of a config file's values relative to `root` (in place): values of path keys
    that do not start with a ${...} reference (a derived path follows the key it refers to). Nothing changes
    when the command runs from `root`, which keeps the paths in messages short."""
    if os.path.abspath(os.getcwd()) == os.path.abspath(root):
        return data
    for key, value in data.items():
        dotted = prefix + key
        if isinstance(value, dict):
            anchor_paths(value, schema, root, dotted + ".")
        elif isinstance(value, str) and dotted in schema and takes_paths(schema[dotted]) and value \
                and not os.path.isabs(value) and not value.startswith("${"):
            data[key] = os.path.join(os.path.abspath(root), value)
    return data


def locate_config(path, root):
    """--config as given (from the current folder), else under the project's `root`."""
    if root is None or os.path.isabs(path) or os.path.isfile(path):
        return path
    under_root = os.path.join(root, path)
    return under_root if os.path.isfile(under_root) else path


def _in_broken_section(data, reference):
    """Whether a reference points into a section that is not a mapping (`cam:` left empty): the schema names
    that mistake, so the reference's own error would say it twice."""
    section = reference.split(".")[0]
    return section in data and not isinstance(data[section], dict)


def load_config(path, schema, overrides=(), root=None, config_dir=None):
    """Read the YAML at `path` (with its bases), apply `key=value` overrides, resolve `${...}`
    references and check every key against `schema` -> Config; one ConfigError naming every mistake.

    root: the project's root (the file's relative paths are relative to it; --config is looked for there
    too); config_dir: where bases not found next to a file are looked for."""
    path = locate_config(path, root)
    data = read_yaml(path, (config_dir,) if config_dir else ())
    if root is not None:
        anchor_paths(data, schema, root)
    found = []
    for assignment in overrides:
        try:
            apply_override(data, assignment, schema)
        except ConfigError as error:
            found.append(str(error))
    reference_errors = {}
    resolve_references(data, errors=reference_errors)
    found += [message for reference, message in reference_errors.items() if not _in_broken_section(data, reference)]
    validate(data, schema, path, {assignment.split("=", 1)[0].strip(): assignment for assignment in overrides},
             found)
    return Config(data)
