"""Memory and disk are estimated before any work starts: a still too large for the memory limit and
a frame count too large for the disk are refused with one line, nothing decoded, nothing written."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from synthetic import synthetic_still, tiny_inputs

from gdyn_backend.bench.render import write_blank_png
from gdyn_backend.cli import main
from gdyn_backend.sequence import DEFAULT_MEMORY_LIMIT, MEMORY_LIMIT_ENV, ResourceEstimate, check_resources

_PEAK_OF_CLI = """
import json, sys
from gdyn_backend.cli import main
code = main(sys.argv[1:])
peak = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"code": code, "peak_mib": peak}))
"""


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdyn: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def still(tmp_path):
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), (synthetic_still(128, 80)[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
    return path


@pytest.mark.slow
def test_16k_still_is_refused_before_it_is_decoded(tmp_path):
    """A real 16384x16384 PNG (1 MB of deflated grey): the 45 GiB estimate is refused from the header,
    so the process never holds the 768 MiB of decoded pixels."""
    image = write_blank_png(tmp_path / "huge.png", 16384, 16384)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != MEMORY_LIMIT_ENV}
    done = subprocess.run([sys.executable, "-c", _PEAK_OF_CLI, "animate", str(image), "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    err = done.stderr.strip()
    assert result["code"] == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("gdyn: error: a 16384x16384 still needs about ")
    assert "GiB of memory" in err and "4.0 GiB allowed" in err and MEMORY_LIMIT_ENV in err
    assert result["peak_mib"] < 700, result  # nothing decoded (the pixels alone are 768 MiB)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_memory_estimate_admits_a_24_megapixel_photo_but_not_16k(tmp_path):
    # Header-only checks: a 6000x4000 photo fits the default 4 GiB; 16384x16384 (and 16384x8192) do not.
    assert ResourceEstimate.of(6000, 4000, 3, 8, 1).memory <= DEFAULT_MEMORY_LIMIT
    estimate = check_resources(write_blank_png(tmp_path / "photo.png", 6000, 4000), tmp_path / "out", 10, None)
    assert estimate is not None and estimate.memory <= DEFAULT_MEMORY_LIMIT
    for side in ((16384, 16384), (16384, 8192)):
        assert ResourceEstimate.of(*side, 3, 8, 1).memory > DEFAULT_MEMORY_LIMIT
    # alpha and 16-bit frames cost more memory and disk
    assert ResourceEstimate.of(2000, 1000, 4, 16, 10).memory > ResourceEstimate.of(2000, 1000, 3, 8, 10).memory
    assert ResourceEstimate.of(2000, 1000, 4, 16, 10).disk > ResourceEstimate.of(2000, 1000, 3, 8, 10).disk


def test_a_billion_frames_are_refused_by_the_disk_estimate(still, tmp_path, capsys):
    _, motion = tiny_inputs(tmp_path, 128, 80)
    for command in (["animate", still, "--frames", 1_000_000_000],
                    ["simulate", still, "--motion", motion, "--poke", "0:10,10:2,0", "--frames", 1_000_000_000]):
        out = tmp_path / "out"
        capsys.readouterr()
        assert main([*map(str, command), "-o", str(out)]) == 2
        err = _one_line_error(capsys)
        assert "1000000000 frames of 128x80 need about" in err and "GB but" in err and "at most" in err, err
        assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_memory_limit_is_a_setting(still, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "64M")
    assert main(["animate", str(still), "-o", str(tmp_path / "out"), "--frames", "2"]) == 2
    err = _one_line_error(capsys)
    assert "a 128x80 still needs about 0.4 GiB of memory" in err and "0.1 GiB allowed" in err, err
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    assert main(["animate", str(still), "-o", str(tmp_path / "out"), "--frames", "2"]) == 2
    assert f"{MEMORY_LIMIT_ENV} must be a size such as 6G" in _one_line_error(capsys)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2G")  # a limit the job fits: it runs
    assert main(["animate", str(still), "-o", str(tmp_path / "out"), "--frames", "2"]) == 0
    assert len(list((tmp_path / "out" / "frames").iterdir())) == 2
    assert not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator policy")
def test_frame_sized_buffers_stay_in_the_heap_for_the_next_frame():
    """After `reuse_freed_memory` (the gdyn command calls it), a 200 MB frame buffer is served from
    the heap, not a fresh mapping, and stays there once freed, so the next frame reuses its pages
    instead of faulting in new ones (glibc's default maps and unmaps anything above 32 MB)."""
    import ctypes

    from gdyn_backend.device import reuse_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                          "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
    assert reuse_freed_memory()
    size = 200 << 20
    mapped_before = mallinfo2().hblkhd
    frame = np.ones(size, np.uint8)
    assert mallinfo2().hblkhd - mapped_before < size  # not a mapping of its own
    del frame
    assert mallinfo2().fordblks >= size  # freed into the heap, kept for the next frame
