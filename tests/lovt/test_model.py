"""Shapes and masks through both encoders, attention pooling, cross-attention, frozen layers."""
from pathlib import Path

import pytest
import torch
from torch import nn

from lovt.data import collate_image_text
from lovt.models import (
    BiModalModel,
    ReportEncoder,
    ReportEncoderConfig,
    ReportTokenizer,
    ScanEncoder,
    ScanEncoderConfig,
    load_tokenizer,
)
from lovt.models.components import AttentionPool, CrossAttention
from lovt.synthetic import SyntheticImageTextDataset, build_tiny_language_model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_language_model(tmp_path_factory.mktemp("bert") / "tiny_bert")


def _report_batch(tiny_bert, reports, max_length=512):
    return ReportTokenizer(load_tokenizer(str(tiny_bert)), max_length)(reports)


def test_scan_encoder_regions_and_attention_pool():
    enc = ScanEncoder(ScanEncoderConfig(backbone_architecture="resnet", input_size=[64, 64],
                                        global_aggregator="avgpool_attention", local_weights_from_aggregator=True))
    out = enc(torch.randn(2, 3, 64, 64))
    assert enc.d_l == 2048 and enc.max_region_size == (2, 2)
    assert out["local"].shape == (2, 4, 2048) and out["global"].shape == (2, 2048)
    assert out["structure"] == (2, 2)
    assert out["weights"].shape == (2, 4)
    assert torch.allclose(out["weights"].sum(1), torch.ones(2), atol=1e-5)
    assert list(enc.feature_extractor.backbone_layers) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                                           "layer3", "layer4"]


def test_scan_encoder_avg_is_resnet_average_pooling():
    enc = ScanEncoder(ScanEncoderConfig(backbone_architecture="resnet", input_size=[64, 64],
                                        backbone_model=["pytorch/vision:v0.6.0", "resnet18"])).eval()
    x = torch.randn(2, 3, 64, 64)
    out = enc(x)
    assert out["weights"] is None and enc.d_g == 512
    assert torch.allclose(out["global"], out["local"].mean(1))
    # the channels-last layout (a GPU speed option) computes the same thing
    assert torch.allclose(enc.use_channels_last()(x)["global"], out["global"], atol=1e-4)


def test_attention_pool_masks_padding():
    pool = AttentionPool(16, 8)
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    pooled, w = pool(x, mask)
    assert pooled.shape == (3, 16) and w.shape == (3, 5)
    assert (w[~mask] == 0).all()
    assert torch.allclose(w.sum(1), torch.ones(3), atol=1e-5)
    x2 = x.clone()
    x2[~mask] = 50.0  # padded positions are ignored entirely
    pooled2, w2 = pool(x2, mask)
    assert torch.allclose(pooled, pooled2, atol=1e-5) and torch.allclose(w, w2, atol=1e-6)
    # the original's query divides by all positions (padding included), the flag by the valid ones only
    fixed, _ = AttentionPool(16, 8, query_mean_ignores_padding=True).requires_grad_(False)(x, mask)
    assert fixed.shape == pooled.shape


def test_report_tokenizer_sentence_structure(tiny_bert):
    reports = [["the heart is enlarged .", "lungs are clear ."], ["no acute cardiopulmonary process ."]]
    batch = _report_batch(tiny_bert, reports)
    tok = load_tokenizer(str(tiny_bert))
    lengths = [[len(tok(s, add_special_tokens=False)["input_ids"]) for s in r] for r in reports]
    assert batch["sentence_mask"].tolist() == [[True, True], [True, False]]
    assert batch["sentence_token_mask"].sum(-1).tolist() == [lengths[0], [lengths[1][0], 0]]
    assert batch["input_ids"][0, 0] == tok.cls_token_id
    assert batch["input_ids"][0, sum(lengths[0]) + 1] == tok.sep_token_id
    assert batch["attention_mask"].sum(1).tolist() == [sum(lengths[0]) + 2, lengths[1][0] + 2]
    # whole-sentence truncation: the sentence that would overflow and all after it are dropped
    short = _report_batch(tiny_bert, [["the heart is enlarged .", "lungs are clear .", "lungs are clear ."]],
                          max_length=lengths[0][0] + lengths[0][1] + 3)
    assert short["sentence_mask"].sum().item() == 2


