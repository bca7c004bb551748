"""The command line as a user meets it: help, info, example still, bench smoke run."""

import subprocess
import sys

import pytest

from gdyn_backend import io
from gdyn_backend.cli import COMMANDS, build_parser, main


def run_gdyn(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "gdyn_backend", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_every_command_has_help():
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([name, "--help"])
        assert exc.value.code == 0


@pytest.mark.slow
def test_info_reports_versions_and_device():
    result = run_gdyn("info")
    assert result.returncode == 0, result.stderr
    for key in ("torch", "numpy", "opencv-python", "device", "torch threads", "gentle_breeze", "no trained weights"):
        assert key in result.stdout
    assert "device: cpu" in result.stdout or "device: cuda" in result.stdout


def test_example_still_is_a_textured_scene(tmp_path):
    assert main(["example", str(tmp_path / "new" / "ex.png"), "--size", "160x100"]) == 0
    still = io.read_image(tmp_path / "new" / "ex.png")
    assert (still.width, still.height) == (160, 100)
    assert float(still.rgb.std()) > 0.1
    assert main(["example", str(tmp_path / "bad.png"), "--size", "big"]) == 2
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.slow  # runs every bench section (about 20 s)
def test_bench_quick_prints_a_table_for_every_section():
    from gdyn_backend.bench import SECTIONS

    result = run_gdyn("bench", "--quick")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("machine:")
    for name in SECTIONS:
        assert f"| {name} |" in result.stdout, f"bench section {name} printed no row"
