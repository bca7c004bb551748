"""Reading and writing images, displacement maps and videos; atomic outputs.

Images in memory are float32 [H, W, 3] RGB in 0..1 (sRGB-encoded values as
stored in the file) plus an optional float32 [H, W] alpha. Displacement maps
are float32 [2, H, W] in pixels (x, y), stored as float EXR with R = x,
G = y (and B = 0 where OpenCV writes them). Every writer here produces a
whole file or none.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import sys
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from gdyn_backend.errors import UserError
from gdyn_backend.render import native

MAX_IMAGE_PIXELS = 1 << 28  # about 16k x 16k; larger stills are refused
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}  # read by `open_video`


@dataclass
class Still:
    """A decoded input photo.

    rgb:   float32 [H, W, 3], 0..1.
    alpha: float32 [H, W] 0..1, or None when the file has no alpha.
    bit_depth: 8 or 16, the depth of the file (EXR reports 16).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def read_image(path, what: str = "image") -> Still:
    """Decode a still; grayscale becomes RGB, 16-bit keeps its precision.

    UserError (naming `what`, e.g. "mask") for a missing file, a folder, an
    empty or truncated file, one whose header declares more than
    `MAX_IMAGE_PIXELS` (checked before decoding) and anything OpenCV cannot decode.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give an image file (PNG, JPEG, TIFF, EXR)")
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    encoded = path.read_bytes()
    if not encoded:
        raise UserError(f"{what} file is empty: {path}")
    declared = image_header(path)
    if declared is not None:
        _check_pixels(path, declared.width, declared.height, what)
    if encoded.startswith(_JPEG_START) and _jpeg_truncated(encoded):
        raise UserError(f"{what} {path} is truncated (its JPEG data stops before the end marker); "
                        "the file is damaged or was not copied whole: copy it again")
    try:
        data = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        too_large = "CV_IO_MAX_IMAGE_PIXELS" in str(exc)
        raise UserError(f"cannot decode {what} {path}: " + (
            f"larger than the {MAX_IMAGE_PIXELS} pixel limit; downscale it first" if too_large
            else "the file is damaged or not an image OpenCV can read")) from None
    if data is None:
        raise UserError(f"cannot decode {what} {path}: not an image OpenCV can read, "
                        f"or larger than the {MAX_IMAGE_PIXELS} pixel limit")
    if data.size == 0 or min(data.shape[:2]) < 1:
        raise UserError(f"{what} has zero size: {path}")
    _check_pixels(path, data.shape[1], data.shape[0], what)
    if data.dtype == np.uint8:
        depth, values = 8, data.astype(np.float32) / 255.0
    elif data.dtype == np.uint16:
        depth, values = 16, data.astype(np.float32) / 65535.0
    else:
        depth, values = 16, np.clip(np.nan_to_num(data.astype(np.float32)), 0.0, 1.0)
    if values.ndim == 2:
        values = values[:, :, None]
    channels = values.shape[2]
    alpha = None
    if channels in (2, 4):
        alpha = np.ascontiguousarray(values[:, :, -1])
        values = values[:, :, :-1]
    if values.shape[2] == 1:
        rgb = np.repeat(values, 3, axis=2)
    else:
        rgb = values[:, :, ::-1]  # OpenCV's BGR to RGB
    return Still(np.ascontiguousarray(rgb, np.float32), alpha, depth)


def _check_pixels(path: Path, width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise UserError(f"{what} too large: {path} is {width}x{height} pixels "
                        f"(limit {MAX_IMAGE_PIXELS} pixels); downscale it first")


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_JPEG_SCAN = 0xDA


def _jpeg_scan_start(data: bytes) -> int | None:
    """Offset of a JPEG's first scan data (after its SOS segment), or None when there is none.

    Walks the marker segments from the start (each says its length, so an
    EXIF thumbnail inside APP1 is skipped whole) up to the first scan (SOS).
    """
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == _JPEG_SCAN:
            return pos + 2 + length
        pos += 2 + length
    return None


def _jpeg_truncated(data: bytes) -> bool:
    """True when a JPEG's scan data has no end marker (FFD9) after it.

    OpenCV decodes such a file with only a warning ("Premature end of JPEG
    file") and fills the missing part with grey. Scan data escapes every
    0xFF byte, so FFD9 after the first scan can only be the end marker.
    """
    scan = _jpeg_scan_start(data)
    return scan is not None and data.find(_JPEG_END, scan) < 0


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares: size in pixels, channels (3, or 4 with alpha), bit depth."""

    width: int
    height: int
    channels: int
    bit_depth: int


def image_header(path) -> ImageHeader | None:
    """The header of an image file, read without decoding the pixels (so a huge or hostile
    file costs nothing); None when Pillow cannot read it (EXR, not an image, missing)."""
    from PIL import Image

    bomb_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read: no bomb to fear
    try:
        with Image.open(path) as header:
            width, height, mode = header.width, header.height, header.mode
    except (OSError, ValueError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    channels = 4 if "A" in mode or mode in ("RGBa", "La") else 3
    return ImageHeader(width, height, channels, 16 if mode.startswith("I;16") or mode in ("I", "F") else 8)


class AtomicPath:
    """A file or folder written under a hidden temporary sibling, then renamed into place.

    `tmp` is `.NAME.partial-PID[SUFFIX]` next to `path` (the suffix is kept so
    encoders that choose by extension still work, and the PID names the
    writer). `commit()` renames `tmp` to `path` (an existing folder is swapped
    out through `.NAME.old-PID[SUFFIX]` and removed); `abort()` removes `tmp`.
    This is the one place in gdyn that makes a write whole or nothing;
    `atomic_path` wraps it for a block.

    A process killed outright (kill -9, power loss) cannot remove its
    temporary; the first `AtomicPath` of a later process in that folder
    removes every sibling of `path` whose PID is no longer alive and says so
    on stderr (`remove_stale_siblings`).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        _remove(self.tmp)
        remove_stale_siblings(self.path)

    def commit(self) -> Path:
        if self.tmp.is_dir() and self.path.is_dir():
            old = self.path.with_name(f".{self.path.stem}.old-{os.getpid()}{self.path.suffix}")
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            _remove(old)
        else:
            os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        _remove(self.tmp)

    def user_error(self, exc: BaseException) -> BaseException:
        """The error to show for a failure while writing `tmp`: the same, or an OSError naming
        the user's path instead of the temporary one (`.out.partial-7/frames/0003.png` ->
        `out/frames/0003.png`); an I/O error a library reports only as text ("... (os
        error 28)", safetensors) becomes the OSError it is."""
        if isinstance(exc, OSError) and exc.errno is not None:
            name = str(exc.filename) if exc.filename is not None else str(self.tmp)  # a write() names none
            if not name.startswith(str(self.tmp)):
                return exc
            return OSError(exc.errno, exc.strerror, str(self.path) + name[len(str(self.tmp)):])
        library = isinstance(exc, Exception) and not isinstance(exc, UserError)
        found = _OS_ERROR_TEXT.search(str(exc)) if library else None
        if found is not None:
            number = int(found.group(1))
            return OSError(number, os.strerror(number), str(self.path))
        return exc


_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")  # Rust's io::Error, as safetensors reports it
_TEMPORARY = re.compile(r"\..+\.(?:partial|old)-\d+.*")  # any AtomicPath temporary name
_temporaries: dict[str, list[str]] = {}  # folder -> names of temporaries found there, listed once per process


def remove_stale_siblings(path) -> list[Path]:
    """Remove the temporaries of `path` (`.NAME.partial-PID[SUFFIX]`, `.NAME.old-PID[SUFFIX]`)
    left by processes that are gone; returns what was removed.

    Each folder is listed once per process (a folder of 100 000 pairs is not
    listed again for every pair). A temporary whose PID is alive is kept: it
    may be another gdyn writing the same output right now.
    """
    path = Path(path)
    key = os.path.abspath(path.parent)
    if f".partial-{os.getpid()}" in key or os.name != "posix":  # our own new folder; on Windows
        return []                                                # os.kill(pid, 0) would end the process
    if key not in _temporaries:
        try:
            _temporaries[key] = [e.name for e in os.scandir(key) if _TEMPORARY.fullmatch(e.name)]
        except OSError:  # no folder yet, or not readable: nothing of ours can be there
            _temporaries[key] = []
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.(?:partial|old)-(\d+){re.escape(path.suffix)}")
    removed = []
    for name in list(_temporaries[key]):
        found = pattern.fullmatch(name)
        if found is None or _alive(int(found.group(1))):
            continue
        stale = Path(key) / name
        _remove(stale)
        _temporaries[key].remove(name)
        removed.append(stale)
        print(f"gdyn: note: removed {stale}, left by process {found.group(1)} which was stopped "
              "before it finished", file=sys.stderr)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a read-only folder: nothing was written there either
            pass


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path to write `path` through; renamed into place if the block succeeds.

    On any error (or a cancel) the temporary file or folder is removed and
    `path` is untouched; an OS error names `path`, not the temporary
    (`AtomicPath.user_error`). The caller creates the file or folder at the yielded path.
    """
    target = AtomicPath(path)
    try:
        yield target.tmp
        target.commit()
    except BaseException as exc:
        target.abort()
        error = target.user_error(exc)
        if error is exc:
            raise
        raise error from None


def _imwrite_atomic(path: Path, data: np.ndarray, params: tuple[int, ...] = ()) -> None:
    """Encode with OpenCV, write with Python: a full disk or a read-only folder raises the
    OSError it is (cv2.imwrite only returns False, or True on a full disk)."""
    try:
        ok, encoded = cv2.imencode(path.suffix, data, list(params))
    except cv2.error:
        ok = False
    if not ok:
        raise UserError(f"cannot encode {path.name}: OpenCV has no {path.suffix or 'such'} encoder")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded)


def write_png(path, rgb: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int = 8) -> None:
    """Write float RGB [H, W, 3] in 0..1 (+ alpha [H, W]) as 8- or 16-bit PNG.

    Values are scaled, rounded and clipped to the integers by OpenCV (NaN
    gives 0), with no float temporaries: 0.05 s for 3840x2160 on 2 threads."""
    top, depth = (255.0, cv2.CV_8U) if bit_depth == 8 else (65535.0, cv2.CV_16U)
    scale = (top,) * 4  # a Scalar for every channel, not only the first
    bgr = cv2.cvtColor(cv2.multiply(np.ascontiguousarray(rgb, np.float32), scale, dtype=depth), cv2.COLOR_RGB2BGR)
    if alpha is not None:
        bgr = cv2.merge([*cv2.split(bgr), cv2.multiply(np.ascontiguousarray(alpha, np.float32), scale, dtype=depth)])
    _imwrite_atomic(Path(path), bgr)


def write_displacement_exr(path, displacement: np.ndarray) -> None:
    """Write a forward displacement [2, H, W] (pixels) as a float32 EXR: R = x, G = y, RLE.

    With the native kernel (`render/native.py`) the file has the two channels
    and its chunks are made by `exr_rle.c`: 0.1 s of one core for 3840x2160.
    Without it OpenCV writes the file, which must have three channels (B = 0):
    0.5 s. Both compress runs only (pinned pixels, exactly 0, cost almost
    nothing; moving floats barely compress), so the sizes are the same.
    """
    x, y = (np.ascontiguousarray(c, np.float32) for c in displacement)
    kernel = native.kernel() if sys.byteorder == "little" else None  # EXR is little-endian
    if kernel is None:
        bgr = cv2.merge([np.zeros_like(x), y, x])
        _imwrite_atomic(Path(path), bgr, (cv2.IMWRITE_EXR_COMPRESSION, cv2.IMWRITE_EXR_COMPRESSION_RLE))
        return
    h, w = x.shape
    chunks, offsets, scratch = np.empty(h * (8 + 8 * w), np.uint8), np.empty(h, np.int64), np.empty(16 * w, np.uint8)
    size = kernel.gdyn_exr_rle_chunks(x.ctypes.data, y.ctypes.data, h, w, chunks.ctypes.data, offsets.ctypes.data,
                                      scratch.ctypes.data)
    header = _exr_header(w, h)
    offsets += len(header) + 8 * h  # from the start of the file, after the offset table
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        file.write(header)
        file.write(offsets.astype("<u8").tobytes())
        file.write(memoryview(chunks)[:size])


def _exr_header(width: int, height: int) -> bytes:
    """The magic number, version and header of a single-part scanline OpenEXR file with float
    channels G and R, RLE compression, increasing y, both windows the whole picture."""
    def attribute(name: str, kind: str, value: bytes) -> bytes:
        return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value

    float_channel = struct.pack("<iB3xii", 2, 0, 1, 1)  # FLOAT, not perceptually linear, no subsampling
    channels = b"G\0" + float_channel + b"R\0" + float_channel + b"\0"
    window = struct.pack("<4i", 0, 0, width - 1, height - 1)
    return (b"\x76\x2f\x31\x01" + struct.pack("<i", 2)
            + attribute("channels", "chlist", channels) + attribute("compression", "compression", b"\x01")
            + attribute("dataWindow", "box2i", window) + attribute("displayWindow", "box2i", window)
            + attribute("lineOrder", "lineOrder", b"\x00") + attribute("pixelAspectRatio", "float", struct.pack("<f", 1))
            + attribute("screenWindowCenter", "v2f", struct.pack("<2f", 0, 0))
            + attribute("screenWindowWidth", "float", struct.pack("<f", 1)) + b"\0")


def read_displacement_exr(path) -> np.ndarray:
    """Read a map written by `write_displacement_exr`, float32 [2, H, W] in pixels."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise UserError(f"cannot read displacement map {path}")
    return np.stack([data[:, :, 2], data[:, :, 1]]).astype(np.float32)


def read_mask(path, width: int, height: int) -> np.ndarray:
    """A user mask as float32 [height, width] in 0..1 (white moves, black pinned).

    A mask of another size is resampled to the still's size (bilinear) when
    its aspect ratio matches within 1 %; otherwise it is refused.
    """
    still = read_image(path, "mask")
    mask = still.rgb.mean(axis=2)
    if still.alpha is not None:
        mask = mask * still.alpha
    h, w = mask.shape
    if (h, w) != (height, width):
        if abs(w / h - width / height) > 0.01 * (width / height):
            raise UserError(f"mask {path} is {w}x{h} but the image is {width}x{height}; "
                            "the aspect ratios differ, so it cannot be resized to fit")
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)


