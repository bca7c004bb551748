"""gdyn Blender add-on: animate a photo with Generative Image Dynamics.

The heavy work runs in a separate backend process (`gdyn serve`, a Python
venv with gdyn and torch) that the add-on starts and talks to; see
`backend_client`. This package never imports torch, cv2 or numpy.
"""

bl_info = {  # legacy (pre-4.2 style) install; Blender 4.2+ reads blender_manifest.toml
    "name": "GDyn - Generative Image Dynamics",
    "author": "gdyn contributors",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Image Editor > Sidebar > GDyn",
    "description": "Animate a still photo (spectral volumes, modal dynamics)",
    "category": "Animation",
}

import bpy  # noqa: E402

from . import environment, live, mask, operators, panels, properties, session  # noqa: E402

CLASSES = operators.CLASSES + live.CLASSES + mask.CLASSES + panels.CLASSES


def register():
    properties.register()
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    session.shutdown()
    environment.shutdown()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    properties.unregister()
