// The speech page. Speech to text: a recording or a file goes to the background job
// API (POST /api/v1/speech/transcriptions); its segments arrive live over SSE
// (GET .../ID/events, reopened from the last event id after a drop: job-stream.js);
// the job can be cancelled and its transcript downloaded as txt, srt or vtt. Text to
// speech: the text is read by POST /v1/audio/speech and played in an <audio> element
// (speech-tts.js).
import { csrfToken } from "/static/js/app.js";
import {
  MicrophoneError,
  alertIn,
  api,
  clock,
  microphoneMessage,
  startRecording,
} from "/static/js/speech-audio.js";
import { setUpTextToSpeech } from "/static/js/speech-tts.js";
import { followJob } from "/static/js/job-stream.js";

const root = document.getElementById("speech");
const words = root.dataset;
const $ = (id) => document.getElementById(id);
const lang = document.documentElement.lang || "fa";
const JOBS = "/api/v1/speech/transcriptions";
const RESTING = new Set(["done", "failed", "cancelled"]); // a job in these ends its stream
const STATUS = { queued: words.queued, running: words.running, done: words.completed, cancelled: words.cancelled };

function sttAlert(text, kind = "error") {
  alertIn($("stt-error"), text, kind);
}

function networkOr(error) {
  return error instanceof TypeError ? words.network : error.message;
}

// ---- speech to text: sending audio ------------------------------------------------

let recording = null;
let recordTimer = null;

function recordingControls(on) {
  $("record").disabled = on;
  $("record-stop").disabled = !on;
  $("stt-upload").disabled = on;
  clearInterval(recordTimer);
  $("record-time").textContent = "";
  if (on) {
    recordTimer = setInterval(() => {
      $("record-time").textContent = clock(recording?.seconds() ?? 0, lang);
    }, 200);
  }
}

async function record() {
  $("stt-error").replaceChildren();
  try {
    const maxSeconds = Number(root.dataset.maxSeconds) || 3600;
    recording = await startRecording({ maxSeconds, onLimit: stopRecording });
  } catch (error) {
    sttAlert(microphoneMessage(error, root), "warn");
    return;
  }
  recordingControls(true);
  $("stt-status").textContent = words.recording;
}

async function stopRecording() {
  const current = recording;
  if (!current) return;
  recording = null;
  recordingControls(false);
  try {
    await transcribe(await current.stop());
  } catch (error) {
    if (!(error instanceof MicrophoneError)) throw error;
    $("stt-status").textContent = "";
    sttAlert(microphoneMessage(error, root), "warn");
  }
}

function upload(file) {
  // XMLHttpRequest, not fetch: it reports the upload's progress (files up to 100 MB)
  const body = new FormData();
  body.append("file", file);
  body.append("model", $("stt-model").value);
  body.append("language", $("stt-language").value); // "auto": Whisper detects it
  body.append("vad", String($("stt-vad").checked));
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", JOBS);
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      $("job-progress").value = 0;
      $("stt-status").textContent = `${words.uploading} ${Math.round((100 * event.loaded) / event.total).toLocaleString(lang)}%`;
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: only the status can be told
      }
      if (xhr.status >= 200 && xhr.status < 300 && data?.id) resolve(data);
      else reject(new Error(data?.detail || data?.error?.message || `HTTP ${xhr.status}`));
    });
    xhr.addEventListener("error", () => reject(new TypeError("network")));
    xhr.send(body);
  });
}

async function transcribe(file) {
  $("stt-error").replaceChildren();
  if (!$("stt-model").value) {
    sttAlert(words.noModel, "warn");
    return;
  }
  $("stt-upload").disabled = true;
  $("record").disabled = true;
  $("stt-status").textContent = words.uploading;
  try {
    const job = await upload(file);
    $("stt-status").textContent = "";
    show(job);
    loadJobs();
  } catch (error) {
    $("stt-status").textContent = "";
    sttAlert(`${words.refused} ${networkOr(error)}`);
  } finally {
    $("stt-upload").disabled = false;
    $("record").disabled = false;
  }
}

// ---- speech to text: one job, live ---------------------------------------------------

let shown = null; // the job on show: {id, state, duration_s}
let stream = null; // followJob's handle while the job on show is followed
const segments = new Map(); // segment index (or start) -> its <li>

function stateName(state) {
  return words[`state${state[0].toUpperCase()}${state.slice(1)}`] ?? state;
}

function stateBadge(state) {
  const badge = $("job-state");
  badge.className = `badge ${state === "done" ? "completed" : state}`;
  badge.textContent = stateName(state);
}

function show(job) {
  closeStream();
  shown = { ...job };
  segments.clear();
  $("segments").replaceChildren();
  $("job").hidden = false;
  $("job-name").textContent = job.filename || `#${job.id}`;
  $("job-progress").value = 0;
  $("job-language").textContent = "";
  for (const link of $("job-downloads").querySelectorAll("a[data-format]")) {
    link.href = `${JOBS}/${job.id}/download?format=${link.dataset.format}`;
  }
  for (const segment of job.segments ?? []) addSegment(segment);
  update(job);
  if (!RESTING.has(job.state) || !job.segments) openStream();
}

