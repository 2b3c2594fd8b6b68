"""`stage: preference` end to end on a tiny fine-tuned model and real Tux Paint clips (CPU): the
reference policy is exactly the frozen fine-tuned model, pairs come from the model's own
candidates, candidate decoding and training resume exactly, and the CLI runs the tiny recipe."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from multi2cap.cli.main import app
from multi2cap.data.manifest import ManifestRecord, read_manifest
from multi2cap.io import read_jsonl
from multi2cap.media.audio import load_audio
from multi2cap.metrics.candidates import score_candidates
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.recipes import RECIPES_DIR
from multi2cap.train import ConfigError, TrainResult, load_train_config, train
from multi2cap.train.dpo import caption_logprobs, dropout_off
from multi2cap.train.pairs import CANDIDATES, FOLDER, PAIRS, PAIRS_SUMMARY, select_pairs

CONFIGS = RECIPES_DIR

# 5-6 pairs from the 8 clips; 2 pairs a step as 2 accumulated micro-batches of 1: 2-3 steps an
# epoch. Candidates decoded 2 clips at a time: 4 chunks.
FAST = [
    "optim.batch_size=2",
    "optim.micro_batch_size=1",
    "optim.epochs=2",
    "preference.candidates.batch_size=2",
    "runtime.progress=false",
]


def _config(stamp_manifests: Path, init: Path, out: Path, *extra: str) -> Any:
    return load_train_config(
        CONFIGS / "tiny_preference.yaml",
        [
            f"init_from={init}",
            f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
            f"data.val_manifest={stamp_manifests / 'val.jsonl'}",
            *FAST,
            *extra,
        ],
        output_dir=out,
    )


@pytest.fixture(scope="module")
def run(
    stamp_manifests: Path, finetuned_tiny: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    out = tmp_path_factory.mktemp("preference")
    return train(_config(stamp_manifests, finetuned_tiny, out))


def _pairs(out: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(out / FOLDER / PAIRS))


def _logprobs(model: Multi2Cap, audio_path: str, chosen: str, rejected: str) -> list[float]:
    wave = torch.from_numpy(load_audio(audio_path))[None]
    logp, _ = caption_logprobs(model, wave, torch.tensor([wave.shape[1]]), [(chosen, rejected)])
    return logp[0].tolist()


def test_the_reference_is_exactly_the_frozen_finetuned_model(
    run: TrainResult, finetuned_tiny: Path, stamp_manifests: Path
) -> None:
    pairs = _pairs(run.output_dir)
    assert len(pairs) >= 4
    audio = {r.id: r.audio for r in read_manifest(stamp_manifests / "train.jsonl")}
    reference = Multi2Cap.from_pretrained(finetuned_tiny)  # a fresh load of init_from
    dropout_off(reference)
    tuned = Multi2Cap.from_pretrained(run.final_checkpoint)
    dropout_off(tuned)
    moved = 0.0
    for pair in pairs:
        with torch.no_grad():
            direct = _logprobs(reference, audio[pair["id"]], pair["chosen"], pair["rejected"])
            after = _logprobs(tuned, audio[pair["id"]], pair["chosen"], pair["rejected"])
        assert pair["ref_logp"] == pytest.approx(direct, abs=2e-5)
        moved = max(moved, *(abs(a - d) for a, d in zip(after, direct, strict=True)))
    assert moved > 1e-2  # training moved the policy; the cached reference stayed put

    # "The LoRA disabled" would be another model: the one before fine-tuning.
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in reference.decoder.model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(False)
    pair = pairs[0]
    with torch.no_grad():
        disabled = _logprobs(reference, audio[pair["id"]], pair["chosen"], pair["rejected"])
    assert max(abs(a - b) for a, b in zip(disabled, pair["ref_logp"], strict=True)) > 1e-2

    # Step 1 starts from the reference: z = 0 for every pair although the checkpoint's LoRA
    # dropout is 0.1 (the policy runs without dropout), so the loss is log 2.
    first = next(r for r in run.history if r["kind"] == "train")
    assert first["loss_dpo"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(first["reward_margin"]) < 1e-5
    # Validated before the first update (epoch 0) and after each epoch: before vs after.
    assert [r["epoch"] for r in run.history if r["kind"] == "val"] == [0, 1, 2]


def test_pairs_are_built_from_the_models_own_candidates(
    run: TrainResult, stamp_manifests: Path
) -> None:
    folder = run.output_dir / FOLDER
    candidates = {line["id"]: line for line in read_jsonl(folder / CANDIDATES)}
    records = {r.id: r for r in read_manifest(stamp_manifests / "train.jsonl")}
    pairs = _pairs(run.output_dir)
    for pair in pairs:
        own = candidates[pair["id"]]
        assert pair["chosen"] in own["candidates"] and pair["rejected"] in own["candidates"]
        for text, source in zip((pair["chosen"], pair["rejected"]), pair["sources"], strict=True):
            positions = [i for i, c in enumerate(own["candidates"]) if c == text]
            assert source in {own["sources"][i] for i in positions}
        assert pair["scores"][0] - pair["scores"][1] > 0.0  # tiny_preference: margin 0
    # The references would have won: scored beside a clip's chosen caption (same IDF), one
    # beats it for some clip; yet every chosen caption is one the model decoded.
    ids = list(records)
    chosen = {pair["id"]: pair["chosen"] for pair in pairs}
    groups = [[chosen[c], *records[c].captions] if c in chosen else [] for c in ids]
    scores = score_candidates(groups, [records[c].captions for c in ids])
    assert any(group and max(group[1:]) > group[0] for group in scores)
    summary = json.loads((folder / PAIRS_SUMMARY).read_text())
    assert summary["pairs"] == len(pairs) and set(summary["chosen_sources"]) <= {"beam", "sample"}


def _record(clip: str, captions: list[str]) -> ManifestRecord:
    return ManifestRecord(
        id=clip, dataset="t", split="train", audio=f"{clip}.wav", captions=captions
    )


def test_pair_selection_chooses_among_candidates_unless_asked(tmp_path: Path) -> None:
    records = [
        _record("dog", ["a dog barks loudly", "a dog is barking"]),
        _record("rain", ["rain falls on a tin roof", "heavy rain on a roof"]),
        _record("bell", ["a bell rings twice", "a church bell rings"]),
        _record("bird", ["birds sing in the morning", "birds chirp outside"]),
    ]
    beams = ["beam", "beam", "sample"]
    candidates = {
        # Every candidate is far from the references, which would win if they were candidates.
        "dog": {"candidates": ["a cat", "a dog", "rain"], "sources": beams},
        "rain": {"candidates": ["rain on a roof", "a bell", "rain on a roof"], "sources": beams},
        "bell": {"candidates": ["a bell", "a bell", "a bell"], "sources": beams},  # no gap
    }  # "bird" has no candidates: its references still count in CIDEr-D's IDF
    base = ["stage=preference", f"runtime.output_dir={tmp_path}", "preference.margin=0.0"]
    config = load_train_config(None, base)
    pairs, counts = select_pairs(records, candidates, config)
    assert [(p.id, p.chosen, p.rejected) for p in pairs] == [
        ("dog", "a dog", "rain"),  # "a" is in 3 of the 4 clips' references: "a cat" > 0
        ("rain", "rain on a roof", "a bell"),
    ]
    assert pairs[0].sources == ("beam", "sample")
    expected = score_candidates(
        [candidates["dog"]["candidates"], [], [], []],
        [r.captions for r in records],
        tokenizer_backend="auto",
    )[0]
    assert pairs[0].scores == pytest.approx((max(expected), min(expected)))
    assert counts["clips_with_candidates"] == 3 and counts["candidates"] == 9

    # A margin above the dog clip's gap leaves the rain clip; max_pairs keeps the largest gaps.
    gaps = {p.id: p.scores[0] - p.scores[1] for p in pairs}
    high = load_train_config(None, [*base, f"preference.margin={min(gaps.values()) + 1e-9}"])
    assert [p.id for p in select_pairs(records, candidates, high)[0]] == [max(gaps, key=gaps.get)]
    one = load_train_config(None, [*base, "preference.max_pairs=1"])
    assert [p.id for p in select_pairs(records, candidates, one)[0]] == [max(gaps, key=gaps.get)]

    # Only with chosen_from: references is a reference caption ever chosen.
    refs = load_train_config(None, [*base, "preference.chosen_from=references"])
    chosen = select_pairs(records, candidates, refs)[0]
    assert [(p.id, p.chosen, p.sources[0]) for p in chosen] == [
        ("dog", "a dog barks loudly", "reference"),
        ("rain", "rain falls on a tin roof", "reference"),
        ("bell", "a bell rings twice", "reference"),
    ]


def test_candidates_and_training_resume_exactly(
    run: TrainResult, stamp_manifests: Path, finetuned_tiny: Path, tmp_path: Path
) -> None:
    # A run killed while decoding: two complete chunks of candidates and a torn line.
    full = run.output_dir / FOLDER
    lines = (full / CANDIDATES).read_text().splitlines(keepends=True)
    assert len({json.loads(line)["chunk"] for line in lines}) == 4
    folder = tmp_path / FOLDER
    folder.mkdir()
    shutil.copy(full / "candidates_meta.json", folder)
    (folder / CANDIDATES).write_text("".join(lines[:5]) + lines[5][:20])  # chunks 0, 1 + torn

    cut = train(
        _config(stamp_manifests, finetuned_tiny, tmp_path, "runtime.stop_at_step=3"), resume=True
    )
    assert cut.stop_reason == "stop_at_step" and cut.global_step == 3
    assert (folder / CANDIDATES).read_text() == (full / CANDIDATES).read_text()
    assert (folder / PAIRS).read_text() == (full / PAIRS).read_text()

    resumed = train(_config(stamp_manifests, finetuned_tiny, tmp_path), resume=True)
    assert resumed.global_step == run.global_step
    assert resumed.train_losses == pytest.approx(run.train_losses, rel=1e-6, abs=1e-7)
    got = load_file(resumed.final_checkpoint / "trainable.safetensors")
    want = load_file(run.final_checkpoint / "trainable.safetensors")
    assert got.keys() == want.keys()
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-7)
    # Only the decoder's LoRA trained (preference.train: [llm_lora]).
    start = load_file(finetuned_tiny / "trainable.safetensors")
    changed = {k for k, v in got.items() if not torch.equal(v, start[k])}
    assert changed and all(k.startswith("decoder.") and "lora_" in k for k in changed)

    # Resuming with other pair settings once training has begun is refused, naming the folder.
    with pytest.raises(ConfigError, match="other settings"):
        train(
            _config(stamp_manifests, finetuned_tiny, tmp_path, "preference.margin=0.5"), resume=True
        )


def test_cli_runs_the_tiny_recipe_end_to_end(
    stamp_manifests: Path, finetuned_tiny: Path, tmp_path: Path
) -> None:
    args = [
        "train",
        "--config",
        str(CONFIGS / "tiny_preference.yaml"),
        f"init_from={finetuned_tiny}",
        f"data.train_manifest={stamp_manifests / 'train.jsonl'}",
        "optim.epochs=1",
        "eval.every_epochs=0",
        "preference.candidates.sampled=0",
        "--output-dir",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    pairs = (tmp_path / "preference" / "pairs.jsonl").read_text().splitlines()
    steps = -(-len(pairs) // 4)  # 4 pairs per step; the epoch's last step is completed
    assert f"done: {steps} steps, 1 epochs" in result.output
    captions = Multi2Cap.from_pretrained(tmp_path / "final").caption(
        [r.audio for r in read_manifest(stamp_manifests / "train.jsonl")[:2]]
    )
    assert len(captions) == 2 and all(captions)
    lines = list(read_jsonl(tmp_path / FOLDER / CANDIDATES))
    assert all(line["sources"] == ["beam", "beam"] for line in lines)

    missing = CliRunner().invoke(app, [*args[:3], *args[4:]])  # no init_from
    assert missing.exit_code == 2
    assert "init_from" in missing.output and "Traceback" not in missing.output
    bad = CliRunner().invoke(app, [*args, "preference.scorer=bleu_4"])
    assert bad.exit_code == 2 and "preference.scorer" in bad.output


def test_preference_recipes_carry_egpl_aac_values() -> None:
    clotho = load_train_config(CONFIGS / "preference_clotho.yaml")
    audiocaps = load_train_config(CONFIGS / "preference_audiocaps.yaml")
    tiny = load_train_config(CONFIGS / "tiny_preference.yaml")
    for cfg in (clotho, audiocaps, tiny):
        assert cfg.stage == "preference" and cfg.preference.train == ["llm_lora"]
        assert cfg.preference.beta == 0.05 and cfg.preference.chosen_from == "candidates"
    # EGPL-AAC: Clotho lr 2e-6 with the anchor 0.01; AudioCaps lr 1e-6, 512 pairs, no anchor;
    # 8 pairs per update, length-normalised log-probabilities, 4 beams.
    assert (clotho.optim.lr, clotho.preference.anchor_weight) == (2e-6, 0.01)
    assert (audiocaps.optim.lr, audiocaps.preference.anchor_weight) == (1e-6, 0.0)
    assert audiocaps.preference.max_pairs == 512
    for cfg in (clotho, audiocaps):
        assert (cfg.optim.batch_size, cfg.preference.logp, cfg.optim.epochs) == (8, "mean", 1)
        assert cfg.preference.candidates.num_beams == 4 and cfg.init_from is not None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("preference.candidates.beams=5", "at most num_beams"),
        ("preference.candidates.beams=1", "two candidates per clip"),
        ("preference.train=[llm_lora,llm_lora]", "twice"),
        ("preference.logp=max", "preference.logp"),
    ],
)
def test_bad_preference_settings_name_the_field(override: str, message: str) -> None:
    overrides = ["preference.candidates.sampled=0", override]
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / "tiny_preference.yaml", overrides)
