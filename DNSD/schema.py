"""The schema of a run's configuration: every hyperparameter declared once, with its default (the paper's recipe),
its help text and what values it allows. The YAML files, the flags, `-o section.key=value` and the help text all
derive from these declarations (config.py reads them; docs/configuration.md is generated from them)."""
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Optional

import yaml

from DNSD.architectures import ARCHITECTURES, architectures_reading

# When a key may change, declared with each key (changes.py alone reads these):
FIXED = "fixed"  # what a run computes from its first step: a resume, a branch and an evaluation keep it
TRAINING = "training"  # how training goes on: a branch may change it, a resume keeps it
SETTING = "setting"  # where a run lives, how it saves and reports: may change on any resume or evaluation
DEVICE = "device"  # a setting of where a model computes, which every command that computes takes
CHANGES = (FIXED, TRAINING, SETTING, DEVICE)


def option(default, help, *, choices=None, check=None, changes=FIXED, sweep=None, per_run=False, datasets=None):
    """A config field with its help text.

    choices: the allowed values; check: (predicate, description of the allowed values);
    changes: when the key may change (FIXED, TRAINING, SETTING, DEVICE above); sweep: why it cannot vary within a
    sweep, where it cannot for a reason of its own; per_run: each run of a sweep has its own value, which the
    sweep sets and which does not make two runs different configurations;
    datasets: the data.dataset values that use the field; with any other, it must keep its default (which
    architectures use a model key, architectures.py says).
    """
    assert changes in CHANGES, changes
    metadata = {"help": help, "choices": choices, "check": check, "changes": changes, "sweep": sweep,
                "per_run": per_run, "datasets": datasets}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _ordered_fractions(values):
    return len(values) >= 1 and all(0 < v <= 1 for v in values) and all(a < b for a, b in zip(values, values[1:]))


NORMALIZATIONS = ("pixel", "channel")


