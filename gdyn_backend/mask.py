"""The editable motion mask: the prior's "what moves" map as a picture the user can paint.

`gdyn mask IMAGE -o MASK.png` (and the `mask` method of `gdyn serve`) writes
the map the procedural prior computes for the photo, at the photo's size:
white moves, black stays, grey scales the motion. Painted over and given
back as a mask (`gdyn animate --mask`, `gdyn simulate --mask`, a live
session's `mask`), it is read by `io.read_mask` and applied by the one pin
rule (`gdyn_backend.pinning`): a region painted black is exactly still.

The map is the prior's own analysis (`procedural.what_moves`), never a
second one, so an unedited mask says what the prior would move anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdyn_backend import io, params
from gdyn_backend.errors import UserError
from gdyn_backend.presets import DEFAULT_PRESET, load_preset
from gdyn_backend.sources import procedural


@dataclass(frozen=True)
class MaskOptions:
    """The params of the server's `mask` request (`gdyn mask`'s arguments): the photo, the
    PNG to write and the preset whose `what_moves` rule applies."""

    image: Path
    output: Path
    preset: str = DEFAULT_PRESET

    @classmethod
    def from_params(cls, request: dict) -> MaskOptions:
        return cls(**params.option_values(cls, request, "mask"))


def write_mask(image, output, preset: str) -> tuple[Path, int, int]:
    """Write the what-moves map of photo `image` to `output` (an 8-bit grey PNG, atomic).

    preset: name or file of the preset whose `what_moves` rule applies.
    Returns (output, width, height) with the photo's width and height in pixels.
    """
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise UserError(f"the mask is written as PNG: give an output ending in .png, got {output.name}")
    still = io.read_image(image)
    values = procedural.what_moves(still, load_preset(preset))
    output.parent.mkdir(parents=True, exist_ok=True)
    io.write_png(output, np.repeat(values[:, :, None], 3, axis=2))
    return output, still.width, still.height
