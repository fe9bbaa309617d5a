// The backup page. A target's buttons start a job through the JSON API
// (POST /api/v1/backup/jobs); the job is followed live over SSE (GET .../ID/events,
// reopened from the last event id after a drop: job-stream.js) with a progress bar,
// its step and a cancel button. When a job ends, the target cards and the history are
// reloaded as server-rendered fragments (/backup/targets, /backup/history), so they
// are written in one place. A target's snapshots and its restore form load on demand.
import { csrfToken } from "/static/js/app.js";
import { followJob } from "/static/js/job-stream.js";

const root = document.getElementById("backup");
const words = root.dataset;
const $ = (id) => document.getElementById(id);
const lang = document.documentElement.lang || "fa";
const JOBS = "/api/v1/backup/jobs";
const ENDED = new Set(["done", "failed", "cancelled"]);
const STEPS = new Map(
  [...$("step-words").querySelectorAll("dt")].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]),
);

async function api(method, url, json) {
  const response = await fetch(url, {
    method,
    headers: { Accept: "application/json", "X-CSRF-Token": csrfToken(), ...(json ? { "Content-Type": "application/json" } : {}) },
    body: json ? JSON.stringify(json) : undefined,
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON: only the status can be told
  }
  return { ok: response.ok, status: response.status, data };
}

function alertIn(box, text, kind = "error") {
  if (!text) {
    box.replaceChildren();
    return;
  }
  const div = document.createElement("div");
  div.className = `alert ${kind}`;
  div.setAttribute("dir", "auto");
  div.textContent = text;
  box.replaceChildren(div);
}

function refused(answer) {
  return `${words.refused} ${answer?.data?.detail ?? words.network}`;
}

/** Bytes in the language's digits: "12.3 MB". */
function size(bytes) {
  const units = [["gb", 2 ** 30], ["mb", 2 ** 20], ["kb", 2 ** 10]];
  const format = (n, digits) => n.toLocaleString(lang, { maximumFractionDigits: digits });
  for (const [unit, scale] of units) {
    if (bytes >= scale) return `${format(bytes / scale, 1)} ${words[`unit${unit[0].toUpperCase()}${unit.slice(1)}`]}`;
  }
  return `${format(bytes, 0)} ${words.unitB}`;
}

async function reload(url, box) {
  const response = await fetch(url, { headers: { Accept: "text/html" } }).catch(() => null);
  if (response?.ok) box.innerHTML = await response.text();
  return response?.ok ?? false;
}

// ---- the job on show, live ---------------------------------------------------------

let shown = null; // {id, kind, target, state}
let stream = null; // followJob's handle while the job on show is followed

function stateBadge(state) {
  const badge = $("live-state");
  badge.className = `badge ${state === "done" ? "completed" : state}`;
  badge.textContent = words[`state${state[0].toUpperCase()}${state.slice(1)}`] ?? state;
}

function follow(job) {
  closeStream();
  shown = { id: job.id, kind: job.kind, target: job.target, state: job.state };
  $("live").hidden = false;
  $("live-what").textContent = words[`kind${job.kind[0].toUpperCase()}${job.kind.slice(1)}`] ?? job.kind;
  $("live-target").textContent = job.target;
  $("live-progress").value = job.progress ?? 0;
  $("live-step").textContent = job.state === "queued" ? words.waiting : "";
  $("live-bytes").textContent = "";
  alertIn($("live-error"), "");
  update(job);
  if (!ENDED.has(job.state)) openStream();
}

function update(change) {
  Object.assign(shown, change);
  const state = shown.state;
  stateBadge(state);
  $("live-cancel").hidden = ENDED.has(state);
  $("live-cancel").disabled = state === "cancelling";
  if (typeof change.progress === "number") $("live-progress").value = Math.min(1, change.progress);
  if (state === "done") {
    $("live-progress").value = 1;
    $("live-step").textContent = words.done;
  } else if (state === "failed") {
    $("live-step").textContent = "";
    const problems = shown.problems?.length ? ` ${words.problems} ${shown.problems.join("; ")}` : "";
    alertIn($("live-error"), `${words.failed} ${shown.message ?? ""}${problems}`.trim());
  } else if (state === "cancelled") {
    $("live-step").textContent = words.stateCancelled;
  }
}

function onEvent(data) {
  const { seq, type, ...change } = data;
  if (type === "state") {
    update(change);
    if (change.state === "running") $("live-step").textContent = "";
  } else if (type === "step") {
    $("live-step").textContent = STEPS.get(change.step) ?? change.step;
  } else if (type === "progress") {
    update({ progress: change.progress });
    const parts = [];
    if (change.bytes_total) parts.push(`${size(change.bytes_done ?? 0)} ${words.of} ${size(change.bytes_total)}`);
    if (change.files_total) {
      parts.push(`${(change.files_done ?? 0).toLocaleString(lang)} ${words.of} ${change.files_total.toLocaleString(lang)} ${words.files}`);
    }
    $("live-bytes").textContent = parts.join(words.sep);
  }
  if (ENDED.has(shown?.state)) ended();
}

function openStream() {
  if (!shown || stream) return;
  stream = followJob({
    url: `${JOBS}/${shown.id}`,
    types: ["state", "step", "progress"],
    onEvent,
    onJob: update,
    isEnded: () => ENDED.has(shown?.state),
    onEnd: ended,
  });
}

function closeStream() {
  stream?.close();
  stream = null;
}

async function ended() {
  closeStream();
  if (shown?.state === "done") {
    // the last progress event is restic's, before its summary: show what was sent
    const answer = await api("GET", `${JOBS}/${shown.id}`).catch(() => null);
    const job = answer?.ok ? answer.data : null;
    const sent = job?.kind === "backup" && job.bytes_total;
    $("live-bytes").textContent = sent
      ? words.summary.replace("%(sent)s", size(job.bytes_sent)).replace("%(total)s", size(job.bytes_total))
      : "";
  }
  await refresh();
}

/** Reload the cards (keeping open snapshot lists open) and the history. */
async function refresh() {
  const open = [...document.querySelectorAll(".target [data-action=snapshots][aria-expanded=true]")].map(
    (button) => button.closest(".target").dataset.target,
  );
  await Promise.all([reload("/backup/targets", $("targets")), reload("/backup/history", $("history"))]);
  for (const name of open) {
    const card = document.querySelector(`.target[data-target="${CSS.escape(name)}"]`);
    if (card) toggleSnapshots(card, true);
  }
}

async function cancelShown() {
  if (!shown) return;
  $("live-cancel").disabled = true;
  const answer = await api("POST", `${JOBS}/${shown.id}/cancel`).catch(() => null);
  if (!answer?.ok) {
    $("live-cancel").disabled = false;
    alertIn($("live-error"), refused(answer));
    return;
  }
  update(answer.data);
  if (ENDED.has(answer.data.state)) ended();
}

// ---- starting jobs ------------------------------------------------------------------------

async function start(body, errorBox) {
  alertIn(errorBox, "");
  const answer = await api("POST", JOBS, body).catch(() => null);
  if (answer?.status !== 202) {
    alertIn(errorBox, refused(answer));
    return false;
  }
  follow(answer.data);
  $("live").scrollIntoView({ block: "nearest" });
  reload("/backup/history", $("history"));
  return true;
}

async function toggleSnapshots(card, open) {
  const button = card.querySelector("[data-action=snapshots]");
  const box = card.querySelector(".snapshots");
  button.setAttribute("aria-expanded", String(open));
  box.hidden = !open;
  if (!open) return;
  box.setAttribute("aria-busy", "true");
  button.disabled = true;
  const loaded = await reload(`/backup/targets/${encodeURIComponent(card.dataset.target)}/snapshots`, box);
  button.disabled = false;
  box.removeAttribute("aria-busy");
  if (!loaded) alertIn(box, words.network);
}

$("targets").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const card = button.closest(".target");
  const action = button.dataset.action;
  if (action === "snapshots") {
    toggleSnapshots(card, button.getAttribute("aria-expanded") !== "true");
    return;
  }
  if (action === "prune" && !window.confirm(words.confirmPrune)) return;
  button.disabled = true;
  const body = { kind: action, target: card.dataset.target };
  if (action === "verify") body.read_data = true;
  await start(body, $("backup-error"));
  button.disabled = false;
});

$("targets").addEventListener("submit", async (event) => {
  const form = event.target.closest("form.restore");
  if (!form) return;
  event.preventDefault();
  const submit = form.querySelector("button");
  submit.disabled = true;
  await start(
    { kind: "restore", target: form.dataset.target, snapshot: form.snapshot.value, folder: form.folder.value.trim() },
    form.querySelector(".form-error"),
  );
  submit.disabled = false;
});

$("live-cancel").addEventListener("click", cancelShown);

// a job already running when the page opens (the schedule's, or one started elsewhere)
const active = document.querySelector(".target[data-active-job]");
if (active) {
  const answer = await api("GET", `${JOBS}/${active.dataset.activeJob}`).catch(() => null);
  if (answer?.ok) follow(answer.data);
}
