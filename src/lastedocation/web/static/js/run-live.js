// A run's page, live: the charts start from GET /api/v1/runs/ID/metrics and grow
// from the run's server-sent events; the state panel (controls, checkpoints) is
// reloaded from the server when the state changes; the controls call the API.
//
// The stream is reopened by hand after any error, from the last event id seen
// (`?after=SEQ`), so a page that outlives a server restart misses nothing and sees
// nothing twice. When the run rests (paused, completed, ...), the server ends the
// stream; the page shows the final state, and opens the stream again on resume.
import { api, formatDuration, formatNumber, lineChart } from "./runs.js";

const page = JSON.parse(document.getElementById("run-data").textContent);
const words = page.words;
const lang = document.documentElement.lang || "fa";
const metrics = new Map(); // step -> metrics event (the latest one for that step)
const evals = new Map(); // step -> eval event
let lastSeq = page.last_seq;
let source = null;
let retryMs = 1000;
let retryTimer = null;

const charts = {
  loss: lineChart(document.getElementById("chart-loss"),
    [{ label: words.loss }, { label: words.val_loss, points: true }], words.step),
  lr: lineChart(document.getElementById("chart-lr"), [{ label: words.lr }], words.step),
  speed: lineChart(document.getElementById("chart-speed"),
    [{ label: page.task === "speech" ? words.audio_per_s : words.tokens_per_s }], words.step),
  // a speech run's word and character error rates, from its evaluations
  errors: document.getElementById("chart-errors") && lineChart(document.getElementById("chart-errors"),
    [{ label: words.wer, points: true }, { label: words.cer, points: true }], words.step),
  memory: null, // made once the first points say whether there is a GPU
};
let memoryWithDevice = false;

function memoryChart(withDevice) {
  // GPU memory is a series only where the trainer reports it (not on a CPU)
  if (charts.memory && withDevice === memoryWithDevice) return charts.memory;
  charts.memory?.destroy();
  const series = [{ label: words.rss }, ...(withDevice ? [{ label: words.device_memory }] : [])];
  charts.memory = lineChart(document.getElementById("chart-memory"), series, words.step);
  memoryWithDevice = withDevice;
  return charts.memory;
}

let drawPending = false;
function redraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    const byStep = (a, b) => a - b;
    const steps = [...new Set([...metrics.keys(), ...evals.keys()])].sort(byStep);
    const trained = [...metrics.keys()].sort(byStep);
    const of = (key) => trained.map((s) => metrics.get(s)[key] ?? null);
    charts.loss.setData([steps, steps.map((s) => metrics.get(s)?.loss ?? null),
      steps.map((s) => evals.get(s)?.val_loss ?? null)]);
    charts.lr.setData([trained, of("lr")]);
    charts.speed.setData([trained, of(page.task === "speech" ? "audio_seconds_per_s" : "tokens_per_s")]);
    if (charts.errors) {
      const evaluated = [...evals.keys()].sort(byStep);
      charts.errors.setData([evaluated, evaluated.map((s) => evals.get(s).wer ?? null),
        evaluated.map((s) => evals.get(s).cer ?? null)]);
    }
    const device = of("device_memory_mb");
    const withDevice = device.some((v) => v !== null);
    memoryChart(withDevice).setData([trained, of("rss_mb"), ...(withDevice ? [device] : [])]);
    for (const element of document.querySelectorAll(".charts .chart")) {
      element.dataset.points = String(trained.length); // for tests and screen readers
    }
  });
}

function showProgress(event) {
  const bar = document.getElementById("run-progress");
  if (!bar || !event.total_steps) return;
  bar.max = event.total_steps;
  bar.value = event.step;
  document.getElementById("run-step").textContent =
    `${words.step} ${formatNumber(event.step)} / ${formatNumber(event.total_steps)}`;
  document.getElementById("run-eta").textContent =
    event.eta_s === null || event.eta_s === undefined ? "" : words.eta.replace("{time}", formatDuration(event.eta_s));
}

