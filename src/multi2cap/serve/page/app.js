// The try-it page of `multi2cap serve`: posts files to /v1/captions and shows the captions.
// Plain JS, no dependencies; every asset comes from this server.
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function addResult(name, text, isError, seconds) {
  const item = document.createElement("li");
  const file = document.createElement("div");
  file.className = "file";
  file.textContent = seconds === undefined ? name : `${name} · ${seconds.toFixed(1)} s`;
  const body = document.createElement("div");
  body.className = isError ? "error" : "caption";
  body.textContent = text;
  item.append(file, body);
  $("results").prepend(item);
}

async function caption(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name || "recording.webm");
  for (const option of ["num_beams", "max_new_tokens"]) {
    const value = $(option).value.trim();
    if (value) form.append(option, value);
  }
  setStatus(`captioning ${files.length} file(s)…`);
  try {
    const reply = await fetch("/v1/captions", { method: "POST", body: form });
    const body = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      const retry = reply.headers.get("Retry-After");
      const suffix = retry ? ` (retry in ${retry} s)` : "";
      addResult(files.map((f) => f.name).join(", "), `${reply.status}: ${detail}${suffix}`, true);
      setStatus("");
      return;
    }
    for (const c of body.captions) addResult(c.file, c.caption, false, c.duration_s);
    setStatus("");
  } catch (err) {
    setStatus(`the server could not be reached: ${err}`, true);
  }
}

async function showModel() {
  try {
    const info = await (await fetch("/v1/model")).json();
    // The server's own bounds (GET /v1/model `limits`): the page offers nothing it refuses.
    for (const [option, [low, high]] of Object.entries(info.limits || {})) {
      $(option).min = low;
      $(option).max = high;
      $(option).title = `${low} to ${high}`;
    }
    const parts = Object.entries(info.backbones).map(([k, v]) => `${k}: ${v}`);
    $("model").textContent = `${info.id} — ${parts.join(" · ")}`;
  } catch (err) {
    $("model").textContent = "";
  }
}

let recorder = null;

async function toggleRecording() {
  const button = $("record");
  if (recorder) {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    setStatus("recording is not available in this browser (it needs https or localhost)", true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    setStatus(`no microphone: ${err.message}`, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    button.textContent = "Record";
    button.classList.remove("recording");
    const type = chunks[0]?.type || "audio/webm";
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    caption([new File(chunks, `recording.${ext}`, { type })]);
  };
  recorder.start();
  button.textContent = "Stop";
  button.classList.add("recording");
  setStatus("recording… press Stop to caption");
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    caption([...e.target.files]);
    e.target.value = "";
  });
  $("record").addEventListener("click", toggleRecording);
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    caption([...e.dataTransfer.files]);
  });
  showModel();
}

document.addEventListener("DOMContentLoaded", setUp);
