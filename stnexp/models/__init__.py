"""The classifiers: the backbone registry (backbones.py), the spatial transformer block (transformer.py),
its transform families (transforms.py), stnexp's CPU kernels (kernels.py, spectral.py) and a model built
of them (network.py, whose names this package re-exports: models.build, models.n_params), and the config
blocks they share with stnexp.config (config_blocks.py). It may import the bottom modules (geometry, pose,
errors) and torch; never config, data, training or results.
"""

from stnexp.models.network import build, mismatch, n_params, param_counts, param_groups

__all__ = ["build", "mismatch", "n_params", "param_counts", "param_groups"]