def read_safetensors(path, expected_format: str, what: str, hint: str = "",
                     framework: str = "numpy") -> tuple[dict, dict[str, str]]:
    """All tensors and the string metadata of a gdyn safetensors file.

    The file's metadata `format` must equal `expected_format`. A missing,
    unreadable or foreign file raises UserError naming `what` (e.g. "motion
    file"), followed by `hint` (what to do). framework: "numpy" or "pt".
    safetensors never unpickles, so any file is safe to open.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give the .safetensors file"
                        + (f" ({hint})" if hint else ""))
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework=framework) as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a safetensors {what} ({exc})") from None
    if meta.get("format") != expected_format:
        raise UserError(f"{path} is not a gdyn {what} (format={meta.get('format')!r})"
                        + (f"; {hint}" if hint else ""))
    return tensors, meta


# ---------------------------------------------------------------------------
# Output folders


@contextmanager
def atomic_output_dir(outdir) -> Iterator[Path]:
    """Yield a temporary folder that becomes `outdir` only if the block succeeds.

    An existing `outdir` is replaced only when it is empty or a previous gdyn
    output (it has a `motion.safetensors`); anything else is refused so a
    typo never deletes the user's files. On error or cancel nothing is left.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UserError(f"output {outdir} exists and is not a folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not (outdir / "motion.safetensors").exists():
        raise UserError(f"output folder {outdir} is not empty and is not a gdyn output; "
                        "choose a new folder")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(outdir) as tmp:
        tmp.mkdir()
        yield tmp


