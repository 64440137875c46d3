"""TransVW self-discovery step 3: pattern classes -> ./TransVW_data/*_fold<b>.0.npy."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis.self_discovery.cli import pattern_generator_main

DEFAULT_SAVE = "./TransVW_data"  # the original's --save default

if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    pattern_generator_main(default_save=DEFAULT_SAVE)
