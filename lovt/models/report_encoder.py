"""Text side: a BERT encoder over the whole report, per-sentence max pooling, pooling over sentences.

The report is encoded in ONE pass ([CLS] s_1 s_2 ... [SEP], no separator between sentences), so each sentence's
tokens are contextualised by the whole report; the sentence vectors are element-wise maxima over their tokens.
"""
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from lovt.models.components import AttentionPool
from lovt.models.config import ReportEncoderConfig


def _resolve(name_or_path: str, loader, **kwargs):
    """Load from a local folder, or from the local Hugging Face cache; never download."""
    if Path(name_or_path).is_dir():
        return loader(name_or_path, **kwargs)
    try:
        return loader(name_or_path, local_files_only=True, **kwargs)
    except OSError as e:
        raise FileNotFoundError(
            f"language model {name_or_path!r} is neither a local folder nor in the Hugging Face cache. Download it "
            f"once (`hf download {name_or_path}`) or set pretrain_model.encoder_b.language_encoder=<local folder>"
        ) from e


def load_tokenizer(name_or_path: str):
    # Bio_ClinicalBERT ships no tokenizer_config: the BERT default do_lower_case=True applies (faithful)
    return _resolve(name_or_path, AutoTokenizer.from_pretrained)


class ReportTokenizer:
    """Collates lists of sentences into BERT inputs plus the sentence structure (joint encoding).

    Sentences are tokenised without special tokens (truncated to max_length-2) and concatenated while the report
    stays within max_length-2 tokens; the first sentence that would overflow and all after it are dropped (a first
    sentence that alone is too long is truncated and kept alone).
    """

    def __init__(self, tokenizer, max_length: int = 512):
        self.tokenizer = tokenizer
        self.max_content = max_length - 2

    def __call__(self, reports: Sequence[Sequence[str]]) -> dict:
        flat = [s for sentences in reports for s in sentences]
        ids = []
        if flat:  # transformers 5: __call__ (batch_encode_plus is gone)
            ids = self.tokenizer(flat, add_special_tokens=False, truncation=True,
                                 max_length=self.max_content)["input_ids"]
        per_report, k = [], 0
        for sentences in reports:
            per_report.append(ids[k: k + len(sentences)])
            k += len(sentences)
        return self.pack(per_report)

    def pack(self, reports_ids: Sequence[Sequence[Sequence[int]]]) -> dict:
        """Per report, the token ids of each sentence (no special tokens, each already truncated to max_length-2;
        e.g. stored by lovt/data/tokenized.py) -> the batch tensors of __call__."""
        samples = []
        for sentence_ids in reports_ids:
            kept, total = [], 0
            for s_ids in sentence_ids:
                if total + len(s_ids) > self.max_content:
                    break
                kept.append(s_ids)
                total += len(s_ids)
            samples.append([s for s in kept if len(s) > 0])
        B = len(samples)
        S = max(1, max(len(s) for s in samples))
        L = max([1] + [len(t) for s in samples for t in s])
        T = 2 + max(sum(len(t) for t in s) for s in samples)
        input_ids = torch.full((B, T), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(B, T, dtype=torch.bool)
        special = torch.zeros(B, T, dtype=torch.bool)
        sentence_mask = torch.zeros(B, S, dtype=torch.bool)
        sentence_token_mask = torch.zeros(B, S, L, dtype=torch.bool)
        for b, sentences in enumerate(samples):
            row = np.concatenate([[self.tokenizer.cls_token_id], *sentences, [self.tokenizer.sep_token_id]])
            input_ids[b, : len(row)] = torch.from_numpy(row.astype(np.int64))
            attention_mask[b, : len(row)] = True
            special[b, 0] = special[b, len(row) - 1] = True
            for s, t in enumerate(sentences):
                sentence_mask[b, s] = True
                sentence_token_mask[b, s, : len(t)] = True
        return {"input_ids": input_ids, "attention_mask": attention_mask, "special_tokens_mask": special,
                "sentence_mask": sentence_mask, "sentence_token_mask": sentence_token_mask,
                "num_sentences": sentence_mask.sum(1)}


class ReportEncoder(nn.Module):
    """BERT (embeddings + first `freeze_encoder_layers` layers frozen) -> sentence vectors -> global vector.

    local  = sentence vectors (max over their tokens), BxSx768, mask BxS
    global = attention pooling over sentences (LoVT, global_from_local) or max/avg over all report tokens
    """

    def __init__(self, config: ReportEncoderConfig):
        super().__init__()
        if config.local_from != "sentences" or config.sentence_encoding_mode != "joint":
            raise ValueError("only local_from='sentences' with sentence_encoding_mode='joint' is implemented")
        if config.project_language_embeddings:
            raise ValueError("project_language_embeddings is not implemented (unused by all experiments)")
        self.config = config
        self.language_model = _resolve(config.language_encoder, AutoModel.from_pretrained)
        self.language_model.train()  # from_pretrained returns eval mode; the original trains with dropout on
        if getattr(self.language_model, "pooler", None) is not None:
            # never used (only last_hidden_state is): frozen so DDP does not wait for its gradient
            self.language_model.pooler.requires_grad_(False)
        self.d_l = self.d_g = self.language_model.config.hidden_size
        self.max_region_size = config.max_length
        if config.freeze_embeddings:
            for p in self.language_model.embeddings.parameters():
                p.requires_grad_(False)
        layers = self.language_model.encoder.layer
        if config.freeze_encoder_layers > len(layers):
            raise ValueError(f"freeze_encoder_layers={config.freeze_encoder_layers} but the model has {len(layers)}")
        for layer in layers[: config.freeze_encoder_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)
        if config.global_aggregator == "avgpool_attention":
            self.global_aggregator = AttentionPool(self.d_l, config.attention_heads, config.query_mean_ignores_padding)
        elif config.global_aggregator not in ("max", "avg", "token_0"):
            raise ValueError(f"unknown global_aggregator {config.global_aggregator!r}")
        if config.global_aggregator == "avgpool_attention" and not config.global_from_local:
            raise ValueError("avgpool_attention pools sentence vectors: set global_from_local=true")

    def forward(self, input_ids, attention_mask, special_tokens_mask, sentence_mask, sentence_token_mask, **_):
        raw = self.language_model(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state
        valid = attention_mask & ~special_tokens_mask  # BxT real content tokens
        hidden = raw * (~special_tokens_mask).unsqueeze(-1).to(raw.dtype)  # BxTxd
        # regroup the content tokens, in order, into their sentences: BxSxLxd
        B, S, L = sentence_token_mask.shape
        grouped = hidden.new_zeros(B, S, L, hidden.shape[-1])
        grouped[sentence_token_mask] = hidden[valid]
        tok = sentence_token_mask.unsqueeze(-1)
        if self.config.sentence_aggregator == "max":
            local = grouped.masked_fill(~tok, float("-inf")).max(2).values
        else:
            local = (grouped * tok).sum(2) / tok.sum(2).clamp(min=1)
        local = local.masked_fill(~sentence_mask.unsqueeze(-1), 0.0)  # BxSxd, padded sentences are zero vectors
        weights = None
        agg = self.config.global_aggregator
        if self.config.global_from_local:
            if agg == "avgpool_attention":
                global_, att = self.global_aggregator(local, sentence_mask)
                weights = att if self.config.local_weights_from_aggregator else None
            elif agg == "max":
                global_ = local.masked_fill(~sentence_mask.unsqueeze(-1), float("-inf")).max(1).values
            else:
                m = sentence_mask.unsqueeze(-1)
                global_ = (local * m).sum(1) / m.sum(1).clamp(min=1)
        elif agg == "max":
            global_ = hidden.masked_fill(~valid.unsqueeze(-1), float("-inf")).max(1).values
        elif agg == "avg":
            global_ = (hidden * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        else:  # token_0: the [CLS] output (taken before the special-token zeroing)
            global_ = raw[:, 0]
        return {"local": local, "global": global_, "mask": sentence_mask, "weights": weights, "structure": S}


def tiny_vocabulary(corpus, vocab_size: int = 600) -> list[str]:
    """A deterministic WordPiece vocabulary: BERT's special tokens, every character seen, then whole words by falling
    frequency (ties alphabetical) up to `vocab_size` tokens. No `##` pieces: a word outside the vocabulary is one
    `[UNK]`, so a report has as many tokens as words (the 128-token tiny configuration keeps whole reports)."""
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalize, split = BertNormalizer(lowercase=True), BertPreTokenizer()
    words = Counter(w for text in (list(corpus) or ["empty"])
                    for w, _ in split.pre_tokenize_str(normalize.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
    known = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    return vocab


def build_tiny_bert(folder, corpus: list[str], hidden_size: int = 32, num_layers: int = 8, num_heads: int = 4,
                    intermediate_size: int = 64, vocab_size: int = 600, seed: int = 0) -> Path:
    """Write a small random-init BERT (config.json, weights, vocab.txt) usable as `language_encoder`.

    Tests and demos use it instead of downloading Bio_ClinicalBERT. The WordPiece vocabulary comes from `corpus`
    (lower-cased, like Bio_ClinicalBERT's tokenizer defaults) by `tiny_vocabulary`, so the same corpus always gives
    the same vocab.txt (the `tokenizers` WordPiece trainer breaks frequency ties differently in every process).
    """
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in tiny_vocabulary(corpus, vocab_size)))
    # transformers 5 takes the file as `vocab` (it ignores `vocab_file`, which left 5 special tokens only)
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    if tokenizer.vocab_size <= 5:
        raise RuntimeError(f"{folder / 'vocab.txt'}: the tokenizer did not load the vocabulary")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    return folder