def test_report_encoder_sentence_max_pooling_and_frozen_layers(tiny_bert):
    cfg = ReportEncoderConfig(language_encoder=str(tiny_bert), freeze_encoder_layers=6,
                              global_aggregator="avgpool_attention", global_from_local=True, local_from="sentences",
                              local_weights_from_aggregator=True)
    enc = ReportEncoder(cfg)
    assert enc.language_model.training  # dropout on, as the original
    lm = enc.language_model
    assert not any(p.requires_grad for p in lm.embeddings.parameters())
    assert not any(p.requires_grad for layer in lm.encoder.layer[:6] for p in layer.parameters())
    assert all(p.requires_grad for layer in lm.encoder.layer[6:] for p in layer.parameters())

    reports = [["the heart is enlarged .", "lungs are clear ."], ["left basilar atelectasis ."]]
    batch = _report_batch(tiny_bert, reports)
    enc.eval()
    out = enc(**batch)
    S = batch["sentence_mask"].shape[1]
    assert out["local"].shape == (2, S, 32) and out["global"].shape == (2, 32) and out["weights"].shape == (2, S)
    assert (out["local"][1, 1] == 0).all() and out["weights"][1, 1] == 0
    # the first sentence's vector is the element-wise max over its tokens of the joint encoding
    hidden = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long()).last_hidden_state
    n0 = int(batch["sentence_token_mask"][0, 0].sum())
    assert torch.allclose(out["local"][0, 0], hidden[0, 1: 1 + n0].max(0).values, atol=1e-5)

    # frozen parameters stay unchanged by an optimizer step, the others move
    enc.train()
    before = {n: p.detach().clone() for n, p in lm.named_parameters()}
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    out = enc(**batch)
    (out["global"].pow(2).sum() + out["local"].pow(2).sum()).backward()
    opt.step()
    for name, p in lm.named_parameters():
        frozen = name.startswith("embeddings.") or any(name.startswith(f"encoder.layer.{i}.") for i in range(6))
        if frozen:
            assert torch.equal(p, before[name]), name
    assert not torch.equal(lm.encoder.layer[7].output.dense.weight, before["encoder.layer.7.output.dense.weight"])


def test_cross_attention_masks_padded_sentences():
    att = CrossAttention(8)
    a, b = torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = att(a, b, mask)
    assert out["b2a"].shape == (2, 4, 8) and out["a2b"].shape == (2, 3, 8)
    assert (out["probs_b2a"][:, :, :][~mask[:, None, :].expand(-1, 4, -1)] == 0).all()
    assert torch.allclose(out["probs_b2a"].sum(-1), torch.ones(2, 4), atol=1e-5)
    assert (out["probs_a2b"][~mask] == 0).all()
    b2 = b.clone()
    b2[~mask] = 9.0  # padding content does not reach the image side
    assert torch.allclose(att(a, b2, mask)["probs_b2a"], out["probs_b2a"], atol=1e-6)
    assert isinstance(att.norm, nn.BatchNorm1d)  # one BN shared by both directions


def test_bimodal_model_losses_and_outputs(tiny_bert):
    from lovt.models.config import BiModalModelConfig, GlobalNceLossConfig, LocalIntraSampleContrastiveLossConfig

    cfg = BiModalModelConfig(
        encoder_a=ScanEncoderConfig(backbone_architecture="resnet", input_size=[64, 64],
                                    backbone_model=["pytorch/vision:v0.6.0", "resnet18"],
                                    global_aggregator="avgpool_attention", local_weights_from_aggregator=True),
        encoder_b=ReportEncoderConfig(language_encoder=str(tiny_bert), freeze_encoder_layers=6,
                                      global_aggregator="avgpool_attention", global_from_local=True,
                                      local_from="sentences", local_weights_from_aggregator=True),
        d_z=16, d_hidden=32, g_alignment=GlobalNceLossConfig(negatives_from_same_modality=False),
        ll_alignments_a={"0": LocalIntraSampleContrastiveLossConfig(distance_threshold=0.5, threshold_type="relative",
                                                                     smooth_weights=True)},
        ll_alignments_b={"0": LocalIntraSampleContrastiveLossConfig()},
        l_weights_a="from_aggregation", l_weights_b="from_aggregation", l_weights_stop_grad=True,
        loss_weights={"global_a2b": 0.75, "global_b2a": 0.25, "local_a_l2att": 0.375, "local_a_att2l": 0.375,
                      "local_b_l2att": 0.375, "local_b_att2l": 0.375})
    model = BiModalModel(cfg)
    ds = SyntheticImageTextDataset(4)
    batch = collate_image_text([ds[i] for i in range(4)])
    batch["report"] = _report_batch(tiny_bert, batch["sentences"])
    loss, losses, metrics, out = model(batch)
    assert set(losses) == set(cfg.loss_weights)
    assert loss.item() == pytest.approx(sum(cfg.loss_weights[k] * v.item() for k, v in losses.items()), rel=1e-5)
    S = batch["report"]["sentence_mask"].shape[1]
    assert out["att_probs_a2b"].shape == (4, S, 4) and out["zg_a"].shape == (4, 16)
    loss.backward()
    # stop-grad on the local weights: the local losses alone give the attention pools no gradient
    model.zero_grad()
    _, losses, _, _ = model(batch)
    sum(v for k, v in losses.items() if k.startswith("local")).backward()
    pool = model.model_a.encoder.global_aggregator.attention
    assert pool.in_proj_weight.grad is None or pool.in_proj_weight.grad.abs().sum() == 0


