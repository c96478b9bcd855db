"""DNSD: Deep Networks with Stochastic Depth (Huang et al., 2016) on CIFAR, in PaddlePaddle.

The command line is `dnsd` (or `python -m DNSD`); from Python, the common cases take a call each:

    import DNSD
    config = DNSD.load_config("resnet110_sd", {"train.epochs": 10})   # a shipped config or a YAML path
    model = DNSD.build_model(config)                                # a paddle.nn.Layer, freshly initialised
    trained = DNSD.load_checkpoint("runs/resnet110_sd/best.pdckpt")  # .model in eval mode, .config, .classes
    probabilities = trained.predict(images)                         # uint8 (N, 32, 32, 3) -> (N, classes)
    exported = DNSD.load_model("runs/resnet110_sd/best-inference/model.onnx")  # ONNX Runtime; .predict the same
    result = DNSD.evaluate("runs/resnet110_sd/best.pdckpt")          # {"error": 5.3, "per_class_accuracy": ...}

The API is imported on first use, so that `import DNSD` and the command line's start stay quick.
"""
__version__ = "1.9.0"
API = ("load_config", "build_model", "load_checkpoint", "load_model", "evaluate", "hub_model", "hub_checkpoint",
       "TrainedModel", "ExportedModel")


def __getattr__(name):
    if name in API:
        from DNSD.system.console import quiet_libraries

        with quiet_libraries():
            from DNSD import api

        return getattr(api, name)
    raise AttributeError(f"module 'DNSD' has no attribute {name!r}")
