"""Model-based metrics as aac-metrics defines them: Sentence-BERT similarity and the FENSE
error detector ("echecker") behind FER, FENSE and SPIDEr-FL.

Imported only when one of these metrics is requested, so `import multi2cap.metrics` stays free of
torch and transformers. Models load from local folders (or the local Hugging Face cache) only,
unless the caller allows the network; checkpoints load with `weights_only=True`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from multi2cap.metrics.resources import resolve_echecker_bert

#: Heads of the echecker, in checkpoint order; FER reads the last one.
ERROR_HEADS = ("add_tail", "repeat_event", "repeat_adv", "remove_conj", "remove_verb", "error")


class SbertScorer:
    """Mean cosine similarity between a candidate and each of its references (unit-norm
    Sentence-BERT embeddings); corpus = mean over items."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        allow_network: bool = False,
        batch_size: int = 32,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model, device=device, local_files_only=not allow_network)
        self.model.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def _embed(self, sentences: Sequence[str]) -> torch.Tensor:
        return self.model.encode(
            list(sentences),
            convert_to_tensor=True,
            normalize_embeddings=True,
            batch_size=self.batch_size,
            show_progress_bar=False,
        )

    def score(
        self, candidates: Sequence[str], mult_references: Sequence[Sequence[str]]
    ) -> tuple[float, list[float]]:
        """(corpus similarity, per-item similarity), values in [-1, 1]."""
        cands = self._embed(candidates)
        refs = self._embed([r for rs in mult_references for r in rs])
        per_item = []
        start = 0
        for i, rs in enumerate(mult_references):
            per_item.append((cands[i] @ refs[start : start + len(rs)].T).mean().item())
            start += len(rs)
        return float(np.mean(per_item)), per_item


class _FlatClassifier(nn.Module):
    """The echecker's architecture: BERT, its [CLS] state, dropout, one linear layer."""

    def __init__(self, config: object, num_classes: int) -> None:
        from transformers import AutoModel

        super().__init__()
        self.encoder = AutoModel.from_config(config)
        self.dropout = nn.Dropout(self.encoder.config.hidden_dropout_prob)
        self.clf = nn.Linear(self.encoder.config.hidden_size, num_classes)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.clf(self.dropout(hidden[:, 0, :]))


class ErrorDetector:
    """The FENSE fluency-error detector loaded from its checkpoint
    (`torch.save({"model_type": str, "num_classes": 6, "state_dict": ...})`).

    `bert` names the folder (or cached hub id) with the base model's config and tokenizer; by
    default `MULTI2CAP_FENSE_BERT`, then the assets folder's copy of the checkpoint's
    `model_type`, then `model_type` itself (`resources.resolve_echecker_bert`). Captions are
    stripped of punctuation, lower-cased and cut/padded to `max_len` word pieces; a caption has
    an error when P(error) > `threshold`.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        bert: str | None = None,
        device: str = "cpu",
        allow_network: bool = False,
        batch_size: int = 32,
        threshold: float = 0.9,
        max_len: int = 64,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        states = torch.load(checkpoint, map_location="cpu", weights_only=True)
        base = resolve_echecker_bert(states["model_type"], bert)
        num_classes = int(states["num_classes"])
        if num_classes != len(ERROR_HEADS):
            raise ValueError(
                f"{checkpoint}: echecker with {num_classes} heads, expected {len(ERROR_HEADS)}"
            )
        config = AutoConfig.from_pretrained(base, local_files_only=not allow_network)
        self.tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=not allow_network)
        self.model = _FlatClassifier(config, num_classes)
        state_dict = dict(states["state_dict"])
        # Older transformers saved this buffer; newer BERTs rebuild it (aac-metrics drops it too).
        state_dict.pop("encoder.embeddings.position_ids", None)
        self.model.load_state_dict(state_dict)
        self.model.eval().to(device)
        self.device = device
        self.batch_size = batch_size
        self.threshold = threshold
        self.max_len = max_len

    @torch.no_grad()
    def probabilities(self, sentences: Sequence[str]) -> np.ndarray:
        """Sigmoid outputs, shape (len(sentences), 6), columns in `ERROR_HEADS` order."""
        texts = [re.sub(r"[^\w\s]", "", s).lower() for s in sentences]
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                truncation=True,
                padding="max_length",
                max_length=self.max_len,
                return_tensors="pt",
            )
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = self.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch.get("token_type_ids"),
            )
            chunks.append(logits.sigmoid().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, len(ERROR_HEADS)))

    def fer(self, sentences: Sequence[str]) -> tuple[float, list[float]]:
        """(corpus FER = share of captions with an error, per-item 0/1)."""
        flags = (self.probabilities(sentences)[:, -1] > self.threshold).astype(float)
        return float(flags.mean()), flags.tolist()
