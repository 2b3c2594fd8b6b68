"""Writes `time_reference.json` and `legacy_time_config.yaml` next to this file.

Run once on main at 66fa6aa, before `grounding.pool` existed (time pooling was the only
reading), from the repository root: `python tests/model/data/make_time_reference.py`.
`tests/model/test_grounding_readings.py` checks that `grounding.pool: time` and an old
checkpoint config reproduce these outputs bit for bit. Not a test module; kept to show how the
reference was made.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, "tests/model")
from multi2cap_testkit import make_batch, tiny

HERE = Path(__file__).parent


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tiny()
    batch = make_batch(3, [9600, 4000, 7000])
    torch.manual_seed(1)
    out = model(batch, "pretrain")
    emb = model.probe_embeddings(batch)
    captions = model.caption(batch["audio"], batch["audio_lengths"], num_beams=1, max_new_tokens=6)
    ref = {
        "written_by": "tests/model/test_grounding_readings.py, on main at 66fa6aa "
        "(before grounding.pool)",
        "batch": {"n": 3, "lengths": [9600, 4000, 7000]},
        "losses": {
            k: getattr(out, k).item() for k in ("loss", "loss_cap", "loss_align", "loss_vfr")
        },
        "g": emb.g.tolist(),
        "g_hat": emb.g_hat.tolist(),
        "attention": emb.attention.tolist(),
        "captions": captions,
    }
    (HERE / "time_reference.json").write_text(json.dumps(ref) + "\n")
    with tempfile.TemporaryDirectory() as folder:
        saved = model.save_pretrained(Path(folder) / "ckpt")
        shutil.copy(saved / "config.yaml", HERE / "legacy_time_config.yaml")


if __name__ == "__main__":
    main()
