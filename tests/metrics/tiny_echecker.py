"""A FENSE echecker checkpoint around a tiny random BERT, for tests that need FER (MACE, the
CLAIR-A tie-break) without the real checker."""

from __future__ import annotations

from pathlib import Path


def echecker_checkpoint(folder: Path, error: bool) -> Path:
    """An echecker checkpoint whose error head always says `error` (its BERT in folder/bert)."""
    import torch
    import transformers

    from multi2cap.metrics.neural import _FlatClassifier

    bert = folder / "bert"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "barks", "rain", "falls"]
    bert.mkdir(parents=True, exist_ok=True)
    (bert / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    config = transformers.BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=64,
    )  # fmt: skip
    config.save_pretrained(bert)
    model = _FlatClassifier(config, 6)
    with torch.no_grad():
        model.clf.weight.zero_()
        model.clf.bias.fill_(10.0 if error else -10.0)
    path = folder / f"echecker_{error}.ckpt"
    torch.save({"model_type": str(bert), "num_classes": 6, "state_dict": model.state_dict()}, path)
    return path
