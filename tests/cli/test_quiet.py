"""Only transformers' "Loading weights" bars are hidden (a command's own bars and download bars
stay); `multi2cap caption` printing none is checked in tests/model/test_caption_files.py."""

from __future__ import annotations

import subprocess
import sys

from multi2cap.quiet import hide_weight_loading_bars


def test_only_the_weight_loading_bars_are_hidden() -> None:
    hide_weight_loading_bars()
    hide_weight_loading_bars()  # twice: still one hook
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()
    try:
        loading = transformers_logging.tqdm(range(3), desc="Loading weights")
        other = transformers_logging.tqdm(range(3), desc="Downloading", disable=False)
        assert loading.disable and not other.disable
        assert list(loading) == [0, 1, 2]
        loading.close()
        other.close()
    finally:
        if not enabled:
            transformers_logging.disable_progress_bar()


def test_installed_before_transformers_is_imported() -> None:
    """The CLI calls it before any command imports transformers: the hook lands on import."""
    code = (
        "import sys\n"
        "from multi2cap.quiet import hide_weight_loading_bars\n"
        "hide_weight_loading_bars()\n"
        "assert 'transformers' not in sys.modules\n"
        "from transformers.utils import logging as tl\n"
        "tl.enable_progress_bar()\n"
        "bar = tl.tqdm(range(2), desc='Loading weights')\n"
        "print(bar.disable, tl.tqdm(range(2), desc='Converting', disable=False).disable)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