def staged_path(path, outdir, staging: Path) -> Path:
    """Where to write `path` while `outdir` is being built in `staging`.

    A path inside OUTDIR (at any depth) maps to the same place in the
    temporary folder of `atomic_output_dir`, so it appears with the folder;
    its parent folders are made there. A path elsewhere is returned as it is,
    and its folder must already exist (UserError otherwise).
    """
    path = Path(path)
    try:
        inside = path.resolve().relative_to(Path(outdir).resolve())
    except ValueError:
        if not path.resolve().parent.is_dir():
            raise UserError(f"folder for {path.name} does not exist: {path.parent}") from None
        return path
    target = staging / inside
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


# ---------------------------------------------------------------------------
# Videos


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int


def _image_sequence(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"folder {path} holds no images to read as a video")
    return files


MAX_DECODE_RATE = 240.0  # frames per second; a stream claiming a finer grid is read at its average rate


def _decode_grid_rate(path: Path) -> float | None:
    """The rate (frames per second) of the grid ffmpeg decodes a file's video stream on: its
    'tbr', which is the frame rate of a constant-rate file and finer than the average rate of
    a variable-rate one (ffmpeg then repeats frames to fill the grid). None if not reported."""
    import re
    import subprocess

    import imageio_ffmpeg

    try:
        header = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                                capture_output=True, text=True, timeout=60, check=False).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    stream = next((line for line in header.splitlines()
                   if line.lstrip().startswith("Stream") and " Video: " in line), "")
    match = re.search(r" (\d+(?:\.\d+)?)(k?) tbr", stream)
    return float(match[1]) * (1000.0 if match[2] else 1.0) if match else None


