"""The networks a run can train (model.arch, declared in DNSD/architectures.py), each in a module of its own and
built by its from_config."""
from DNSD.models.diracnet import DiracNet
from DNSD.models.resnet import CifarResNet
from DNSD.models.vanillanet import VanillaNet

NETWORKS = {"resnet": CifarResNet, "diracnet": DiracNet, "vanillanet": VanillaNet}


def build_model(model_config, num_classes):
    return NETWORKS[model_config.arch].from_config(model_config, num_classes)


def model_title(model_config):
    return NETWORKS[model_config.arch].title(model_config)
