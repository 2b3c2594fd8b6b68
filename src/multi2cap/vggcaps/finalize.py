"""Split and export (Figure 1, right): the 1 % test split and the final files, derived from the
work files and rewritten atomically, sorted by id:

- `vggcaps.jsonl` (the records of docs/data_formats.md),
- `manifest.jsonl` (`multi2cap.data.manifest`, image = frame, one caption per clip),
- `vggcaps.parquet` (the same records, usage flattened to columns),
- `failures.jsonl` (clips that are still unfinished, with the latest reason).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multi2cap.data.manifest import ManifestRecord, write_manifest
from multi2cap.io import atomic_write_bytes, write_jsonl
from multi2cap.vggcaps.records import DATASET_NAME, VGGCAPS_COLUMNS, FailureRecord, VggCapsRecord
from multi2cap.vggcaps.split import DEFAULT_SPLIT_SEED, TEST_FRACTION, assign_split
from multi2cap.vggcaps.store import Store, writing


@dataclass(frozen=True)
class FinalizeResult:
    records: int
    test: int
    failures: int


def vggcaps_record(
    extract: dict[str, Any], caption: dict[str, Any], split_seed: int, test_fraction: float
) -> VggCapsRecord:
    """The released record (docs/data_formats.md) of one finished clip."""
    return {
        "id": extract["id"],
        "youtube_id": extract.get("youtube_id"),
        "start_s": extract.get("start_s"),
        "category": extract["category"],
        "vggsound_split": extract.get("vggsound_split"),
        "split": assign_split(extract["id"], split_seed, test_fraction),
        "audio": extract["audio"],
        "frame": extract["frame"],
        "spectrogram": extract["spectrogram"],
        "duration_s": extract.get("duration_s"),
        "raw_caption": caption["raw_caption"],
        "caption": caption["caption"],
        "backend": caption["backend"],
        "model": caption["model"],
        "prompt_version": caption["prompt_version"],
        "usage": caption["usage"],
    }


def finalize_dataset(
    out_dir: Path, split_seed: int = DEFAULT_SPLIT_SEED, test_fraction: float = TEST_FRACTION
) -> FinalizeResult:
    """Rewrite vggcaps.jsonl, manifest.jsonl, vggcaps.parquet and failures.jsonl from the store
    (a failed write, a full disk included, raises `StoreWriteError` naming the file).

    The latest stage-2 record of a clip wins (a rerun with another model or prompt replaces the
    caption); records are sorted by id so the files do not depend on completion order.
    """
    out_dir = Path(out_dir)
    store = Store(out_dir)
    store.require_work_dir()
    extracts = store.by_key("extract", field="id")
    captions: dict[str, dict[str, Any]] = {}
    for record in store.records("stage2"):
        if record["id"] in extracts:
            captions[record["id"]] = record
    records = [
        vggcaps_record(extracts[i], captions[i], split_seed, test_fraction)
        for i in sorted(captions)
    ]
    with writing(out_dir / "vggcaps.jsonl"):
        write_jsonl(out_dir / "vggcaps.jsonl", records)
    manifest = [
        ManifestRecord(
            id=r["id"],
            dataset=DATASET_NAME,
            split=r["split"],
            audio=str(out_dir / r["audio"]),
            captions=[r["caption"]],
            image=str(out_dir / r["frame"]),
            category=r["category"],
            duration_s=r["duration_s"],
        )
        for r in records
    ]
    with writing(out_dir / "manifest.jsonl"):
        write_manifest(manifest, out_dir / "manifest.jsonl")
    with writing(out_dir / "vggcaps.parquet"):
        export_parquet(records, out_dir / "vggcaps.parquet")
    return FinalizeResult(
        records=len(records),
        test=sum(r["split"] == "test" for r in records),
        failures=write_failures(store, set(captions), out_dir / "failures.jsonl"),
    )


def write_failures(store: Store, finished: set[str], path: Path) -> int:
    """Write `failures.jsonl`: the latest failure of every clip not in `finished`, by id;
    returns how many."""
    latest: dict[str, FailureRecord] = {}
    for failure in store.records("failures"):
        if failure["id"] not in finished:
            latest[failure["id"]] = failure  # type: ignore[assignment]
    with writing(path):
        write_jsonl(path, [dict(latest[i]) for i in sorted(latest)])
    return len(latest)


def export_parquet(records: list[VggCapsRecord], path: Path) -> None:
    """The VggCaps records as a Parquet table (usage flattened to four integer columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [k for k in VGGCAPS_COLUMNS if k != "usage"]
    table: dict[str, list[Any]] = {c: [r[c] for r in records] for c in columns}  # type: ignore[literal-required]
    for stage in ("stage1", "stage2"):
        for kind in ("prompt_tokens", "completion_tokens"):
            table[f"{stage}_{kind}"] = [int(r["usage"][stage][kind]) for r in records]  # type: ignore[literal-required]
    schema = pa.schema(
        [(c, pa.float64() if c in ("start_s", "duration_s") else pa.string()) for c in columns]
        + [(c, pa.int64()) for c in table if c not in columns]
    )
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(table, schema=schema), buffer)
    atomic_write_bytes(path, buffer.getvalue())
