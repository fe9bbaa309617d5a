// The runs pages: shared chart and API helpers (run-live.js uses them too), the
// comparison chart of the runs list, and the new-run form's presets and fields.
import { csrfToken } from "/static/js/app.js";

const lang = document.documentElement.lang || "fa";
const decimals = new Intl.NumberFormat(lang, { maximumSignificantDigits: 4 });
const integers = new Intl.NumberFormat(lang, { maximumFractionDigits: 0 });

/** A number in the page's language (Persian digits in Persian); steps stay exact. */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return (Number.isInteger(value) ? integers : decimals).format(value);
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return "—";
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n) => String(n).padStart(2, "0");
  const text = h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
  return lang === "fa" ? text.replace(/\d/g, (d) => "۰۱۲۳۴۵۶۷۸۹"[d]) : text;
}

/** fetch with the session cookie; unsafe methods repeat the CSRF token. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  if (response.status !== 204) data = await response.json().catch(() => null);
  return { ok: response.ok, status: response.status, data };
}

function colors() {
  const css = getComputedStyle(document.documentElement);
  const get = (name) => css.getPropertyValue(name).trim();
  return {
    text: get("--muted"),
    grid: get("--border"),
    series: [get("--accent"), get("--chart-2"), get("--chart-3"), get("--warn"), get("--ok"),
      get("--bad"), "#8957e5", "#bf8700"],
  };
}

/**
 * A uPlot line chart over steps that fills its container and follows its width.
 * series: [{label, points?}]; returns the uPlot instance (setData to update).
 */
export function lineChart(element, series, xLabel) {
  const theme = colors();
  const axis = {
    stroke: theme.text,
    grid: { stroke: theme.grid, width: 1 },
    ticks: { stroke: theme.grid, width: 1 },
    values: (u, ticks) => ticks.map(formatNumber),
  };
  // wide enough for the longest tick label (a learning rate has many digits)
  const ySize = (u, values) => (values ? Math.max(...values.map((v) => String(v).length)) * 7 + 20 : 40);
  const options = {
    width: Math.max(element.clientWidth, 200),
    height: 220,
    scales: { x: { time: false } },
    axes: [{ ...axis, label: xLabel }, { ...axis, size: ySize }],
    legend: { live: false },
    series: [
      { label: xLabel },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: theme.series[i % theme.series.length],
        width: 2,
        spanGaps: true,
        points: { show: s.points ?? false, size: 6 },
      })),
    ],
  };
  const empty = [[], ...series.map(() => [])];
  const chart = new window.uPlot(options, empty, element);
  const observer = new ResizeObserver(() => {
    const width = Math.max(element.clientWidth, 200);
    if (width !== chart.width) chart.setSize({ width, height: 220 });
  });
  observer.observe(element);
  const destroy = chart.destroy.bind(chart);
  chart.destroy = () => {
    observer.disconnect();
    destroy();
  };
  return chart;
}

// -- the runs list: compare several runs on one chart -------------------------

function setupCompare() {
  const button = document.getElementById("compare-button");
  if (!button) return;
  const words = JSON.parse(document.getElementById("compare-words").textContent);
  const status = document.getElementById("compare-status");
  const box = document.getElementById("compare-chart");
  const metric = document.getElementById("compare-metric");
  let loaded = [];
  let chart = null;

  function draw() {
    const key = metric.value;
    const drawn = loaded
      .map((run) => {
        const points = key === "loss" ? run.history.metrics : run.history.eval;
        const kept = points.filter((p) => typeof p[key] === "number");
        return { ...run, table: [kept.map((p) => p.step), kept.map((p) => p[key])] };
      })
      .filter((run) => run.table[0].length);
    chart?.destroy();
    chart = null;
    box.replaceChildren();
    box.hidden = !drawn.length;
    status.textContent = drawn.length ? "" : words.empty;
    if (!drawn.length) return;
    const series = drawn.map(({ id, name }) => ({
      label: `\u2068${name}\u2069 #${formatNumber(Number(id))}`, // the name isolated (bidi)
      points: key === "val_loss",
    }));
    chart = lineChart(box, series, words.step);
    chart.setData(window.uPlot.join(drawn.map((run) => run.table)));
  }

  button.addEventListener("click", async () => {
    const picked = [...document.querySelectorAll("input.compare:checked")];
    if (!picked.length) {
      status.textContent = words.choose;
      return;
    }
    status.textContent = words.loading;
    button.disabled = true;
    try {
      loaded = [];
      for (const tick of picked) {
        const id = tick.value;
        const answer = await api("GET", `/api/v1/runs/${id}/metrics?max_points=1000`);
        if (!answer.ok) {
          status.textContent = words.failed.replace("{id}", id);
          return;
        }
        loaded.push({ id, name: tick.dataset.name, history: answer.data });
      }
      draw();
    } finally {
      button.disabled = false;
    }
  });
  metric.addEventListener("change", () => loaded.length && draw());
}

// -- the new-run form: presets, and fields that show for one choice ------------

function setupForm() {
  const form = document.getElementById("new-run");
  if (!form) return;
  const data = JSON.parse(document.getElementById("run-presets").textContent);

  // "a=x,y;b=z": shown when every condition holds
  const holds = (show) =>
    show.split(";").every((condition) => {
      const [name, wanted] = condition.split("=");
      return wanted.split(",").includes(form.elements[name]?.value);
    });

  // Options of the other task (its datasets, models, sizes) are hidden and disabled;
  // a select left on one of them moves to the first option of this task.
  function filterOptions() {
    const task = form.elements.task?.value || "text";
    for (const select of form.querySelectorAll("select")) {
      const tagged = [...select.options].filter((o) => o.dataset.task);
      if (!tagged.length) continue;
      for (const option of tagged) option.hidden = option.disabled = option.dataset.task !== task;
      if (select.selectedIndex < 0 || select.options[select.selectedIndex].disabled) {
        const first = [...select.options].find((o) => !o.disabled);
        if (first) first.selected = true;
      }
    }
  }

  function showFields() {
    filterOptions();
    for (const field of form.querySelectorAll("[data-show]")) field.hidden = !holds(field.dataset.show);
  }

  // Switching the task moves an untouched learning rate to that task's default.
  let task = form.elements.task?.value;
  function taskChanged() {
    const now = form.elements.task?.value;
    if (!now || now === task) return;
    const lr = form.elements["training.lr"];
    if (lr && lr.value === data.lr[task]) lr.value = data.lr[now];
    task = now;
  }

  function apply(values) {
    for (const [name, value] of Object.entries(values)) {
      if (name === "name" || name === "dataset_id") continue; // the user's choices stay
      const control = form.querySelector(`[name="${CSS.escape(name)}"]:not([type=hidden])`);
      if (!control) continue;
      if (control.type === "checkbox") control.checked = value === "on";
      else control.value = value;
    }
    task = form.elements.task?.value;
    showFields();
  }

  for (const link of document.querySelectorAll("a[data-preset]")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      apply(data.presets[link.dataset.preset]);
      const name = link.querySelector("strong").textContent;
      document.getElementById("preset-status").textContent = data.applied.replace("{name}", name);
    });
  }
  form.addEventListener("change", () => {
    taskChanged();
    showFields();
  });
  form.addEventListener("submit", () => {
    const status = document.getElementById("start-status");
    status.textContent = status.dataset.busy;
    // disabled after this tick, so the form still sends its data
    setTimeout(() => (document.getElementById("start-run").disabled = true));
  });
  showFields();
}

setupCompare();
setupForm();