function logLine(event) {
  let text = event.message ?? "";
  if (event.type === "state") {
    text = words.state_line.replace("{state}", page.states[event.state] ?? event.state);
    if (event.message) text += ` — ${event.message}`;
  } else if (event.type === "checkpoint") {
    text = words.checkpoint_line.replace("{step}", formatNumber(event.step));
  } else if (event.type === "control") {
    text = page.controls[event.action] ?? words.control_line;
  } else if (event.type === "rewind") {
    text = words.rewind_line.replace("{step}", formatNumber(event.to_step));
  }
  const item = document.createElement("li");
  item.className = event.level ?? (event.state === "failed" ? "error" : "info");
  const time = document.createElement("time");
  time.textContent = new Date(event.time * 1000).toLocaleTimeString(lang, { hour12: false });
  const span = document.createElement("span");
  span.dir = "auto";
  span.textContent = text;
  item.append(time, " ", span);
  const log = document.getElementById("run-log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(item);
  while (log.children.length > 300) log.firstElementChild.remove();
  if (atEnd) log.scrollTop = log.scrollHeight;
  document.getElementById("log-empty")?.remove();
}

let panelTimer = null;
function refreshPanel() {
  clearTimeout(panelTimer);
  panelTimer = setTimeout(async () => {
    const response = await fetch(`/runs/${page.id}/panel`, { credentials: "same-origin" }).catch(() => null);
    if (!response?.ok) return;
    document.getElementById("run-panel").innerHTML = await response.text();
    const state = document.getElementById("run-state").dataset.state;
    if (page.watched.includes(state)) openStream();
  }, 250);
}

function onEvent(message) {
  const event = JSON.parse(message.data);
  if (event.seq <= lastSeq) return; // already seen (a replay after a reconnect)
  lastSeq = event.seq;
  switch (event.type) {
    case "metrics":
      metrics.set(event.step, event);
      showProgress(event);
      redraw();
      break;
    case "eval":
      evals.set(event.step, event);
      redraw();
      break;
    case "rewind": // the run went back to a checkpoint: later steps are void
      for (const series of [metrics, evals]) {
        for (const step of [...series.keys()]) if (step > event.to_step) series.delete(step);
      }
      redraw();
      logLine(event);
      break;
    case "state":
    case "checkpoint":
    case "control":
      logLine(event);
      refreshPanel();
      break;
    case "log":
      logLine(event);
      break;
  }
}

function setStatus(key) {
  const status = document.getElementById("stream-status");
  status.className = `stream muted ${key}`;
  status.textContent = words[key] ?? "";
}

function openStream() {
  if (source || retryTimer) return;
  source = new EventSource(`/api/v1/runs/${page.id}/events?after=${lastSeq}`);
  for (const type of ["metrics", "eval", "rewind", "state", "checkpoint", "control", "log"]) {
    source.addEventListener(type, onEvent);
  }
  source.onopen = () => {
    retryMs = 1000;
    setStatus("live");
  };
  source.onerror = onStreamError;
}

async function onStreamError() {
  // The server ended the stream (the run rests) or the connection dropped (a
  // restart): ask what the run is now before opening it again.
  source?.close();
  source = null;
  setStatus("reconnecting");
  let run = null;
  try {
    const answer = await api("GET", `/api/v1/runs/${page.id}`);
    if (answer.status === 404) return setStatus("gone");
    if (answer.ok) run = answer.data;
  } catch {
    // the server is down: try again below
  }
  if (run && !page.watched.includes(run.state)) {
    setStatus("resting");
    refreshPanel();
    return;
  }
  retryTimer = setTimeout(() => {
    retryTimer = null;
    openStream();
  }, retryMs);
  retryMs = Math.min(retryMs * 2, 10000);
}

function showError(text) {
  const alert = document.getElementById("run-alert");
  alert.innerHTML = "";
  const box = document.createElement("div");
  box.className = "alert error";
  box.setAttribute("role", "alert");
  box.textContent = text;
  alert.append(box);
}

document.getElementById("run-panel").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  const asNew = button.dataset.asNew === "true";
  if (action === "delete" && !window.confirm(words.confirm_delete)) return;
  if (action === "restore" && !asNew &&
      !window.confirm(words.confirm_restore.replace("{step}", formatNumber(Number(button.dataset.step))))) return;
  button.disabled = true;
  document.getElementById("run-alert").innerHTML = "";
  const base = `/api/v1/runs/${page.id}`;
  let answer;
  try {
    if (action === "delete") answer = await api("DELETE", base);
    else if (action === "restore") {
      answer = await api("POST", `${base}/restore`, { step: Number(button.dataset.step), as_new_run: asNew });
    } else answer = await api("POST", `${base}/${action}`);
  } catch {
    answer = { ok: false, status: 0, data: null };
  }
  if (!answer.ok) {
    showError(words.failed.replace("{detail}", answer.data?.detail ?? String(answer.status)));
    button.disabled = false;
    return;
  }
  if (action === "delete") window.location.assign("/runs");
  else if (action === "restore" && asNew) window.location.assign(`/runs/${answer.data.id}`);
  else refreshPanel(); // reopens the stream when the run is live again
});

async function start() {
  const answer = await api("GET", `/api/v1/runs/${page.id}/metrics?max_points=2000`).catch(() => null);
  if (answer?.ok) {
    for (const point of answer.data.metrics) metrics.set(point.step, point);
    for (const point of answer.data.eval) evals.set(point.step, point);
    const last = answer.data.metrics.at(-1);
    if (last && page.watched.includes(page.state)) showProgress(last);
  }
  redraw();
  if (page.watched.includes(page.state)) openStream();
  else setStatus("resting");
}

start();
