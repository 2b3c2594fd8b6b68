"""benchmarks/bench_gpu.py: the CPU dry run of its path, and its no-CUDA refusal."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_the_same_path_on_cpu(bench, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a contended thread pool only adds waiting
    out = tmp_path / "bench.json"
    try:
        assert bench.main(["--dry-run", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads(out.read_text())
    train = results["pretrain_step"]
    assert train["batch"] == 4  # the largest of the tried sizes (2, 4)
    assert train["samples_per_s"] == pytest.approx(4 / train["step_s_median"])
    assert train["model_tflops_per_step"] > 0 and train["llm_tokens_per_s"] > 0
    assert (
        0
        < train["gradient_cache_overhead"]
        == pytest.approx(train["gradient_cache_pass_s"] / train["step_s_median"])
    )
    caption = results["captioning"]
    assert caption["batch"] == 4 and caption["mean_words_per_caption"] > 0
    assert results["trainable_parameters"] < results["parameters"]


def test_real_size_config_is_the_paper_architecture(bench) -> None:
    settings = bench.Settings("cpu", "llama-3.2-3b", 4, 10.0, [8], 1, 0, 20, 64, True)
    config = bench.model_config(settings, dry_run=False)
    assert config.audio.config == {"preset": "base"}
    assert config.vision.config["hidden_size"] == 1024 and config.vision.config["patch_size"] == 14
    assert config.llm.config["hidden_size"] == 3072 and config.llm.config["num_hidden_layers"] == 28
    assert config.llm.lora.enabled and config.k == 4

    from multi2cap.model.multi2cap import Multi2Cap

    with torch.device("meta"):  # the whole real-size build, without allocating 3.6 B weights
        model = Multi2Cap(config)

    def millions(module: torch.nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    assert millions(model.audio_encoder) == pytest.approx(85.6, abs=0.5)  # CED-base, 86 M
    assert millions(model.vision) == pytest.approx(303.2, abs=0.5)  # CLIP ViT-L/14 tower
    assert millions(model.decoder) == pytest.approx(3217, abs=5)  # Llama-3.2-3B, tied head
    assert sum(p.numel() for p in model.trainable_parameters()) < 0.02 * millions(model) * 1e6


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_without_cuda_it_refuses_with_a_message(bench, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main([]) == 1
    assert "no CUDA device" in capsys.readouterr().err
