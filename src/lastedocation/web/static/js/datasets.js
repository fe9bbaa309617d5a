// Datasets pages: the upload with real progress (XMLHttpRequest to the JSON API),
// and the statistics charts (uPlot) drawn from the figures the page carries.
import { csrfToken } from "/static/js/app.js";

const lang = document.documentElement.lang || "fa";
const numbers = new Intl.NumberFormat(lang === "fa" ? "fa-IR" : "en");
const OPTION_FIELDS = ["name", "file_format", "data_format", "question_field", "answer_field", "text_field"];
const PROBLEMS_SHOWN = 10;
const percent = lang === "fa" ? "٪" : "%";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

// ---- upload -------------------------------------------------------------------------
function setUpUpload(form) {
  const msg = form.dataset;
  const bar = form.querySelector("#upload-bar");
  const status = form.querySelector("#upload-status");
  const box = form.querySelector("#upload-progress");
  const errors = form.querySelector("#upload-error");
  const start = form.querySelector("#upload-start");
  const cancel = form.querySelector("#upload-cancel");
  let xhr = null;

  function busy(on) {
    start.disabled = on;
    cancel.hidden = !on;
    box.hidden = false;
  }

  function refusal(title, detail, problems) {
    box.hidden = true;
    const alert = el("div", { class: "alert error ds-refusal", role: "alert" },
      el("h3", {}, title), el("p", { class: "detail", dir: "auto" }, detail));
    if (problems.length) {
      alert.append(el("p", {}, msg.msgFirstProblems));
      const rows = problems.slice(0, PROBLEMS_SHOWN).map((p) => el("tr", {},
        el("td", {}, p.row == null ? "—" : numbers.format(p.row)),
        el("td", { class: "ltr" }, p.field ?? "—"),
        el("td", { dir: "auto" }, p.message ?? "")));
      alert.append(el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, msg.msgRow), el("th", {}, msg.msgField), el("th", {}, msg.msgProblem))),
        el("tbody", {}, ...rows))));
    }
    errors.replaceChildren(alert);
  }

  cancel.addEventListener("click", () => xhr?.abort());

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    errors.replaceChildren();
    const file = form.elements.file.files[0];
    if (!file) return refusal(msg.msgRefused, msg.msgNoFile, []);
    // a speech archive goes to its own route, under its own (larger) limit
    const archive = /\.(zip|tar|tgz|tar\.gz)$/i.test(file.name);
    const limit = Number(archive ? msg.maxArchiveBytes : msg.maxBytes);
    if (file.size > limit) return refusal(msg.msgRefused, archive ? msg.msgArchiveTooLarge : msg.msgTooLarge, []);

    const query = new URLSearchParams();
    for (const name of OPTION_FIELDS) {
      const value = form.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    for (const name of ["normalize", "drop_invalid"]) {
      if (form.elements[name].checked) query.set(name, "true");
    }
    const body = new FormData();
    body.append("file", file, file.name);

    xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/datasets${archive ? "/speech" : ""}?${query}`);
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      bar.value = Math.round((e.loaded / e.total) * 100);
      status.textContent = `${msg.msgUploading} ${numbers.format(bar.value)}${percent}`;
    });
    xhr.upload.addEventListener("load", () => {
      bar.removeAttribute("value"); // indeterminate while the server checks the rows
      status.textContent = msg.msgChecking;
      cancel.hidden = true; // the file is sent: the import goes on at the server
    });
    xhr.addEventListener("load", () => {
      busy(false);
      const answer = xhr.response ?? {};
      if (xhr.status === 201 && answer.id) {
        status.textContent = msg.msgDone;
        box.hidden = false;
        window.location.assign(`/datasets/${answer.id}`);
        return;
      }
      const problems = answer.report?.problems ?? answer.problems ?? [];
      const detail = answer.detail ?? `HTTP ${xhr.status}`;
      refusal(msg.msgRefused, detail, problems);
    });
    xhr.addEventListener("error", () => {
      busy(false);
      refusal(msg.msgRefused, msg.msgNetwork, []);
    });
    xhr.addEventListener("abort", () => {
      busy(false);
      box.hidden = true;
      errors.replaceChildren(el("div", { class: "alert warn", role: "status" }, msg.msgCancelled));
    });

    bar.value = 0;
    status.textContent = msg.msgUploading;
    busy(true);
    xhr.send(body);
  });
}

// ---- charts -------------------------------------------------------------------------
function colours() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return { accent: v("--accent"), second: v("--chart-3"), text: v("--text"), muted: v("--muted"), grid: v("--border") };
}

function axis(c, extra = {}) {
  return { stroke: c.muted, grid: { stroke: c.grid, width: 1 }, ticks: { stroke: c.grid },
    font: "12px Vazirmatn, system-ui, sans-serif", values: (u, splits) => splits.map((s) => numbers.format(s)), ...extra };
}

function sized(target, make) {
  const width = () => Math.max(target.clientWidth, 260);
  const plot = make(width());
  new ResizeObserver(() => plot.setSize({ width: width(), height: plot.height })).observe(target);
}

function histogram(target, chart, labels, c) {
  const bins = chart.histogram;
  if (!bins.length) return;
  // the overflow bin (above the 99th percentile) is drawn right after the last regular one
  const xs = bins.map((b, i) => (i > 0 && b.from !== bins[i - 1].to ? bins[i - 1].to : b.from));
  const step = bins.length > 1 ? xs[1] - xs[0] : 1;
  const readout = el("p", { class: "ds-readout muted", "aria-hidden": "true" });
  target.after(readout);
  const show = (u) => {
    const i = u.cursor.idx;
    const values = { from: bins[i]?.from, to: bins[i]?.to, unit: chart.title, count: bins[i]?.count };
    readout.textContent = i == null ? "" : labels.bin.replace(/%\((\w+)\)s/g,
      (_, key) => (typeof values[key] === "number" ? numbers.format(values[key]) : values[key]));
  };
  sized(target, (width) => new uPlot({
    width, height: 200,
    legend: { show: false },
    cursor: { points: { show: false }, drag: { x: false, y: false } },
    hooks: { setCursor: [show] },
    scales: { x: { time: false, range: () => [xs[0], xs[xs.length - 1] + step] } },
    axes: [axis(c), axis(c, { size: 52 })],
    series: [
      {},
      { fill: c.accent + "bb", stroke: c.accent, width: 1, points: { show: false },
        paths: uPlot.paths.bars({ size: [1, Infinity], gap: 1, align: 1 }) },
    ],
  }, [xs, bins.map((b) => b.count)], target));
}

function scriptBars(target, scripts, labels, c) {
  const shown = scripts.filter((s) => s.count > 0);
  if (!shown.length) return;
  const xs = shown.map((_, i) => i);
  sized(target, (width) => new uPlot({
    width, height: Math.max(160, 34 * shown.length + 40),
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false, ori: 1, dir: -1, range: [-0.5, shown.length - 0.5] }, y: { ori: 0, dir: 1 } },
    axes: [
      axis(c, { side: 3, grid: { show: false }, size: 150, splits: () => xs, values: (u, splits) => splits.map((i) => shown[i]?.label ?? "") }),
      axis(c, { side: 0, size: 30, space: 70 }),
    ],
    series: [
      {},
      { label: labels.characters, fill: c.second + "cc", stroke: c.second, width: 1, points: { show: false },
        paths: uPlot.paths.bars({ size: [0.7, 40] }) },
    ],
  }, [xs, shown.map((s) => s.count)], target));
}

function drawCharts() {
  const source = document.getElementById("ds-charts");
  if (!source || !window.uPlot) return;
  const data = JSON.parse(source.textContent);
  const c = colours();
  for (const chart of data.lengths) {
    const target = document.querySelector(`[data-chart="${CSS.escape(chart.id)}"]`);
    if (target) histogram(target, chart, data.labels, c);
  }
  const scripts = document.querySelector('[data-chart="scripts"]');
  if (scripts) scriptBars(scripts, data.scripts, data.labels, c);
}

const upload = document.getElementById("upload");
if (upload) setUpUpload(upload);
if (document.readyState === "complete") drawCharts();
else window.addEventListener("load", drawCharts);
