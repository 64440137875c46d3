"""Where two methods meet: LoVT's localized evaluation ("one benchmark for every 2D method") scores
DiRA's pre-trained encoder from the files DiRA writes. Method code never imports another method; this test
is the one place that checks the hand-over between two of them."""

import pytest
import torch

from dira.models import DiRAMoCo
from lovt.evaluation.backbone import load_resnet50


@pytest.mark.parametrize("mode", ["dira", "di"])
def test_dira_files_are_evaluated_as_they_are(mode, tmp_path):
    """DiRA's encoder goes into the same table: its full checkpoint.pth (module.encoder_q.backbone.encoder.*,
    beside the key encoder) and its backbone-only best_checkpoint.pth load with every tensor matched, and the
    query encoder's values are the ones taken."""
    model = DiRAMoCo(mode, "resnet50", 128, 16, mlp=True)
    with torch.no_grad():  # make the key encoder differ from the query encoder
        for p in model.encoder_k.parameters():
            p.add_(1.0)
    query = model.encoder_q.backbone if mode == "dira" else model.encoder_q
    full = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "arch": "resnet50", "state_dict": full}, tmp_path / "checkpoint.pth")
    torch.save(query.state_dict(), tmp_path / "best_checkpoint.pth")
    resnet_q = query.encoder if mode == "dira" else query
    for name in ("checkpoint.pth", "best_checkpoint.pth"):
        loaded = load_resnet50(tmp_path / name).state_dict()
        expected = {k: v for k, v in resnet_q.state_dict().items() if not k.startswith("fc.")}
        assert loaded.keys() == expected.keys()
        for k, v in expected.items():
            assert torch.equal(loaded[k], v), (name, k)
