"""stnexp: Spatial Transformer Networks vs CNNs on distorted MNIST."""

__version__ = "0.1.0"