function update(job) {
  Object.assign(shown, job);
  if (job.duration !== undefined) shown.duration_s = job.duration; // a state event's name
  const state = shown.state;
  stateBadge(state);
  $("job-cancel").hidden = RESTING.has(state);
  $("job-cancel").disabled = state === "cancelling";
  // an ended job's transcript (a cancelled one's, as far as it got)
  $("job-downloads").hidden = !(state === "done" || (RESTING.has(state) && segments.size));
  if (typeof job.progress === "number") $("job-progress").value = Math.min(1, job.progress);
  if (shown.language) {
    const known = [...$("stt-language").options].find((o) => o.value === shown.language);
    $("job-language").textContent = `${words.language}: ${known?.text ?? shown.language}`;
  }
  if (STATUS[state]) $("stt-status").textContent = STATUS[state];
  if (state === "failed") sttAlert(`${words.failed} ${shown.message ?? ""}`.trim());
  if (state === "done" && !segments.size) $("stt-status").textContent = words.noSegments;
}

function addSegment(segment) {
  const key = segment.id ?? segment.start;
  if (segments.has(key)) return;
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.className = "mono";
  time.dir = "ltr";
  time.textContent = `${clock(segment.start, lang)} → ${clock(segment.end, lang)}`;
  const text = document.createElement("span");
  text.dir = "auto"; // Persian reads right to left, each segment on its own
  text.textContent = segment.text.trim();
  item.append(time, text);
  segments.set(key, item);
  $("segments").append(item);
}

function onEvent(data) {
  if (data.type === "segment") {
    addSegment(data.segment);
    update({ progress: data.progress, segment_count: segments.size });
  } else if (data.type === "state") {
    const { seq, type, ...change } = data;
    update(change);
  }
  if (RESTING.has(shown?.state)) {
    closeStream();
    loadJobs();
  }
}

function openStream() {
  if (!shown || stream) return;
  stream = followJob({
    url: `${JOBS}/${shown.id}`,
    types: ["segment", "state"],
    onEvent,
    onJob: update,
    isEnded: () => RESTING.has(shown?.state),
    onEnd: loadJobs,
  });
}

function closeStream() {
  stream?.close();
  stream = null;
}

async function cancelShown() {
  if (!shown) return;
  $("job-cancel").disabled = true;
  const answer = await api("POST", `${JOBS}/${shown.id}/cancel`).catch(() => null);
  $("job-cancel").disabled = false;
  if (!answer?.ok) {
    sttAlert(`${words.failed} ${answer?.data?.detail ?? words.network}`);
    return;
  }
  update(answer.data?.state ? answer.data : { state: "cancelled" });
  loadJobs();
}

// ---- speech to text: recent jobs ------------------------------------------------------

function cell(content, attributes = {}) {
  const td = document.createElement("td");
  Object.assign(td, attributes);
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "—";
  return td;
}

function button(text, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

async function loadJobs() {
  const answer = await api("GET", `${JOBS}?limit=20`).catch(() => null);
  if (!answer?.ok) return;
  const rows = answer.data.map((job) => {
    const row = document.createElement("tr");
    const badge = document.createElement("span");
    badge.className = `badge ${job.state === "done" ? "completed" : job.state}`;
    badge.textContent = stateName(job.state);
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.append(
      button(words.open, "secondary", () => openJob(job.id)),
      button(words.delete, "secondary", () => deleteJob(job.id)),
    );
    row.append(
      cell(job.filename || `#${job.id}`, { dir: "auto" }),
      cell(job.model, { className: "ltr" }),
      cell(badge),
      cell(job.duration_s == null ? "—" : clock(job.duration_s, lang)),
      cell(job.created_at ? new Date(job.created_at).toLocaleString(lang) : "—"),
      cell(actions),
    );
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    row.append(cell(words.noJobs, { colSpan: 6, className: "muted" }));
    rows.push(row);
  }
  $("jobs-body").replaceChildren(...rows);
}

async function openJob(id) {
  $("stt-error").replaceChildren();
  const answer = await api("GET", `${JOBS}/${id}`).catch(() => null);
  if (!answer?.ok) {
    sttAlert(`${words.failed} ${answer?.data?.detail ?? words.network}`);
    return;
  }
  show(answer.data);
  $("job").scrollIntoView({ block: "start" });
}

async function deleteJob(id) {
  if (!window.confirm(words.confirmDelete)) return;
  const answer = await api("DELETE", `${JOBS}/${id}`).catch(() => null);
  if (!answer?.ok) {
    sttAlert(`${words.failed} ${answer?.data?.detail ?? words.network}`);
    return;
  }
  if (shown?.id === id) {
    closeStream();
    shown = null;
    $("job").hidden = true;
  }
  loadJobs();
}

// ---- wiring -------------------------------------------------------------------------------

$("record").addEventListener("click", record);
$("record-stop").addEventListener("click", stopRecording);
$("stt-upload").addEventListener("click", () => {
  const file = $("stt-file").files[0];
  if (!file) sttAlert(words.chooseFile, "warn");
  else transcribe(file);
});
$("job-cancel").addEventListener("click", cancelShown);
loadJobs();
setUpTextToSpeech(root);
