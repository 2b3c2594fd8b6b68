"""Checkpoints say which multi2cap wrote them; a newer major version warns on load."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from multi2cap_testkit import tiny

import multi2cap
from multi2cap.model import Multi2Cap
from multi2cap.provenance import major_version, provenance


def test_a_checkpoint_records_the_version_and_commit_that_wrote_it(tmp_path: Path) -> None:
    folder = tiny().save_pretrained(tmp_path / "ckpt")
    written = yaml.safe_load((folder / "config.yaml").read_text())["written_by"]
    assert written["multi2cap_version"] == multi2cap.__version__
    repo = Path(multi2cap.__file__).resolve().parents[2]
    if (repo / ".git").exists():  # a checkout: the commit it ran from
        assert len(written["git_commit"]) == 40 and isinstance(written["git_dirty"], bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same version loads without a warning
        Multi2Cap.from_pretrained(folder)


def test_a_checkpoint_from_a_newer_major_version_warns(tmp_path: Path) -> None:
    folder = tiny().save_pretrained(tmp_path / "ckpt")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    ours = major_version(multi2cap.__version__)
    config["written_by"] = {"multi2cap_version": f"{ours + 1}.0.0"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.warns(UserWarning, match=rf"written by multi2cap {ours + 1}\.0\.0, newer"):
        Multi2Cap.from_pretrained(folder)


def test_a_checkpoint_without_a_record_loads_silently(tmp_path: Path) -> None:
    folder = tiny().save_pretrained(tmp_path / "ckpt")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    del config["written_by"]  # written before 0.2.0
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Multi2Cap.from_pretrained(folder)


def test_provenance_outside_a_checkout_is_the_version_alone(tmp_path: Path) -> None:
    from multi2cap import provenance as module

    assert module._git_state(tmp_path) == (None, False)
    assert provenance()["multi2cap_version"] == multi2cap.__version__
    assert major_version("0.2.0") == 0 and major_version("dev") is None
