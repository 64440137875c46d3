"""Self-discovery of anatomical patterns (Semantic Genesis / TransVW), written once for both methods.

Steps: `engine.train_autoencoder` -> `engine.extract_features` -> `patterns.generate_patterns`;
`pipeline.run_self_discovery` runs them all on one folder with small settings.
"""

from shared.genesis.self_discovery.pipeline import run_self_discovery

__all__ = ["run_self_discovery"]
