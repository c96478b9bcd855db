"""The training loop's pieces (DNSD/training/loop.py, meters.py): the schedule, the step, the bookkeeping, the
optimiser state a checkpoint keeps."""
import contextlib
import math

import numpy as np
import paddle
import pytest

from DNSD.config import build_config
from DNSD.datasets import Splits
from DNSD.datasets.pipeline import Dataset, Normalizer
from DNSD.errors import TrainingStopped
from DNSD.models import build_model
from DNSD.schema import TrainConfig
from DNSD.training.loop import Trainer, non_finite_tensors
from DNSD.training.meters import TrainingMeter, UnreadStep
from DNSD.training.optimizer import build_optimizer, decay_epochs, renamed


def test_decay_epochs_follow_the_authors_rule():
    # The authors decay once the 1-based epoch reaches 50 % and 75 %: epochs 250 and 375 of 500, 0-based 249, 374.
    assert decay_epochs(TrainConfig()) == [249, 374]
    assert decay_epochs(TrainConfig(epochs=30, lr_decay_at=[0.1, 0.5])) == [2, 14]


def test_the_meter_sums_steps_and_makes_the_epoch_record():
    meter = TrainingMeter()
    meter.add(loss_sum=12.0, correct=3, active_blocks=2.0, images=8, seconds=0.5)
    meter.add(loss_sum=4.0, correct=5, active_blocks=1.0, images=8, seconds=1.5)
    record = meter.record(epoch=4, val_error=40.0, lr=0.1, seconds_after=1.0)
    assert record == {"epoch": 4, "train_loss": 1.0, "train_error": 50.0, "mean_active_blocks": 1.5,
                      "val_error": 40.0, "lr": 0.1, "epoch_seconds": 3.0, "images_per_second": 8.0,
                      "step_losses": [1.5, 0.5]}
    assert TrainingMeter(**meter.state()) == meter


def tiny_trainer(depth=8, **values):
    paddle.seed(0)
    config = build_config({"model.depth": depth, "train.batch_size": 4, **values})
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    data = Dataset(pixels, rng.integers(0, 10, 8))
    return Trainer(config, ".", Splits(data, data, data, Normalizer.fit(pixels)), build_model(config.model, 10))


def test_a_step_draws_the_gates_of_its_position_updates_the_weights_and_counts():
    trainer = tiny_trainer()
    before = trainer.model.fc.weight.numpy().copy()
    images = paddle.to_tensor(trainer.data.normalizer(trainer.data.train.images[:4]))
    labels = paddle.to_tensor(trainer.data.train.labels[:4])
    expected_activity = build_model(trainer.config.model, 10).begin_step(0, 1, 0, 4).sum()
    trainer.train_step(images, labels, batch_size=4)
    assert trainer.read_steps() is False
    assert not np.array_equal(trainer.model.fc.weight.numpy(), before)
    assert (trainer.step, trainer.meter.steps, trainer.meter.seen) == (1, 1, 4)
    assert trainer.meter.active_blocks == expected_activity
    assert math.isfinite(trainer.meter.loss) and 0 <= trainer.meter.correct <= 4


def test_the_optimiser_state_in_a_checkpoint_does_not_depend_on_paddles_parameter_counter():
    first = tiny_trainer()
    first.optimizer.step()
    state = renamed(first.optimizer.state_dict(), first.model)
    assert all(key.startswith(("stem.", "blocks.", "fc.")) for key in state if key != "LR_Scheduler")
    build_model(first.config.model, 10)  # another network: later ones get other parameter names
    second = tiny_trainer()
    back = renamed(state, second.model, to_structured=False)
    # Paddle names each parameter's velocity after it: the keys must now name the second model's parameters.
    assert {key.split("_velocity")[0] for key in back if key != "LR_Scheduler"} == \
        {parameter.name for parameter in second.model.parameters() if not parameter.stop_gradient}
    second.optimizer.set_state_dict(back)


def test_non_finite_tensors_are_counted_in_one_read():
    tensors = [paddle.ones([3]), paddle.to_tensor([1.0, float("nan")]), paddle.to_tensor([float("inf")]), 7]
    assert non_finite_tensors(tensors) == 2
    assert non_finite_tensors([paddle.zeros([2, 2])]) == 0


def test_amp_off_enters_no_autocast_context():
    assert isinstance(tiny_trainer().autocast(), contextlib.nullcontext)
    assert not isinstance(tiny_trainer(**{"train.amp": "bfloat16"}).autocast(), contextlib.nullcontext)


