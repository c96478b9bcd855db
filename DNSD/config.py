"""Reading a run's configuration (schema.py declares it): YAML files, flags and `-o section.key=value` overrides
into one validated Config. Precedence: defaults < `--config FILE.yaml` < flags < `-o` overrides.
"""
import argparse
import difflib
import math
import os
from typing import Optional

import yaml

from DNSD.architectures import ARCHITECTURES
from DNSD.errors import InputError
from DNSD.schema import (
    RENAMED_KEYS,
    Config,
    config_fields,
    default,
    describe,
    fields_by_key,
    flag_name,
    format_default,
    scope,
    sections,
)
from DNSD.untrusted import regular_file

MAX_INT = 10**10  # no key needs more: seeds stay below 2^32, and larger numbers only overflow what uses them
MAX_TEXT = 4096  # the longest value a flag, -o or a YAML key may give
SWEEP_SECTION = "sweep"  # a config file's grid of values for dnsd train (sweeps/grid.py), not config keys


def _convert(value, kind, key):
    """Check that a value has the field's type; ints are accepted where a float is expected."""
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        if not -MAX_INT < value < MAX_INT:
            raise InputError(f"config key {key}: got {value}, expected an integer of at most 10 digits")
        return value
    if kind is float and not isinstance(value, bool):
        number = _finite_float(value)
        if number is not None:
            return number
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise InputError(f"config key {key}: a value of {len(value):,} characters; at most {MAX_TEXT} are allowed")
    if kind is str and isinstance(value, str):
        return value
    if kind == Optional[str] and (value is None or isinstance(value, str)):
        return value or None
    if kind == list[float] and isinstance(value, list) and len(value) <= 100:
        return [_convert(v, float, key) for v in value]
    expected = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
                Optional[str]: "a string", list[float]: "a list of numbers"}[kind]
    raise InputError(f"config key {key}: got {value!r}, expected {expected}")


def _finite_float(value):
    """value as a finite float, or None. Strings count: YAML 1.1 reads 1e-4 (no dot) as a string."""
    if isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def parse_text(text, kind):
    """Turn the text of a flag or an -o override into a value of the field's type (strings stay as typed)."""
    if kind in (str, Optional[str]):
        return None if kind == Optional[str] and text.strip().lower() in ("", "null", "none") else text
    if kind == list[float]:
        items = text.strip().strip("[]").split(",")
        return [yaml.safe_load(item) for item in items if item.strip()]
    return yaml.safe_load(text)


def _unknown_key_message(key, known, where):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown config key {key}{where}{hint}"


def apply_values(values, nested, where=""):
    """Merge a {section: {key: value}} mapping (a YAML file) into a flat {"section.key": value} mapping."""
    if not isinstance(nested, dict):
        raise InputError(f"config{where} must be a mapping of sections ({', '.join(sections())}), got {nested!r}")
    for section, entries in nested.items():
        if section == SWEEP_SECTION:
            continue
        if section not in sections():
            raise InputError(_unknown_key_message(str(section), list(sections()), where))
        if not isinstance(entries, dict):
            raise InputError(f"config section {section}{where} must be a mapping of keys, got {entries!r}")
        for key, value in entries.items():
            set_value(values, f"{section}.{key}", value, where)
    return values


def set_value(values, dotted_key, value, where=""):
    dotted_key = RENAMED_KEYS.get(dotted_key, dotted_key)
    known = fields_by_key()
    if dotted_key not in known:
        raise InputError(_unknown_key_message(dotted_key, list(known), where))
    values[dotted_key] = _convert(value, known[dotted_key][1], dotted_key)


def build_config(values):
    """A validated Config from defaults updated by a flat {"section.key": value} mapping."""
    given = {name: {} for name in sections()}
    for dotted_key, value in values.items():
        section, key = dotted_key.split(".", 1)
        given[section][key] = value
    config = Config(**{name: cls(**given[name]) for name, cls in sections().items()})
    for section, f, _ in config_fields():
        value = getattr(getattr(config, section), f.name)
        choices, check = f.metadata["choices"], f.metadata["check"]
        if (choices and value not in choices) or (check and not check[0](value)):
            raise InputError(f"config key {section}.{f.name} ({flag_name(f)}): got {value!r}, expected {describe(f)}")
    _check_scopes(config)
    return config


