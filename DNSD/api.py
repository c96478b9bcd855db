"""DNSD from Python: a config, a model, a trained checkpoint, its evaluation and its predictions, a call each (see
DNSD/__init__)."""
from DNSD.config import HUB_ANY_CHECKPOINT, apply_values, build_config, hub_entry, load_yaml, set_value
from DNSD.datasets import num_classes
from DNSD.errors import InputError
from DNSD.inference.runtimes import ExportedModel, TrainedModel, open_model
from DNSD.models import build_model as build_network
from DNSD.reporting.reports import checkpoint_report
from DNSD.schema import Config

__all__ = ["load_config", "build_model", "load_checkpoint", "load_model", "evaluate", "hub_model", "hub_checkpoint",
           "TrainedModel", "ExportedModel"]


def load_config(path=None, overrides=None):
    """The validated Config of a YAML file (a path, or the name of a shipped config such as "resnet110_sd"; None: the
    paper's defaults) with overrides applied, given as {"section.key": value}, e.g. {"train.epochs": 10}."""
    values = apply_values({}, load_yaml(path), where=f" in {path}") if path else {}
    for key, value in (overrides or {}).items():
        set_value(values, key, value)
    return build_config(values)


def build_model(config=None):
    """The untrained network of a Config (default: the paper's ResNet-110 with stochastic depth), with as many outputs
    as its data set has classes."""
    config = config or Config()
    return build_network(config.model, num_classes(config.data.dataset))


def load_checkpoint(path):
    """The model of a DNSD checkpoint (.pdckpt), in evaluation mode: every block active, each residual scaled by its
    survival probability."""
    return open_model(checkpoint=path)


def load_model(path, engine=None, device="auto"):
    """A checkpoint (.pdckpt) or an exported model (dnsd export's PREFIX, or PREFIX.onnx), ready to predict as
    TrainedModel does; an exported one is run by engine (onnxruntime, paddle-inference or dygraph; default: the
    fastest that runs it correctly here)."""
    if path.endswith(".pdckpt"):
        return open_model(checkpoint=path, engine=engine, stated={"run.device": device})
    return open_model(path=path, engine=engine, stated={"run.device": device})


def evaluate(checkpoint_path, split="test", data_file=None):
    """Evaluate a checkpoint on the test (or validation) split as `--mode eval` does, writing the same report beside
    it; returns {"error", "accuracy", "per_class_accuracy", "images", ...}, errors in percent."""
    return checkpoint_report(checkpoint_path, split, {"data.data_file": data_file} if data_file else {})


def hub_model(config_name, checkpoint=None):
    """paddle.hub's entry config_name (hubconf.py): the network of that shipped config, freshly initialised, or the
    network of checkpoint in evaluation mode (its .classes and .normalize feed it as TrainedModel.predict does); a
    checkpoint of another model is refused."""
    config = load_config(config_name)
    if checkpoint is None:
        return build_model(config)
    trained = load_checkpoint(checkpoint)
    if trained.config.to_dict()["model"] != config.to_dict()["model"] or \
            trained.config.data.dataset != config.data.dataset:
        entry = hub_entry(trained.config.to_dict()["model"], trained.config.data.dataset) or HUB_ANY_CHECKPOINT
        raise InputError(f"{checkpoint} holds a {trained.model.name()} of {trained.config.data.dataset}, not the "
                         f"model of {config_name}; load it with the entry {entry!r}")
    return hub_network(trained)


def hub_checkpoint(checkpoint):
    """paddle.hub's entry from_checkpoint: the network of any DNSD checkpoint, whatever its config, in evaluation
    mode with its .classes and .normalize."""
    return hub_network(load_checkpoint(checkpoint))


def hub_network(trained):
    trained.model.classes, trained.model.normalize = trained.classes, trained.normalize
    return trained.model