def test_collator_skips_studies_without_sentences(tiny_bert):
    from lovt.datamodule import PretrainCollator

    ds = SyntheticImageTextDataset(3)
    items = [ds[0], {**ds[1], "sentences": []}, ds[2]]
    with pytest.warns(UserWarning, match="without report sentences"):
        batch = PretrainCollator(load_tokenizer(str(tiny_bert)))(items)
    assert batch["scan"].shape[0] == 2 and batch["report"]["input_ids"].shape[0] == 2
    assert batch["study_id"] == [ds[0]["study_id"], ds[2]["study_id"]]


def test_parameter_counts_of_the_original():
    """Full-size components have the original's parameter counts (spec: re-implementation checklist)."""
    from lovt.models.components import MLP, SequenceMLP

    def count(m):
        return sum(p.numel() for p in m.parameters())

    enc = ScanEncoder(ScanEncoderConfig(backbone_architecture="resnet", global_aggregator="avgpool_attention"))
    assert count(enc.feature_extractor) == 23_508_032
    assert count(enc.global_aggregator) == 16_785_408
    assert count(AttentionPool(768, 8)) == 2_362_368
    assert count(SequenceMLP(2048, 512, 2048)) == count(MLP(2048, 512, 2048)) == 5_249_536
    assert count(SequenceMLP(768, 512, 2048)) == count(MLP(768, 512, 2048)) == 2_628_096
    assert count(CrossAttention(512)) == 788_992


def test_finalize_run_accepts_a_relative_run_folder_and_lightnings_absolute_checkpoint(tmp_path, monkeypatch):
    """The run folder may be given relative to the working directory while Lightning reports absolute paths."""
    import json

    import torchvision

    from lovt.export import BACKBONE_PREFIXES, finalize_run

    monkeypatch.chdir(tmp_path)
    run = Path("runs") / "r"
    (run / "checkpoints").mkdir(parents=True)
    resnet = torchvision.models.resnet18(weights=None)
    state = {BACKBONE_PREFIXES[0] + k: v for k, v in resnet.state_dict().items()}
    best = (run / "checkpoints" / "pretrain-epoch=0002.ckpt").resolve()
    torch.save({"state_dict": state}, best)
    final = finalize_run(run, "demo", best, best_score=1.0, best_epoch=2, models_base_path=tmp_path / "models")
    info = json.loads((final / "run_info.json").read_text())
    assert info["best_checkpoint"] == "checkpoints/pretrain-epoch0002.ckpt"
    assert final == tmp_path / "models" / "pretraining" / "demo"
    assert (final / "checkpoints" / "backbone_weights.pt").is_file()


def test_tiny_bert_vocabulary_is_the_corpus_words_and_the_same_every_time(tmp_path):
    from lovt.models.report_encoder import build_tiny_bert, load_tokenizer

    corpus = ["Small left pleural effusion.", "No pneumothorax.", "Mild cardiomegaly, small effusion."]
    first = build_tiny_bert(tmp_path / "a", corpus, num_layers=1)
    second = build_tiny_bert(tmp_path / "b", corpus, num_layers=1)
    assert (first / "vocab.txt").read_text() == (second / "vocab.txt").read_text()
    tokens = load_tokenizer(str(first)).tokenize("Small left pleural effusion. No pneumothorax")
    assert tokens == ["small", "left", "pleural", "effusion", ".", "no", "pneumothorax"]  # not [UNK]s
