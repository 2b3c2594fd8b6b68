"""benchmarks/bench_sharding.py: the memory accounting of DDP vs FSDP (the speed part runs
torchrun twice and is what test_distributed.py already covers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sharding.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sharding", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sharding"] = module
    spec.loader.exec_module(module)
    return module


def test_fsdp_divides_what_ddp_replicates(bench) -> None:
    from multi2cap.model.config import Multi2CapConfig
    from multi2cap.model.multi2cap import Multi2Cap

    model = Multi2Cap(Multi2CapConfig.tiny(["a dog barks"]))
    model.set_stage("pretrain")
    rows = bench.footprints(model, [1, 2, 4])
    ddp = [r for r in rows if r.strategy == "ddp"]
    fsdp = {r.processes: r for r in rows if r.strategy == "fsdp"}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    assert [r.processes for r in ddp] == [1, 2, 4] and sorted(fsdp) == [2, 4]
    assert all(r.weights == weights and r.optimizer == 8 * trainable for r in ddp)
    for n, row in fsdp.items():
        assert row.weights == weights // n and row.optimizer == 8 * trainable // n
        assert 0 < row.gathered < weights
    assert fsdp[4].total < fsdp[2].total < ddp[0].total


def test_memory_table_at_real_size_allocates_nothing(
    bench, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--decoders", "llama-3.2-3b", "--processes", "2", "--no-speed"]) == 0
    out = capsys.readouterr().out
    # 49.4 M: grounding.pool space, whose VFR has 0.6 M more than time's (48.8 M)
    assert "llama-3.2-3b: 3.65 B parameters (49.4 M trainable), 64 FSDP blocks" in out
    assert "fsdp         2" in out
