"""The `openai-batch` backend: the same requests as the `openai` backend, sent through the Batch
API (half price, 24-h window).

Per stage, and per content re-ask round: the pending requests are written as Batch JSONL files of
at most `max_requests` lines and `max_bytes` bytes (`custom_id` = `<clip id>:s<stage>`), uploaded,
submitted and polled; the output and error files are read by `custom_id` (never by position) and
fed through the same post-processing and store as the `openai` backend. Stage 2 runs as a second
batch after stage 1. Every submission is logged in `work/batches.jsonl` before it is polled, so a
rerun collects a batch that was submitted by a killed run instead of paying for it twice.

The files hold request bodies only; the API key travels in HTTP headers and is never written.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai

from multi2cap.llm_client.chat import Completion, RunStats, parse_chat_response, redact
from multi2cap.llm_client.settings import BackendConfigError
from multi2cap.vggcaps.backends import OpenAISettings, StageRequest, chat_body, usage_guard
from multi2cap.vggcaps.caption import StageAttempts, account, stage_request
from multi2cap.vggcaps.progress import StageProgress
from multi2cap.vggcaps.records import BatchSettings, BuildConfig, Identity, failure_record
from multi2cap.vggcaps.store import Store, writing

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINT = "/v1/chat/completions"

Result = Completion | str  # a completion, or the reason there is none
log = logging.getLogger(__name__)


def custom_id(clip_id: str, stage: int) -> str:
    """The Batch API `custom_id` of one clip and stage (parsed back with `rsplit(":s", 1)`)."""
    return f"{clip_id}:s{stage}"


def batch_lines(requests: list[StageRequest], settings: OpenAISettings) -> Iterator[bytes]:
    """One Batch API input line (bytes, newline included) per request."""
    for request in requests:
        line = {
            "custom_id": custom_id(request.clip_id, request.stage),
            "method": "POST",
            "url": ENDPOINT,
            "body": chat_body(request, settings),
        }
        yield (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


def write_batch_files(
    requests: list[StageRequest],
    settings: OpenAISettings,
    limits: BatchSettings,
    folder: Path,
    prefix: str,
) -> list[tuple[Path, list[str]]]:
    """Write the requests as Batch input files within the limits; returns (file, custom ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[tuple[Path, list[str]]] = []
    handle = None
    size = 0
    ids: list[str] = []
    try:
        for request, line in zip(requests, batch_lines(requests, settings), strict=True):
            if len(line) > limits.max_bytes:
                raise ValueError(
                    f"clip {request.clip_id}: one request is {len(line)} bytes, over the "
                    f"{limits.max_bytes}-byte batch file limit"
                )
            if (
                handle is None
                or len(ids) >= limits.max_requests
                or size + len(line) > limits.max_bytes
            ):
                if handle is not None:
                    _close(handle, files[-1][0])
                path = folder / f"{prefix}-{len(files):03d}.jsonl"
                handle = open(path.with_suffix(".tmp"), "wb")  # noqa: SIM115 - closed in _close
                ids, size = [], 0
                files.append((path, ids))
            handle.write(line)
            size += len(line)
            ids.append(custom_id(request.clip_id, request.stage))
    finally:
        if handle is not None:
            _close(handle, files[-1][0])
    return files


def _close(handle: Any, path: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(path.with_suffix(".tmp"), path)


def parse_output(text: str, source: str = "batch output") -> tuple[dict[str, Result], list[str]]:
    """Map custom_id -> completion (HTTP 200 lines) or failure reason (other lines); also the
    problems of lines that cannot be read (not JSON, no `custom_id`), each naming its line in
    `source`. Such a line answers nothing: its request counts as unanswered and is asked again,
    so one bad line never blocks the build."""
    results: dict[str, Result] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{source} line {number}: not JSON ({err.msg})")
            continue
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            problems.append(f"{source} line {number}: no custom_id")
            continue
        cid = item["custom_id"]
        response = item.get("response") or {}
        error = item.get("error")
        if error:
            error = error if isinstance(error, dict) else {"message": str(error)}
            results[cid] = f"batch error {error.get('code', '?')}: {error.get('message', '')}"
        elif isinstance(response, dict) and response.get("status_code") == 200:
            try:
                results[cid] = parse_chat_response(response.get("body") or {})
            except ValueError as err:
                results[cid] = f"malformed batch response ({err})"
        else:
            status = response.get("status_code") if isinstance(response, dict) else None
            results[cid] = f"HTTP {status} in batch output"
    return results, problems


class BatchRunner:
    """Submits, polls and collects batches for one output folder."""

    def __init__(self, config: BuildConfig, identity: Identity, stats: RunStats) -> None:
        self.config, self.identity, self.stats = config, identity, stats
        self.store = Store(config.out)
        self._key = config.openai.api_key()
        self._client = openai.OpenAI(
            api_key=self._key,
            base_url=config.openai.base_url,
            max_retries=config.openai.max_retries,
            timeout=config.openai.timeout_s,
        )

    def _tag(self, stage: int) -> str:
        return self.identity.key("*", stage)

    def open_batches(self, stage: int) -> list[dict[str, Any]]:
        """Submissions of this stage and identity that no run has collected yet."""
        submitted, collected = [], set()
        for event in self.store.records("batches"):
            if event["event"] == "collected":
                collected.add(event["batch_id"])
            elif event["tag"] == self._tag(stage):
                submitted.append(event)
        return [s for s in submitted if s["batch_id"] not in collected]

    def submit(self, requests: list[StageRequest], stage: int) -> list[dict[str, Any]]:
        folder = self.store.work_dir / "batches"
        prefix = f"s{stage}-{uuid.uuid4().hex[:8]}"
        submissions = []
        with writing(folder):
            files = write_batch_files(
                requests, self.config.openai, self.config.batch, folder, prefix
            )
        for path, ids in files:
            with open(path, "rb") as handle:
                uploaded = self._client.files.create(file=handle, purpose="batch")
            batch = self._client.batches.create(
                input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
            )
            event = {
                "event": "submitted",
                "tag": self._tag(stage),
                "batch_id": batch.id,
                "file": str(path.relative_to(self.config.out)),
                "custom_ids": ids,
            }
            self.store.append("batches", [event])
            self.stats.requests += len(ids)
            submissions.append(event)
        return submissions

    def collect(self, submission: dict[str, Any]) -> dict[str, Result] | None:
        """Poll a batch until it ends, then read its output and error files; None when it is
        still running at the `max_wait_s` deadline (it stays open: a later run collects it,
        nothing is submitted twice). Ids the batch does not answer (expired, failed, a line we
        cannot read) get a reason and are asked again."""
        deadline = time.monotonic() + self.config.batch.max_wait_s
        total = len(submission["custom_ids"])
        with StageProgress(
            f"batch {submission['batch_id']}", total, self.stats, self.config.progress
        ) as bar:
            shown = 0
            batch = self._client.batches.retrieve(submission["batch_id"])
            while True:
                counts = batch.request_counts
                done = (counts.completed + counts.failed) if counts is not None else 0
                bar.advance(max(0, min(done, total) - shown))
                shown = max(shown, min(done, total))
                if batch.status in TERMINAL:
                    break
                if time.monotonic() >= deadline:
                    log.warning(
                        "batch %s is still %s after %.0f s; it stays open in "
                        "work/batches.jsonl and the next run collects it",
                        batch.id,
                        batch.status,
                        self.config.batch.max_wait_s,
                    )
                    return None
                time.sleep(self.config.batch.poll_interval_s)
                batch = self._client.batches.retrieve(submission["batch_id"])
        results: dict[str, Result] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                text = self._client.files.content(file_id).text
                answered, problems = parse_output(text, f"batch {batch.id} file {file_id}")
                results.update(answered)
                if problems:
                    log.warning(
                        "%d unreadable lines skipped (their requests are asked again): %s",
                        len(problems),
                        "; ".join(problems[:5]),
                    )
        for cid in submission["custom_ids"]:
            results.setdefault(cid, f"no answer in batch {batch.id} (status {batch.status})")
        return results

    def redact(self, text: str) -> str:
        """`text` with the API key masked (for reasons that quote server messages)."""
        return redact(text, self._key)

    def mark_collected(self, submission: dict[str, Any]) -> None:
        self.store.append("batches", [{"event": "collected", "batch_id": submission["batch_id"]}])

    def close(self) -> None:
        self._client.close()


def _run_stage(
    runner: BatchRunner,
    stage: int,
    requests: dict[str, StageRequest],
    finish: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Caption `requests` (clip id -> request) of one stage in rounds of batches; returns the
    accepted stage records by clip id, each passed through `finish` before it is stored
    (failures go to the failure log)."""
    config, identity = runner.config, runner.identity
    attempts = {cid: StageAttempts(r) for cid, r in requests.items()}
    accepted: dict[str, dict[str, Any]] = {}
    reasons = {
        cid: f"unreadable media: {r.image} is not a file"
        for cid, r in requests.items()
        if not r.image.is_file()
    }
    pending = set(requests) - set(reasons)
    carried = runner.open_batches(stage)
    for _round in range(1 + config.content_retries):
        if not pending:
            break
        covered = {cid.rsplit(":s", 1)[0] for s in carried for cid in s["custom_ids"]}
        fresh = [requests[cid] for cid in sorted(pending - covered)]
        submissions = carried + (runner.submit(fresh, stage) if fresh else [])
        carried = []
        for submission in submissions:
            results = runner.collect(submission)
            if results is None:  # still running: a later run collects it, nobody resubmits
                for cid in submission["custom_ids"]:
                    clip_id = cid.rsplit(":s", 1)[0]
                    if clip_id in pending:
                        pending.discard(clip_id)
                        reasons[clip_id] = (
                            f"batch {submission['batch_id']} still running after "
                            f"{config.batch.max_wait_s:g} s; rerun to collect it"
                        )
                continue
            records = []
            for cid, result in results.items():
                clip_id = cid.rsplit(":s", 1)[0]
                if clip_id not in pending:
                    continue
                if isinstance(result, str):
                    reasons[clip_id] = runner.redact(result)
                    continue
                result = usage_guard(requests[clip_id], config.openai).check(result, runner.stats)
                account(runner.stats, config.prices, result, batch=True)
                if attempts[clip_id].judge(result):
                    accepted[clip_id] = finish(attempts[clip_id].record(identity))
                    records.append(accepted[clip_id])
                    pending.discard(clip_id)
            runner.store.append(f"stage{stage}", records)
            runner.mark_collected(submission)
    failures = [
        failure_record(
            cid, f"stage{stage}", **attempts[cid].failure(reasons.get(cid)) | _prov(identity)
        )
        for cid in sorted(pending | (set(reasons) - set(accepted)))
    ]
    runner.store.append("failures", failures)
    return accepted


def _prov(identity: Identity) -> dict[str, Any]:
    return {
        "backend": identity.backend,
        "model": identity.model,
        "prompt_version": identity.prompts.version,
    }


def caption_with_batches(
    config: BuildConfig, records: list[dict[str, Any]], identity: Identity, stats: RunStats
) -> int:
    """Caption `records` (extract records) through the Batch API; returns how many finished."""
    if not records:
        return 0
    runner = BatchRunner(config, identity, stats)
    try:
        stage1_done = runner.store.by_key("stage1")
        by_id = {r["id"]: r for r in records}
        first = {
            cid: done
            for cid in by_id
            if (done := stage1_done.get(identity.key(cid, 1))) is not None
        }
        todo1 = {
            cid: stage_request(r, 1, identity.prompts, config.out)
            for cid, r in by_id.items()
            if cid not in first
        }
        first |= _run_stage(runner, 1, todo1, lambda record: record)
        todo2 = {
            cid: stage_request(by_id[cid], 2, identity.prompts, config.out, rec["caption"])
            for cid, rec in first.items()
        }

        def finish_stage2(record: dict[str, Any]) -> dict[str, Any]:
            stage1 = first[record["id"]]
            usage = {"stage1": stage1["usage"], "stage2": record["usage"]}
            return record | {"raw_caption": stage1["caption"], "usage": usage} | _prov(identity)

        return len(_run_stage(runner, 2, todo2, finish_stage2))
    except openai.APIError as err:  # files/batches calls are retried by the SDK itself
        status = getattr(err, "status_code", None)
        raise BackendConfigError(
            f"Batch API request to {config.openai.base_url or 'api.openai.com'} failed "
            f"({type(err).__name__}{f', HTTP {status}' if status else ''}); submitted batches "
            "are in work/batches.jsonl and are collected on the next run"
        ) from None
    finally:
        runner.close()
