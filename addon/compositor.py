"""Wire a gdyn output folder into the scene: compositor image sequences, a Sequencer strip.

An output folder (OUTDIR) holds `frames/NNNN.png` (the animated photo) and
`displacement/NNNN.exr` (forward displacement in pixels, R = x, G = y). Both
become image-sequence nodes starting at the scene's first frame. Only nodes
and strips named "GDyn ..." are created or replaced; the user's own nodes,
strips and settings are never removed.

Blender versions: 5.0 keeps the compositor in a node group assigned to
`scene.compositing_node_group` whose Group Output is the result; 4.2-4.x use
`scene.use_nodes` + `scene.node_tree` with a Composite node. The Sequencer's
strip collection is `strips` in 5.0 and `sequences` in 4.x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy

FRAMES_NODE = "GDyn Frames"
DISPLACEMENT_NODE = "GDyn Displacement"
SEPARATE_NODE = "GDyn Displacement XY"
STRIP_NAME = "GDyn Animation"
GROUP_NAME = "GDyn Compositing"


def _uses_node_groups() -> bool:
    """Blender 5.0+: the compositor is a node group with a Group Output, no Composite node."""
    return bpy.app.version >= (5, 0, 0)


def compositor_tree(scene):
    """The scene's compositor node tree, created (empty but for its output) if missing."""
    if _uses_node_groups():
        tree = scene.compositing_node_group
        if tree is None:
            tree = bpy.data.node_groups.new(GROUP_NAME, "CompositorNodeTree")
            tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
            scene.compositing_node_group = tree
        return tree
    created = scene.node_tree is None
    scene.use_nodes = True
    tree = scene.node_tree
    if created:  # Blender's default Render Layers node would need a camera to render
        for node in [n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers"]:
            tree.nodes.remove(node)
    return tree


def output_socket(tree):
    """The input socket whose image is the compositor's result (created if missing)."""
    kind = "NodeGroupOutput" if _uses_node_groups() else "CompositorNodeComposite"
    node = next((n for n in tree.nodes if n.bl_idname == kind), None)
    if node is None:
        if kind == "NodeGroupOutput" and not any(s.in_out == "OUTPUT" for s in tree.interface.items_tree
                                                 if getattr(s, "item_type", "") == "SOCKET"):
            tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        node = tree.nodes.new(kind)
        node.location = (600, 0)
    return node.inputs[0]


def first_file(folder: Path, suffix: str) -> tuple[Path, int]:
    """The first file of an image sequence and the number of frames in it."""
    files = sorted(folder.glob(f"*{suffix}"))
    if not files:
        raise FileNotFoundError(f"no {suffix} files in {folder}")
    return files[0], len(files)


def load_sequence(path: Path, colorspace: str):
    """Load `path` as the first image of a sequence (a new datablock every time)."""
    image = bpy.data.images.load(str(path), check_existing=False)
    image.source = "SEQUENCE"
    image.colorspace_settings.name = colorspace
    return image


def sequence_offset(image) -> int:
    """Frame offset that puts the first file of a sequence on the start frame.

    Blender shows file number (scene frame - start + 1 + offset), so a
    sequence numbered from 0000 needs offset -1.
    """
    digits = "".join(c for c in Path(image.filepath).stem if c.isdigit())
    return (int(digits) if digits else 1) - 1


def _image_node(tree, name: str, image, frames: int, start: int, cyclic: bool, location):
    """An Image node playing `frames` files from scene frame `start`."""
    node = tree.nodes.get(name)
    if node is None or node.bl_idname != "CompositorNodeImage":
        node = tree.nodes.new("CompositorNodeImage")
        node.name = node.label = name
        node.location = location
    node.image = image
    node.frame_duration = frames
    node.frame_start = start
    node.frame_offset = sequence_offset(image)
    node.use_cyclic = cyclic
    node.use_auto_refresh = True
    return node


@dataclass
class Wiring:
    """What `wire_outputs` loaded: the frames sequence, the displacement maps (None when the
    output has none) and the number of frames."""

    frames: "bpy.types.Image"
    displacement: "bpy.types.Image | None"
    count: int


def wire_outputs(scene, outdir, cyclic: bool = False) -> Wiring:
    """Put OUTDIR's frames and displacement maps into the scene's compositor.

    The frames node feeds the compositor's output; the displacement node
    (Non-Color, values in pixels) feeds a Separate Color node whose R and G
    outputs are the x and y displacement, for the user's own node setups.
    """
    outdir = Path(outdir)
    first, count = first_file(outdir / "frames", ".png")
    frames_image = load_sequence(first, "sRGB")
    tree = compositor_tree(scene)
    start = scene.frame_start
    frames_node = _image_node(tree, FRAMES_NODE, frames_image, count, start, cyclic, (-300, 200))
    tree.links.new(frames_node.outputs["Image"], output_socket(tree))
    displacement_image = None
    maps = outdir / "displacement"
    if maps.is_dir() and any(maps.glob("*.exr")):
        first_map, map_count = first_file(maps, ".exr")
        displacement_image = load_sequence(first_map, "Non-Color")
        map_node = _image_node(tree, DISPLACEMENT_NODE, displacement_image, map_count, start, cyclic,
                               (-300, -150))
        separate = tree.nodes.get(SEPARATE_NODE)
        if separate is None:
            separate = tree.nodes.new("CompositorNodeSeparateColor")
            separate.name = separate.label = SEPARATE_NODE
            separate.location = (0, -150)
        tree.links.new(map_node.outputs["Image"], separate.inputs[0])
    return Wiring(frames_image, displacement_image, count)


def _strips(scene):
    editor = scene.sequence_editor or scene.sequence_editor_create()
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def add_sequencer_strip(scene, outdir):
    """An image strip of OUTDIR's frames at the scene's first frame (replaces our old one)."""
    frames = sorted((Path(outdir) / "frames").glob("*.png"))
    if not frames:
        raise FileNotFoundError(f"no frames in {outdir}")
    strips = _strips(scene)
    old = strips.get(STRIP_NAME)
    if old is not None:
        strips.remove(old)
    used = {s.channel for s in strips}
    channel = next(c for c in range(1, 129) if c not in used)
    strip = strips.new_image(name=STRIP_NAME, filepath=str(frames[0]), channel=channel,
                             frame_start=scene.frame_start)
    for path in frames[1:]:
        strip.elements.append(path.name)
    return strip
