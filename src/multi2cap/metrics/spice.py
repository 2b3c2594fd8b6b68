"""SPICE 1.0 (scene-graph tuple F-score) through the jar of the pycocoevalcap wheel.

The wheel lacks the two Stanford CoreNLP 3.6.0 jars SPICE parses with (no Python registry ships
them): `multi2cap assets download spice` fetches them from Maven Central, or the user names a
folder holding them (`MULTI2CAP_SPICE_LIB` or `spice_lib=`). They go on the class path next to
`spice-1.0.jar`, whose manifest supplies the other libraries from the wheel's `spice/lib/`.

Java >= 9, 17 in particular: aac-metrics refuses Java above 13 (`MAX_JAVA_MAJOR_VERSION`) and
passes `-cache`, whose FST serializer is what fails on Java >= 16 (`InaccessibleObjectException`
on `String.value`, aac-metrics issue #1). We never pass `-cache` (SPICE then never touches FST or
LMDB), and on Java >= 9 we open the JDK packages that FST and CoreNLP 3.6.0 reach by reflection
(`--add-opens`); Java 8 gets no such flags (it would refuse to start on them).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from multi2cap.assets import java_executable
from multi2cap.metrics.resources import CORENLP_360_JARS, coco_jars, spice_lib_dir

_OPENED_PACKAGES = (
    "java.lang",
    "java.util",
    "java.util.concurrent",
    "java.io",
    "java.math",
    "java.net",
    "java.text",
)
_TIMEOUT_S = 3600.0


def parse_java_major(version_output: str) -> int:
    """The major version from `java -version`'s output: `"1.8.0_392"` -> 8, `"17.0.15"` -> 17,
    `"25"` -> 25 (Java 9 dropped the `1.` prefix)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        raise ValueError(f"cannot read a Java version from: {version_output.strip()[:200]!r}")
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


@functools.cache
def java_major_version(java: str) -> int:
    """The major version of the `java` executable (cached per path)."""
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    return parse_java_major(proc.stderr or proc.stdout)


def java_flags(major: int) -> list[str]:
    """The JVM flags SPICE gets on this Java: `--add-opens` for each reflectively used package
    on Java >= 9 (the module system's first release), none on Java 8."""
    if major < 9:
        return []
    return [f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in _OPENED_PACKAGES]


def spice(
    candidates: Sequence[str],
    mult_references: Sequence[Sequence[str]],
    spice_lib: str | os.PathLike[str] | None = None,
    java: str | Path | None = None,
    threads: int | None = None,
    max_memory: str = "8G",
) -> tuple[float, list[float]]:
    """(corpus SPICE = mean of items, per-item `All.f`); an item SPICE cannot score is NaN."""
    lib = spice_lib_dir(spice_lib)
    class_path = os.pathsep.join(
        [str(coco_jars().spice), *(str(lib / name) for name in CORENLP_360_JARS)]
    )
    java_path = str(java) if java is not None else str(java_executable())
    records = [
        {"image_id": i, "test": cand, "refs": list(refs)}
        for i, (cand, refs) in enumerate(zip(candidates, mult_references, strict=True))
    ]
    with tempfile.TemporaryDirectory(prefix="multi2cap-spice-") as workdir:
        in_path = Path(workdir) / "input.json"
        out_path = Path(workdir) / "output.json"
        in_path.write_text(json.dumps(records), encoding="utf-8")
        cmd = [
            java_path,
            f"-Xmx{max_memory}",
            *java_flags(java_major_version(java_path)),
            "-cp",
            class_path,
            "edu.anu.spice.SpiceScorer",
            str(in_path),
            "-out",
            str(out_path),
            "-subset",
            "-silent",
        ]
        if threads is not None:
            cmd += ["-threads", str(threads)]
        proc = subprocess.run(
            cmd, capture_output=True, cwd=workdir, timeout=_TIMEOUT_S, check=False
        )
        if proc.returncode != 0 or not out_path.is_file():
            tail = (proc.stderr or proc.stdout).decode("utf-8", "replace")[-3000:]
            raise RuntimeError(f"SPICE failed (exit {proc.returncode}); java said: {tail}")
        results = json.loads(out_path.read_text(encoding="utf-8"))
    by_id = {r["image_id"]: r["scores"]["All"]["f"] for r in results}
    per_item = [_as_float(by_id.get(i)) for i in range(len(records))]
    return sum(per_item) / len(per_item), per_item


def _as_float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan
