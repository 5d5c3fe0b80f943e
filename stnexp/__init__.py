"""stnexp: Spatial Transformer Networks vs CNNs on distorted MNIST."""

__version__ = "0.2.0.dev0"
