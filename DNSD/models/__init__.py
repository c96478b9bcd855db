"""The networks a run can train (model.arch), each in a module of its own, built from the model config."""
from DNSD.schema import model_keys
from DNSD.models.diracnet import DiracNet
from DNSD.models.resnet import CifarResNet
from DNSD.models.vanillanet import VanillaNet

ARCHITECTURES = {"resnet": CifarResNet, "diracnet": DiracNet, "vanillanet": VanillaNet}


def build_model(model_config, num_classes):
    """The network model.arch names, its constructor given by keyword the model keys that architecture uses."""
    keys = {key: getattr(model_config, key) for key in model_keys(model_config.arch)}
    return ARCHITECTURES[model_config.arch](num_classes=num_classes, **keys)


def model_title(model_config):
    return ARCHITECTURES[model_config.arch].title(model_config)
