"""Step 0 of TransVW (no script in the original): LUNA16 or NIfTI -> dataset/{train,validation}/*.npy."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.genesis.self_discovery.cli import prepare_main

if __name__ == "__main__":
    from shared.cliwarnings import plain_warnings

    plain_warnings()  # one-line warnings, no source lines
    prepare_main()
