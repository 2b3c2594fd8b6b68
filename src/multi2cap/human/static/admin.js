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

  async function refresh() {
    const response = await fetch("/admin/api/summary", { credentials: "same-origin" });
    const data = await response.json();
    if (!response.ok) {
      $("kind").textContent = data.error;
      return;
    }
    $("kind").textContent = data.kind === "mos" ? "MOS study (captions rated 1-5)" : "Two-stage captions study";
    if (data.mos) {
      $("mos").hidden = false;
      const m = data.mos;
      $("mos-value").textContent =
        `MOS ${fmt(m.mos, 2)} (95 % CI ${fmt(m.ci_low, 2)} to ${fmt(m.ci_high, 2)}) from ` +
        `${m.n_ratings} ratings of ${m.n_items} items; Krippendorff's alpha (ordinal) ${fmt(m.alpha_ordinal, 3)}`;
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
