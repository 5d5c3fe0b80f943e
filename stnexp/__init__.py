"""stnexp: Spatial Transformer Networks vs CNNs on distorted MNIST.

The Python API (api.py, docs/python-api.md): `stnexp.train(config, ...)`, `stnexp.evaluate(run, ...)`,
`stnexp.load(checkpoint)`, `stnexp.test_set(loaded)` and `stnexp.on_canvas(digits, size)`. The package
itself imports nothing heavy: `stnexp --help` stays fast, and torch loads when one of these is first called.
"""

__version__ = "0.2.0.dev0"
API = ("train", "evaluate", "load", "test_set", "on_canvas", "Loaded", "Evaluation")


def __getattr__(name: str):
    if name in API:
        from stnexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'stnexp' has no attribute {name!r}")
