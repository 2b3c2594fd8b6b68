"""Run on main (commit 66fa6aa, before `grounding.pool`): reference outputs of the time reading."""
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, "tests/model")
from multi2cap_testkit import make_batch, tiny

torch.set_num_threads(1)
torch.manual_seed(0)
model = tiny()
batch = make_batch(3, [9600, 4000, 7000])
torch.manual_seed(1)
out = model(batch, "pretrain")
emb = model.probe_embeddings(batch)
captions = model.caption(batch["audio"], batch["audio_lengths"], num_beams=1, max_new_tokens=6)
ref = {
    "written_by": "tests/model/test_grounding_readings.py, on main at 66fa6aa (before grounding.pool)",
    "batch": {"n": 3, "lengths": [9600, 4000, 7000]},
    "losses": {k: getattr(out, k).item() for k in ("loss", "loss_cap", "loss_align", "loss_vfr")},
    "g": emb.g.tolist(),
    "g_hat": emb.g_hat.tolist(),
    "attention": emb.attention.tolist(),
    "captions": captions,
}
Path("tests/model/data/time_reference.json").write_text(json.dumps(ref) + "\n")
model.save_pretrained("/tmp/legacy_ckpt")
import shutil; shutil.copy("/tmp/legacy_ckpt/config.yaml", "tests/model/data/legacy_time_config.yaml")
print(ref["losses"], captions)
