"""Vocabulary statistics of a caption set, as aac-metrics 0.6.0's `vocab` reports them.

On whitespace tokens of the (tokenized) captions:
- `vocab`: distinct words over all candidates (aac-metrics' `vocab.cands`);
- `vocab.mrefs_full`: distinct words over all references, `vocab.ratio_full` = cands / that;
- `vocab.mrefs_avg`: the mean, over `max(len(refs))` draws, of the distinct words of a corpus
  made of one randomly drawn reference per item; `vocab.ratio_avg` = cands / that. It compares
  the system with one human captioner, where `mrefs_full` pools all of them.

The draws reproduce aac-metrics' exactly: it calls `torch.randint(0, len(refs), ())` once per
item on a `torch.Generator` seeded 1234, i.e. the 32-bit outputs of MT19937 seeded by
`init_genrand(1234)` modulo `len(refs)`, which is what numpy's legacy `RandomState(1234)` yields
for 32-bit draws (cross-checked against torch in tests/metrics/test_vocab.py). No torch needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: aac-metrics' default seed for the reference draws.
VOCAB_SEED = 1234


def _distinct(sentences: Sequence[str]) -> int:
    return len({word for sentence in sentences for word in sentence.split()})


def vocab_stats(
    candidates: Sequence[str], mult_references: Sequence[Sequence[str]], seed: int = VOCAB_SEED
) -> dict[str, float]:
    """The five `vocab*` values above for `candidates[i]` and `mult_references[i]`."""
    cands = float(_distinct(candidates))
    full = float(_distinct([ref for refs in mult_references for ref in refs]))
    sizes = np.array([len(refs) for refs in mult_references], dtype=np.int64)
    n_draws = int(sizes.max())
    draws = np.random.RandomState(seed).randint(
        0, 2**32, size=(n_draws, len(sizes)), dtype=np.uint32
    )
    picks = draws.astype(np.int64) % sizes  # (n_draws, n_items) reference index per item
    avg = float(
        np.mean(
            [
                _distinct([refs[j] for refs, j in zip(mult_references, row, strict=True)])
                for row in picks
            ]
        )
    )
    return {
        "vocab": cands,
        "vocab.mrefs_full": full,
        "vocab.ratio_full": cands / full if full else float("nan"),
        "vocab.mrefs_avg": avg,
        "vocab.ratio_avg": cands / avg if avg else float("nan"),
    }
