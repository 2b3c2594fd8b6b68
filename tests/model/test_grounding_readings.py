"""The two readings of the AV-grounding (`grounding.pool: space | time`) and of Eq. 3
(`vfr_reduction: sum | mean`): `time` reproduces the model before the option (to float32
rounding: the reference was recorded on another CPU, whose kernels may round differently),
old checkpoints load as `time`, `space` pools the patch grid read from the vision config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from multi2cap_testkit import CAPTIONS, make_batch, tiny
from pydantic import ValidationError

from multi2cap.model.config import CONFIG_FILE, Multi2CapConfig
from multi2cap.model.grounding import AVGrounding
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.vfr import VisualFeatureReconstructor, vfr_loss

DATA = Path(__file__).parent / "data"
LENGTHS = [9600, 4000, 7000]  # samples: 3, 1 and 2 CED tokens, so the batch is padded


def _outputs(model: Multi2Cap, reduction: str = "mean") -> dict:
    """What `data/make_time_reference.py` recorded on main (same batch, seeds and calls)."""
    batch = make_batch(3, LENGTHS)
    torch.manual_seed(1)
    out = model(batch, "pretrain", vfr_reduction=reduction)
    emb = model.probe_embeddings(batch)
    captions = model.caption(batch["audio"], batch["audio_lengths"], num_beams=1, max_new_tokens=6)
    losses = {k: getattr(out, k).item() for k in ("loss", "loss_cap", "loss_align", "loss_vfr")}
    return {"losses": losses, "emb": emb, "captions": captions}


def _assert_is_the_reference(got: dict) -> None:
    """The same float32 operations as when the reference was recorded: equal on that machine,
    within a few ulps on a CPU with other vector kernels (AVX-512 against AVX2 here: 8e-8
    relative on the losses); any change of the model moves them by orders more."""
    ref = json.loads((DATA / "time_reference.json").read_text())
    assert got["losses"] == pytest.approx(ref["losses"], rel=1e-6, abs=1e-7)
    for key in ("g", "g_hat", "attention"):
        torch.testing.assert_close(
            getattr(got["emb"], key), torch.tensor(ref[key]), rtol=1e-5, atol=1e-6, msg=key
        )
    assert got["captions"] == ref["captions"]


def _the_model_before_the_options() -> Multi2Cap:
    """The reference's model under today's config: `grounding.pool: time`, and V_cls read before
    CLIP's post-LayerNorm (`vision.v_cls: pre_layernorm`, the only reading at 66fa6aa)."""
    config = Multi2CapConfig.tiny(CAPTIONS, grounding={"pool": "time"})
    vision = config.vision.model_copy(update={"v_cls": "pre_layernorm"})
    return Multi2Cap(config.model_copy(update={"vision": vision}))


def test_time_reading_reproduces_the_model_before_the_option() -> None:
    torch.manual_seed(0)
    _assert_is_the_reference(_outputs(_the_model_before_the_options()))


