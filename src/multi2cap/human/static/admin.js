// The admin page: polls the summary every 10 s and fills the tables.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const fmt = (x, digits) => (x === null || x === undefined ? "n/a" : x.toFixed(digits));

  function cell(row, text, numeric) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "num";
    row.appendChild(td);
  }

  const KINDS = {
    mos: "MOS study (the dataset's captions rated 1-5)",
    "system-mos": "System MOS study (systems' captions rated 1-5, blind)",
    ab: "A/B preference study (two systems' captions, sides randomised)",
    captions: "Two-stage captions study",
  };
  const ci = (lo, hi, digits) => `95 % CI ${fmt(lo, digits)} to ${fmt(hi, digits)}`;
  const mosText = (m) =>
    `MOS ${fmt(m.mos, 2)} (${ci(m.ci_low, m.ci_high, 2)}) from ${m.n_ratings} ratings of ` +
    `${m.n_items} items; Krippendorff's alpha (ordinal) ${fmt(m.alpha_ordinal, 3)}`;

  function summaryLines(s) {
    const lines = [];
    if (s.mos) lines.push(mosText(s.mos));
    for (const [name, m] of Object.entries(s.systems || {})) lines.push(`${name}: ${mosText(m)}`);
    for (const t of s.pairs || []) {
      lines.push(
        `${t.a} - ${t.b}: mean difference ${fmt(t.mean_difference, 2)} (${ci(t.ci_low, t.ci_high, 2)}), ` +
          `Wilcoxon signed-rank p = ${fmt(t.p_value, 4)} over ${t.n_items} clips`,
      );
    }
    const p = s.preference;
    if (p) {
      const share = (label) => `${label} ${p.wins[label]} (${fmt(100 * p.shares[label], 1)} %)`;
      lines.push(`${share(p.a)}, ${share(p.b)}, ${share("tie")} of ${p.n} judgements`);
      lines.push(
        `${p.a} preferred in ${fmt(p.decisive_share_a === null ? null : 100 * p.decisive_share_a, 1)} % ` +
          `of the decisive judgements (Wilson ${ci(p.ci_low, p.ci_high, 3)}), exact binomial p = ${fmt(p.p_value, 4)}`,
      );
    }
    return lines;
  }

  async function refresh() {
    const response = await fetch("/admin/api/summary", { credentials: "same-origin" });
    const data = await response.json();
    if (!response.ok) {
      $("kind").textContent = data.error;
      return;
    }
    $("kind").textContent = KINDS[data.kind] || data.kind;
    if (data.summary) {
      const lines = summaryLines(data.summary);
      $("summary").hidden = lines.length === 0;
      $("summary-lines").replaceChildren(
        ...lines.map((text) => {
          const li = document.createElement("li");
          li.textContent = text;
          return li;
        }),
      );
    }
    const body = $("raters");
    body.replaceChildren();
    for (const r of data.raters) {
      const row = document.createElement("tr");
      cell(row, r.rater, false);
      cell(row, `${r.done} / ${r.total}`, true);
      cell(row, String(r.gold_done), true);
      cell(row, String(r.gold_failed), true);
      cell(row, r.last_answer_at ? new Date(r.last_answer_at * 1000).toISOString().slice(0, 19) : "-", false);
      body.appendChild(row);
    }
  }
  refresh();
  setInterval(refresh, 10000);
})();
