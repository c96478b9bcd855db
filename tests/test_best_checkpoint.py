"""The paper's protocol for the reported checkpoint (DNSD/training/best.py): the lowest validation error, ties by
run.best_on_tie, and with run.eval_every_iterations the evaluation points alone (the authors' every 200 iterations on
SVHN)."""
import pytest

from DNSD.training.best import BestCheckpoint, ties


@pytest.mark.parametrize("rule, chosen", [("earliest", [True, False, False, False]),
                                          ("latest", [True, False, True, False])])
def test_at_epoch_ends_the_lowest_validation_error_wins_and_a_tie_follows_the_rule(rule, chosen):
    best = BestCheckpoint(rule)
    assert [best.at_epoch_end(epoch, error) for epoch, error in enumerate([40.0, 45.0, 40.0, 41.0], 1)] == chosen
    assert best.best == {"epoch": 1 if rule == "earliest" else 3, "val_error": 40.0}
    assert best.position() == (best.best["epoch"], 0)  # best.pdckpt holds the model after its epoch


def test_with_evaluation_points_only_points_choose_and_the_model_lies_within_its_epoch():
    best = BestCheckpoint(at_points=True)
    assert best.position() is None
    assert not best.at_epoch_end(1, 10.0)
    assert best.at_point({"epoch": 2, "step": 3, "iteration": 13, "val_error": 30.0, "test_error": 31.0})
    assert not best.at_point({"epoch": 2, "step": 5, "iteration": 15, "val_error": 30.0, "test_error": 29.0})
    assert best.best == {"epoch": 2, "step": 3, "iteration": 13, "val_error": 30.0}
    assert best.position() == (1, 3)  # one epoch done, three steps into the second


def test_a_restored_best_is_beaten_only_by_a_lower_error():
    best = BestCheckpoint("earliest", best={"epoch": 4, "val_error": 20.0})
    assert not best.at_epoch_end(5, 20.0) and not best.at_epoch_end(6, 25.0)
    assert best.at_epoch_end(7, 19.5) and best.best == {"epoch": 7, "val_error": 19.5}


def test_the_summary_lists_every_epoch_and_point_that_tied_the_best():
    records = [{"epoch": e, "val_error": error} for e, error in enumerate([30.0, 25.0, 26.0, 25.0], 1)]
    assert ties({"epoch": 2, "val_error": 25.0}, records, []) == {"tied_best_epochs": [2, 4]}
    points = [{"epoch": e, "step": s, "iteration": 3 * (e - 1) + s, "val_error": error}
              for e, s, error in ((1, 2, 25.0), (2, 1, 27.0), (2, 3, 25.0), (3, 2, 25.0))]
    assert ties({"epoch": 1, "iteration": 2, "val_error": 25.0}, records, points) == {
        "tied_best_epochs": [1, 2, 3], "best_iteration": 2, "tied_best_iterations": [2, 6, 8]}


def test_a_branch_ties_only_with_its_own_epochs_and_points():
    records = [{"epoch": e, "val_error": error} for e, error in enumerate([25.0, 26.0, 25.0], 1)]
    assert ties({"epoch": 3, "val_error": 25.0}, records, [], since=(1, 0)) == {"tied_best_epochs": [3]}
    points = [{"epoch": e, "step": s, "iteration": 3 * (e - 1) + s, "val_error": 25.0}
              for e, s in ((1, 3), (2, 1), (2, 2), (3, 1))]
    # Branched at epoch 2, step 1: the point there is the source's, measured on the model the branch starts from.
    assert ties({"epoch": 2, "iteration": 5, "val_error": 25.0}, records, points, since=(1, 1)) == {
        "tied_best_epochs": [2, 3], "best_iteration": 5, "tied_best_iterations": [5, 7]}
