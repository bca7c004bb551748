"""`gdyn simulate`: OUTDIR layout, image-pixel coordinates, pins, and one-line errors."""

import json

import numpy as np
import pytest
from synthetic import band_motion, synthetic_still

from gdyn_backend import io, spectral
from gdyn_backend.cli import main

IMG_W, IMG_H = 96, 64  # the still; the motion is at half that resolution
MOT_W, MOT_H = 48, 32


@pytest.fixture
def inputs(tmp_path):
    io.write_png(tmp_path / "still.png", synthetic_still(IMG_W, IMG_H, seed=4))
    motion = band_motion(MOT_W, MOT_H, 30.0, 60, bands=(2, 5, 9), seed=2)
    volume = spectral.volume_from_trajectories(motion.trajectories(60, 30.0), 30.0, num_bands=16)
    spectral.save_volume(volume, tmp_path / "motion.safetensors")
    return tmp_path


def simulate(inputs, *extra):
    return main(["simulate", str(inputs / "still.png"), "--motion", str(inputs / "motion.safetensors"),
                 "-o", str(inputs / "out"), *extra])


def test_writes_the_animate_layout_with_pokes_and_a_drag(inputs, capsys):
    rc = simulate(inputs, "--frames", "24", "--fps", "24", "--poke", "0:30,20:3,0", "2:60,40:0,2:3",
                  "--drag", "8-15:70,30:1,-6", "--video", str(inputs / "out" / "sim.mp4"))
    assert rc == 0
    out = inputs / "out"
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:04d}.png" for i in range(24)]
    assert len(list((out / "displacement").glob("*.exr"))) == 24
    assert (out / "sim.mp4").stat().st_size > 0
    saved = spectral.load_volume(out / "motion.safetensors")
    assert saved.width == MOT_W
    record = json.loads(saved.metadata["simulation"])
    assert record["pokes"][1] == {"frame": 2, "x": 60.0, "y": 40.0, "dx": 0.0, "dy": 2.0, "duration": 3}
    assert record["drags"][0]["end"] == 15 and record["damping"] == 0.05
    disp = [io.read_displacement_exr(out / "displacement" / f"{i:04d}.exr") for i in range(24)]
    assert disp[0].shape == (2, IMG_H, IMG_W)  # still pixels
    assert np.abs(disp[0]).max() == 0.0  # frame 0 is the still
    assert np.abs(disp[1]).max() > 0.01  # the frame-0 poke shows at frame 1 (an impulse: velocity first)
    assert np.abs(disp[6]).max() > 0.5
    # The drag is in still pixels: the held pixel sits within a pixel of (+1, -6) (a direction these modes reach) at the end of the hold.
    assert np.linalg.norm(disp[15][:, 30, 70] - [1.0, -6.0]) < 1.0
    assert np.linalg.norm(disp[23][:, 30, 70] - disp[15][:, 30, 70]) > 0.3  # released: it moves on
    first = io.read_image(out / "frames" / "0000.png").rgb
    np.testing.assert_allclose(first, io.read_image(inputs / "still.png").rgb, atol=2 / 255)


def test_mask_pins_exactly(inputs):
    mask = np.ones((IMG_H, IMG_W, 3), np.float32)
    mask[:, :40] = 0.0
    io.write_png(inputs / "mask.png", mask)
    assert simulate(inputs, "--frames", "10", "--poke", "0:70,30:4,2", "--drag", "3-6:20,30:5,0",
                    "--mask", str(inputs / "mask.png")) == 0
    disp = np.stack([io.read_displacement_exr(p) for p in sorted((inputs / "out" / "displacement").iterdir())])
    assert np.abs(disp[..., :40]).max() == 0.0
    assert np.abs(disp[..., 50:]).max() > 0.1


@pytest.mark.parametrize("args", [
    ["--poke", "0:30,20"],                  # no direction
    ["--poke", "x:30,20:1,0"],              # frame not a number
    ["--poke", "0:30;20:1,0"],              # wrong separator
    ["--poke", "0:30,20:1,0:0"],            # zero duration
    ["--poke", "0:300,20:1,0"],             # outside the image
    ["--poke", "99:30,20:1,0"],             # after the last frame
    ["--force", "99:30,20:1,0"],            # the same through the --force alias
    ["--drag", "9-3:30,20:1,0"],            # ends before it starts
    ["--drag", "3:30,20:1,0"],              # no end frame
    ["--poke", "0:30,20:1,0", "--damping", "1.5"],
    ["--poke", "0:30,20:1,0", "--fps", "0"],
    [],                                     # nothing to simulate
])
def test_bad_input_is_one_line_exit_2_and_no_outdir(inputs, capsys, args):
    rc = simulate(inputs, "--frames", "10", *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("gdyn: error: ")
    assert not (inputs / "out").exists()
    assert not list(inputs.glob(".out*"))  # no partial folder left either


def test_video_in_a_subfolder_of_outdir_travels_with_it(inputs):
    nested = inputs / "out" / "videos" / "sim.gif"
    assert simulate(inputs, "--frames", "6", "--poke", "0:30,20:3,0", "--video", str(nested)) == 0
    assert nested.stat().st_size > 0
    assert sorted(p.name for p in inputs.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert simulate(inputs, "--frames", "6", "--video", str(inputs / "nowhere" / "sim.mp4")) == 2


def test_force_is_the_same_option_as_poke_and_errors_name_the_poke(inputs, capsys):
    assert simulate(inputs, "--frames", "8", "--poke", "0:30,20:3,0", "--force", "2:60,40:0,2:3") == 0
    record = json.loads(spectral.load_volume(inputs / "out" / "motion.safetensors").metadata["simulation"])
    assert [p["frame"] for p in record["pokes"]] == [0, 2]  # both, in the order given
    poked = [io.read_displacement_exr(inputs / "out" / "displacement" / f"{i:04d}.exr") for i in range(8)]
    alias = inputs / "alias"
    assert main(["simulate", str(inputs / "still.png"), "--motion", str(inputs / "motion.safetensors"),
                 "-o", str(alias), "--frames", "8", "--force", "0:30,20:3,0", "2:60,40:0,2:3"]) == 0
    for i in range(8):  # the same pokes through either spelling give the same maps, bit for bit
        np.testing.assert_array_equal(io.read_displacement_exr(alias / "displacement" / f"{i:04d}.exr"), poked[i])
    capsys.readouterr()
    assert simulate(inputs, "--frames", "24", "--poke", "0:30,20:3,0", "49:30,20:1,0") == 2
    assert capsys.readouterr().err.strip() == "gdyn: error: poke 2: frame 49 is past the last frame 23"
