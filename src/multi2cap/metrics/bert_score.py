"""BERTScore (Zhang et al., "BERTScore: Evaluating Text Generation with BERT", ICLR 2020) over
any transformers encoder loaded from a local folder, with several references per item.

For a candidate x and a reference y, each sentence is encoded once; token embeddings are
`hidden_states[layer]` (layer 17 for roberta-large, the paper's and its package's choice; -1 =
the last layer, which is what aac-metrics gets through torchmetrics), L2-normalised, with the
special tokens (`<s>`/`</s>`, `[CLS]`/`[SEP]`) and padding left out. With cosines s_ij:

    P = sum_i w(x_i) max_j s_ij / sum_i w(x_i)     R = sum_j w(y_j) max_i s_ij / sum_j w(y_j)
    F = 2 P R / (P + R)

where w = 1, or with `idf` w(t) = log((M + 1) / (df(t) + 1)) over the M references of the whole
set (the paper's Eq. 4 with its +1 smoothing). Several references: the maximum of each of P, R
and F over the item's references (as the `bert_score` package and aac-metrics do). A sentence
without tokens scores 0 (aac-metrics replaces the NaN by 0). Inputs are cut to `max_length` = 64
word pieces (aac-metrics' default). Corpus values are means over items.

Imported only when BERTScore is requested (torch, transformers).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch


class BertScorer:
    """Loads the encoder and tokenizer once; `score` then runs on any caption set."""

    def __init__(
        self,
        model: str,
        layer: int = 17,
        idf: bool = False,
        device: str = "cpu",
        allow_network: bool = False,
        batch_size: int = 32,
        max_length: int = 64,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=not allow_network)
        self.model = AutoModel.from_pretrained(model, local_files_only=not allow_network)
        self.model.eval().to(device)
        layers = int(self.model.config.num_hidden_layers)
        if not -layers - 1 <= layer <= layers:
            raise ValueError(
                f"bert_score_layer={layer}: {model} has {layers} hidden layers (use 0..{layers}, "
                "or -1 for the last)"
            )
        self.layer = layer
        self.idf = idf
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def embed(self, sentences: Sequence[str]) -> list[tuple[list[int], np.ndarray]]:
        """Per sentence: its token ids and unit-norm embeddings (tokens, width), special tokens
        and padding removed."""
        out: list[tuple[list[int], np.ndarray]] = []
        for start in range(0, len(sentences), self.batch_size):
            batch = self.tokenizer(
                list(sentences[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_special_tokens_mask=True,
                return_tensors="pt",
            )
            keep = (batch.pop("special_tokens_mask") == 0) & (batch["attention_mask"] == 1)
            inputs = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**inputs, output_hidden_states=True).hidden_states[self.layer]
            hidden = torch.nn.functional.normalize(hidden.float(), dim=-1).cpu()
            for row in range(hidden.shape[0]):
                mask = keep[row]
                out.append((batch["input_ids"][row][mask].tolist(), hidden[row][mask].numpy()))
        return out

    def score(
        self, candidates: Sequence[str], mult_references: Sequence[Sequence[str]]
    ) -> dict[str, tuple[float, list[float]]]:
        """{"bert_score.f1" | ".precision" | ".recall": (corpus mean, per-item values)}."""
        flat_refs = [ref for refs in mult_references for ref in refs]
        encoded = self.embed([*candidates, *flat_refs])
        cands, refs = encoded[: len(candidates)], encoded[len(candidates) :]
        weight = self._idf([ids for ids, _ in refs]) if self.idf else None
        per_item: dict[str, list[float]] = {"f1": [], "precision": [], "recall": []}
        start = 0
        for i, item_refs in enumerate(mult_references):
            triples = [
                _greedy_match(cands[i], ref, weight) for ref in refs[start : start + len(item_refs)]
            ]
            start += len(item_refs)
            precision, recall, f1 = (max(column) for column in zip(*triples, strict=True))
            per_item["precision"].append(precision)
            per_item["recall"].append(recall)
            per_item["f1"].append(f1)
        return {
            f"bert_score.{name}": (float(np.mean(values)), values)
            for name, values in per_item.items()
        }

    @staticmethod
    def _idf(reference_ids: Sequence[Sequence[int]]) -> tuple[dict[int, float], float]:
        """(log((M + 1) / (df + 1)) per token id over the M references, the weight of a token
        no reference has: log(M + 1))."""
        df = Counter(token for ids in reference_ids for token in set(ids))
        m = len(reference_ids)
        weights = {token: math.log((m + 1) / (count + 1)) for token, count in df.items()}
        return weights, math.log(m + 1)


def _greedy_match(
    cand: tuple[list[int], np.ndarray],
    ref: tuple[list[int], np.ndarray],
    idf: tuple[dict[int, float], float] | None,
) -> tuple[float, float, float]:
    """(P, R, F) of one candidate against one reference; 0s when either has no tokens."""
    (cand_ids, cand_emb), (ref_ids, ref_emb) = cand, ref
    if not cand_ids or not ref_ids:
        return 0.0, 0.0, 0.0
    sims = cand_emb @ ref_emb.T  # (cand tokens, ref tokens)
    if idf is None:
        w_cand, w_ref = np.ones(len(cand_ids)), np.ones(len(ref_ids))
    else:
        weights, unseen = idf
        w_cand = np.array([weights.get(t, unseen) for t in cand_ids])
        w_ref = np.array([weights.get(t, unseen) for t in ref_ids])
    precision = _weighted_mean(sims.max(axis=1), w_cand)
    recall = _weighted_mean(sims.max(axis=0), w_ref)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = float(weights.sum())
    return float((values * weights).sum() / total) if total else 0.0
