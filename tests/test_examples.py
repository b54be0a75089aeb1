"""The four example programs (examples/*.py) and the ``fastnn`` command line.

Each example is loaded by path (examples/ is not a package) and its ``main`` run on a few
hundred images of the Fashion-MNIST sample shipped inside fastnn (real images: the
accuracy bounds below are well under what every seed reaches, see each test), so the
results do not depend on whether the full data set is installed. ``fastnn info`` and
``fastnn demo`` run in a subprocess whose working directory is outside the checkout.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn.datasets import fashion_mnist

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
N_TRAIN, N_TEST = 500, 200
CHANCE = 0.1  # ten balanced classes


def load_example(name):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fastnn_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shipped_sample(monkeypatch):
    """Make the examples' ``fashion_mnist.load_data()`` load the shipped sample."""
    monkeypatch.setattr(fashion_mnist, "load_data",
                        functools.partial(fashion_mnist.load_data, sample=True))
    (_, _), (_, y_test) = fashion_mnist.load_data()
    return y_test[:N_TEST]


def test_examples_directory_has_the_four_programs():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "cnn_fashion_mnist.py", "from_scratch.py", "mlp_fashion_mnist.py", "mlp_random.py"]


def test_program1_mlp_random():
    history, loss, acc = load_example("mlp_random").main(n_samples=300, epochs=2, verbose=0)
    assert history.epoch == [0, 1]
    assert set(history.history) == {"loss", "accuracy"}
    # random labels: a binary cross-entropy near ln 2, an accuracy near 1/2
    assert all(0.5 < v < 1.0 for v in history.history["loss"])
    assert 0.5 < loss < 1.0
    assert 0.0 <= acc <= 1.0


def test_program2_cnn_fashion_mnist(shipped_sample, capsys):
    # 500 images, 2 epochs: test accuracy 0.54-0.67 over seeds 0-7 (0.62 with the
    # example's seed 0); 0.4 is four times chance
    model, loss, acc, epoch_s = load_example("cnn_fashion_mnist").main(
        epochs=2, batch_size=32, n_train=N_TRAIN, n_test=N_TEST, verbose=2)
    assert model.output_shape == (None, 10)
    assert model.count_params() == 121_930  # 320 + 18,496 + 102,464 + 650
    assert math.isfinite(loss) and loss < math.log(10)
    assert acc > 4 * CHANCE
    assert epoch_s > 0  # reported, not timed here
    out = capsys.readouterr().out
    assert "Total params: 121,930" in out  # summary()
    assert re.search(r"^Epoch 2/2 - \d+s - loss: ", out, re.M)
    assert f"({N_TRAIN} training images)" in out


def test_program3_from_scratch(shipped_sample, capsys):
    # test accuracy 0.63-0.70 over seeds 0-7 (0.65 with seed 0)
    loss, acc = load_example("from_scratch").main(epochs=2, n_train=N_TRAIN, n_test=N_TEST)
    assert math.isfinite(loss) and loss < math.log(10)  # better than a uniform guess
    assert acc > 5 * CHANCE
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split(":")[0] for l in lines] == ["epoch 1", "epoch 2"]
    losses = [float(re.search(r"loss (\d+\.\d+)", l).group(1)) for l in lines]
    assert losses[1] < losses[0]


def test_program4_mlp_fashion_mnist(shipped_sample, capsys):
    # test accuracy 0.645-0.745 over seeds 0-7 (0.745 with seed 0)
    acc, precision, recall, f1, epoch_s = load_example("mlp_fashion_mnist").main(
        epochs=2, n_train=N_TRAIN, n_test=N_TEST, verbose=0)
    assert acc > 5 * CHANCE
    for values in (precision, recall, f1):
        assert np.shape(values) == (10,)
        assert np.all((0 <= values) & (values <= 1))
    # recall_i * support_i = correct predictions of class i: they add up to the accuracy
    support = np.bincount(shipped_sample, minlength=10)
    assert np.sum(recall * support) / N_TEST == pytest.approx(acc, abs=1e-9)
    assert epoch_s > 0  # reported, not timed here
    out = capsys.readouterr().out
    for name in fashion_mnist.CLASS_NAMES:
        assert name in out  # the classification report
    assert f"test accuracy {acc:.4f}" in out
    assert "[=" not in out          # verbose=0: no progress bar (predict drew one)


