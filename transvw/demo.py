"""TransVW demo (`make demo-transvw`): one line, no second run.

The public TransVW code is the Semantic Genesis program under other names (its README's C=44 sentence dropped,
`--nb_val_instances` added, the checkpoint `TransVW_chest_ct.pt` and the pattern folder `TransVW_data`); here
both run on the same engine (shared/genesis/). Its published setting (50 visual-word classes x 200 instances
from 623 patients, TransVW_data.zip) cannot be drawn from 16 sample scans, so a TransVW run on the sample
data would repeat the Semantic Genesis row to the last digit at the cost of several minutes. The table says
so in one line; `python transvw/demo.py --run` runs the full demo anyway (shared/genesis/demo.py flags after it).

    python transvw/demo.py [--runs runs]               # the one-line row
    python transvw/demo.py --run [--sample data/sample] [--runs runs] [genesis demo flags]
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `transvw` and `shared` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transvw import config

SAME_ENGINE = ("same engine as Semantic Genesis (public code identical but for names); its own difference: "
               f"checkpoint {config.EXP_NAME}.pt, pattern folder {config.PATTERN_DIR}, --nb_val_instances; "
               "see the semantic_genesis rows (`--run` repeats them under TransVW's names)")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--run" in argv:
        argv.remove("--run")
        from shared.genesis import demo as genesis_demo
        from transvw.finetune_classification import main as classify
        from transvw.finetune_segmentation import main as segment
        from transvw.train import main as pretrain
        return genesis_demo.run_demo(config.METHOD, config.EXP_NAME, pretrain,
                                     {"segmentation": segment, "classification": classify}, argv)
    import argparse

    from shared.demo import write_row
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs")
    p.add_argument("--sample", default="data/sample", help="unused without --run")
    args, _ = p.parse_known_args(argv)
    print(f"TransVW: {SAME_ENGINE}")
    return write_row(config.METHOD, runs=args.runs, data="sample LUNA16 (16 scans)", note=SAME_ENGINE,
                     wall_time_s=0.0)


if __name__ == "__main__":
    main()
