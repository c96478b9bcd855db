"""The one typed configuration of a run.

Every hyperparameter is declared once, below, with its default (the paper's recipe), its help text and what values
it allows. The YAML files, the command-line flags, the `-o section.key=value` overrides and the help text are all
derived from these declarations. Precedence: defaults < `--config FILE.yaml` < flags < `-o` overrides.
"""
import argparse
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from typing import List, Optional

import yaml

from DNSD.errors import InputError
from DNSD.untrusted import regular_file


def option(default, help, *, choices=None, check=None, may_change=False, archs=None, datasets=None):
    """A config field with its help text.

    choices: the allowed values; check: (predicate, description of the allowed values);
    may_change: the field may differ from a checkpoint's when evaluating or resuming it, because it does not change
    what is computed (where the data or the run lives, the device, how often to save);
    archs: the model.arch values that use the field; with any other, it must keep its default;
    datasets: the same for data.dataset.
    """
    metadata = {"help": help, "choices": choices, "check": check, "may_change": may_change, "archs": archs,
                "datasets": datasets}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _ordered_fractions(values):
    return 1 <= len(values) and all(0 < v <= 1 for v in values) and all(a < b for a, b in zip(values, values[1:]))


NORMALIZATIONS = ("pixel", "channel")


@dataclass
class DataConfig:
    dataset: str = option("cifar10", "data set: CIFAR-10, CIFAR-100 with its 100 fine labels, or SVHN",
                          choices=("cifar10", "cifar100", "svhn"))
    data_file: Optional[str] = option(
        None,
        "path to the data set's archive in the official layout (cifar-10-python.tar.gz, cifar-100-python.tar.gz), "
        "or for SVHN the folder of train_32x32.mat, test_32x32.mat and extra_32x32.mat; unset: Paddle's dataset "
        "cache, downloaded once and md5-checked",
        may_change=True,
    )
    val_size: int = option(5000, "training images held out for validation (the paper: 5,000 of 50,000 for CIFAR; "
                                 "for SVHN 6,000, each class equally, two thirds from train and one third from extra)",
                           check=(lambda v: v >= 1, "an integer >= 1"))
    train_images: int = option(0, "train on the first N images of the training split, each class equally, for a "
                                  "quick check on real data; validation and test stay whole; 0: the whole split",
                               check=(lambda v: v >= 0, "an integer >= 0"))
    extra: bool = option(True, "SVHN: train on the 531,131 images of the extra set too, as the paper does",
                         datasets=("svhn",))
    normalization: str = option(
        "pixel",
        "pixel: subtract the per-pixel mean image of the training split, divide by one global std (the authors' code); "
        "channel: per-channel mean and std",
        choices=NORMALIZATIONS,
    )
    augment: bool = option(True, "shift by up to 4 pixels with zero fill and flip horizontally (training only)")
    prefetch: int = option(2, "training batches prepared ahead by a thread while the current step runs; 0: prepare "
                              "each batch when it is needed", check=(lambda v: 0 <= v <= 64, "an integer from 0 to 64"),
                           may_change=True)
    pin_memory: bool = option(True, "on a GPU, put batches in page-locked memory so that copies to the device run "
                                    "asynchronously", may_change=True)


SURVIVAL_MODES = ("linear", "uniform")

# The depths each architecture can be built with (checked against model.arch).
# The depths each architecture can be built with (checked against model.arch); the largest are about twice what a
# GPU holds at batch 128 (ResNet-1202), so that a typing slip never builds a network that takes the machine's memory.
DEPTHS = {
    "resnet": (lambda v: 8 <= v <= 2402 and (v - 2) % 6 == 0,
               "6n+2 with 1 <= n <= 400: 8, 20, 32, 44, 56, 110, 1202, ..."),
    "diracnet": (lambda v: 10 <= v <= 1204 and (v - 4) % 6 == 0, "6n+4 with 1 <= n <= 200: 10, 16, 22, 28, 34, ..."),
    "vanillanet": (lambda v: 3 <= v <= 64, "3 to 64 (the paper's VanillaNet-5 to -13)"),
}
ARCHITECTURES = tuple(DEPTHS)


