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
