"""Wire a gdyn output folder into the scene: compositor image sequences, a Sequencer strip.

An output folder (OUTDIR) holds `frames/NNNN.png` (the animated photo) and
`displacement/NNNN.exr` (forward displacement in pixels, R = x, G = y). Both
become image-sequence nodes starting at the scene's first frame. Only nodes
and strips named "GDyn ..." are created or replaced; the user's own nodes,
strips and settings are never removed.

So that the render IS the photo's frames, wiring also (each change reported
in `Wiring.changes`, one undo step with the rest):
- mutes the user's Render Layers nodes that no longer reach the output
  (Blender would otherwise render the 3D scene for every frame, for nothing);
- with `match` (the scene's "Match Photo" option, on by default) sets the
  view transform to Standard (no look, exposure 0, gamma 1, no curves or
  white balance, sRGB display), the 8-bit photo's own encoding, and the
  render size to the photo's (100 %, square pixels). Under AgX, Blender's
  default, the frames would render up to 60/255 off.

Blender versions: 5.0-5.2 keep the compositor in a node group assigned to
`scene.compositing_node_group` whose Group Output is the result; 5.3 has a
stack of compositor effects (`scene.compositor_effects`, each with a node
group) and deprecates that property; 4.2-4.x use `scene.use_nodes` +
`scene.node_tree` with a Composite node. The Sequencer's strip collection
is `strips` in 5.0 and `sequences` in 4.x.
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


STANDARD_VIEW = (("view_transform", "view transform", "Standard"), ("look", "look", "None"),
                 ("exposure", "exposure", 0.0), ("gamma", "gamma", 1.0),
                 ("use_curve_mapping", "curves", False), ("use_white_balance", "white balance", False))


def _uses_node_groups() -> bool:
    """Blender 5.0+: the compositor is a node group with a Group Output, no Composite node."""
    return bpy.app.version >= (5, 0, 0)


def scene_tree(scene):
    """The scene's compositor node tree, or None when it has none (nothing is created)."""
    if not _uses_node_groups():
        return scene.node_tree
    effects = getattr(scene, "compositor_effects", None)  # 5.3+
    if effects is None:
        return scene.compositing_node_group
    return effects.active.node_group if effects.active is not None else None


def set_scene_tree(scene, tree) -> None:
    """Make `tree` (a node group) the scene's compositor: 5.3's active effect, or 5.0's property."""
    effects = getattr(scene, "compositor_effects", None)
    if effects is None:
        scene.compositing_node_group = tree
        return
    effect = effects.active if effects.active is not None else effects.new(name=GROUP_NAME)
    effect.node_group = tree


def compositor_tree(scene):
    """The scene's compositor node tree, created (empty but for its output) if missing."""
    if _uses_node_groups():
        tree = scene_tree(scene)
        if tree is None:
            tree = bpy.data.node_groups.new(GROUP_NAME, "CompositorNodeTree")
            tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
            set_scene_tree(scene, tree)
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
    """What `wire_outputs` did: the frames sequence it loaded, the displacement maps (None when
    the output has none), the number of frames, and the scene settings it changed, as
    "what old -> new" texts for the report."""

    frames: "bpy.types.Image"
    displacement: "bpy.types.Image | None"
    count: int
    changes: tuple[str, ...] = ()


def _upstream(node) -> set[str]:
    """Names of the nodes whose output reaches `node` through links (itself included)."""
    seen, todo = set(), [node]
    while todo:
        current = todo.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        todo.extend(link.from_node for socket in current.inputs for link in socket.links)
    return seen


def mute_unused_render_layers(tree, output_node) -> list[str]:
    """Mute the Render Layers nodes that do not reach `output_node`; what was muted, as texts.
    (An unmuted Render Layers node makes Blender render the 3D scene, used or not.)"""
    used = _upstream(output_node)
    changes = []
    for node in tree.nodes:
        if node.bl_idname == "CompositorNodeRLayers" and not node.mute and node.name not in used:
            node.mute = True
            changes.append(f"muted Render Layers node '{node.name}' (it no longer reaches the output)")
    return changes


def _change(owner, name: str, value, label: str, changes: list[str]) -> None:
    """Set owner.name = value if it differs (and exists in this Blender), noting 'label old -> new'."""
    if hasattr(owner, name) and getattr(owner, name) != value:
        changes.append(f"{label} {getattr(owner, name)} -> {value}")
        setattr(owner, name, value)


def match_photo(scene, width: int, height: int) -> list[str]:
    """Render the photo as it is: Standard view on an sRGB display, at width x height pixels
    (100 %, square pixels). Returns what changed, as "what old -> new" texts."""
    changes: list[str] = []
    _change(scene.display_settings, "display_device", "sRGB", "display", changes)
    for name, label, value in STANDARD_VIEW:
        _change(scene.view_settings, name, value, label, changes)
    render = scene.render
    if (render.resolution_x, render.resolution_y) != (width, height):
        changes.append(f"resolution {render.resolution_x}x{render.resolution_y} -> {width}x{height}")
        render.resolution_x, render.resolution_y = width, height
    _change(render, "resolution_percentage", 100, "resolution %", changes)
    _change(render, "pixel_aspect_x", 1.0, "pixel aspect x", changes)
    _change(render, "pixel_aspect_y", 1.0, "pixel aspect y", changes)
    return changes


def wire_outputs(scene, outdir, cyclic: bool = False, match: bool = True) -> Wiring:
    """Put OUTDIR's frames and displacement maps into the scene's compositor.

    The frames node feeds the compositor's output; the displacement node
    (Non-Color, values in pixels) feeds a Separate Color node whose R and G
    outputs are the x and y displacement, for the user's own node setups.
    Render Layers nodes left unused are muted; with `match` the view and the
    render size are set for the photo (see the module docstring).
    """
    outdir = Path(outdir)
    first, count = first_file(outdir / "frames", ".png")
    frames_image = load_sequence(first, "sRGB")
    tree = compositor_tree(scene)
    start = scene.frame_start
    frames_node = _image_node(tree, FRAMES_NODE, frames_image, count, start, cyclic, (-300, 200))
    output = output_socket(tree)
    tree.links.new(frames_node.outputs["Image"], output)
    changes = mute_unused_render_layers(tree, output.node)
    if match:
        changes += match_photo(scene, *frames_image.size)
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
    return Wiring(frames_image, displacement_image, count, tuple(changes))


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
