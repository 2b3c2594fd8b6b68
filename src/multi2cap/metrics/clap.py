"""CLAP audio-text similarity: the scorer behind CLAP re-ranking (`multi2cap.model.rerank`) and
the `clap_sim`, `clap_sim_audio` and `mace` metrics.

Any transformers CLAP checkpoint works (`ClapModel` + its tokenizer and `ClapFeatureExtractor`,
by hub id or local folder): `laion/clap-htsat-unfused`, `laion/clap-htsat-fused`,
`laion/larger_clap_general`, ... Embeddings are the model's projections, unit-normed; every
similarity is a cosine in [-1, 1].

**A clip's score never depends on its batch** (tested: batch == one by one). transformers'
feature extractor, called on a batch, breaks that in two ways, and so does LAION-CLAP's own code:
- with a fused model (`enable_fusion`, 4 mel views) and no clip of the batch longer than the
  CLAP's window (10 s), it marks **one random clip** of the batch as "longer", and only that
  clip goes through the fusion branch; a clip scored alone is always that one;
- clips longer than the window are cropped at random (`fusion`: 3 random 10-s crops + the whole
  mel shrunk; `rand_trunc`: one random 10-s crop).
So features are computed **clip by clip** (a clip alone, as CLAP scores it one at a time), with
numpy's generator seeded by `crop_seed` for each clip (the crops of a clip are then fixed, the
global generator is restored after), and only then stacked into a batch for the model. Every
clip is a full window (shorter ones are repeated then zero-padded, `repeatpad`, as CLAP was
trained), so no padding enters across clips. The truncation follows the model
(`fusion` for fused models, `rand_trunc` otherwise), not the extractor's saved default.
`long_audio="first"` keeps the first window only, as SLAM-AAC's CLAP-Refine does.

Audio is loaded at the CLAP's own rate (48 kHz for LAION's) from the file; waveforms given at
another rate are resampled (`multi2cap.media.audio.resample`). Text-text similarity (`clap_sim`,
as aac-metrics' default `clap_method="text"`) is the mean cosine between a candidate and each of
its references; audio-text (`clap_sim_audio`) the cosine between a candidate and its clip.
MACE (Dixit et al. 2024) = CLAP-sim x (1 - 0.3 FER) per item; see docs/metrics.md for the
reading of its `method` and FER threshold.

torch and transformers are imported when a scorer is built, so the metrics package stays light.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from multi2cap.assets import AssetNotFoundError
from multi2cap.media.audio import load_audio, resample
from multi2cap.metrics.resources import _hf_cached

if TYPE_CHECKING:
    from torch import Tensor

CLAP_MODEL_ENV = "MULTI2CAP_CLAP_MODEL"
LongAudio = Literal["model", "first"]
LONG_AUDIO: tuple[str, ...] = get_args(LongAudio)
MaceMethod = Literal["combined", "text", "audio"]
MACE_METHODS: tuple[str, ...] = get_args(MaceMethod)
#: MACE multiplies a caption's CLAP-sim by (1 - 0.3) when the echecker flags it.
MACE_PENALTY = 0.3

_CLAP_HOWTO = (
    "name a transformers CLAP model (`ClapModel`, e.g. laion/clap-htsat-fused or a local folder "
    f"holding one) with clap_model=... / --clap-model, or set {CLAP_MODEL_ENV}; a hub id must "
    "be in the local Hugging Face cache (`hf download ID` once on a machine with network) unless "
    "the network is allowed"
)


def resolve_clap_model(
    clap_model: str | os.PathLike[str] | None = None, *, allow_network: bool = False
) -> str:
    """A local folder (or cached hub id) of the CLAP model: the argument, else
    `MULTI2CAP_CLAP_MODEL`. There is no default model: CLAP checkpoints score differently, so
    the user names one. Raises `AssetNotFoundError` saying how to provide it."""
    value = str(clap_model) if clap_model is not None else os.environ.get(CLAP_MODEL_ENV)
    if not value:
        raise AssetNotFoundError(f"no CLAP model given: {_CLAP_HOWTO}")
    path = Path(value)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise AssetNotFoundError(
                f"CLAP model folder {path} has no config.json (not a transformers model): "
                f"{_CLAP_HOWTO}"
            )
        return value
    if path.exists():
        raise AssetNotFoundError(f"CLAP model {path} is a file, not a model folder: {_CLAP_HOWTO}")
    cached = _hf_cached(value)
    if cached is not None:
        return str(cached)
    if allow_network:
        return value
    raise AssetNotFoundError(
        f"CLAP model {value!r} is neither a local folder nor in the local Hugging Face cache: "
        f"{_CLAP_HOWTO}"
    )


def clap_label(source: str) -> str:
    """A short name for a CLAP folder or hub id (`org/name` for a hub cache snapshot), used in
    the metric keys (`clap_sim[label]`) so that scores of different CLAPs are never confused."""
    parts = Path(source).parts
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    if Path(source).is_dir():
        return Path(source).resolve().name
    return source


class ClapScorer:
    """Embeds audio and text with one CLAP model and scores their cosine similarities.

    `source`: hub id or folder (see `resolve_clap_model`). `audio_batch_size` clips and
    `text_batch_size` texts go through the model at a time (neither changes a score).
    `long_audio`: `"model"` (the checkpoint's own handling of audio over its window, with crops
    fixed by `crop_seed`) or `"first"` (the first window only). Raises `AssetNotFoundError` when
    the model cannot be loaded from local files, `ValueError` when it is not a CLAP.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        device: str = "cpu",
        allow_network: bool = False,
        audio_batch_size: int = 16,
        text_batch_size: int = 64,
        long_audio: LongAudio = "model",
        crop_seed: int = 0,
    ) -> None:
        import torch
        import transformers as tf

        if long_audio not in LONG_AUDIO:
            raise ValueError(f"long_audio must be one of {LONG_AUDIO}, found {long_audio!r}")
        if audio_batch_size < 1 or text_batch_size < 1:
            raise ValueError(
                f"batch sizes must be >= 1, found audio {audio_batch_size}, text {text_batch_size}"
            )
        self.source = str(source)
        local = not allow_network
        try:
            config = tf.AutoConfig.from_pretrained(self.source, local_files_only=local)
            if config.model_type != "clap":
                raise ValueError(
                    f"{self.source} is a {config.model_type!r} model, not a CLAP (`ClapModel`)"
                )
            self.model = tf.ClapModel.from_pretrained(
                self.source, local_files_only=local, dtype=torch.float32
            )
            self.tokenizer = tf.AutoTokenizer.from_pretrained(self.source, local_files_only=local)
            self.feature_extractor = tf.AutoFeatureExtractor.from_pretrained(
                self.source, local_files_only=local
            )
        except OSError as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise AssetNotFoundError(
                f"CLAP model {self.source!r} could not be loaded: {reason}. {_CLAP_HOWTO}"
            ) from err
        if not isinstance(self.feature_extractor, tf.ClapFeatureExtractor):
            raise ValueError(
                f"{self.source}: expected a ClapFeatureExtractor, found "
                f"{type(self.feature_extractor).__name__}"
            )
        self.model.eval().to(device)
        self.device = device
        self.audio_batch_size = audio_batch_size
        self.text_batch_size = text_batch_size
        self.long_audio = long_audio
        self.crop_seed = crop_seed
        self.fusion = bool(self.model.config.audio_config.enable_fusion)
        text_config = self.model.config.text_config
        # RoBERTa-style positions start after the pad id: the longest text that fits.
        positions = int(text_config.max_position_embeddings) - int(text_config.pad_token_id) - 1
        self.max_text_tokens = min(int(self.tokenizer.model_max_length), positions)

    @property
    def sampling_rate(self) -> int:
        """The rate (Hz) the CLAP's feature extractor expects (48 kHz for LAION's)."""
        return int(self.feature_extractor.sampling_rate)

    @property
    def window_samples(self) -> int:
        """Samples in the CLAP's input window (10 s at `sampling_rate` for LAION's)."""
        return int(self.feature_extractor.nb_max_samples)

    def load(self, path: str | os.PathLike[str]) -> np.ndarray:
        """A file as a mono float32 waveform at the CLAP's rate (any format `load_audio` reads)."""
        return load_audio(path, self.sampling_rate)

    def from_rate(self, wave: np.ndarray, rate: int) -> np.ndarray:
        """A 1-D waveform at `rate` Hz, resampled to the CLAP's rate."""
        return resample(np.asarray(wave, dtype=np.float32), rate, self.sampling_rate)

    # ------------------------------------------------------------------ features
    def clip_features(self, wave: np.ndarray) -> tuple[np.ndarray, bool]:
        """`(input_features (C, T, F), is_longer)` of one clip at the CLAP's rate, computed
        alone (see the module docstring): C = 4 mel views for a fused model, else 1."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise ValueError(f"expected a non-empty 1-D waveform, found shape {wave.shape}")
        if self.long_audio == "first":
            wave = wave[: self.window_samples]
        state = np.random.get_state()
        np.random.seed(self.crop_seed)
        try:
            out = self.feature_extractor(
                wave,
                sampling_rate=self.sampling_rate,
                truncation="fusion" if self.fusion else "rand_trunc",
                return_tensors="np",
            )
        finally:
            np.random.set_state(state)
        return out["input_features"][0], bool(out["is_longer"][0][0])

    # ------------------------------------------------------------------ embeddings
    def embed_audio(self, waves: Sequence[np.ndarray]) -> Tensor:
        """Unit-norm audio embeddings `(N, E)` float32 on CPU of waveforms at the CLAP's rate."""
        import torch

        chunks = []
        for start in range(0, len(waves), self.audio_batch_size):
            features = [self.clip_features(w) for w in waves[start : start + self.audio_batch_size]]
            mel = torch.from_numpy(np.stack([f for f, _ in features])).float()
            longer = torch.tensor([[flag] for _, flag in features])
            with torch.no_grad():
                out = self.model.get_audio_features(
                    input_features=mel.to(self.device), is_longer=longer.to(self.device)
                )
            chunks.append(_unit(out))
        if not chunks:
            return torch.zeros(0, self.model.config.projection_dim)
        return torch.cat(chunks)

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Unit-norm text embeddings `(N, E)` float32 on CPU; each distinct text is embedded
        once (padding inside a batch is masked, so a text's embedding is its own)."""
        import torch

        distinct = list(dict.fromkeys(texts))
        chunks = []
        for start in range(0, len(distinct), self.text_batch_size):
            inputs = self.tokenizer(
                distinct[start : start + self.text_batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            )
            with torch.no_grad():
                out = self.model.get_text_features(
                    input_ids=inputs["input_ids"].to(self.device),
                    attention_mask=inputs["attention_mask"].to(self.device),
                )
            chunks.append(_unit(out))
        if not chunks:
            return torch.zeros(0, self.model.config.projection_dim)
        table = torch.cat(chunks)
        row = {text: i for i, text in enumerate(distinct)}
        return table[[row[t] for t in texts]]

    # ------------------------------------------------------------------ similarities
    def audio_text(
        self, waves: Sequence[np.ndarray], texts: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """Cosine of clip i (at the CLAP's rate) with each of `texts[i]`: one list per clip."""
        if len(waves) != len(texts):
            raise ValueError(f"{len(waves)} clips but {len(texts)} lists of texts")
        audio = self.embed_audio(waves)
        flat = self.embed_texts([t for group in texts for t in group])
        scores, start = [], 0
        for i, group in enumerate(texts):
            scores.append((flat[start : start + len(group)] @ audio[i]).tolist())
            start += len(group)
        return scores

    def text_text(
        self, candidates: Sequence[str], mult_references: Sequence[Sequence[str]]
    ) -> list[float]:
        """Mean cosine between candidate i and each of its references."""
        cands = self.embed_texts(candidates)
        refs = self.embed_texts([r for group in mult_references for r in group])
        scores, start = [], 0
        for i, group in enumerate(mult_references):
            scores.append(float((refs[start : start + len(group)] @ cands[i]).mean()))
            start += len(group)
        return scores


def _unit(output: Any) -> Tensor:
    """The projected embedding of a `get_*_features` call (a tensor in transformers 4, an output
    with `pooler_output` in 5), unit-normed, float32 on CPU."""
    import torch

    embedding = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(embedding.float(), dim=-1).cpu()


# ---------------------------------------------------------------------- metrics


def clap_sim_audio(
    scorer: ClapScorer, candidates: Sequence[str], audio_paths: Sequence[str | os.PathLike[str]]
) -> list[float]:
    """Per-item cosine between each candidate and its clip's audio (read from `audio_paths`)."""
    if len(audio_paths) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(audio_paths)} audio paths")
    waves = [scorer.load(p) for p in audio_paths]
    return [group[0] for group in scorer.audio_text(waves, [[c] for c in candidates])]


#: The metric keys computed from a CLAP model.
CLAP_KEYS = ("clap_sim", "clap_sim_audio", "mace")


def needs_audio(keys: Sequence[str], mace_method: MaceMethod) -> list[str]:
    """Those of `keys` that need each item's audio (`clap_sim_audio`, MACE unless `text`)."""
    return [k for k in keys if k == "clap_sim_audio" or (k == "mace" and mace_method != "text")]


def audio_problems(
    keys: Sequence[str],
    mace_method: MaceMethod,
    audio_paths: Sequence[str | os.PathLike[str]] | None,
    n_items: int,
) -> dict[str, str]:
    """Key -> why it cannot run, for those of `keys` that need audio when `audio_paths` is None
    (empty when nothing is missing). A wrong number of paths is a `ValueError`."""
    if audio_paths is not None:
        if isinstance(audio_paths, str) or len(audio_paths) != n_items:
            found = "a string" if isinstance(audio_paths, str) else f"{len(audio_paths)} paths"
            raise ValueError(f"audio_paths: expected {n_items} paths (one per item), found {found}")
        return {}
    reason = "needs each item's audio: pass audio_paths=[...] (CLI: --audio-dir)"
    return {
        key: reason + (" or mace_method='text'" if key == "mace" else "")
        for key in needs_audio(keys, mace_method)
    }


def clap_metrics(
    scorer: ClapScorer,
    keys: Sequence[str],
    candidates: Sequence[str],
    mult_references: Sequence[Sequence[str]],
    audio_paths: Sequence[str | os.PathLike[str]] | None,
    fer: Sequence[float] | None,
    mace_method: MaceMethod = "combined",
) -> dict[str, list[float]]:
    """Per-item scores of the requested CLAP `keys` (`CLAP_KEYS`): each similarity computed
    once, MACE from them and the per-item `fer` flags. `audio_paths` must be given when
    `needs_audio` says so."""
    wanted = set(keys)
    use_text = "clap_sim" in wanted or ("mace" in wanted and mace_method != "audio")
    use_audio = bool(needs_audio(keys, mace_method))
    if use_audio and audio_paths is None:
        raise ValueError(f"{', '.join(needs_audio(keys, mace_method))}: no audio paths given")
    text = scorer.text_text(candidates, mult_references) if use_text else None
    audio = clap_sim_audio(scorer, candidates, audio_paths or []) if use_audio else None
    out: dict[str, list[float]] = {}
    if "clap_sim" in wanted and text is not None:
        out["clap_sim"] = text
    if "clap_sim_audio" in wanted and audio is not None:
        out["clap_sim_audio"] = audio
    if "mace" in wanted:
        if fer is None:
            raise ValueError("MACE needs the per-item FER of the FENSE error detector")
        out["mace"] = mace(fer, text_sim=text, audio_sim=audio, method=mace_method)
    return out


class ClapMetrics:
    """The CLAP metrics of one `Evaluator`: the model (`resolve_clap_model`, loaded on first
    use), the reported keys (`clap_sim[label]`, ...: CLAPs score differently, so the model is
    part of every key) and the settings to record."""

    def __init__(
        self,
        clap_model: str | None,
        mace_method: str,
        *,
        device: str = "cpu",
        allow_network: bool = False,
    ) -> None:
        if mace_method not in MACE_METHODS:
            raise ValueError(f"mace_method must be one of {MACE_METHODS}, found {mace_method!r}")
        self.mace_method: MaceMethod = mace_method  # type: ignore[assignment]
        self.source = resolve_clap_model(clap_model, allow_network=allow_network)
        self.keys = {key: f"{key}[{clap_label(self.source)}]" for key in CLAP_KEYS}
        self.settings = {"clap_model": self.source, "mace_method": mace_method}
        self._options = {"device": device, "allow_network": allow_network}
        self._scorer: ClapScorer | None = None

    def scorer(self) -> ClapScorer:
        if self._scorer is None:
            self._scorer = ClapScorer(self.source, **self._options)  # type: ignore[arg-type]
        return self._scorer

    def close(self) -> None:
        self._scorer = None

    def missing_audio(
        self, keys: Sequence[str], audio_paths: Sequence[Any] | None, n_items: int
    ) -> dict[str, str]:
        """`audio_problems` of the CLAP keys among `keys`."""
        mine = [k for k in keys if k in self.keys]
        return audio_problems(mine, self.mace_method, audio_paths, n_items)

    def score(
        self,
        keys: Sequence[str],
        candidates: Sequence[str],
        mult_references: Sequence[Sequence[str]],
        audio_paths: Sequence[Any] | None,
        fer: Sequence[float] | None,
    ) -> dict[str, list[float]]:
        """`clap_metrics` of the CLAP keys among `keys` (nothing when there are none)."""
        mine = [k for k in keys if k in self.keys]
        if not mine:
            return {}
        return clap_metrics(
            self.scorer(), mine, candidates, mult_references, audio_paths, fer, self.mace_method
        )


def mace(
    fer: Sequence[float],
    *,
    text_sim: Sequence[float] | None,
    audio_sim: Sequence[float] | None,
    method: MaceMethod = "combined",
    penalty: float = MACE_PENALTY,
) -> list[float]:
    """Per-item MACE = s_i (1 - penalty fer_i), s = the text CLAP-sim, the audio CLAP-sim, or
    their mean (`combined`), as `method` says."""
    if method not in MACE_METHODS:
        raise ValueError(f"mace method must be one of {MACE_METHODS}, found {method!r}")
    parts = {"text": [text_sim], "audio": [audio_sim], "combined": [text_sim, audio_sim]}[method]
    if any(p is None for p in parts):
        raise ValueError(f"MACE ({method}) needs the {method} CLAP similarities")
    sims = [sum(values) / len(values) for values in zip(*parts, strict=True)]  # type: ignore[arg-type]
    return [s * (1 - penalty * f) for s, f in zip(sims, fer, strict=True)]


def save_tiny_clap(
    folder: str | os.PathLike[str], texts: Sequence[str] = (), *, fused: bool = False, seed: int = 0
) -> Path:
    """Write a CPU-sized CLAP with random weights to `folder` (model, word-level tokenizer over
    the words of `texts`, LAION's 48-kHz feature extractor), loadable by `ClapScorer`. For tests,
    benchmarks and smoke runs: its scores mean nothing. `fused` builds the 4-view fusion variant."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for text in texts:
        for word in text.lower().split():
            vocab.setdefault(word.strip(".,;:!?\"'"), len(vocab))
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=60,
    )
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    audio = dict(
        patch_embeds_hidden_size=16,
        depths=[1, 1, 1, 1],
        num_attention_heads=[2, 2, 2, 2],
        hidden_size=128,
        enable_fusion=fused,
    )
    config = tf.ClapConfig(text_config=text, audio_config=audio, projection_dim=16)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = tf.ClapModel(config).eval()
    extractor = tf.ClapFeatureExtractor(truncation="fusion" if fused else "rand_trunc")
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder
