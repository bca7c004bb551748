"""Motion sources: where a still's spectral volume comes from.

`procedural` is the default and needs no trained weights (a physically
shaped spectral prior); other sources (a video's extracted motion, a learned
model) produce the same `spectral.SpectralVolume`.
"""