def check_depth(arch, depth):
    """ValueError unless an architecture can be built with this depth (config validation says it as a user error)."""
    fits, allowed = DEPTHS[arch]
    if not fits(depth):
        raise ValueError(f"{arch} depth must be {allowed}; got {depth}")


@dataclass
class ModelConfig:
    arch: str = option("resnet", "network: resnet (ResNet 6n+2 with stochastic depth), diracnet (DiracNet 6n+4-k), "
                                 "vanillanet (VanillaNet-d for 32x32 images)", choices=ARCHITECTURES)
    depth: int = option(110, "layers: ResNet 6n+2 (110: 3 stages of 18 BasicBlocks), DiracNet 6n+4, VanillaNet d "
                             "(checked against model.arch)")
    width: int = option(1, "channel multiplier k: DiracNet 16k, 32k, 64k; VanillaNet 32k, 64k, 128k, 256k",
                        check=(lambda v: 1 <= v <= 16, "an integer from 1 to 16"), archs=("diracnet", "vanillanet"))
    survival_last: float = option(0.5,
                                  "survival probability p_L of the last block; 1 gives the constant-depth baseline",
                                  check=(lambda v: 0 < v <= 1, "a probability in (0, 1]"), archs=("resnet",))
    survival_mode: str = option("linear",
                                "linear: p_l decays from 1 to p_L over the blocks; uniform: p_l = p_L for all",
                                choices=SURVIVAL_MODES, archs=("resnet",))
    drop_mode: str = option(
        "batch",
        "batch: one gate per block and mini-batch, a dropped block is skipped (the paper); sample: one gate per block "
        "and example, every block computed (timm's drop_path)",
        choices=("batch", "sample"), archs=("resnet",))
    residual_scaling: str = option(
        "test",
        "test: scale each residual by p_l at evaluation (the authors); train: divide it by p_l in training (inverted)",
        choices=("test", "train"), archs=("resnet",))
    bn_weight_init: str = option(
        "ones",
        "ones: batch-norm weights start at 1 (fb.resnet.torch and most ports); uniform: U[0, 1), as Torch 7's "
        "SpatialBatchNormalization in the authors' code",
        choices=("ones", "uniform"), archs=("resnet",))
    shortcut_downsample: str = option(
        "average",
        "average: the downsampling shortcut averages each 2x2 window (the authors' 2017 fix); subsample: it keeps the "
        "top-left pixel, as the code behind the published numbers did",
        choices=("average", "subsample"), archs=("resnet",))
    deep_training_epochs: int = option(
        100, "VanillaNet deep training: epochs over which each layer's activation anneals from ReLU to identity",
        check=(lambda v: v >= 1, "an integer >= 1"), archs=("vanillanet",))


@dataclass
class TrainConfig:
    epochs: int = option(500, "training epochs", check=(lambda v: 1 <= v <= 100_000, "an integer from 1 to 100,000"))
    batch_size: int = option(128, "mini-batch size (also used for evaluation)",
                             check=(lambda v: 1 <= v <= 65_536, "an integer from 1 to 65,536"))
    lr: float = option(0.1, "initial learning rate", check=(lambda v: v > 0, "a number > 0"))
    lr_decay_at: List[float] = option(
        [0.5, 0.75],
        "fractions of the epochs from which the learning rate is multiplied by lr_decay_factor "
        "(0.5, 0.75 of 500: epochs 250 and 375)",
        check=(_ordered_fractions, "one or more increasing fractions in (0, 1], e.g. 0.5,0.75"),
    )
    lr_decay_factor: float = option(0.1, "factor applied to the learning rate at each lr_decay_at",
                                    check=(lambda v: 0 < v < 1, "a number in (0, 1)"))
    momentum: float = option(0.9, "SGD momentum", check=(lambda v: 0 <= v < 1, "a number in [0, 1)"))
    nesterov: bool = option(True, "Nesterov momentum")
    weight_decay: float = option(1e-4, "L2 weight decay, applied to every parameter as in the authors' optimiser",
                                 check=(lambda v: v >= 0, "a number >= 0"))
    amp: str = option("off", "automatic mixed precision on the GPU: float16 (with dynamic loss scaling) or bfloat16",
                      choices=("off", "float16", "bfloat16"))


