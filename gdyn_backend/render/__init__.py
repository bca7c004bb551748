"""Rendering frames from a still and displacement fields (paper §5).

`splat.softmax_splat` is the one forward warp; `default.DefaultRenderer`
(motion-weighted softmax splatting, stretch holes filled from the object,
`holes.push_pull_fill` for disocclusions) needs no trained weights; on the
CPU it runs in the native kernel (`splat_kernel.c`, built on first use by
`native.py`) where a C compiler works, else on the portable scipy/torch path;
`learned.LearnedRenderer` is the optional feature-pyramid network loaded
from a safetensors checkpoint.
"""
