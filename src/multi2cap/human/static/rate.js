// The rater's page: fetches the current item, enables "Next" once the clip has played to the end,
// posts one answer at a time and renders the state the server returns. No framework, no build.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const kind = document.querySelector('meta[name="study-kind"]').content;
  const audio = $("audio");
  let state = null;
  let played = false;
  let busy = false;

  function show(section) {
    for (const id of ["intro", "task", "done"]) $(id).hidden = id !== section;
  }

  function canSubmit() {
    if (!played || busy || !state || state.done) return false;
    if (kind === "mos") return document.querySelector('input[name="score"]:checked') !== null;
    if (kind === "ab") return document.querySelector('input[name="choice"]:checked') !== null;
    return $("caption-text").value.trim().length > 0;
  }

  function refreshNext() {
    $("next").disabled = !canSubmit();
  }

  function render(next) {
    const previousKey = state && state.item ? state.item.key : null;
    state = next;
    $("progress").textContent = `${Math.min(next.position, next.total)} / ${next.total}`;
    if (next.done) {
      show("done");
      return;
    }
    const item = next.item;
    show("task");
    $("error").textContent = "";
    if (item.key !== previousKey) {
      audio.src = item.audio;
      played = false;
    }
    if (item.stage === 2) played = true; // heard to the end in stage 1
    $("listen-hint").textContent = played ? "" : "Listen to the whole clip to continue.";
    if (kind === "mos") {
      $("task-title").textContent = `Item ${next.position} of ${next.total}`;
      $("mos-part").hidden = false;
      $("caption").textContent = item.caption;
      for (const radio of document.querySelectorAll('input[name="score"]')) radio.checked = false;
      $("play").focus();
    } else if (kind === "ab") {
      $("task-title").textContent = `Item ${next.position} of ${next.total}`;
      $("ab-part").hidden = false;
      $("caption-a").textContent = item.captions[0];
      $("caption-b").textContent = item.captions[1];
      for (const radio of document.querySelectorAll('input[name="choice"]')) radio.checked = false;
      $("play").focus();
    } else {
      $("task-title").textContent =
        `Item ${next.position} of ${next.total}: ` +
        (item.stage === 1 ? "step 1 of 2, audio only" : "step 2 of 2, audio and video frame");
      $("caption-part").hidden = false;
      $("stage2-part").hidden = item.stage !== 2;
      if (item.stage === 2) {
        $("frame").src = item.frame; // requested only now, after the stage-1 caption is stored
        $("stage1-caption").textContent = item.stage1_caption;
        $("caption-text-label").textContent = "Describe what you hear, now with the video frame";
      } else {
        $("frame").removeAttribute("src");
        $("caption-text-label").textContent = "Describe what you hear";
      }
      $("caption-text").value = "";
      (item.stage === 2 ? $("caption-text") : $("play")).focus();
    }
    refreshNext();
  }

  async function call(url, options) {
    const response = await fetch(url, { credentials: "same-origin", ...options });
    let data = {};
    try {
      data = await response.json();
    } catch (err) {
      data = { error: `unexpected reply (${response.status})` };
    }
    return { ok: response.ok, status: response.status, data };
  }

  async function submit(event) {
    event.preventDefault();
    if (!canSubmit()) return;
    const body = { key: state.item.key, stage: state.item.stage };
    if (kind === "mos") body.score = Number(document.querySelector('input[name="score"]:checked').value);
    else if (kind === "ab") body.choice = document.querySelector('input[name="choice"]:checked').value;
    else body.caption = $("caption-text").value;
    busy = true;
    refreshNext();
    try {
      const reply = await call("/api/answer", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
      });
      busy = false;
      if (reply.ok) {
        render(reply.data.state);
      } else {
        if (reply.status === 409) {
          // Out of turn (e.g. answered in another tab): show where the study really is.
          const fresh = await call("/api/state");
          if (fresh.ok) render(fresh.data);
        }
        $("error").textContent = reply.data.error || `error ${reply.status}`;
      }
    } catch (err) {
      busy = false;
      $("error").textContent = "The server did not answer; nothing was lost. Press Next again.";
    }
    refreshNext();
  }

  audio.addEventListener("ended", () => {
    played = true;
    $("listen-hint").textContent = "You can answer now.";
    refreshNext();
  });
  let broken = false; // the clip failed or stalled: "Play clip" loads it afresh
  for (const type of ["error", "stalled"]) {
    audio.addEventListener(type, () => {
      if (played) return;
      broken = true;
      $("listen-hint").textContent = "The clip could not be loaded. Press Play clip to try again.";
    });
  }
  $("play").addEventListener("click", () => {
    if (audio.error || broken) {
      broken = false;
      // A failed load (the server restarting, a dropped connection) stays failed: start over.
      audio.src = state.item.audio;
      audio.load();
    }
    audio.currentTime = 0;
    audio.play().catch(() => {
      $("listen-hint").textContent = "The clip could not be played. Press Play clip to try again.";
    });
  });
  $("answer").addEventListener("submit", submit);
  $("answer").addEventListener("input", refreshNext);
  $("answer").addEventListener("change", refreshNext);

  async function start() {
    const reply = await call("/api/state");
    if (!reply.ok) {
      $("intro").hidden = false;
      $("intro").textContent = reply.data.error;
      return;
    }
    for (const block of document.querySelectorAll("[data-kind]")) block.hidden = block.dataset.kind !== kind;
    if (reply.data.done) {
      render(reply.data);
      return;
    }
    $("progress").textContent = `${reply.data.position} / ${reply.data.total}`;
    if (reply.data.position > 1 || reply.data.item.stage === 2) $("start").textContent = "Continue";
    show("intro");
    $("start").addEventListener("click", () => render(reply.data), { once: true });
    $("start").focus();
  }
  start();
})();
