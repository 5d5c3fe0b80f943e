"""The digits: the MNIST IDX files (idx.py, mnist.py), their distortions (distortions.py) and the sets
a run trains, validates and tests on (sets.py, whose names this package re-exports: data.split,
data.Stream, data.fixed). It may import config and the bottom modules (geometry, pose, seeds, errors).
"""

from stnexp.data.sets import CHUNK, Digits, Fixed, Split, Stream, fixed, render_all, split

__all__ = ["CHUNK", "Digits", "Fixed", "Split", "Stream", "fixed", "render_all", "split"]