@pytest.mark.parametrize("depth", [8, 14])
def test_branching_follows_the_new_schedule_from_where_the_source_stood(depth):
    source = tiny_trainer(depth, **{"train.epochs": 4})
    source.scheduler.step()
    source.scheduler.step()
    state = {**source.state(), "epochs_done": 2, "step": 0}
    branch = tiny_trainer(depth, **{"train.epochs": 4, "train.lr": 0.01})
    branch.restore(state, branched=True)
    # lr 0.01, decayed once epoch 2 reaches 50 % and again once epoch 3 reaches 75 % of 4: epoch 3 trains at 1e-4.
    assert branch.optimizer.get_lr() == pytest.approx(0.0001)
    assert branch.best_checkpoint.best == {"epoch": 0, "val_error": math.inf} and branch.saved == {}


READS = ("numpy", "item", "tolist", "__float__", "__int__", "__bool__", "__index__", "__array__")


@pytest.mark.parametrize("drop_mode", ["batch", "sample"])
def test_a_training_step_reads_nothing_back_from_the_device_until_read_steps(drop_mode, monkeypatch):
    trainer = tiny_trainer(**{"model.drop_mode": drop_mode})
    images = paddle.to_tensor(trainer.data.normalizer(trainer.data.train.images[:4]))
    labels = paddle.to_tensor(trainer.data.train.labels[:4])
    reads = []
    for name in READS:
        original = getattr(paddle.Tensor, name)

        def counted(tensor, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(tensor, *args, **kwargs)
        monkeypatch.setattr(paddle.Tensor, name, counted)
    for _ in range(3):
        trainer.train_step(images, labels, batch_size=4)
    assert reads == [] and trainer.meter.steps == 0 and len(trainer.unread) == 3
    assert trainer.read_steps() is False
    assert reads == ["numpy"] and trainer.meter.steps == 3 and trainer.unread == []


def test_read_steps_adds_each_step_as_it_was_and_catches_a_non_finite_loss():
    trainer = tiny_trainer()
    trainer.step = 2
    gradients = [0.25] * len(trainer.watched)  # each watched tensor's mean |gradient| in the step

    def unread(loss, correct, activity, seconds):
        return UnreadStep(paddle.to_tensor([loss, correct, *gradients]), np.array(activity), 4, seconds, ())

    trainer.unread = [unread(6.0, 3.0, [1.0, 0.0, 1.0], 0.5), unread(2.0, 1.0, [1.0, 1.0, 1.0], 0.5)]
    trainer.read_steps()
    assert (trainer.meter.loss_sum, trainer.meter.correct, trainer.meter.active_blocks) == (8.0, 4, 5.0)
    assert trainer.meter.gradients == {name: 0.5 for name, _ in trainer.watched}
    trainer.step = 4
    trainer.unread = [unread(1.0, 1.0, [1.0] * 3, 0.1), unread(float("nan"), 0.0, [1.0] * 3, 0.1)]
    with pytest.raises(TrainingStopped, match="the training loss became nan at epoch 1, step 4"):
        trainer.read_steps()


def test_a_steps_host_batch_lives_until_the_read_that_waits_for_the_device():
    """On a GPU the copy of a pinned batch may still be queued when the host takes the next step: freed earlier, its
    memory could be given to another batch first (the acceptance run compares the device's batches with the
    host's)."""
    import weakref

    class HostBatch:
        pass

    trainer = tiny_trainer()
    images = paddle.to_tensor(trainer.data.normalizer(trainer.data.train.images[:4]))
    labels = paddle.to_tensor(trainer.data.train.labels[:4])
    batch = HostBatch()
    kept = weakref.ref(batch)
    trainer.train_step(images, labels, batch_size=4, host_batch=batch)
    del batch
    trainer.train_step(images, labels, batch_size=4)
    assert kept() is not None
    trainer.read_steps()
    assert kept() is None


def test_the_unread_results_hold_no_autograd_graph():
    # A step's loss kept with its graph would keep the step's activations alive until the read.
    trainer = tiny_trainer()
    images = paddle.to_tensor(trainer.data.normalizer(trainer.data.train.images[:4]))
    trainer.train_step(images, paddle.to_tensor(trainer.data.train.labels[:4]), batch_size=4)
    assert trainer.unread[0].results.stop_gradient


def test_the_merged_momentum_update_gives_the_same_weights():
    weights = []
    for multi_tensor in (False, True):
        paddle.seed(0)
        config = build_config({"model.depth": 8})
        model = build_model(config.model, 10)
        optimizer, _ = build_optimizer(config.train, model, multi_tensor=multi_tensor)
        images, labels = paddle.rand([4, 3, 32, 32]), paddle.to_tensor([1, 2, 3, 4])
        for step in range(3):
            model.begin_step(seed=0, epoch=1, step=step, batch_size=4)
            paddle.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
            optimizer.clear_grad(set_to_zero=True)
        weights.append(([parameter.numpy() for parameter in model.parameters()],
                        renamed(optimizer.state_dict(), model)))
    (plain, plain_state), (merged, merged_state) = weights
    assert all(np.array_equal(a, b) for a, b in zip(plain, merged))
    assert plain_state.keys() == merged_state.keys() and len(plain_state) > 10
    assert all(np.array_equal(np.asarray(plain_state[key]), np.asarray(merged_state[key]))
               for key in plain_state if key != "LR_Scheduler")


@pytest.mark.parametrize("rule, best", [("earliest", 1), ("latest", 3)])
def test_a_tie_for_the_lowest_validation_error_follows_the_chosen_rule(rule, best, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from DNSD.runs.checkpoint_file import read_checkpoint
    from DNSD.training import loop as trainer_module

    trainer = tiny_trainer(**{"run.best_on_tie": rule, "train.epochs": 3, "run.test_every_epoch": False})
    trainer.run_dir = str(tmp_path)
    errors = iter([40.0, 45.0, 40.0])
    monkeypatch.setattr(trainer_module, "evaluate", lambda *args, **kwargs: {"error": next(errors)})
    writer = SimpleNamespace(add_scalar=lambda **kwargs: None)
    for _ in range(3):
        trainer.meter.add(4.0, 1, 0.0, 4, 0.1)
        trainer.end_epoch(writer)
    assert trainer.best_checkpoint.best == {"epoch": best, "val_error": 40.0}
    assert read_checkpoint(str(tmp_path / "best.pdckpt"))["epochs_done"] == best


@pytest.mark.parametrize("measured", [True, False])
def test_the_test_error_of_each_epoch_is_recorded_and_never_chooses_the_checkpoint(measured, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from DNSD.training import loop as trainer_module

    trainer = tiny_trainer(**{"train.epochs": 2, "run.test_every_epoch": measured})
    trainer.run_dir = str(tmp_path)
    trainer.data.test = trainer.data.test.subset(np.arange(4))  # another object than the validation split
    # Validation gets worse, the test error better: the best epoch must follow validation alone.
    errors = {id(trainer.data.val): iter([40.0, 45.0]), id(trainer.data.test): iter([30.0, 20.0])}
    monkeypatch.setattr(trainer_module, "evaluate", lambda model, split, *args, **kwargs: {
        "error": next(errors[id(split)])})
    writer = SimpleNamespace(add_scalar=lambda **kwargs: None)
    for _ in range(2):
        trainer.meter.add(4.0, 1, 0.0, 4, 0.1)
        trainer.end_epoch(writer)
    assert [record.get("test_error") for record in trainer.history] == ([30.0, 20.0] if measured else [None, None])
    assert trainer.best_checkpoint.best == {"epoch": 1, "val_error": 40.0}


def test_the_step_schedule_reads_saves_and_measures_when_due():
    from DNSD.training.meters import READ_EVERY, StepSchedule

    steps = 2 * READ_EVERY + 5
    plain = StepSchedule(epoch=1, epochs=3, steps=steps)
    assert [step for step in range(1, steps + 1) if plain.due(step).read] == [READ_EVERY, 2 * READ_EVERY, steps]
    assert plain.due(3, signalled=True).read and not plain.due(3).read
    # Iterations count across epochs: epoch 2's step 5 is iteration steps + 5.
    every = StepSchedule(epoch=2, epochs=3, steps=steps, checkpoint_every=7, measure_every=10)
    saves = [step for step in range(1, steps + 1) if every.due(step).save]
    assert saves == [step for step in range(1, steps + 1) if (steps + step) % 7 == 0]
    assert all(every.due(step).read for step in saves)
    assert [every.due(step).iteration for step in range(1, steps + 1) if every.due(step).measure] == \
        [steps + step for step in range(1, steps + 1) if (steps + step) % 10 == 0]
    # As the authors: the run's last step is no point of its own (it could become the best), unless the run is
    # shorter than the interval and would otherwise have none.
    last = StepSchedule(epoch=3, epochs=3, steps=steps, measure_every=10)
    assert [step for step in range(1, steps + 1) if last.due(step).measure] == \
        [step for step in range(1, steps + 1) if (2 * steps + step) % 10 == 0]
    assert (3 * steps) % 10 and not last.due(steps).measure
    short = StepSchedule(epoch=3, epochs=3, steps=steps, measure_every=1000)
    assert [step for step in range(1, steps + 1) if short.due(step).measure] == [steps]