@dataclass
class RunConfig:
    seed: int = option(0, "the one seed of every random choice: split, shuffling, augmentation, gates, initialisation",
                       check=(lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"))
    output_dir: Optional[str] = option(
        None, "folder of the run: config, metrics, logs, checkpoints; unset: runs/CONFIG-MODEL, plus each flag that "
              "changes the model or the recipe (runs/quick-ResNet-8-epochs=3), or that name numbered (-2, -3, ...) "
              "where it holds a run", may_change=True)
    device: str = option("auto", "auto: the GPU when Paddle sees one, else the CPU", choices=("auto", "cpu", "gpu"),
                         may_change=True)
    deterministic: bool = option(False, "ask cuDNN for deterministic kernels on the GPU (slower); CPU runs are "
                                        "deterministic anyway", may_change=True)
    cudnn_exhaustive_search: bool = option(False, "let cuDNN time every convolution algorithm and keep the fastest "
                                                  "(GPU only)", may_change=True)
    cpu_threads: int = option(1, "CPU threads for Paddle; 0: every core this process may use (a second thread was "
                                 "as often slower as faster on this project's 2-vCPU machines: BENCHMARKS.md)",
                              check=(lambda v: 0 <= v <= 1024, "an integer from 0 to 1024"), may_change=True)
    checkpoint_every: int = option(1, "epochs between resumable checkpoints (last.pdckpt); the last epoch always saves",
                                   check=(lambda v: v >= 1, "an integer >= 1"), may_change=True)
    checkpoint_every_steps: int = option(0, "also save last.pdckpt every this many steps; 0: only at epoch ends",
                                         check=(lambda v: v >= 0, "an integer >= 0"), may_change=True)
    overwrite: bool = option(False, "replace a run already in output_dir instead of refusing", may_change=True)
    test_every_epoch: bool = option(
        True, "also measure the test error at each epoch's end, as the authors' code does, for the paper's Figure 3 "
              "(dnsd plot --figure test-error); it never chooses the checkpoint", may_change=True)
    eval_every_steps: int = option(
        0, "also measure the validation and test error every this many steps (the authors' 200 for SVHN), and keep "
           "as best.pdckpt the point with the lowest validation error; 0: validate at epoch ends only",
        check=(lambda v: v >= 0, "an integer >= 0"))
    best_on_tie: str = option(
        "earliest",
        "which of the epochs that share the lowest validation error best.pdckpt keeps: the earliest or the latest "
        "(the authors' rule is not published; with 5,000 validation images ties are frequent late in training)",
        choices=("earliest", "latest"))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def model_keys(arch):
    """The model config keys an architecture is built from: its constructor's keyword arguments."""
    return [f.name for f in dataclasses.fields(ModelConfig)
            if f.name != "arch" and (f.metadata["archs"] is None or arch in f.metadata["archs"])]


def config_fields():
    """Every config field as (section, field, type), in declaration order."""
    for section in dataclasses.fields(Config):
        types = typing.get_type_hints(section.type)
        for f in dataclasses.fields(section.type):
            yield section.name, f, types[f.name]


def fields_by_key():
    """{"section.key": (field, type)} for every config field."""
    return {f"{section}.{f.name}": (f, kind) for section, f, kind in config_fields()}


def flag_name(f):
    return "--" + f.name.replace("_", "-")


def _describe(f):
    choices, check = f.metadata["choices"], f.metadata["check"]
    if choices:
        return "one of " + ", ".join(choices)
    if check:
        return check[1]
    return None


MAX_INT = 10**10  # no key needs more: seeds stay below 2^32, and larger numbers only overflow what uses them
MAX_TEXT = 4096  # the longest value a flag, -o or a YAML key may give


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
    if kind == List[float] and isinstance(value, list) and len(value) <= 100:
        return [_convert(v, float, key) for v in value]
    expected = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
                Optional[str]: "a string", List[float]: "a list of numbers"}[kind]
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
    if kind == List[float]:
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
        raise InputError(f"config{where} must be a mapping of sections ({', '.join(_sections())}), got {nested!r}")
    for section, entries in nested.items():
        if section not in _sections():
            raise InputError(_unknown_key_message(str(section), list(_sections()), where))
        if not isinstance(entries, dict):
            raise InputError(f"config section {section}{where} must be a mapping of keys, got {entries!r}")
        for key, value in entries.items():
            set_value(values, f"{section}.{key}", value, where)
    return values


def set_value(values, dotted_key, value, where=""):
    known = fields_by_key()
    if dotted_key not in known:
        raise InputError(_unknown_key_message(dotted_key, list(known), where))
    values[dotted_key] = _convert(value, known[dotted_key][1], dotted_key)


def _sections():
    return {section.name: section.type for section in dataclasses.fields(Config)}


def build_config(values):
    """A validated Config from defaults updated by a flat {"section.key": value} mapping."""
    sections = {name: {} for name in _sections()}
    for dotted_key, value in values.items():
        section, key = dotted_key.split(".", 1)
        sections[section][key] = value
    config = Config(**{name: cls(**sections[name]) for name, cls in _sections().items()})
    for section, f, _ in config_fields():
        value = getattr(getattr(config, section), f.name)
        choices, check = f.metadata["choices"], f.metadata["check"]
        if (choices and value not in choices) or (check and not check[0](value)):
            raise InputError(f"config key {section}.{f.name} ({flag_name(f)}): got {value!r}, expected {_describe(f)}")
    _check_architecture(config)
    _check_scope(config, "datasets", config.data.dataset, "--dataset")
    return config


def _check_architecture(config):
    """The depth must suit model.arch, and keys of other architectures must keep their defaults."""
    arch = config.model.arch
    fits, allowed = DEPTHS[arch]
    if not fits(config.model.depth):
        raise InputError(f"config key model.depth (--depth): got {config.model.depth}, but --arch {arch} needs "
                         f"{allowed}")
    _check_scope(config, "archs", arch, "--arch")


def _check_scope(config, scope, chosen, flag):
    """Keys that apply to some values of another key (metadata scope "archs": model.arch, "datasets": data.dataset)
    must keep their defaults with any other value of it."""
    for section, f, _ in config_fields():
        allowed = f.metadata[scope]
        if allowed and chosen not in allowed and getattr(getattr(config, section), f.name) != _default(f):
            raise InputError(f"config key {section}.{f.name} ({flag_name(f)}) applies to {flag} {', '.join(allowed)} "
                             f"only; {flag} {chosen} does not use it (leave it out)")


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


def config_from_dict(nested, where=""):
    """A validated Config from a {section: {key: value}} mapping, such as the one stored in a checkpoint."""
    return build_config(apply_values({}, nested, where))


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
        allowed = _describe(f)
        help_text = f"{f.metadata['help']} [{section}.{f.name}; default: {_format_default(f)}"
        help_text += f"; {allowed}]" if allowed else "]"
        help_text = help_text.replace("%", "%%")
        if kind is bool:
            groups[section].add_argument(flag_name(f), dest=f"{section}.{f.name}",
                                         action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                         help=help_text)
        else:
            groups[section].add_argument(flag_name(f), dest=f"{section}.{f.name}", default=argparse.SUPPRESS,
                                         metavar=f.name.upper(), help=help_text)


DEVICE_KEYS = ("run.device", "run.deterministic", "run.cudnn_exhaustive_search", "run.cpu_threads")


def device_keys(key, f):
    """The keys of where a model computes: what --mode predict, export and info take."""
    return key in DEVICE_KEYS


def data_and_device_keys(key, f):
    """The keys an evaluation of a checkpoint may set: the data file and where it computes."""
    return key == "data.data_file" or key in DEVICE_KEYS


def _default(f):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _format_default(f):
    default = _default(f)
    if isinstance(default, list):
        return ",".join(str(v) for v in default)
    return "unset" if default is None else str(default)


def explicit_values(args, overrides):
    """The flat {"section.key": value} mapping of the flags given on the command line, then the -o overrides."""
    kinds = fields_by_key()
    values = {}
    for dotted_key, (f, kind) in kinds.items():
        if hasattr(args, dotted_key):
            raw = getattr(args, dotted_key)
            value = raw if kind is bool else _parse_or_fail(raw, kind, f"{dotted_key} ({flag_name(f)})")
            set_value(values, dotted_key, value)
    for override in overrides or []:
        dotted_key, sep, text = override.partition("=")
        dotted_key = dotted_key.strip()
        if not sep:
            raise InputError(f"-o {override}: expected section.key=value, e.g. -o train.epochs=10")
        if dotted_key not in kinds:
            raise InputError(_unknown_key_message(dotted_key, list(kinds), " (in -o)"))
        set_value(values, dotted_key, _parse_or_fail(text, kinds[dotted_key][1], dotted_key))
    return values


def _parse_or_fail(text, kind, key):
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


def for_checkpoint(config, stated, purpose):
    """A checkpoint's config with the stated values applied; a stated value that would change what was trained is
    refused, naming the key."""
    current = _flat(config)
    for key, value in stated.items():
        if value != current[key] and not fields_by_key()[key][0].metadata["may_change"]:
            branch = " or continue in a new folder with --branch NEW_DIR" if purpose == "--resume" and \
                _branch_may_change(key) else ""
            raise InputError(f"{key} is {current[key]!r} in the checkpoint; {purpose} cannot change it to {value!r} "
                             f"(leave it out{branch})")
    return build_config({**current, **stated})


def _branch_may_change(key):
    """A branch continues the same model on the same data: it may change how training goes on, nothing else."""
    return key.startswith("train.") or key == "data.augment" or fields_by_key()[key][0].metadata["may_change"]


def for_branch(config, stated):
    """A checkpoint's config with the stated changes of a branch, and those changes as {key: {"from", "to"}}; a
    change to the model or the data is refused, naming the key."""
    current = _flat(config)
    changes = {}
    for key, value in stated.items():
        if value != current[key] and key != "run.output_dir":
            if not _branch_may_change(key):
                raise InputError(f"{key} is {current[key]!r} in the checkpoint; a branch continues the same model on "
                                 f"the same data and cannot change it to {value!r} (leave it out)")
            changes[key] = {"from": current[key], "to": value}
    return build_config({**current, **stated}), changes


def experiment(nested):
    """What a {section: {key: value}} config computes, as {"section.key": value}: everything but the seed and the keys
    that may change without changing the result (where the run lives, the device, the checkpoint intervals). Runs
    with equal experiments are repeats of one configuration."""
    return {f"{section}.{key}": value for section, entries in nested.items() for key, value in entries.items()
            if f"{section}.{key}" != "run.seed" and not fields_by_key()[f"{section}.{key}"][0].metadata["may_change"]}


def _flat(config):
    return {f"{section}.{key}": value for section, entries in config.to_dict().items()
            for key, value in entries.items()}
