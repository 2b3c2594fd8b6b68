"""Grounding probes (Table 4, Figure 6) on a tiny model aligned on real Tux Paint clips."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_probes_helpers import tiny_clip
from typer.testing import CliRunner

from multi2cap.analysis import probes
from multi2cap.data.dataset import CaptionDataset, collate_captions
from multi2cap.data.manifest import write_manifest
from multi2cap.model.config import Multi2CapConfig
from multi2cap.model.grounding import AVGrounding, masked_mean
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.vfr import vfr_loss
from stamp_manifests import stamp_records, write_stamp_manifest

ALIGN_STEPS = 150


@pytest.fixture(scope="module")
def probe_data(tuxpaint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """8 clips with frames; a tiny model whose grounding, alignment projections and VFR were
    trained (L_align + L_vfr, frozen encoders) until g and g_hat retrieve their own frames;
    a tiny CLIP over the category words."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread beats a contended pool
    folder = tmp_path_factory.mktemp("probes")
    records = stamp_records(tuxpaint_dir)
    manifest = write_stamp_manifest(tuxpaint_dir, folder / "clips.jsonl")
    model = Multi2Cap(Multi2CapConfig.tiny([c for r in records for c in r.captions]))
    dataset = CaptionDataset(records, train=False, with_images=True, image_size=32)
    batch = collate_captions([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        tokens, mask = model.encode_audio(batch["audio"], batch["audio_lengths"])
        visual = model.vision(batch["images"])
    params = [*model.grounding.parameters(), *model.align.parameters(), *model.vfr.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    for _ in range(ALIGN_STEPS):
        g = model.grounding(tokens, mask, visual.patches, grid=model.vision.grid).g
        loss = model.align(g, masked_mean(tokens, mask), visual.cls)
        loss = loss + vfr_loss(model.vfr(tokens, mask), g, "mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    checkpoint = model.save_pretrained(folder / "aligned")
    words = ["a", "photo", "of", *sorted({str(r.category) for r in records})]
    return {
        "records": records,
        "manifest": manifest,
        "checkpoint": checkpoint,
        "clip": tiny_clip(folder / "clip", words),
        "folder": folder,
    }


def test_normalised_entropy_bounds() -> None:
    uniform = torch.full((2, 16), 1 / 16)
    one_hot = torch.zeros(2, 16)
    one_hot[:, 3] = 1.0
    torch.testing.assert_close(probes.normalised_entropy(uniform), torch.ones(2))
    torch.testing.assert_close(probes.normalised_entropy(one_hot), torch.zeros(2))
    half = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(probes.normalised_entropy(half), torch.tensor([0.5]))


def test_attention_weights_are_the_grounding_cross_attention() -> None:
    """pool time: with the audio tokens as queries, the probe's attention averaged over heads
    is exactly what the grounding module computes."""
    torch.manual_seed(0)
    model = Multi2Cap(Multi2CapConfig.tiny(["a dog barks"], grounding={"pool": "time"})).eval()
    audio = torch.randn(2, 7, 32)
    patches = torch.randn(2, 16, 32)
    mask = torch.ones(2, 7, dtype=torch.bool)
    with torch.no_grad():
        expected = model.grounding(audio, mask, patches, need_weights=True).attention
        got = probes.attention_weights(
            model.grounding, model.grounding.audio_proj(audio), patches
        ).mean(dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_space_attention_weights_use_the_modules_scores_over_the_patches() -> None:
    """pool space: the module's patches attend over the audio (softmax over T), the probe
    scores the same logits over the patches (softmax over P). One head: log(probe^T) -
    log(module) is then log Z_p - log Z'_t, additive in patch and step (double-centred zero);
    with the projections swapped (the time orientation) it is not."""
    torch.manual_seed(0)
    grounding = AVGrounding(d_audio=6, d_visual=10, d_g=8, heads=1, k=4, pool="space").eval()
    audio = torch.randn(2, 7, 6)
    patches = torch.randn(2, 16, 10)
    mask = torch.ones(2, 7, dtype=torch.bool)

    def double_centred(probe: torch.Tensor, module: torch.Tensor) -> torch.Tensor:
        m = probe.log().transpose(-1, -2) - module.log()  # (B, P, T)
        return m - m.mean(-1, keepdim=True) - m.mean(-2, keepdim=True) + m.mean((-1, -2), True)

    with torch.no_grad():
        module = grounding(audio, mask, patches, grid=(4, 4), need_weights=True).attention
        got = probes.attention_weights(grounding, grounding.audio_proj(audio), patches)[:, 0]
        assert got.shape == (2, 7, 16)
        torch.testing.assert_close(got.sum(-1), torch.ones(2, 7))
        torch.testing.assert_close(
            double_centred(got, module), torch.zeros(2, 16, 7), atol=1e-4, rtol=0
        )
        grounding.pool = "time"  # the other orientation: a different bilinear form
        swapped = probes.attention_weights(grounding, grounding.audio_proj(audio), patches)[:, 0]
    assert double_centred(swapped, module).abs().max() > 1e-2


def test_grounding_attention_entropy_follows_the_softmax_axis() -> None:
    """time (B, T, P): over the patches, mean over valid steps; space (B, P, T): over the valid
    steps only, normalised by log of their count."""
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    time_attention = torch.full((2, 4, 8), 1 / 8)
    time_attention[1, 2:] = torch.eye(8)[0]  # padded steps: ignored
    entropy = probes.grounding_attention_entropy(time_attention, mask, "time")
    torch.testing.assert_close(entropy, torch.ones(2))
    space_attention = torch.zeros(2, 8, 4)
    space_attention[0] = 1 / 4
    space_attention[1, :, :2] = 1 / 2  # uniform over the 2 valid steps: entropy 1, not 0.5
    entropy = probes.grounding_attention_entropy(space_attention, mask, "space")
    torch.testing.assert_close(entropy, torch.ones(2))
    one_step = probes.grounding_attention_entropy(
        space_attention[:1, :, :1] * 0 + 1, mask[:1, :1], "space"
    )
    torch.testing.assert_close(one_step, torch.zeros(1))


def test_retrieval_ranks_and_chance() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(200, 16))
    # Queries equal to their own item retrieve it first; the K-token score averages tokens.
    perfect = np.repeat(gallery[:, None], 3, axis=1)
    assert probes.recall_at(probes.retrieval_ranks(perfect, gallery), 1) == 100.0
    # Random queries: R@1 and R@5 near chance (0.5 % and 2.5 % of 200).
    ranks = probes.retrieval_ranks(rng.normal(size=(200, 4, 16)), gallery)
    assert probes.recall_at(ranks, 1) <= 2.5
    assert 0.0 < probes.recall_at(ranks, 5) <= 6.5
    assert 60 < ranks.mean() < 140  # mean rank of a random query ~ (N + 1) / 2
    # Hand case: query 0 scores item 1 above its own, query 1 ranks its own first.
    q = np.array([[[1.0, 0.2]], [[0.0, 1.0]]])
    g = np.array([[0.5, 1.0], [1.0, 0.1]])
    np.testing.assert_array_equal(probes.retrieval_ranks(q, g), [2, 2])


def test_cross_fitted_ridge_is_held_out() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=(40, 6))
    x = y @ rng.normal(size=(6, 10))  # an exact linear relation: recovered on held-out rows
    pred = probes.cross_fitted_ridge(x, y, alpha=1e-6)
    np.testing.assert_allclose(pred, y, atol=1e-4)
    # Unrelated targets: a map that never saw a row cannot predict it (in-sample it could).
    noise = rng.normal(size=(40, 6))
    held = probes.cross_fitted_ridge(rng.normal(size=(40, 30)), noise, alpha=1e-6)
    assert np.mean(np.sum(held * noise, axis=1)) < 0.5 * np.mean(np.sum(noise * noise, axis=1))
    with pytest.raises(ValueError, match="at least 4"):
        probes.cross_fitted_ridge(x[:3], y[:3])


def test_fidelity_on_an_aligned_model(probe_data: dict) -> None:
    model = probes.load_probe_model(probe_data["checkpoint"])
    probe = probes.collect_probe_set(model, probe_data["records"], batch_size=3)
    assert probe.ids == [r.id for r in probe_data["records"]]
    assert probe.pool == "space" and probe.n_patches == 16  # the default reading
    assert probe.native["g"].shape == (8, 4, 32) and probe.shared["v_cls"].shape == (8, 1, 16)
    # Random vectors have the norms of g's tokens, other directions.
    np.testing.assert_allclose(
        np.linalg.norm(probe.native["random"], axis=-1),
        np.linalg.norm(probe.native["g"], axis=-1),
        rtol=1e-5,
    )
    clip = probes.ClipJointSpace(probe_data["clip"])
    result = probes.fidelity(probe, clip)
    chance = result.chance_r1
    assert chance == pytest.approx(12.5)
    g, g_hat, rand = result.row("g"), result.row("g_hat"), result.row("random")
    assert g.r1 >= 4 * chance and g.r5 == 100.0
    assert g_hat.r1 >= 4 * chance
    assert rand.r1 <= 2 * chance
    assert g.cos_to_vcls > 0.5 > abs(rand.cos_to_vcls)
    for row in result.rows:
        for value in (row.clip_score, row.clip_top1):
            assert value is not None and 0.0 <= value <= 100.0
        assert row.attn_entropy is None or 0.0 <= row.attn_entropy <= 1.0
    # The reference row is CLIP itself: image embedding against its category prompt.
    images = clip.embed_images(probe.images)
    names = sorted({str(c) for c in probe.categories})
    texts = clip.embed_texts([f"a photo of {c}" for c in names])
    own = np.array([images[i] @ texts[names.index(str(c))] for i, c in enumerate(probe.categories)])
    assert result.row("clip_image").clip_score == pytest.approx(
        float(np.mean(100 * np.maximum(own, 0))), rel=1e-5
    )
    # Entropy is the documented measure, recomputed for g from the checkpoint's own modules.
    batch = collate_captions(
        [CaptionDataset(probe_data["records"], False, with_images=True, image_size=32)[0]]
    )
    with torch.no_grad():
        emb = model.probe_embeddings(batch)
        patches = model.vision(batch["images"]).patches
        ent = probes.normalised_entropy(probes.attention_weights(model.grounding, emb.g, patches))
    assert probe.entropy["g"][0] == pytest.approx(float(ent.mean()), rel=1e-5)


def test_probes_and_tsne_run_on_a_time_pooled_checkpoint(probe_data: dict, tmp_path: Path) -> None:
    """The reading before `grounding.pool` (audio queries, time segments): the probe set, its
    entropies (the model's own attention is (B, T', P) there) and the t-SNE work unchanged."""
    from multi2cap.analysis.tsne import tsne_coordinates

    torch.manual_seed(0)
    texts = [c for r in probe_data["records"] for c in r.captions]
    model = Multi2Cap(Multi2CapConfig.tiny(texts, k=3, grounding={"pool": "time"}))
    checkpoint = model.save_pretrained(tmp_path / "time")
    loaded = probes.load_probe_model(checkpoint)
    probe = probes.collect_probe_set(loaded, probe_data["records"], batch_size=4)
    assert probe.pool == "time" and probe.native["g_hat"].shape == (8, 3, 32)
    assert probe.n_patches == 16
    assert all(0.0 <= float(e) <= 1.0 for e in probe.grounding_entropy)
    result = probes.fidelity(probe)
    assert result.settings["grounding_pool"] == "time" and result.settings["k"] == 3
    assert "audio steps over patches" in probes.fidelity_markdown(result)
    for row in result.rows:
        assert row.attn_entropy is not None and 0.0 <= row.attn_entropy <= 1.0
    coords, kinds, _ = tsne_coordinates(probe)
    assert coords.shape == (5 * 8, 2) and np.isfinite(coords).all() and len(kinds) == 40


def _app():
    from multi2cap.cli.analyze_model import register
    from multi2cap.cli.main import app

    register(app)
    return app


def test_fidelity_and_tsne_cli(probe_data: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    args = [str(probe_data["checkpoint"]), str(probe_data["manifest"])]
    out = tmp_path / "fid"
    result = runner.invoke(
        _app(),
        [
            *("analyze", "model", "fidelity", *args, "--out", str(out)),
            *("--clip-model", str(probe_data["clip"]), "--batch-size", "4"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {r["kind"]: r for r in csv.DictReader((out / "fidelity.csv").open())}
    assert set(rows) == {"g", "g_hat", "a_mean", "random", "v_cls", "clip_image"}
    assert float(rows["g"]["r1"]) >= 50.0 and rows["v_cls"]["r1"] == ""
    summary = json.loads((out / "fidelity.json").read_text())
    assert summary["n"] == 8 and summary["settings"]["clip_model"] == str(probe_data["clip"])
    markdown = (out / "fidelity.md").read_text()
    assert "| ĝ |" in markdown and "Paper, Table 4" in markdown

    tsne_out = tmp_path / "tsne"
    texts = []
    for _ in range(2):  # the same seed gives the same map
        result = runner.invoke(
            _app(),
            ["analyze", "model", "tsne", *args, "--out", str(tsne_out), "--by-category"],
        )
        assert result.exit_code == 0, result.output
        texts.append((tsne_out / "tsne.csv").read_text())
    assert texts[0] == texts[1]
    points = list(csv.DictReader((tsne_out / "tsne.csv").open()))
    assert len(points) == 5 * 8
    assert {p["kind"] for p in points} == set(probes.KINDS)
    assert all(math.isfinite(float(p["x"])) and math.isfinite(float(p["y"])) for p in points)
    assert (tsne_out / "tsne.png").stat().st_size > 1000


def test_fidelity_cli_rejects_a_manifest_without_frames(probe_data: dict, tmp_path: Path) -> None:
    records = [dataclasses.replace(r, image=None) for r in probe_data["records"][:4]]
    manifest = write_manifest(records, tmp_path / "no_frames.jsonl")
    result = CliRunner().invoke(
        _app(),
        [
            *("analyze", "model", "fidelity", str(probe_data["checkpoint"]), str(manifest)),
            *("--out", str(tmp_path / "x")),
        ],
    )
    assert result.exit_code == 2
    assert "no image" in result.output and "Traceback" not in result.output


def test_fidelity_cli_rejects_an_audio_only_checkpoint(probe_data: dict, tmp_path: Path) -> None:
    baseline = Multi2Cap(Multi2CapConfig.tiny(["a frog calls"], grounding=False))
    checkpoint = baseline.save_pretrained(tmp_path / "baseline")
    result = CliRunner().invoke(
        _app(),
        [
            *("analyze", "model", "fidelity", str(checkpoint), str(probe_data["manifest"])),
            *("--out", str(tmp_path / "x")),
        ],
    )
    assert result.exit_code == 2
    assert "audio-only baseline" in result.output and "Traceback" not in result.output