@dataclass
class DataConfig:
    dataset: str = option("cifar10", "data set: CIFAR-10, CIFAR-100 with its 100 fine labels, or SVHN",
                          choices=("cifar10", "cifar100", "svhn"),
                          sweep="every run of a sweep trains on one data set; start one sweep per data set")
    data_file: Optional[str] = option(
        None,
        "path to the data set's archive in the official layout (cifar-10-python.tar.gz, cifar-100-python.tar.gz), "
        "or for SVHN the folder of train_32x32.mat, test_32x32.mat and extra_32x32.mat; unset: Paddle's dataset "
        "cache, downloaded once and md5-checked",
        changes=SETTING, sweep="every run of a sweep trains on one archive",
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
    augment: bool = option(True, "shift by up to 4 pixels with zero fill and flip horizontally (training only)",
                           changes=TRAINING)
    prefetch: int = option(2, "training batches prepared ahead by a thread while the current step runs; 0: prepare "
                              "each batch when it is needed", check=(lambda v: 0 <= v <= 64, "an integer from 0 to 64"),
                           changes=SETTING)
    pin_memory: bool = option(True, "on a GPU, put batches in page-locked memory so that copies to the device run "
                                    "asynchronously", changes=SETTING)


SURVIVAL_MODES = ("linear", "uniform")


@dataclass
class ModelConfig:
    arch: str = option("resnet", "network: " + ", ".join(f"{name} ({architecture.summary})"
                                                         for name, architecture in ARCHITECTURES.items()),
                       choices=tuple(ARCHITECTURES))
    depth: int = option(110, "layers: ResNet 6n+2 (110: 3 stages of 18 BasicBlocks), DiracNet 6n+4, VanillaNet d "
                             "(checked against model.arch)")
    width: int = option(1, "channel multiplier k: DiracNet 16k, 32k, 64k; VanillaNet 32k, 64k, 128k, 256k",
                        check=(lambda v: 1 <= v <= 16, "an integer from 1 to 16"))
    survival_last: float = option(0.5,
                                  "survival probability p_L of the last block; 1 gives the constant-depth baseline",
                                  check=(lambda v: 0 < v <= 1, "a probability in (0, 1]"))
    survival_mode: str = option("linear",
                                "linear: p_l decays from 1 to p_L over the blocks; uniform: p_l = p_L for all",
                                choices=SURVIVAL_MODES)
    drop_mode: str = option(
        "batch",
        "batch: one gate per block and mini-batch, a dropped block is skipped (the paper); sample: one gate per block "
        "and example, every block computed (timm's drop_path)",
        choices=("batch", "sample"))
    residual_scaling: str = option(
        "test",
        "test: scale each residual by p_l at evaluation (the authors); train: divide it by p_l in training (inverted)",
        choices=("test", "train"))
    bn_weight_init: str = option(
        "uniform",
        "uniform: batch-norm weights start U[0, 1), as Torch 7's SpatialBatchNormalization in the code behind the "
        "published numbers; ones: at 1 (fb.resnet.torch, most ports, the *_2017 configs)",
        choices=("uniform", "ones"))
    shortcut_downsample: str = option(
        "subsample",
        "subsample: the downsampling shortcut keeps the top-left pixel of each 2x2 window, as the code behind the "
        "published numbers did; average: it averages the window (the authors' 2017 fix, the *_2017 configs)",
        choices=("subsample", "average"))
    deep_training_epochs: int = option(
        100, "VanillaNet deep training: epochs over which each layer's activation anneals from ReLU to identity",
        check=(lambda v: v >= 1, "an integer >= 1"))


@dataclass
class TrainConfig:
    epochs: int = option(500, "training epochs", check=(lambda v: 1 <= v <= 100_000, "an integer from 1 to 100,000"),
                         changes=TRAINING)
    batch_size: int = option(128, "mini-batch size (also used for evaluation)",
                             check=(lambda v: 1 <= v <= 65_536, "an integer from 1 to 65,536"), changes=TRAINING)
    lr: float = option(0.1, "initial learning rate", check=(lambda v: v > 0, "a number > 0"), changes=TRAINING)
    lr_decay_at: list[float] = option(
        [0.5, 0.75],
        "fractions of the epochs from which the learning rate is multiplied by lr_decay_factor "
        "(0.5, 0.75 of 500: epochs 250 and 375)",
        check=(_ordered_fractions, "one or more increasing fractions in (0, 1], e.g. 0.5,0.75"),
        changes=TRAINING, sweep="it takes a list",
    )
    lr_decay_factor: float = option(0.1, "factor applied to the learning rate at each lr_decay_at",
                                    check=(lambda v: 0 < v < 1, "a number in (0, 1)"), changes=TRAINING)
    momentum: float = option(0.9, "SGD momentum", check=(lambda v: 0 <= v < 1, "a number in [0, 1)"),
                             changes=TRAINING)
    nesterov: bool = option(True, "Nesterov momentum", changes=TRAINING)
    weight_decay: float = option(1e-4, "L2 weight decay, applied to every parameter as in the authors' optimiser",
                                 check=(lambda v: v >= 0, "a number >= 0"), changes=TRAINING)
    amp: str = option("off", "automatic mixed precision on the GPU: float16 (with dynamic loss scaling) or bfloat16",
                      choices=("off", "float16", "bfloat16"), changes=TRAINING)
    sync_batch_norm: bool = option(
        True, "in a data-parallel run, batch norm's training statistics over the whole mini-batch, as the authors' "
              "one GPU computed them; off: each rank's share (faster)", changes=TRAINING)


@dataclass
class RunConfig:
    seed: int = option(0, "the one seed of every random choice: split, shuffling, augmentation, gates, initialisation",
                       check=(lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"), per_run=True,
                       sweep="the seeds are the sweep's --seeds")
    output_dir: Optional[str] = option(
        None, "folder of the run: config, metrics, logs, checkpoints; unset: runs/CONFIG-MODEL, plus each flag that "
              "changes the model or the recipe (runs/quick-ResNet-8-epochs=3), or that name numbered (-2, -3, ...) "
              "where it holds a run", changes=SETTING, per_run=True, sweep="the sweep names its runs' folders")
    device: str = option("auto", "auto: the GPU when Paddle sees one, else the CPU", choices=("auto", "cpu", "gpu"),
                         changes=DEVICE)
    deterministic: bool = option(False, "ask cuDNN for deterministic kernels on the GPU (slower); CPU runs are "
                                        "deterministic anyway", changes=DEVICE)
    cudnn_exhaustive_search: bool = option(False, "let cuDNN time every convolution algorithm and keep the fastest "
                                                  "(GPU only)", changes=DEVICE)
    cpu_threads: int = option(1, "CPU threads for Paddle; 0: every core this process may use (on this project's "
                                 "2-vCPU machines a second thread paid with DNSD's CPU operators, and was as often "
                                 "slower as faster with Paddle's kernels: BENCHMARKS.md)",
                              check=(lambda v: 0 <= v <= 1024, "an integer from 0 to 1024"), changes=DEVICE)
    cpu_numerics: str = option(
        "auto", "auto: onednn where DNSD's CPU operators can be built (a C++ compiler, an x86-64 CPU with AVX2), else "
                "portable; onednn: DNSD's own CPU convolution (through oneDNN) and batch norm, compiled once on first "
                "use, twice as fast as portable; portable: Paddle's CPU kernels; each of the two gives the same bits "
                "on every x86-64 CPU with AVX2 for the same seed, whatever its vendor or thread count; native: MKL's "
                "fastest code for this CPU (docs/reproducing.md)",
        choices=("auto", "onednn", "portable", "native"), changes=DEVICE)
    checkpoint_every: int = option(1, "epochs between resumable checkpoints (last.pdckpt); the last epoch always saves",
                                   check=(lambda v: v >= 1, "an integer >= 1"), changes=SETTING)
    keep_every: int = option(0, "also keep the checkpoint of every this many epochs, as epoch-K.pdckpt, for dnsd audit "
                                "to re-train epoch K+1 from; 0: keep only last.pdckpt and best.pdckpt",
                             check=(lambda v: v >= 0, "an integer >= 0"), changes=SETTING)
    checkpoint_every_iterations: int = option(
        0, "also save last.pdckpt every this many iterations (training steps counted across epochs); 0: only at "
           "epoch ends", check=(lambda v: v >= 0, "an integer >= 0"), changes=SETTING)
    overwrite: bool = option(False, "replace a run already in output_dir instead of refusing", changes=SETTING,
                             per_run=True)
    test_every_epoch: bool = option(
        True, "also measure the test error at each epoch's end, as the authors' code does, for the paper's Figure 3 "
              "(dnsd plot --figure test-error); it never chooses the checkpoint", changes=SETTING)
    eval_every_iterations: int = option(
        0, "also measure the validation and test error every this many iterations (training steps counted across "
           "epochs, the authors' 200 for SVHN), and keep as best.pdckpt the point with the lowest validation error; "
           "0: validate at epoch ends only",
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


def config_fields():
    """Every config field as (section, field, type), in declaration order."""
    for section in dataclasses.fields(Config):
        types = typing.get_type_hints(section.type)
        for f in dataclasses.fields(section.type):
            yield section.name, f, types[f.name]


# Keys of older DNSD versions, read as their new names: run folders, checkpoints and configs stay readable.
# 1.5.0: a step is a step within an epoch, an iteration a step counted across the run.
RENAMED_KEYS = {"run.checkpoint_every_steps": "run.checkpoint_every_iterations",
                "run.eval_every_steps": "run.eval_every_iterations"}


def fields_by_key():
    """{"section.key": (field, type)} for every config field."""
    return {f"{section}.{f.name}": (f, kind) for section, f, kind in config_fields()}


def flag_name(f):
    return "--" + f.name.replace("_", "-")


def describe(f):
    choices, check = f.metadata["choices"], f.metadata["check"]
    if choices:
        return "one of " + ", ".join(choices)
    if check:
        return check[1]
    return None


def scope(section, f):
    """(flag, values) where a key applies to some values of another key only (a model key to the architectures that
    read it, a data key to its data sets); None where it applies always."""
    if section == "model":
        readers = architectures_reading(f.name)
        return ("--arch", readers) if len(readers) < len(ARCHITECTURES) else None
    return ("--dataset", f.metadata["datasets"]) if f.metadata["datasets"] else None


def sections():
    return {section.name: section.type for section in dataclasses.fields(Config)}


def default(f):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def format_default(f):
    value = default(f)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "unset" if value is None else str(value)
