"""The optimiser and its learning-rate schedule, both Paddle's own, and the names its state is saved under."""
import math

import paddle


def decay_epochs(train_config):
    """0-based epochs from which each decay applies: the authors decay when the 1-based epoch reaches
    fraction * epochs (250 and 375 of 500). Rounding first keeps 0.1 * 30 from becoming 3.0000000000000004."""
    return [math.ceil(round(fraction * train_config.epochs, 9)) - 1 for fraction in train_config.lr_decay_at]


def schedule(train_config):
    """The learning rate per epoch: Paddle's step schedule, decayed at decay_epochs."""
    rates = [train_config.lr * train_config.lr_decay_factor ** i for i in range(len(train_config.lr_decay_at) + 1)]
    return paddle.optimizer.lr.PiecewiseDecay(decay_epochs(train_config), rates)


def rate_at(train_config, epochs_done):
    """The learning rate the schedule gives after epochs_done epochs, as a checkpoint's scheduler holds it."""
    scheduler = schedule(train_config)
    scheduler.last_epoch = epochs_done
    return scheduler.get_lr()


def build_optimizer(train_config, model, multi_tensor=True):
    """Nesterov SGD with L2 weight decay on every parameter, and the step schedule, both Paddle's own; the model's
    parameters get zero gradients, which clear_grad(set_to_zero=True) must keep.

    multi_tensor: Paddle's merged momentum update, a few kernels for all parameters instead of a kernel and a Python
    call each; it gives the same weights and the same optimiser state bit for bit (tested), so every device uses it:
    it saves host time on the CPU too (about 0.3 ms of a ResNet-110 step, BENCHMARKS.md), and the CPU tests then
    exercise the update GPUs run.
    """
    scheduler = schedule(train_config)
    optimizer = paddle.optimizer.Momentum(scheduler, momentum=train_config.momentum, parameters=model.parameters(),
                                          use_nesterov=train_config.nesterov, weight_decay=train_config.weight_decay,
                                          use_multi_tensor=multi_tensor)
    # Every parameter gets a zero gradient now, and clear_grad(set_to_zero=True) keeps it allocated: a block that a
    # step drops is then still updated by weight decay and momentum, as in the authors' optimiser, from the first
    # step of a run and of a resumed run alike.
    (0 * sum(p.sum() for p in model.parameters() if not p.stop_gradient)).backward()
    return optimizer, scheduler


def renamed(optimizer_state, model, to_structured=True):
    """The optimiser's state with its keys' parameter names (conv2d_28.w_0_velocity_0) turned into the
    model's structured ones (blocks.0.residual.0.weight_velocity_0), or back: Paddle's names depend on the process."""
    names = {parameter.name: name for name, parameter in model.named_parameters()}
    names = names if to_structured else {name: parameter for parameter, name in names.items()}
    result = {}
    for key, value in optimizer_state.items():
        cuts = [index for index, character in enumerate(key) if character == "_" and key[:index] in names]
        result[names[key[:cuts[0]]] + key[cuts[0]:] if cuts else key] = value
    return result
