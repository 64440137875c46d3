"""TransVW self-discovery step 2: 512-d feature per patient -> train_features.npy, validation_features.npy."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis.self_discovery.cli import feature_extractor_main

if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    feature_extractor_main()