def _check_scopes(config):
    """The depth must suit model.arch, and a key that applies to other architectures or data sets only must keep its
    default."""
    arch = config.model.arch
    if not ARCHITECTURES[arch].fits(config.model.depth):
        raise InputError(f"config key model.depth (--depth): got {config.model.depth}, but --arch {arch} needs "
                         f"{ARCHITECTURES[arch].depths}")
    chosen = {"--arch": arch, "--dataset": config.data.dataset}
    for section, f, _ in config_fields():
        applies = scope(section, f)
        if not applies or getattr(getattr(config, section), f.name) == default(f):
            continue
        flag, values = applies
        if chosen[flag] not in values:
            raise InputError(f"config key {section}.{f.name} ({flag_name(f)}) applies to {flag} {', '.join(values)} "
                             f"only; {flag} {chosen[flag]} does not use it (leave it out)")


def shipped_configs_dir():
    """The folder of the configs that come with DNSD: inside the installed package (pyproject.toml ships configs/
    as DNSD/configs), or the repository's configs/ beside the package."""
    package = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(package, "configs"), os.path.join(os.path.dirname(package), "configs")):
        if os.path.isdir(folder):
            return folder
    return None


def shipped_configs():
    """The names of the shipped configs, e.g. ['diracnet34_2', ..., 'resnet110_sd', ...]."""
    folder = shipped_configs_dir()
    names = os.listdir(folder) if folder else []
    return sorted(name[: -len(".yaml")] for name in names if name.endswith(".yaml"))


def resolve_config_path(path):
    """The file a --config value names: the path itself where it exists; else, for a bare name or configs/NAME, the
    shipped config of that name, so that `--config configs/quick.yaml` and `--config quick` work wherever DNSD is
    installed, whatever the working folder."""
    if os.path.exists(path) or os.path.dirname(path) not in ("", "configs") or not shipped_configs_dir():
        return path
    name = os.path.basename(path)
    shipped = os.path.join(shipped_configs_dir(), name if name.endswith(".yaml") else f"{name}.yaml")
    return shipped if os.path.isfile(shipped) else path


