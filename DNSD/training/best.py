"""Which checkpoint is a run's best, as the paper reports it: the lowest validation error, measured at each epoch's
end or, with run.eval_every_iterations (the authors' protocol for SVHN), at evaluation points every so many
iterations; a tie goes to the earliest or the latest by run.best_on_tie."""
import math

NONE_YET = {"epoch": 0, "val_error": math.inf}


class BestCheckpoint:
    """The best so far (`best`: its epoch and validation error, and for a point its step and iteration), as the
    checkpoint's state keeps it; at_points: chosen among evaluation points alone, not epoch ends."""

    def __init__(self, best_on_tie="earliest", at_points=False, best=None):
        self.best_on_tie, self.at_points = best_on_tie, at_points
        self.best = dict(best or NONE_YET)

    def improves(self, val_error):
        return val_error < self.best["val_error"] or (
            val_error == self.best["val_error"] and self.best_on_tie == "latest")

    def at_epoch_end(self, epoch, val_error):
        """Whether the model at the end of this epoch is the new best (never, where points choose)."""
        if self.at_points or not self.improves(val_error):
            return False
        self.best = {"epoch": epoch, "val_error": val_error}
        return True

    def at_point(self, point):
        """Whether the model at this evaluation point ({"epoch", "step", "iteration", "val_error", ...}) is the
        new best."""
        if not self.improves(point["val_error"]):
            return False
        self.best = {key: point[key] for key in ("epoch", "step", "iteration", "val_error")}
        return True

    def position(self):
        """(epochs done, step) of the model best.pdckpt holds, or None before the first best: a point's lies within
        its epoch."""
        if not self.best["epoch"]:
            return None
        return (self.best["epoch"] - 1, self.best["step"]) if "step" in self.best else (self.best["epoch"], 0)


def ties(best, records, points, since=(0, 0)):
    """Every epoch that reached the best's validation error (the earliest and the latest are the two rules'
    choices); where points choose, the epochs of the tied points, the best's iteration and the tied iterations.
    since: (epochs done, step) where a branch left its source, whose records and points are not the branch's."""
    error = best["val_error"]
    if not points:
        return {"tied_best_epochs": [record["epoch"] for record in records
                                     if record["val_error"] == error and record["epoch"] > since[0]]}
    tied = [point for point in points if point["val_error"] == error and (point["epoch"] - 1, point["step"]) > since]
    return {"tied_best_epochs": sorted({point["epoch"] for point in tied}), "best_iteration": best["iteration"],
            "tied_best_iterations": [point["iteration"] for point in tied]}