# ----------------------------------------------------------------------------- command line
def run_outside_checkout(args, tmp_path, timeout=300):
    """``python args...`` with cwd outside the checkout and the imported fastnn's parent
    directory on PYTHONPATH (as tests/test_threads.py::_run_python): the source tree's
    fastnn/ (no compiled extension on CI) must not shadow the installed package."""
    env = dict(os.environ)
    env.pop("FASTNN_BACKEND", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


@pytest.mark.parametrize("name", ["cnn_fashion_mnist", "from_scratch", "mlp_fashion_mnist",
                                  "mlp_random"])
def test_examples_answer_help_without_training(tmp_path, name):
    """``python examples/X.py --help`` prints the options and exits (it used to ignore the
    argument and start training); an unknown option is an error, not ignored."""
    path = str(EXAMPLES / f"{name}.py")
    proc = run_outside_checkout([path, "--help"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name}.py") and "--epochs" in proc.stdout
    assert "Epoch" not in proc.stdout and "accuracy" not in proc.stdout
    proc = run_outside_checkout([path, "--bogus", "1"], tmp_path, timeout=120)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    # counts are ints >= 1, as fastnn's own commands take them (--epochs 0 crashed
    # from_scratch.py; a negative --n-train meant "all but the last N")
    proc = run_outside_checkout([path, "--epochs", "0"], tmp_path, timeout=120)
    assert proc.returncode == 2 and "must be >= 1" in proc.stderr


def test_cli_info(tmp_path):
    """`fastnn info` prints lines for people; with --json one JSON object and nothing else
    (it printed the lines first, which broke `fastnn info --json | jq`)."""
    proc = run_outside_checkout(["-m", "fastnn", "info", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["version"] == fastnn.__version__
    proc = run_outside_checkout(["-m", "fastnn", "info"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    text = "\n".join(lines)
    assert lines[0] == f"fastnn {fastnn.__version__}"
    assert re.search(rf"^backends available: {re.escape(', '.join(info['available']))}$",
                     text, re.M)
    assert re.search(rf"^active backend: +{info['active']}$", text, re.M)
    assert re.search(rf"^instruction set: +{re.escape(str(info['isa']))}$", text, re.M)
    assert re.search(rf"^threads: +{info['num_threads']}$", text, re.M)
    assert info["active"] in info["available"] and "numpy" in info["available"]
    assert info["num_threads"] >= 1
    plain = run_outside_checkout(["-m", "fastnn", "info"], tmp_path)
    assert plain.returncode == 0 and plain.stdout.strip() == text


def test_cli_demo_one_epoch_on_the_sample(tmp_path):
    proc = run_outside_checkout(["-m", "fastnn", "demo", "--epochs", "1", "--sample",
                                 "--verbose", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "shipped sample: 3000 train / 1000 test images" in out
    assert re.search(r"^Epoch 1/1 - \d+s - loss: \d\.\d{4} - accuracy: \d\.\d{4}$", out, re.M)
    m = re.search(r"^test accuracy (\d\.\d{4}) - test loss (\d+\.\d{4}) - (\d+\.\d{2}) "
                  r"s/epoch$", out, re.M)
    assert m, out
    acc, loss, epoch_s = (float(g) for g in m.groups())
    assert acc > 3 * CHANCE  # 0.63 with the demo's seed 0 after one epoch on 3000 images
    assert 0 < loss < math.log(10)
    assert epoch_s > 0  # the demo printed its s/epoch
    assert os.listdir(tmp_path) == []  # the demo writes nothing


@pytest.mark.parametrize("args,message", [
    (["demo", "--epochs", "0"], "must be >= 1"),
    (["demo", "--backend", "cuda"], "invalid choice: 'cuda'"),
    ([], "required: command"),
])
def test_cli_bad_arguments(tmp_path, args, message):
    proc = run_outside_checkout(["-m", "fastnn", *args], tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_example_runs_as_a_script(tmp_path):
    proc = run_outside_checkout([str(EXAMPLES / "mlp_random.py")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^test loss \d\.\d{4}, test accuracy \d\.\d{4}", proc.stdout, re.M)
    assert "Epoch 10/10" in proc.stdout