def open_video(path, fps_for_sequences: float = 30.0) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """Open a video file or a folder of images.

    Returns the clip's info and an iterator of frames, float32 [H, W, 3] RGB
    in 0..1, read one at a time (memory does not grow with clip length). A
    folder of images plays at `fps_for_sequences`. Raises UserError for a
    missing, unreadable or empty clip; a clip whose frames stop early yields
    the frames it has.

    Frames come on a constant grid of `info.fps` frames per second (frame i
    at i / fps seconds). A variable-frame-rate file is decoded on its finest
    time grid (ffmpeg's tbr, e.g. 30 fps for a phone clip averaging 14),
    where frames the file does not have repeat the one before exactly
    (`flow.measure_window` detects them); a grid finer than MAX_DECODE_RATE
    is replaced by the file's average rate.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"video not found: {path}")
    if path.is_dir():
        files = _image_sequence(path)
        first = read_image(files[0])
        info = VideoInfo(float(fps_for_sequences), first.width, first.height)

        def frames() -> Iterator[np.ndarray]:
            for f in files:
                still = read_image(f)
                if (still.width, still.height) != (info.width, info.height):
                    raise UserError(f"{f} is {still.width}x{still.height}, the sequence is "
                                    f"{info.width}x{info.height}")
                yield still.rgb

        return info, frames()

    import imageio.v2 as imageio

    if path.stat().st_size == 0:
        raise UserError(f"video file is empty: {path}")
    try:
        reader = imageio.get_reader(str(path), "ffmpeg")
        meta = reader.get_meta_data()
    except Exception as exc:  # imageio raises OSError/RuntimeError/IndexError by backend
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1].split(": ")[-1] if lines else type(exc).__name__  # ffmpeg's last word
        raise UserError(f"cannot read video {path}: {reason}; the file is damaged, truncated "
                        "or not a video") from None
    width, height = meta.get("size", (0, 0))
    fps = float(meta.get("fps") or 0.0)
    if width <= 0 or height <= 0:
        reader.close()
        raise UserError(f"video {path} has zero-size frames")
    if not fps > 0:
        reader.close()
        raise UserError(f"video {path} reports no frame rate")
    grid = _decode_grid_rate(path)
    if grid is not None and abs(grid - fps) > 0.01 * fps:  # a variable frame rate
        fps = grid if grid <= MAX_DECODE_RATE else fps
        reader.close()  # each frame on the grid slot nearest its time (ffmpeg's default lets it drift a slot)
        reader = imageio.get_reader(str(path), "ffmpeg", output_params=["-vf", f"fps={fps!r}"])

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in reader:
                if frame.size == 0:
                    raise UserError(f"video {path} has a zero-size frame")
                yield frame[:, :, :3].astype(np.float32) / 255.0
        except (OSError, RuntimeError):
            return  # truncated stream: the caller sees fewer frames
        finally:
            reader.close()

    return VideoInfo(fps, int(width), int(height)), frames()


class VideoWriter:
    """Streams float RGB frames [H, W, 3] in 0..1 to an MP4 (H.264) or GIF.

    The file appears under its name only after `close()` succeeds. A folder
    that cannot be written fails at once, by name; a disk that fills while
    ffmpeg writes (ffmpeg then reports only a broken pipe) is named as full.
    """

    def __init__(self, path, fps: float):
        import imageio.v2 as imageio

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".gif"):
            raise UserError(f"video output must end in .mp4 or .gif, got {self.path.name}")
        self._target = AtomicPath(self.path)
        try:
            self._target.tmp.touch()  # before ffmpeg starts, so an unwritable folder is named
        except OSError as exc:
            raise self._target.user_error(exc) from None
        self._gif = None
        try:
            if suffix == ".mp4":
                self._writer = imageio.get_writer(str(self._target.tmp), format="ffmpeg", fps=fps,
                                                  codec="libx264", quality=8, macro_block_size=2,
                                                  pixelformat="yuv420p", ffmpeg_log_level="quiet")
            else:  # Pillow keeps a GIF's frames until the end anyway; Python writes the file
                self._gif = BytesIO()
                self._writer = imageio.get_writer(self._gif, format="GIF", mode="I",
                                                  duration=1000.0 / fps, loop=0)
        except BaseException:
            self._target.abort()
            raise

    def append(self, rgb: np.ndarray) -> None:
        frame = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        h, w = frame.shape[:2]
        if self.path.suffix.lower() == ".mp4" and (h % 2 or w % 2):
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        try:
            self._writer.append_data(frame)
        except OSError as exc:
            raise self._failure(exc) from None

    def close(self) -> None:
        try:
            self._writer.close()
            if self._gif is not None:
                self._target.tmp.write_bytes(self._gif.getbuffer())
        except OSError as exc:
            raise self._failure(exc) from None
        if self._gif is None and not _mp4_complete(self._target.tmp):  # imageio ignores ffmpeg's exit status
            raise self._failure(OSError("ffmpeg did not finish the file")) from None
        self._target.commit()

    def abort(self) -> None:
        try:
            with suppress(Exception):  # the file is thrown away: how its encoder ends does not matter
                self._writer.close()
        finally:
            self._target.abort()

    def _failure(self, exc: OSError) -> BaseException:
        """The error to report for a failed write: ffmpeg's broken pipe (or unfinished file) says
        nothing, so the folder is asked (1 MiB written to an unnamed temporary file) for the reason."""
        if exc.errno is not None:
            return self._target.user_error(exc)
        try:
            with tempfile.TemporaryFile(dir=self.path.parent) as probe:
                probe.write(bytes(1 << 20))
        except OSError as reason:
            return OSError(reason.errno, reason.strerror, str(self.path))
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return UserError(f"ffmpeg stopped while writing {self.path} ({first.strip()}); run again, "
                         "or write frames only (no --video)")


def _mp4_complete(path: Path) -> bool:
    """True when the MP4 at `path` is whole: its top-level boxes (size, type) tile the file
    exactly and include the movie header `moov`, which ffmpeg writes last."""
    size = path.stat().st_size
    kinds, pos = set(), 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            header = f.read(16)
            if len(header) < 8:
                return False
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1 and len(header) == 16:  # a 64-bit size follows the type
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                length = size - pos
            if length < 8 or pos + length > size:
                return False
            kinds.add(kind)
            pos += length
    return b"moov" in kinds
