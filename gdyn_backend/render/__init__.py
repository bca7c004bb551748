"""Rendering frames from a still and displacement fields (paper §5).

`splat.softmax_splat` is the one forward warp; `default.DefaultRenderer`
(motion-weighted softmax splatting + `holes.push_pull_fill`) needs no
trained weights; `learned.LearnedRenderer` is the optional feature-pyramid
network loaded from a safetensors checkpoint.
"""
