"""BERTScore over a local encoder folder (a tiny random BERT), against a direct computation of
the paper's formulas: one sentence at a time, no padding, [CLS]/[SEP] dropped by position."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from multi2cap.metrics import MetricUnavailableError, evaluate

torch = pytest.importorskip("torch", reason="BERTScore needs torch")
transformers = pytest.importorskip("transformers", reason="BERTScore needs transformers")

CANDS = ["a dog barks loudly", "rain falls on the roof", ""]
MREFS = [
    ["the dog barks", "a man speaks while a dog barks"],
    ["rain on the roof"],
    ["a car engine runs"],
]


def _direct(folder: Path, layer: int, idf: bool) -> dict[str, list[float]]:
    """P, R, F per item: embeddings of each sentence alone, greedy cosine matching, idf weights
    log((M+1)/(df+1)) over the M references, the max of each over an item's references."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()

    def encode(sentence: str) -> tuple[list[int], torch.Tensor]:
        ids = tokenizer(sentence, truncation=True, max_length=64)["input_ids"]
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]
        inner = hidden[1:-1]  # without [CLS] and [SEP]
        return ids[1:-1], inner / inner.norm(dim=-1, keepdim=True)

    refs = [r for rs in MREFS for r in rs]
    df: dict[int, int] = {}
    for ref in refs:
        for token in set(encode(ref)[0]):
            df[token] = df.get(token, 0) + 1

    def weight(token: int) -> float:
        if not idf:
            return 1.0
        return math.log((len(refs) + 1) / (df.get(token, 0) + 1))

    out: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
    for cand, item_refs in zip(CANDS, MREFS, strict=True):
        c_ids, c_emb = encode(cand)
        triples = []
        for ref in item_refs:
            r_ids, r_emb = encode(ref)
            if not c_ids:
                triples.append((0.0, 0.0, 0.0))
                continue
            sims = c_emb @ r_emb.T
            wc = torch.tensor([weight(t) for t in c_ids])
            wr = torch.tensor([weight(t) for t in r_ids])
            p = float((sims.max(dim=1).values * wc).sum() / wc.sum())
            r = float((sims.max(dim=0).values * wr).sum() / wr.sum())
            triples.append((p, r, 2 * p * r / (p + r)))
        for name, column in zip(
            ("precision", "recall", "f1"), zip(*triples, strict=True), strict=True
        ):
            out[name].append(max(column))
    return out


@pytest.mark.parametrize(("layer", "idf"), [(1, False), (-1, True)])
def test_bert_score_matches_a_direct_computation(tiny_bert: Path, layer: int, idf: bool) -> None:
    result = evaluate(
        CANDS,
        MREFS,
        metrics="bert_score",
        tokenize=False,
        bert_score_model=str(tiny_bert),
        bert_score_layer=layer,
        bert_score_idf=idf,
    )
    want = _direct(tiny_bert, layer, idf)
    # Not roberta-large: reported under the model's name, never as the default's key.
    prefix = f"bert_score[{tiny_bert.name}]"
    assert list(result.corpus) == [f"{prefix}.f1", f"{prefix}.precision", f"{prefix}.recall"]
    for name in ("precision", "recall", "f1"):
        assert result.per_item[f"{prefix}.{name}"] == pytest.approx(want[name], abs=1e-5)
        assert result.corpus[f"{prefix}.{name}"] == pytest.approx(sum(want[name]) / 3, abs=1e-5)
    assert result.per_item[f"{prefix}.f1"][2] == 0.0  # an empty caption has no tokens
    assert result.settings["bert_score_layer"] == layer
    assert result.settings["bert_score_model"] == str(tiny_bert)


def test_the_default_layer_needs_a_deep_enough_model(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match=r"bert_score_layer=17: .* has 2 hidden layers"):
        evaluate(
            CANDS, MREFS, metrics="bert_score", tokenize=False, bert_score_model=str(tiny_bert)
        )


def test_a_missing_bert_score_model_is_an_error_or_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MULTI2CAP_BERT_SCORE_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MetricUnavailableError, match="MULTI2CAP_BERT_SCORE_MODEL"):
        evaluate(CANDS, MREFS, metrics="bert_score,bleu_1", tokenize=False)
    result = evaluate(
        CANDS, MREFS, metrics="bert_score,bleu_1", tokenize=False, skip_unavailable=True
    )
    assert list(result.corpus) == ["bleu_1"]
    assert "roberta-large" in result.unavailable["bert_score"]