def test_a_checkpoint_without_the_field_loads_as_time_says_so_once_and_matches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The weights of a time model under the `config.yaml` that main wrote for them
    (`grounding: true`, no `pool`, no `vision.v_cls`): loaded as time (and pre-LayerNorm V_cls)
    with one warning each, outputs as on main."""
    torch.manual_seed(0)
    folder = _the_model_before_the_options().save_pretrained(tmp_path / "old")
    (folder / CONFIG_FILE).write_text((DATA / "legacy_time_config.yaml").read_text())
    with caplog.at_level(logging.WARNING, logger="multi2cap.model"):
        loaded = Multi2Cap.from_pretrained(folder, load_vision=True)
        again = Multi2Cap.from_pretrained(folder)
    said = [r.getMessage() for r in caplog.records if "grounding.pool" in r.getMessage()]
    assert len(said) == 1 and "loaded as `grounding.pool: time`" in said[0]
    assert sum("no vision.v_cls" in r.getMessage() for r in caplog.records) == 1
    assert loaded.config.grounding.pool == again.config.grounding.pool == "time"
    assert loaded.config.vision.v_cls == "pre_layernorm"
    _assert_is_the_reference(_outputs(loaded.train()))
    # A config written now records the fields and loads silently; a new config without them
    # gets the defaults (`space`), only saved checkpoints fall back to what they were trained on.
    loaded.save_pretrained(tmp_path / "resaved")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="multi2cap.model"):
        resaved = Multi2CapConfig.load(tmp_path / "resaved" / CONFIG_FILE)
    assert resaved.grounding.pool == "time" and resaved.vision.v_cls == "pre_layernorm"
    assert not caplog.records
    assert Multi2CapConfig.model_validate({"grounding": True}).grounding.pool == "space"
    assert Multi2CapConfig.from_yaml("k: 16").grounding.pool == "space"  # no section, defaults


def test_an_old_audio_only_checkpoint_loads_silently(caplog: pytest.LogCaptureFixture) -> None:
    """`grounding: false` saved before both fields: filled (they are unused), nothing said."""
    tree = yaml.safe_load((DATA / "legacy_time_config.yaml").read_text())
    tree["grounding"] = False
    with caplog.at_level(logging.WARNING, logger="multi2cap.model"):
        config = Multi2CapConfig.from_yaml(yaml.safe_dump(tree), source="audio-only/config.yaml")
    assert not config.grounding and config.grounding.pool == "time"
    assert not caplog.records


@pytest.mark.parametrize("k", [1, 4, 16])
def test_space_reading_shapes(k: int) -> None:
    model = tiny(k=k).eval()
    assert model.config.grounding.pool == "space"
    batch = make_batch(3, LENGTHS)
    emb = model.probe_embeddings(batch)
    steps = emb.audio_mask.shape[1]
    assert emb.g.shape == emb.g_hat.shape == (3, k, 32)
    assert emb.attention.shape == (3, 16, steps)  # 4 x 4 patches over the audio steps
    torch.testing.assert_close(emb.attention.sum(-1), torch.ones(3, 16))
    assert torch.all(emb.attention[~emb.audio_mask.unsqueeze(1).expand(-1, 16, -1)] == 0)
    out = model(batch, "pretrain")
    assert all(torch.isfinite(v) for v in (out.loss, out.loss_align, out.loss_vfr))


def test_space_padded_clip_gives_the_same_g_and_g_hat_as_alone() -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    batch = make_batch(3, LENGTHS)
    together = model.probe_embeddings(batch)
    for i, length in enumerate(LENGTHS):
        alone = {key: value[i : i + 1] for key, value in batch.items()}
        alone["audio"] = alone["audio"][:, :length]
        one = model.probe_embeddings(alone)
        assert one.audio_mask.shape[1] <= together.audio_mask.shape[1]
        torch.testing.assert_close(one.g, together.g[i : i + 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(one.g_hat, together.g_hat[i : i + 1], rtol=1e-5, atol=1e-6)
    # Module level: whatever sits in the padded audio steps changes nothing.
    grounding = AVGrounding(d_audio=6, d_visual=10, d_g=8, heads=2, k=4).eval()
    vfr = VisualFeatureReconstructor(6, 12, 8, k=4)
    audio, visual = torch.randn(2, 9, 6), torch.randn(2, 16, 10)
    mask = torch.tensor([[True] * 9, [True] * 4 + [False] * 5])
    garbage = audio.clone()
    garbage[1, 4:] = 1e3
    for inputs in ((audio, mask), (garbage, mask)):
        g = grounding(*inputs, visual, grid=(4, 4)).g
        torch.testing.assert_close(g, grounding(audio, mask, visual, grid=(4, 4)).g)
        torch.testing.assert_close(vfr(*inputs), vfr(audio, mask))
    # ... and the valid steps do matter (the mask is not hiding everything).
    moved = audio.clone()
    moved[1, :4] += torch.randn(4, 6)  # not a constant: the VFR's LayerNorm removes those
    assert not torch.allclose(grounding(moved, mask, visual, grid=(4, 4)).g[1], g[1])
    assert not torch.allclose(vfr(moved, mask)[1], vfr(audio, mask)[1])


def test_space_region_k_pools_its_own_block_of_the_grid() -> None:
    """K = 4 on a 6 x 6 grid: region 0 is patches rows 0-2 x columns 0-2 (row-major), so a
    change of patch (1, 1) moves g_0 only and a change of patch (4, 5) moves g_3 only."""
    torch.manual_seed(0)
    grounding = AVGrounding(d_audio=6, d_visual=10, d_g=8, heads=2, k=4).eval()
    audio, mask = torch.randn(1, 5, 6), torch.ones(1, 5, dtype=torch.bool)
    visual = torch.randn(1, 36, 10)
    base = grounding(audio, mask, visual, grid=(6, 6)).g
    for (row, col), region in (((1, 1), 0), ((4, 5), 3), ((0, 4), 1), ((5, 0), 2)):
        changed = visual.clone()
        changed[0, row * 6 + col] += 3.0
        moved = (grounding(audio, mask, changed, grid=(6, 6)).g - base).abs().sum(-1)[0]
        assert moved[region] > 0 and torch.all(moved[torch.arange(4) != region] == 0)


def test_space_patch_grid_is_read_from_the_vision_config() -> None:
    """48-px images in 8-px patches: a 6 x 6 grid (not 16 x 16, not sqrt(P) guessed)."""
    vision = dict(Multi2CapConfig.tiny(CAPTIONS).vision.config or {}, image_size=48)
    config = Multi2CapConfig.tiny(CAPTIONS, k=36)
    model = Multi2Cap(
        config.model_copy(update={"vision": config.vision.model_copy(update={"config": vision})})
    )
    assert model.vision.grid == (6, 6)
    batch = make_batch(2, [9600, 4000])
    batch["images"] = torch.randn(2, 3, 48, 48)
    emb = model.probe_embeddings(batch)
    assert emb.g.shape == (2, 36, 32) and emb.attention.shape[1] == 36
    too_fine = config.model_copy(update={"k": 49})
    too_fine.vision = too_fine.vision.model_copy(update={"config": vision})
    with pytest.raises(ValueError, match=r"k \(49 = 7x7\) needs a patch grid of at least 7x7.*6x6"):
        Multi2Cap(too_fine)


def test_space_refuses_a_class_token_among_the_patches() -> None:
    grounding = AVGrounding(d_audio=6, d_visual=10, d_g=8, heads=2, k=4)
    audio, mask = torch.randn(1, 5, 6), torch.ones(1, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"17 visual tokens.*4x4 = 16.*class token"):
        grounding(audio, mask, torch.randn(1, 17, 10), grid=(4, 4))
    with pytest.raises(ValueError, match="needs the patch grid"):
        grounding(audio, mask, torch.randn(1, 16, 10))
    model = tiny()
    assert model.vision.encode(make_batch(1)["images"]).patches.shape[1] == 16  # CLS dropped


def test_space_needs_a_square_k_time_does_not() -> None:
    with pytest.raises(ValidationError, match=r"k \(8\) must be a perfect square under grounding"):
        Multi2CapConfig.tiny(CAPTIONS, k=8)
    with pytest.raises(ValidationError, match="perfect square"):
        Multi2CapConfig.model_validate({"k": 2, "grounding": {"pool": "space"}})
    assert Multi2CapConfig.tiny(CAPTIONS, k=8, grounding={"pool": "time"}).k == 8
    assert Multi2CapConfig.tiny(CAPTIONS, k=8, grounding=False).k == 8  # no grounding, no grid
    with pytest.raises(ValidationError, match="pool"):
        Multi2CapConfig.model_validate({"grounding": {"pool": "spatial"}})


def test_space_vfr_reconstructs_each_region_from_its_own_query() -> None:
    torch.manual_seed(0)
    vfr = VisualFeatureReconstructor(d_audio=6, hidden=12, d_g=8, k=4)
    assert {"queries", "key.weight", "regions"} <= set(vfr.state_dict())
    audio, mask = torch.randn(2, 7, 6), torch.ones(2, 7, dtype=torch.bool)
    weights = vfr.pooling_weights(audio, mask)
    assert weights.shape == (2, 4, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))
    g_hat = vfr(audio, mask)
    assert g_hat.shape == (2, 4, 8) and not torch.allclose(g_hat[:, 0], g_hat[:, 1])


@pytest.mark.parametrize("pool", ["space", "time"])
def test_vfr_sum_and_mean_are_eq3_and_its_element_mean(pool: str) -> None:
    """L_vfr = mean over clips of ||g - g_hat||^2 (sum) or of the mean squared element (mean),
    computed directly from g and g_hat; beta scales it in the total."""
    torch.manual_seed(0)
    model = tiny(grounding={"pool": pool}).eval()
    batch = make_batch(3, LENGTHS)
    emb = model.probe_embeddings(batch)
    diff = (emb.g_hat - emb.g).double()
    direct_sum = sum(float((diff[i] ** 2).sum()) for i in range(3)) / 3
    direct_mean = float((diff**2).mean())
    with torch.no_grad():
        summed = model(batch, "pretrain", vfr_reduction="sum")
        meaned = model(batch, "pretrain", vfr_reduction="mean")
    assert summed.loss_vfr.item() == pytest.approx(direct_sum, rel=1e-5)
    assert meaned.loss_vfr.item() == pytest.approx(direct_mean, rel=1e-5)
    assert summed.loss_vfr.item() == pytest.approx(4 * 32 * meaned.loss_vfr.item(), rel=1e-5)
    expected = summed.loss_cap + 0.02 * summed.loss_align + 0.05 * summed.loss_vfr
    torch.testing.assert_close(summed.loss, expected)
    assert vfr_loss(emb.g_hat, emb.g).item() == summed.loss_vfr.item()  # sum is the default
    with pytest.raises(ValueError, match="sum"):
        vfr_loss(emb.g_hat, emb.g, "median")  # type: ignore[arg-type]
