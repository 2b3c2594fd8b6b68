"""The DPO objective against a direct computation: sequence log-probabilities summed (or
averaged) over caption tokens + EOS, the loss -log sigmoid(z), the one-sided anchor, and their
gradients on the LoRA weights; dropout is off in the policy's forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multi2cap.media.audio import load_audio
from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.train.dpo import caption_logprobs, dpo_terms, dropout_off, select_trainable
from multi2cap.train.preference_config import PreferenceConfig

PAIRS = [
    ("the sound of frog", "a frog frog the"),
    ("a crow calls", "the sound of"),
]


def _direct_logprob(model: Multi2Cap, prefix: torch.Tensor, caption: str) -> torch.Tensor:
    """log p(caption + EOS | prompt, prefix) of one clip, written out: the whole sequence
    through the LM alone (no batch, no padding), the log-softmax over the vocabulary at each
    position before a caption token, summed."""
    decoder = model.decoder
    embed = decoder.model.get_input_embeddings()
    ids = decoder.caption_ids([caption])[0]
    context = torch.cat(
        [embed(decoder.left_ids), prefix.to(embed.weight.dtype), embed(decoder.right_ids)]
    )
    inputs = torch.cat([context, embed(ids)])[None]
    logits = decoder.model(inputs_embeds=inputs, use_cache=False).logits[0]
    start = context.shape[0]
    total = torch.zeros(())
    for t, token in enumerate(ids.tolist()):
        total = total + torch.log_softmax(logits[start + t - 1].float(), dim=-1)[token]
    return total


def _audio(stamp_manifests: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from multi2cap.data.manifest import read_manifest

    records = read_manifest(stamp_manifests / "train.jsonl")[:2]
    waves = [torch.from_numpy(load_audio(r.audio)) for r in records]
    lengths = torch.tensor([w.shape[0] for w in waves])
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths


@pytest.mark.parametrize("logp", ["sum", "mean"])
def test_dpo_loss_and_gradient_equal_a_direct_computation(
    finetuned_tiny: Path, stamp_manifests: Path, logp: str
) -> None:
    torch.manual_seed(0)
    model = Multi2Cap.from_pretrained(finetuned_tiny)
    assert model.config.llm.lora.dropout == 0.1
    params = select_trainable(model, ["llm_lora", "adapter"])
    dropout_off(model)
    audio, lengths = _audio(stamp_manifests)
    config = PreferenceConfig(beta=0.5, logp=logp, anchor_weight=0.3, anchor_tolerance=0.01)

    # The pipeline: both clips in one padded batch, chosen and rejected of each.
    policy, tokens = caption_logprobs(model, audio, lengths, PAIRS)
    again, _ = caption_logprobs(model, audio, lengths, PAIRS)
    assert torch.equal(policy, again)  # no dropout: the forward is deterministic
    # A reference that rates the chosen captions higher and the rejected lower than the policy,
    # so that z != 0 and the anchor is active.
    reference = policy.detach() + torch.tensor([[0.7, -0.3], [0.2, 0.4]])
    terms = dpo_terms(policy, reference, tokens, config)
    model.zero_grad()
    terms.loss.sum().backward()
    grads = [p.grad.clone() for p in params]
    assert all(g.abs().sum() > 0 for g in grads[:2])

    # The same written out, one caption at a time.
    model.zero_grad()
    total = torch.zeros(())
    for b, (chosen, rejected) in enumerate(PAIRS):
        prefix, mask = model.audio_prefix(audio[b : b + 1, : lengths[b]], lengths[b : b + 1])
        prefix = prefix[0, : int(mask[0].sum())]
        pc, pr = (_direct_logprob(model, prefix, c) for c in (chosen, rejected))
        nc, nr = (len(model.decoder.caption_ids([c])[0]) for c in (chosen, rejected))
        assert tokens[b].tolist() == [nc, nr]
        assert policy[b].tolist() == pytest.approx([pc.item(), pr.item()], abs=1e-4)
        rc, rr = reference[b]
        if logp == "mean":
            z = 0.5 * ((pc / nc - rc / nc) - (pr / nr - rr / nr))
        else:
            z = 0.5 * ((pc - rc) - (pr - rr))
        dpo = -torch.log(torch.sigmoid(z))
        anchor = torch.relu((rc - pc) / nc - 0.01) ** 2
        assert terms.z[b].item() == pytest.approx(z.item(), abs=1e-4)
        assert terms.loss_dpo[b].item() == pytest.approx(dpo.item(), abs=1e-5)
        assert terms.loss_anchor[b].item() == pytest.approx(anchor.item(), abs=1e-5)
        total = total + dpo + 0.3 * anchor
    assert terms.loss.sum().item() == pytest.approx(total.item(), abs=1e-5)
    assert terms.loss_anchor[0] > 0  # chosen degraded beyond the tolerance: the anchor pulls
    total.backward()
    for got, param in zip(grads, params, strict=True):  # float32 rounding of the two paths
        scale = float(param.grad.abs().max())
        torch.testing.assert_close(got, param.grad, rtol=1e-4, atol=1e-4 * scale)


def test_the_loss_gradient_on_z_is_minus_beta_sigmoid_minus_z() -> None:
    # d(-log sigmoid(z))/d(log pi(y_w)) = -beta sigmoid(-z), and the opposite for y_l.
    policy = torch.tensor([[-3.0, -5.0], [-2.0, -1.0]], requires_grad=True)
    reference = torch.tensor([[-3.5, -4.0], [-2.2, -1.5]])
    tokens = torch.tensor([[4, 6], [3, 2]])
    config = PreferenceConfig(beta=0.1)
    terms = dpo_terms(policy, reference, tokens, config)
    terms.loss.sum().backward()
    z = 0.1 * ((policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1])).detach()
    expected = torch.stack([-0.1 * torch.sigmoid(-z), 0.1 * torch.sigmoid(-z)], dim=1)
    torch.testing.assert_close(policy.grad, expected)
    assert (terms.loss_anchor == 0).all()  # anchor weight 0 and no degradation
    # At the start of training the policy is the reference: z = 0, the loss log 2.
    start = dpo_terms(reference.clone(), reference, tokens, config)
    assert start.loss.tolist() == pytest.approx([0.6931471805599453] * 2)


def test_select_trainable_trains_the_named_parts_only(finetuned_tiny: Path) -> None:
    model = Multi2Cap.from_pretrained(finetuned_tiny)
    params = select_trainable(model, ["llm_lora"])
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("decoder.") and "lora_" in n for n in names)
    assert len(params) == len(names)
    select_trainable(model, ["audio_lora", "adapter"])
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("audio_encoder.") for n in names)
    assert any(n.startswith("adapter.") for n in names)
    assert not any(n.startswith("decoder.") for n in names)
    audio = model.config.audio
    no_lora = audio.model_copy(update={"lora": audio.lora.model_copy(update={"enabled": False})})
    plain = Multi2Cap(model.config.model_copy(update={"audio": no_lora}))
    with pytest.raises(ValueError, match="audio_lora has no parameters"):
        select_trainable(plain, ["audio_lora"])
