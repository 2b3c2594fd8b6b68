"""`stage: preference` on two gloo processes through `torchrun` and the real CLI: the same
candidates, pairs and reference log-probabilities as one process, and the same DPO trajectory
(DDP's gradient mean over 2 processes x 2 pairs = one process accumulating 2 micro-batches)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import _losses, _torchrun

from multi2cap.io import read_jsonl
from multi2cap.recipes import RECIPES_DIR
from multi2cap.train import load_train_config, train
from multi2cap.train.pairs import CANDIDATES, FOLDER, PAIRS

CONFIGS = RECIPES_DIR


@pytest.mark.slow
def test_two_process_preference_matches_one_process(
    stamp_manifests: Path, finetuned_tiny: Path, tmp_path: Path
) -> None:
    overrides = [
        f"init_from={finetuned_tiny}",
        f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
        f"data.val_manifest={stamp_manifests / 'val.jsonl'}",
        # 2 clips decoded per process and chunk, so both runs decode (and sample) the same
        # batches with the same seeds; 4 pairs a step: 2 processes x 2, or 2 x 2 accumulated.
        "preference.candidates.batch_size=2",
        "optim.batch_size=4",
        "optim.micro_batch_size=2",
        "optim.epochs=2",
        "runtime.progress=false",
    ]
    single = train(
        load_train_config(CONFIGS / "tiny_preference.yaml", overrides, output_dir=tmp_path / "one")
    )
    _torchrun("tiny_preference.yaml", overrides, tmp_path / "ddp")

    for name in (CANDIDATES, PAIRS):
        one = list(read_jsonl(tmp_path / "one" / FOLDER / name))
        two = list(read_jsonl(tmp_path / "ddp" / FOLDER / name))
        assert [r["id"] for r in two] == [r["id"] for r in one]
        if name == CANDIDATES:  # the same texts (a chunk is 2 clips alone, 4 under DDP)
            drop = ("chunk", "chunk_size")
            assert [{k: v for k, v in r.items() if k not in drop} for r in two] == [
                {k: v for k, v in r.items() if k not in drop} for r in one
            ]
            continue
        for a, b in zip(one, two, strict=True):
            assert (a["chosen"], a["rejected"], a["tokens"]) == (
                b["chosen"],
                b["rejected"],
                b["tokens"],
            )
            assert b["ref_logp"] == pytest.approx(a["ref_logp"], abs=1e-4)
    assert _losses(tmp_path / "ddp") == pytest.approx(single.train_losses, rel=1e-4)
    assert len(single.train_losses) == single.global_step >= 2
    got = load_file(tmp_path / "ddp" / "final" / "trainable.safetensors")
    want = load_file(single.final_checkpoint / "trainable.safetensors")
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-3, atol=1e-5)
    val = (tmp_path / "ddp" / "val_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in val[1:]] == ["0", "1", "2"]
