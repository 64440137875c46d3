"""The five methods of the monorepo: the one list that the Makefile, shared/export.py and tools/gpu_check.py read.

    python shared/methods.py          # prints them, space-separated (the Makefile's ALL_METHODS)

Run as a file, not as `-m shared.methods`, so that the Makefile needs no installed environment to read it.
"""

METHODS = ("semantic_genesis", "transvw", "dira", "voco", "lovt")
GENESIS_FAMILY = ("semantic_genesis", "transvw")  # the methods that run shared/genesis/

if __name__ == "__main__":
    print(" ".join(METHODS))
