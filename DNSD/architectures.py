"""The networks a run can train (model.arch), each in a module of its own, built from the model config."""
from DNSD.diracnet import DiracNet
from DNSD.resnet import CifarResNet
from DNSD.vanillanet import VanillaNet


def build_model(model_config, num_classes):
    config = model_config
    if config.arch == "resnet":
        return CifarResNet(config.depth, num_classes, config.survival_last, config.survival_mode,
                           config.residual_scaling, config.drop_mode)
    if config.arch == "diracnet":
        return DiracNet(config.depth, config.width, num_classes)
    if config.arch == "vanillanet":
        return VanillaNet(config.depth, config.width, num_classes, config.deep_training_epochs)
    raise ValueError(f"model.arch {config.arch!r} is not a known architecture")
