"""The VisualDL dashboard of a run: the real `visualdl` server on 127.0.0.1, read through its HTTP interface."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from helpers import read_json, read_jsonl, read_yaml


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == 0, answer
    return answer["data"]


@pytest.fixture
def dashboard(trained_run):
    port = free_port()
    visualdl = os.path.join(os.path.dirname(sys.executable), "visualdl")
    server = subprocess.Popen([visualdl, "--logdir", os.path.join(trained_run[0], "vdl"), "--host", "127.0.0.1",
                               "--port", str(port), "--disable-telemetry"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/app/api"
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, "the visualdl server exited"
        try:
            get(f"{api}/runs")
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "the visualdl server did not answer within 120 s"
            time.sleep(0.5)
    yield api
    server.terminate()
    server.wait(timeout=30)


def test_the_dashboard_serves_the_training_loss_of_metrics_jsonl(dashboard, trained_run):
    records = read_jsonl(os.path.join(trained_run[0], "metrics.jsonl"))
    (run,) = get(f"{dashboard}/runs")
    tags = get(f"{dashboard}/scalar/tags")
    assert {"train_loss", "val_error", "mean_active_blocks"} <= set(tags["tags"][tags["runs"].index(run)])
    for tag in ("train_loss", "val_error"):
        points = get(f"{dashboard}/scalar/list?" + urllib.parse.urlencode({"run": run, "tag": tag}))
        # Each point is [wall time in ms, step, value]; the step is the epoch, the value a float32.
        assert [step for _, step, _ in points] == [record["epoch"] for record in records]
        assert [value for _, _, value in points] == pytest.approx([record[tag] for record in records], rel=1e-6)


def test_the_hyperparameter_view_holds_the_config_and_the_final_metrics(dashboard, trained_run):
    summary = read_json(os.path.join(trained_run[0], "summary.json"))
    config = read_yaml(os.path.join(trained_run[0], "config.yaml"))
    (run,) = get(f"{dashboard}/hparams/list")
    assert run["hparams"]["model.depth"] == config["model"]["depth"] == 8
    assert run["hparams"]["train.lr_decay_at"] == ",".join(map(str, config["train"]["lr_decay_at"]))
    assert run["hparams"]["data.augment"] == "true"
    assert run["metrics"] == pytest.approx({f"final/{key}": summary[key]
                                            for key in ("test_error", "best_val_error", "last_test_error")})
