"""`--plan` of LoVT / ConVIRT / CLIP pre-training as a shared.plan.Plan.

    python lovt/train.py +experiment=LoVT_100 --plan [--plan_gpu H100] [--plan_tokens 256] [key=value ...]

The Hydra overrides compose the same configuration lovt/train.py would train. Nothing is downloaded: the
ImageNet weights are not loaded (same shapes), and when the configured language model is neither a local
folder nor in the Hugging Face cache, a random BERT of Bio_ClinicalBERT's size (bert-base-cased: 12 layers,
768 wide, 28,996 tokens) is written to a temporary folder and used instead.
"""

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from shared.plan import Plan, add_plan_args, run_plan

# MIMIC-CXR-JPG holds 377,110 images of 227,835 studies; LoVT keeps the frontal (AP/PA) images of the train
# studies with findings or impression. Not counted here: give the prepared dataset's size with --plan_samples.
ASSUMED_TRAIN_PAIRS = 200_000
BIO_CLINICAL_BERT = dict(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512)
SENTENCE_TOKENS = 16
PRECISIONS = {"16-mixed": "fp16", "16": "fp16", "bf16-mixed": "bf16", "bf16": "bf16"}


def plan_parser():
    p = argparse.ArgumentParser(prog="lovt/train.py ... --plan", description="LoVT pre-training plan")
    add_plan_args(p, f"image-report pairs per epoch (default: {ASSUMED_TRAIN_PAIRS:,}, an assumption)")
    p.add_argument("--plan_tokens", type=int, default=256,
                   help="tokens of the longest report of a batch (the batch is padded to it; at most max_length)")
    return p


def main(argv):
    """Parse the planner's flags out of `argv`, compose the config from the rest, print the plan."""
    from hydra import compose, initialize_config_dir

    from lovt.train import CONFIG_DIR

    args, overrides = plan_parser().parse_known_args(argv)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=overrides)
    return run_plan(pretrain_plan(cfg, args), args)


def _language_model(name, folder):
    """`name` when it loads without a download, else a random BERT of Bio_ClinicalBERT's size in `folder`."""
    from transformers import AutoConfig, BertConfig, BertModel

    try:
        if Path(name).is_dir() or AutoConfig.from_pretrained(name, local_files_only=True):
            return name, False
    except OSError:
        pass
    BertModel(BertConfig(**BIO_CLINICAL_BERT)).save_pretrained(folder)
    return folder, True


def synthetic_batch(n, size, tokens, max_length, vocab_size):
    """n images and n reports of `tokens` tokens in sentences of SENTENCE_TOKENS, as PretrainCollator gives."""
    from lovt.models.report_encoder import ReportTokenizer

    tokens = min(tokens, max_length - 2)
    sentences = [[5 + (i * SENTENCE_TOKENS + j) % (vocab_size - 5) for j in range(SENTENCE_TOKENS)]
                 for i in range(-(-tokens // SENTENCE_TOKENS))]
    sentences[-1] = sentences[-1][: tokens - SENTENCE_TOKENS * (len(sentences) - 1)]
    big = vocab_size > 102  # BERT's [CLS] 101 and [SEP] 102; a tiny test vocabulary has fewer
    ids = SimpleNamespace(pad_token_id=0, cls_token_id=101 if big else 1, sep_token_id=102 if big else 2)
    report = ReportTokenizer(ids, max_length).pack([sentences] * n)
    return {"scan": torch.rand(n, 3, size, size), "report": report, "chexpert": torch.zeros(n, 5),
            "view_index": torch.zeros(n, dtype=torch.long)}


def pretrain_plan(cfg, args):
    from lovt.engine import BiModalModelRepresentationLearner
    from lovt.models.config import model_config

    pm = OmegaConf.to_container(cfg.pretrain_model, resolve=True)
    pm["encoder_a"]["backbone_pretrained"] = False  # the same shapes without the ImageNet file
    c = model_config(pm)
    n, size = c.batch_size, c.encoder_a.input_size[0]
    precision = PRECISIONS.get(str(cfg.trainer.get("precision", "32")), "fp32")
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    pairs = args.plan_samples or ASSUMED_TRAIN_PAIRS
    notes = []

    def make_modules():
        with tempfile.TemporaryDirectory() as folder:
            pm["encoder_b"]["language_encoder"], random_bert = _language_model(c.encoder_b.language_encoder, folder)
            if random_bert:
                notes.append(f"{c.encoder_b.language_encoder} is not on this machine: a random BERT of its size "
                             "stands in (same shapes, FLOPs and memory).")
            return {"model": BiModalModelRepresentationLearner(pm)}

    def make_step(modules):
        model = modules["model"].model
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[c.optimizer](
            params, lr=c.learning_rate, weight_decay=c.weight_decay)
        vocab = next(m.num_embeddings for name, m in model.named_modules() if name.endswith("word_embeddings"))
        batch = synthetic_batch(n, size, args.plan_tokens, c.encoder_b.max_length, vocab)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)

        def step():  # one micro-batch; gradients stay alive between them (accumulation), zeroed after the step
            with torch.autocast("cpu", dtype=dtype, enabled=precision != "fp32"):
                loss = model(batch)[0]
            loss.backward()
            optimizer.step()

        return [optimizer], step

    return Plan(
        method=f"lovt ({cfg.get('name', 'pre-training')})", precision=precision, checkpointing=False,
        sample="image-report pair",
        config=f"{c.encoder_a.backbone_model[-1]} ({size} px) + BERT ({c.encoder_b.language_encoder}), reports of "
               f"{args.plan_tokens} tokens; micro-batch {n}"
               + (f", {accumulate} accumulated per optimizer step" if accumulate > 1 else ""),
        samples_per_step=n, total_samples=c.max_epochs * pairs, pass_samples=pairs,
        schedule=f"{c.max_epochs} epochs x {pairs:,} pairs" + ("" if args.plan_samples else
                                                               " (assumed: set --plan_samples)")
                 + "; validation not counted",
        make_modules=make_modules, make_step=make_step, batch_flag="pretrain_model.batch_size", notes=notes)
