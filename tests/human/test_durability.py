"""SIGKILL while raters submit as fast as they can: every acknowledged answer survives, and
retrying the unacknowledged ones after the restart stores each exactly once."""

from __future__ import annotations

import re
import sqlite3
import threading
import time

import httpx


def _session(base: str, link: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=5.0)
    client.get(link.replace("http://127.0.0.1:8080", base), follow_redirects=True)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/rate").text).group(1)
    return client, csrf


def test_sigkill_loses_no_acknowledged_answer(make_study, live_server) -> None:
    names = [f"r{i:02d}" for i in range(12)]
    study = make_study("mos", n=8, raters=names, listen_check=False)
    server = live_server(study.path)
    acknowledged: set[tuple[str, str]] = set()
    attempted: dict[str, tuple[str, int]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def rater(name: str) -> None:
        client, csrf = _session(server.base, study.links[name])
        headers = {"X-CSRF-Token": csrf, "Origin": server.base}
        try:
            state = client.get("/api/state").json()
            while not state["done"] and not stop.is_set():
                key = state["item"]["key"]
                with lock:
                    attempted[name] = (key, 3)
                reply = client.post("/api/answer", json={"key": key, "score": 3}, headers=headers)
                assert reply.status_code == 200, reply.text
                with lock:
                    acknowledged.add((name, key))
                state = reply.json()["state"]
        except httpx.TransportError:
            pass  # the server died under this request: it was not acknowledged
        finally:
            client.close()

    threads = [threading.Thread(target=rater, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 30 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert 30 <= len(acknowledged) < len(names) * 8  # killed mid-study

    conn = sqlite3.connect(study.path / "study.sqlite")
    stored = set(
        conn.execute(
            "SELECT r.name, a.key FROM answers an JOIN assignments a ON a.id = an.assignment_id "
            "JOIN raters r ON r.id = a.rater_id"
        ).fetchall()
    )
    conn.close()
    assert acknowledged <= stored  # nothing acknowledged was lost

    # Restarted, the raters retry what they last sent: stored once, and they carry on.
    server.start()
    for name, (key, score) in attempted.items():
        client, csrf = _session(server.base, study.links[name])
        headers = {"X-CSRF-Token": csrf, "Origin": server.base}
        reply = client.post("/api/answer", json={"key": key, "score": score}, headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["stored"] is ((name, key) not in stored)
        client.close()
    conn = sqlite3.connect(study.path / "study.sqlite")
    duplicates = conn.execute(
        "SELECT COUNT(*) FROM (SELECT assignment_id, stage FROM answers GROUP BY 1, 2 HAVING COUNT(*) > 1)"
    ).fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    conn.close()
    assert duplicates == 0 and total == len(stored | {(n, k) for n, (k, _) in attempted.items()})
    # The server logged no request line: the links (credentials) never reach its log.
    server.stop()
    log = server.log.read_text()
    assert not any(link.rsplit("/", 1)[1] in log for link in study.links.values())