MAX_CONFIG_BYTES = 1 << 20  # a config is a few lines; a larger file is not one
NO_ALIASES = "aliases are not allowed in a DNSD config"


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a config never needs them, and a few hundred bytes of nested aliases
    expand to gigabytes (the "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, NO_ALIASES, self.peek_event().start_mark)
        return super().compose_node(parent, index)


def load_yaml(path):
    """The {section: {key: value}} mapping of a YAML config file (a shipped config by name, see resolve_config_path):
    at most 1 MiB of UTF-8 text, without aliases."""
    path = regular_file(resolve_config_path(path), "config file")
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise InputError(f"cannot read config file {path}: {error.strerror}; check the --config path, or name a "
                         f"shipped config: {', '.join(shipped_configs())}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InputError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB, so it is not a DNSD "
                         "config; pass a YAML file of sections and keys")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise InputError(f"config file {path} is not UTF-8 text; pass a YAML file of sections and keys")
    try:
        nested = yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError:
        raise InputError(f"config file {path} nests deeper than Python can read; a config is sections of "
                         "keys") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        if getattr(error, "problem", None) == NO_ALIASES:
            raise InputError(f"config file {path} uses a YAML alias{line}; {NO_ALIASES}: write the values "
                             "out") from None
        raise InputError(f"config file {path} is not valid YAML{line}; fix its syntax") from None
    return nested or {}


# What DNSD computed before these keys existed, and no longer by default (1.5.0): a stored config that lacks one was
# trained so (the model keys: ResNets only).
BEFORE_THE_KEY = {"model.bn_weight_init": "ones", "model.shortcut_downsample": "average",
                  "train.sync_batch_norm": False}


def config_from_dict(nested, where=""):
    """A validated Config from a {section: {key: value}} mapping that DNSD stored (a checkpoint's, a run folder's
    config.yaml, a sweep's, an export's); a key the mapping lacks is its default, or its BEFORE_THE_KEY value."""
    values = apply_values({}, nested, where)
    resnet = values.get("model.arch", "resnet") == "resnet"
    before = {key: value for key, value in BEFORE_THE_KEY.items() if resnet or not key.startswith("model.")}
    return build_config({**before, **values})


def shipped_config(name):
    """A shipped config (configs/NAME.yaml) as the Config it trains: written for this DNSD, so no BEFORE_THE_KEY."""
    return build_config(apply_values({}, load_yaml(name)))


HUB_ANY_CHECKPOINT = "from_checkpoint"  # paddle.hub's entry for a checkpoint of any config (hubconf.py)


def hub_configs():
    """The shipped configs of one model each (not a sweep's), as paddle.hub offers them (hubconf.py)."""
    return [name for name in shipped_configs() if SWEEP_SECTION not in load_yaml(name)]


def hub_entry(model, dataset):
    """The first shipped config that trains this model section ({key: value}) on this data set, or None."""
    for name in hub_configs():
        config = shipped_config(name)
        if config.to_dict()["model"] == model and config.data.dataset == dataset:
            return name
    return None


def add_config_flags(parser, which=lambda key, f: True):
    """--config, -o and one flag per config field that `which(key, field)` admits, grouped by section; unset flags
    stay out of the namespace so that they do not hide the YAML file."""
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML config file, e.g. configs/resnet110_sd.yaml, or the name of a shipped config: "
                             f"{', '.join(shipped_configs())}")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="set one config key, e.g. -o train.epochs=10 (repeatable; applied last)")
    groups = {}
    for section, f, kind in config_fields():
        if not which(f"{section}.{f.name}", f):
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} keys (also -o {section}.KEY=VALUE)")
        allowed = describe(f)
        help_text = f"{f.metadata['help']} [{section}.{f.name}; default: {format_default(f)}"
        help_text += f"; {allowed}]" if allowed else "]"
        help_text = help_text.replace("%", "%%")
        if kind is bool:
            groups[section].add_argument(flag_name(f), dest=f"{section}.{f.name}",
                                         action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                         help=help_text)
        else:
            groups[section].add_argument(flag_name(f), dest=f"{section}.{f.name}", default=argparse.SUPPRESS,
                                         metavar=f.name.upper(), help=help_text)


def flat_config(config):
    """A Config, or its {section: {key: value}} dict (of any DNSD version: keys renamed since read as their new
    names), as {"section.key": value}."""
    nested = config if isinstance(config, dict) else config.to_dict()
    return {RENAMED_KEYS.get(f"{section}.{key}", f"{section}.{key}"): value
            for section, entries in nested.items() for key, value in entries.items()}


def explicit_values(args, overrides):
    """The flat {"section.key": value} mapping of the flags given on the command line, then the -o overrides."""
    kinds = fields_by_key()
    values = {}
    for dotted_key, (f, kind) in kinds.items():
        if hasattr(args, dotted_key):
            raw = getattr(args, dotted_key)
            value = raw if kind is bool else parse_value(raw, kind, f"{dotted_key} ({flag_name(f)})")
            set_value(values, dotted_key, value)
    for override in overrides or []:
        dotted_key, sep, text = override.partition("=")
        dotted_key = dotted_key.strip()
        if not sep:
            raise InputError(f"-o {override}: expected section.key=value, e.g. -o train.epochs=10")
        dotted_key = RENAMED_KEYS.get(dotted_key, dotted_key)
        if dotted_key not in kinds:
            raise InputError(_unknown_key_message(dotted_key, list(kinds), " (in -o)"))
        set_value(values, dotted_key, parse_value(text, kinds[dotted_key][1], dotted_key))
    return values


def parse_value(text, kind, key):
    """parse_text, or an InputError naming the key where YAML cannot read the text."""
    try:
        return parse_text(text, kind)
    except yaml.YAMLError:
        raise InputError(f"config key {key}: cannot read the value {text!r}") from None


def stated_values(config_file, args, overrides):
    """The flat {"section.key": value} mapping of what the user stated: the config file, then flags, then -o."""
    values = {}
    if config_file:
        apply_values(values, load_yaml(config_file), where=f" in {config_file}")
    values.update(explicit_values(args, overrides))
    return values
