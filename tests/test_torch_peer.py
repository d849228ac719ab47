"""The PyTorch peer (benchmarks/torch_peer.py) and the command that times ours against it.

torch is no dependency of the package or of [test], so every test here runs without it: what
needs torch itself either runs (torch installed) or checks the peer's refusal (not installed);
none is skipped.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.nn import TrainSettings

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
REPO = BENCHMARKS.parent
HAS_TORCH = importlib.util.find_spec("torch") is not None


def benchmark_module(name: str):
    """benchmarks/<name>.py imported as a module, with sys.path as it was before."""
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved


peer = benchmark_module("torch_peer")
speed = benchmark_module("speed_vs_torch")
nn_bench = benchmark_module("nn_bench")


def test_each_mode_defaults_to_the_network_it_is_the_peer_of():
    sgd = peer.parse_args(["DATA"])
    assert (sgd.mode, sgd.hidden, sgd.conv, sgd.batch, sgd.lr, sgd.momentum) == ("sgd", [256, 128], [], 128, 0.05, 0.9)
    assert not sgd.batch_norm and sgd.dropout == 0 and sgd.val_fraction == 0
    for mode, (experiment, configfile) in {"recipe": ("baseline", None), "cnn": ("cnn", REPO / "examples/cnn.yaml")}.items():
        args = peer.parse_args(["DATA", "--mode", mode])
        settings, prepare = nn_bench.recipe(experiment, configfile)
        assert args.conv == (list(settings.conv_channels) if settings.model == "cnn" else [])
        assert (args.hidden, args.batch, args.lr, args.weight_decay, args.dropout, args.batch_norm, args.label_smoothing,
                args.shift, args.val_fraction) == (
            list(settings.hidden), settings.batch_size, settings.learning_rate, settings.weight_decay, settings.dropout,
            settings.batch_norm, settings.label_smoothing, settings.augment_shift, prepare["val_fraction"]), mode


def test_a_flag_given_replaces_its_modes_default_and_a_bad_value_is_refused(capsys):
    args = peer.parse_args(["DATA", "--mode", "cnn", "--batch", "128", "--shift", "0", "--no-batch-norm", "--conv", "16"])
    assert (args.batch, args.shift, args.batch_norm, args.conv, args.hidden) == (128, 0, False, [16], [256])
    for bad in (["--dropout", "1"], ["--batch", "0"], ["--mode", "resnet"], ["--val-fraction", "-0.1"]):
        with pytest.raises(SystemExit) as stop:
            peer.parse_args(["DATA", *bad])
        assert stop.value.code == 2, bad
    assert "--dropout" in capsys.readouterr().err


def test_without_torch_the_peer_says_how_to_install_it(synthetic_dir):
    # None in sys.modules makes `import torch` fail as it does where torch is not installed.
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            f"sys.argv = ['torch_peer.py', {str(synthetic_dir)!r}, '--epochs', '1']; "
            f"runpy.run_path({str(BENCHMARKS / 'torch_peer.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert "torch_peer.py needs PyTorch" in done.stderr
    assert "pip install -e '.[bench]'" in done.stderr and "pip install torch==2.13.0 numpy" in done.stderr


@pytest.mark.parametrize("mode", ["sgd", "recipe", "cnn"])
def test_the_peer_trains_a_tiny_run_or_refuses_where_torch_is_missing(synthetic_dir, mode):
    command = [sys.executable, str(BENCHMARKS / "torch_peer.py"), str(synthetic_dir), "--mode", mode,
               "--epochs", "2", "--threads", "1", "--hidden", "16", "--conv", *(["4"] if mode == "cnn" else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if not HAS_TORCH:
        assert done.returncode == 1 and "pip install -e '.[bench]'" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["epoch"] for line in lines[:-1]] == [1, 2]
    assert lines[-1]["mode"] == mode and lines[-1]["threads"] == 1 and lines[-1]["median_epoch_s"] > 0
    assert 0.5 < lines[-1]["final_test_accuracy"] <= 1.0, "the synthetic classes are easy to tell apart"


def peer_command(*argv: str) -> list[str]:
    return speed.commands(speed.parse_args(["DATA", *argv]))["torch"]


def test_speed_vs_torch_runs_our_own_peer_with_the_network_of_the_experiment():
    sgd = peer_command("--epochs", "3", "--threads", "1")
    assert sgd[1] == str(BENCHMARKS / "torch_peer.py")
    assert sgd[2:] == ["DATA", "--epochs", "3", "--threads", "1", "--mode", "sgd",
                       "--hidden", "256", "128", "--batch", "128", "--lr", "0.05", "--momentum", "0.9"]
    for experiment, configfile in (("baseline", None), ("cnn", REPO / "examples/cnn.yaml")):
        command = peer_command("--experiment", experiment, *(["--configfile", str(configfile)] if configfile else []),
                               "--epochs", "2")
        assert all("shared" not in part for part in command), "nothing outside the repository"
        args = peer.parse_args(command[2:])
        settings, prepare = nn_bench.recipe(experiment, configfile, epochs=2)
        assert args.mode == ("cnn" if settings.model == "cnn" else "recipe") and args.epochs == 2
        assert args.conv == (list(settings.conv_channels) if settings.model == "cnn" else [])
        assert (args.hidden, args.batch, args.lr, args.weight_decay, args.dropout, args.batch_norm, args.label_smoothing,
                args.shift, args.val_fraction) == (
            list(settings.hidden), settings.batch_size, settings.learning_rate, settings.weight_decay, settings.dropout,
            settings.batch_norm, settings.label_smoothing, settings.augment_shift, prepare["val_fraction"])
    # --peer-args come last, so that they win.
    assert peer.parse_args(peer_command("--experiment", "baseline", "--peer-args", "--batch 64")[2:]).batch == 64


def test_speed_vs_torch_refuses_an_experiment_the_peer_cannot_train_naming_the_keys():
    settings = TrainSettings(optimizer="nesterov", activation="tanh")
    with pytest.raises(SystemExit, match="optimizer: nesterov, activation: tanh; torch_peer.py trains only with optimizer: adamw"):
        speed.peer_flags(settings, 0.1)


def test_speed_vs_torch_alternates_the_two_and_sums_up(synthetic_dir, tmp_path):
    # A stand-in peer that prints what torch_peer.py prints, so the whole command runs without torch.
    fake = tmp_path / "fake_peer.py"
    fake.write_text("import json, sys\n"
                    "print(json.dumps({'epoch': 1, 'train_s': 0.5, 'test_accuracy': 0.9, 'argv': sys.argv[1:]}))\n"
                    "print(json.dumps({'median_epoch_s': 0.5, 'final_test_accuracy': 0.9}))\n")
    (tmp_path / "extra.yaml").write_text("experiments:\n  tiny: {hidden: [16], batch_norm: false, dropout: 0.0}\n")
    command = [sys.executable, str(BENCHMARKS / "speed_vs_torch.py"), str(synthetic_dir), "--experiment", "tiny",
               "--configfile", str(tmp_path / "extra.yaml"), "--rounds", "2", "--epochs", "1", "--threads", "1",
               "--peer", str(fake)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["round"], line["trainer"]) for line in lines[:-1]] == [(1, "numpy"), (1, "torch"), (2, "torch"), (2, "numpy")]
    summary = lines[-1]
    assert summary["torch_median_epoch_s"] == 0.5 and len(summary["round_ratios"]) == 2
    assert summary["peer"][0] == str(fake)
    assert summary["peer"][6:] == ["--mode", "recipe", "--hidden", "16", "--batch", "128", "--lr", "0.002",
                                   "--weight-decay", "0.01", "--dropout", "0.0", "--no-batch-norm", "--label-smoothing",
                                   "0.1", "--shift", "0", "--val-fraction", "0.1", "--seed", "0"]
