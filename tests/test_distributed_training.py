"""Two processes train as one: the README's `torchrun --standalone --nproc_per_node N -m
gdyn_backend train ...` command on the CPU (gloo), for the VAE and the denoiser, against one
process with the same global batch (2 x 2 samples against 1 x 4), and a two-process VAE run
interrupted at step 2 and resumed against an uninterrupted one-process run.

Tolerance. Gradients are summed in another order across processes (and threads: torchrun
runs each process on one thread), so equality is to float rounding, the same gap as
between two one-process runs on 1 and 2 threads (measured: the same parameters, the same
size). Asserted after N steps at lr 1e-3:
  - Adam's moments (the averaged gradients) within 1e-5 of their largest value
    (measured 2e-6);
  - every weight whose gradient is real (RMS over the run above 1e-6) within 2 % of
    lr x N, the most Adam moves a weight in N steps (measured 0.07 % VAE, 0.4 % LDM).
    Adam divides a gradient by its RMS, so rounding noise on a small gradient becomes a
    visible step: the weights left out (0.6 % of the VAE's, 17 % of the tiny U-Net's)
    include biases a GroupNorm cancels (true gradient 0), which Adam moves by up to lr a
    step on rounding noise alone (measured up to 60 % of lr x N, as between one-process
    runs on 1 and 2 threads);
  - so what counts, the trained networks' outputs on the training data, within 1e-4
    (outputs up to about 1; measured 2e-5, and 1.1e-5 between one-process runs on 1 and
    2 threads);
  - the logged losses (averaged over the processes) within 1e-5 relative.
One-process runs resumed at step 2 equal the uninterrupted ones bit for bit.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_model_learning import make_data

from gdyn_backend.cli import main
from gdyn_backend.model.checkpoint import load_model
from gdyn_backend.model.data import SpectralPairs
from gdyn_backend.model.training import encode_latents
from gdyn_backend.model.unet import condition_image
from gdyn_backend.model.vae import VAE_CONFIGS, SpectralVAE

pytestmark = pytest.mark.slow

TORCHRUN = Path(sys.executable).parent / "torchrun"
PROCESSES, PER_PROCESS, STEPS = 2, 2, 4
ADAM_BETA2 = 0.999
OUTPUT_TOLERANCE = 1e-4
REAL_GRADIENT = 1e-6  # RMS over the run; below it a weight's gradient may be rounding noise
LR = 1e-3
COMMON = ["--preset", "tiny", "--workers", "0", "--log-every", "1", "--lr", str(LR)]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """The README's multi-GPU command with 2 processes on the CPU: `torchrun --standalone
    --nproc_per_node 2 -m gdyn_backend train ...` (a free port, so parallel runs never meet)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", str(PROCESSES),
                           "-m", "gdyn_backend", "train", *args], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one_process(*args: str) -> None:
    assert main(["train", *args]) == 0


def _log(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "log.csv").open()))


def _snapshot(run: Path, name: str) -> Path:
    """A copy of the run's state.safetensors (it is overwritten as the run goes on)."""
    return Path(shutil.copy(run / "state.safetensors", run.parent / f"{name}.safetensors"))


def compare_states(one: Path, two: Path, parameter_names: list[str], steps: int) -> dict[str, float]:
    """Differences of two training states (see the module docstring); asserts the tolerances."""
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys()
    moments = [k for k in a if k.endswith(".exp_avg")]
    largest = max(float(a[k].abs().max()) for k in moments)
    moment_diff = max(float((a[k] - b[k]).abs().max()) for k in moments)
    reach = LR * steps                                    # the most Adam moves a weight in `steps` steps
    real, noise, left_out = 0.0, 0.0, 0
    for i, name in enumerate(parameter_names):           # the optimizer's order is the parameters'
        rms_gradient = (a[f"optimizer.state.{i}.exp_avg_sq"] / (1 - ADAM_BETA2 ** steps)).sqrt()
        diff = (a[f"model.{name}"] - b[f"model.{name}"]).abs() / reach
        is_real = rms_gradient > REAL_GRADIENT
        real = max(real, float(torch.cat([diff[is_real], torch.zeros(1)]).max()))
        noise = max(noise, float(torch.cat([diff[~is_real], torch.zeros(1)]).max()))
        left_out += int((~is_real).sum())
    figures = {"moments": moment_diff / largest, "weights": real, "noise_weights": noise,
               "left_out": left_out, "count": sum(a[f"model.{n}"].numel() for n in parameter_names)}
    assert moment_diff <= 1e-5 * largest and real <= 0.02, figures
    return figures


def compare_logs(one: Path, two: Path) -> float:
    rows_one, rows_two = _log(one), _log(two)
    assert [r["step"] for r in rows_two] == [str(s) for s in range(1, STEPS + 1)]   # rank 0 alone writes
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two]
    worst = max(abs(float(x["loss"]) - float(y["loss"])) / abs(float(x["loss"]))
                for x, y in zip(rows_one, rows_two))
    assert worst <= 1e-5
    return worst


def _figures(state: dict, output_diff: float, output: torch.Tensor, loss: float) -> str:
    """One line of the measured differences (for the test log and the README)."""
    return (f"{STEPS} steps: Adam moments {state['moments']:.2g} of max, weights {state['weights']:.2g} of "
            f"lr x steps, {state['left_out']}/{state['count']} weights with gradient RMS < 1e-6 "
            f"{state['noise_weights']:.2g}, outputs {output_diff:.2g} (max {float(output.abs().max()):.2g}), "
            f"logged loss {loss:.2g} rel")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("ddp") / "data", range(8))   # 8 pairs: 2 global batches an epoch


def test_two_processes_train_the_vae_as_one(data, capsys):
    root = data.parent
    t0 = time.perf_counter()
    one_process("vae", str(data), "-o", str(root / "vae1"), "--steps", "2", "--batch-size", "4", *COMMON)
    at_two = _snapshot(root / "vae1", "vae1-step2")
    one_process("vae", str(data), "-o", str(root / "vae1"), "--steps", str(STEPS), "--batch-size", "4", *COMMON)
    one_process("vae", str(data), "-o", str(root / "vae1-whole"), "--steps", str(STEPS), "--batch-size", "4",
                *COMMON)
    one_s = time.perf_counter() - t0
    whole, resumed = load_file(str(root / "vae1-whole" / "state.safetensors")), load_file(
        str(root / "vae1" / "state.safetensors"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)            # resume is exact

    t0 = time.perf_counter()
    args = ["vae", str(data), "-o", str(root / "vae2"), "--batch-size", str(PER_PROCESS), *COMMON]
    first = torchrun(*args, "--steps", "2")
    assert first.stdout.count("wrote ") == 1                                 # rank 0 writes, and says so
    two_at_two = _snapshot(root / "vae2", "vae2-step2")
    torchrun(*args, "--steps", str(STEPS))                                  # resumed at step 2
    two_s = time.perf_counter() - t0
    names = [n for n, _ in SpectralVAE(VAE_CONFIGS["tiny"]).named_parameters()]
    at_step_two = compare_states(at_two, two_at_two, names, 2)
    at_end = compare_states(root / "vae1-whole" / "state.safetensors", root / "vae2" / "state.safetensors",
                            names, STEPS)
    loss = compare_logs(root / "vae1", root / "vae2")

    x = torch.stack([volume for _, volume in SpectralPairs(data)]).flatten(0, 1)
    with torch.no_grad():
        outputs = [load_model(root / run / "model.safetensors").vae(x, sample=False)[0]
                   for run in ("vae1-whole", "vae2")]
    output_diff = float((outputs[0] - outputs[1]).abs().max())
    with capsys.disabled():
        print(f"\nVAE, 1 process x 4 vs 2 processes x 2 (resumed at step 2; weights at step 2: "
              f"{at_step_two['weights']:.2g} of lr x steps), {_figures(at_end, output_diff, outputs[0], loss)}; "
              f"wall time 3 one-process runs {one_s:.1f} s, 2 torchrun runs {two_s:.1f} s (shared machine)")
    assert output_diff <= OUTPUT_TOLERANCE


def test_two_processes_train_the_denoiser_as_one(data, capsys):
    root = data.parent
    if not (root / "vae1-whole" / "model.safetensors").exists():
        one_process("vae", str(data), "-o", str(root / "vae1-whole"), "--steps", "2", "--batch-size", "4", *COMMON)
    vae = str(root / "vae1-whole" / "model.safetensors")
    t0 = time.perf_counter()
    for run, steps in (("ldm1", 2), ("ldm1", STEPS), ("ldm1-whole", STEPS)):
        one_process("ldm", str(data), "-o", str(root / run), "--vae", vae, "--steps", str(steps),
                    "--batch-size", "4", *COMMON)
    one_s = time.perf_counter() - t0
    whole, resumed = (load_file(str(root / run / "state.safetensors")) for run in ("ldm1-whole", "ldm1"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)            # resume is exact

    t0 = time.perf_counter()
    torchrun("ldm", str(data), "-o", str(root / "ldm2"), "--vae", vae, "--batch-size", str(PER_PROCESS),
             "--steps", str(STEPS), *COMMON)
    two_s = time.perf_counter() - t0
    models = [load_model(root / run / "model.safetensors", require_unet=True) for run in ("ldm1", "ldm2")]
    names = [n for n, _ in models[0].unet.named_parameters()]
    at_end = compare_states(root / "ldm1" / "state.safetensors", root / "ldm2" / "state.safetensors", names, STEPS)
    loss = compare_logs(root / "ldm1", root / "ldm2")

    pairs = SpectralPairs(data)
    images = torch.stack([image for image, _ in pairs])
    z0 = encode_latents(models[0].vae, torch.stack([volume for _, volume in pairs]), models[0].latent_scale)
    t = torch.arange(len(pairs)) * 120
    with torch.no_grad():
        outputs = [m.unet(z0, t, condition_image(images, z0.shape[-2:]), torch.ones(len(pairs))) for m in models]
    output_diff = float((outputs[0] - outputs[1]).abs().max())
    with capsys.disabled():
        print(f"\nLDM, 1 process x 4 vs 2 processes x 2, {_figures(at_end, output_diff, outputs[0], loss)}; "
              f"wall time 3 one-process runs {one_s:.1f} s, 1 torchrun run {two_s:.1f} s (shared machine)")
    assert models[0].latent_scale == models[1].latent_scale
    assert output_diff <= OUTPUT_TOLERANCE
