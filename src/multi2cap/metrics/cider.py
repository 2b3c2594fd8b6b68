"""CIDEr-D with coco-caption semantics (`pycocoevalcap.cider`, which AAC papers call CIDEr).

For n = 1..4: TF-IDF vectors whose document frequencies are counted over the references of the
evaluated set (idf = log N_items - log max(1, df)), candidate weights clipped by the reference's,
cosine normalised, times a Gaussian length penalty exp(-delta^2 / (2 sigma^2)) with sigma = 6;
averaged over references and n, times 10. Corpus: mean over items. Because of the IDF, scores
depend on the whole evaluated set and need at least 2 items (with one, every IDF is 0).

The "length" in the penalty is coco-caption's: the number of bigrams, i.e. words - 1 (0 for an
empty caption), which only differs from the word count for empty captions.

`cider_d_groups` scores several candidates per item (preference pairs, re-ranking) with the IDF
of the items' reference sets, as if each candidate were scored alone against the same corpus:
a document is an item's reference set however many candidates it has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from multi2cap.metrics._ngrams import NgramTable, build_ngram_table, lookup


def cider_d(
    table: NgramTable, sigma: float = 6.0, documents: np.ndarray | None = None
) -> tuple[float, list[float]]:
    """(corpus CIDEr-D, per-item scores) from a 1..4-gram table; needs >= 2 documents.

    `documents` `(n_items,)` names the reference set (document) of each item for the IDF: items
    sharing a document count once in the document frequencies and in N. None: every item is its
    own document (coco-caption)."""
    n_items, n, n_grams = table.n_items, table.n, table.n_grams
    if documents is None:
        documents = np.arange(n_items, dtype=np.int64)
    n_documents = len(np.unique(documents))
    if n_documents < 2:
        raise ValueError("CIDEr-D needs at least 2 items: its IDF over one item is always 0")
    cand = table.is_candidate()
    refs = ~cand
    ref_sent = table.sent[refs] - n_items  # reference index 0..R-1
    # Document frequency: in how many documents (items' reference sets) each gram occurs.
    item_gram, _ = table.reference_max_counts
    doc_gram = np.unique(documents[item_gram // n_grams] * n_grams + item_gram % n_grams)
    doc_freq = np.bincount(doc_gram % n_grams, minlength=n_grams)
    idf = np.log(float(n_documents)) - np.log(np.maximum(1.0, doc_freq))
    weight = table.count * idf[table.gram]
    n_sents = len(table.lengths)
    norms = np.sqrt(
        np.bincount(table.sent * n + table.order, weights=weight**2, minlength=n_sents * n)
    ).reshape(n_sents, n)

    # Clipped dot products sum_g min(w_cand, w_ref) * w_ref per (reference, order).
    cand_keys = table.sent[cand] * n_grams + table.gram[cand]  # sorted: entries are sorted
    ref_item = table.ref_item[ref_sent]
    w_cand = lookup(cand_keys, weight[cand], ref_item * n_grams + table.gram[refs])
    w_ref = weight[refs]
    dots = np.bincount(
        ref_sent * n + table.order[refs],
        weights=np.minimum(w_cand, w_ref) * w_ref,
        minlength=len(table.ref_item) * n,
    ).reshape(-1, n)
    norm_ref = norms[n_items:]
    norm_cand = norms[table.ref_item]
    denominator = norm_cand * norm_ref
    sims = np.divide(dots, denominator, out=dots.copy(), where=denominator != 0)

    bigrams = np.maximum(table.lengths - 1, 0).astype(float)
    delta = bigrams[table.ref_item] - bigrams[n_items:]
    sims *= np.exp(-(delta**2) / (2 * sigma**2))[:, None]
    per_order = np.add.reduceat(sims, table.ref_start, axis=0)
    scores = per_order.mean(axis=1) / table.n_refs * 10.0
    return float(np.mean(scores)), scores.tolist()


def cider_d_groups(
    candidate_groups: Sequence[Sequence[str]],
    mult_references: Sequence[Sequence[str]],
    sigma: float = 6.0,
) -> list[list[float]]:
    """CIDEr-D of every candidate of every item (tokenized text), `[item][candidate]`.

    The IDF is that of the items' reference sets (N = number of items), so a candidate's score is
    what `cider_d` gives it when scored as its item's only candidate, whatever the other
    candidates are. An item without candidates still counts in the IDF (a training corpus whose
    clips are only partly scored keeps the IDF of all its references)."""
    if len(candidate_groups) != len(mult_references):
        raise ValueError(
            f"{len(candidate_groups)} candidate groups but {len(mult_references)} reference lists"
        )
    flat: list[str] = []
    refs: list[Sequence[str]] = []
    documents: list[int] = []
    for item, (group, references) in enumerate(zip(candidate_groups, mult_references, strict=True)):
        for candidate in group or [""]:  # an empty group: its references count in the IDF
            flat.append(candidate)
            refs.append(references)
            documents.append(item)
    table = build_ngram_table(flat, refs)
    _, scores = cider_d(table, sigma, np.asarray(documents, dtype=np.int64))
    out: list[list[float]] = []
    position = 0
    for group in candidate_groups:
        out.append(scores[position : position + len(group)])
        position += max(1, len(group))
    return out
