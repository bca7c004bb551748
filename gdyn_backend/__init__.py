"""gdyn backend: Generative Image Dynamics without Blender.

Everything that needs torch, OpenCV or NumPy lives here; the Blender add-on
(`addon/`) talks to it through the `gdyn serve` process. This package never
imports bpy.
"""

import os

__version__ = "0.1.0"

# OpenCV reads these once, at import: EXR support for displacement maps, and a
# pixel limit so a decompression bomb fails cleanly instead of eating memory.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 28))
# OpenCV's own warnings (e.g. "PNG input buffer is incomplete") would stand beside
# gdyn's one error line; gdyn checks what they warn about and says it in that line.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
# Idle OpenMP threads sleep instead of spinning. The backend shares the CPU with
# Blender (and other jobs): with spinning threads and one core taken, the
# renderer ran 30x slower on 2 threads (488 ms vs 15 ms per 512x288 frame).
# torch reads this when its thread pool starts, after this package is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
