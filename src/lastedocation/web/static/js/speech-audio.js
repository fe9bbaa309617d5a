// Speech in the browser, shared by the speech page (speech.js) and the playground:
// recording from the microphone, reading API errors, hearing text through
// POST /v1/audio/speech. Nothing here touches a page by itself.
import { csrfToken } from "/static/js/app.js";

/** A recorder that could not start; `code` picks the page's message (data-mic-CODE). */
export class MicrophoneError extends Error {
  constructor(code) {
    super(code);
    this.code = code;
  }
}

// Containers the studio decodes (PyAV): Chromium and Firefox record Opus in WebM or
// Ogg, Safari AAC in MP4.
const RECORDING_TYPES = [
  ["audio/webm;codecs=opus", "webm"],
  ["audio/ogg;codecs=opus", "ogg"],
  ["audio/mp4", "m4a"],
  ["audio/webm", "webm"],
];

function microphoneProblem(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "denied";
    case "NotFoundError":
    case "OverconstrainedError":
      return "no-device";
    case "NotReadableError":
    case "AbortError":
      return "busy";
    default:
      return "unsupported";
  }
}

/**
 * Start recording from the microphone. Resolves to {stop, cancel, seconds}: `stop()`
 * resolves to the recording as a File; `cancel()` drops it. Rejects with a
 * MicrophoneError saying why there is no recording (no API, refused, no device).
 * After `maxSeconds` the recording stops by itself and `onLimit` is called.
 */
export async function startRecording({ maxSeconds = 600, onLimit } = {}) {
  if (!window.isSecureContext) throw new MicrophoneError("insecure");
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    throw new MicrophoneError("unsupported");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    throw new MicrophoneError(microphoneProblem(error));
  }
  const [type, extension] =
    RECORDING_TYPES.find(([t]) => MediaRecorder.isTypeSupported(t)) ?? ["", "webm"];
  let recorder;
  try {
    recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  } catch {
    stream.getTracks().forEach((track) => track.stop());
    throw new MicrophoneError("unsupported");
  }
  const chunks = [];
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data.size) chunks.push(event.data);
  });
  const stopped = new Promise((resolve) => recorder.addEventListener("stop", resolve));
  const started = performance.now();
  recorder.start(1000); // a chunk a second: a long recording is not one huge buffer
  const release = () => stream.getTracks().forEach((track) => track.stop());
  const limit = setTimeout(() => onLimit?.(), maxSeconds * 1000);
  const finish = async () => {
    clearTimeout(limit);
    if (recorder.state !== "inactive") recorder.stop();
    await stopped;
    release();
  };
  return {
    seconds: () => (performance.now() - started) / 1000,
    async stop() {
      await finish();
      const blob = new Blob(chunks, { type: recorder.mimeType || type || "audio/webm" });
      if (!blob.size) throw new MicrophoneError("empty");
      return new File([blob], `recording.${extension}`, { type: blob.type });
    },
    async cancel() {
      await finish();
    },
  };
}

/** Show `text` in `box` as an alert (error, warn or ok); `dir="auto"`: a detail in
 * English reads left to right on a Persian page. */
export function alertIn(box, text, kind = "error") {
  const alert = document.createElement("div");
  alert.className = `alert ${kind}`;
  alert.dir = "auto";
  alert.textContent = text;
  box.replaceChildren(alert);
}

/** The page's sentence for a microphone problem (data-mic-CODE on `holder`). */
export function microphoneMessage(error, holder) {
  const code = error instanceof MicrophoneError ? error.code : "unsupported";
  const key = `mic${code.replace(/(^|-)(\w)/g, (_, __, c) => c.toUpperCase())}`;
  return holder.dataset[key] || holder.dataset.micUnsupported || code;
}

/** What an API error answer says: the studio's `detail`, OpenAI's `error.message`,
 * or the status, never a raw body or a traceback. */
export async function errorDetail(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): the status is all there is to say
  }
  const detail = body?.detail ?? body?.error?.message;
  if (typeof detail === "string" && detail) return detail;
  return `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
}

/** An unsafe request from a page: the session cookie and the CSRF token. */
export function send(path, { method = "POST", json, form, signal } = {}) {
  const headers = { Accept: "application/json", "X-CSRF-Token": csrfToken() };
  let body = form;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  return fetch(path, { method, headers, body, signal, credentials: "same-origin" });
}

/** A JSON API call from a page: {ok, status, data}; `data` is null when not JSON. */
export async function api(method, path, json) {
  const response =
    method === "GET"
      ? await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      : await send(path, { method, json });
  let data = null;
  if (response.status !== 204) data = await response.json().catch(() => null);
  return { ok: response.ok, status: response.status, data };
}

/** The text read aloud, as a Blob of `format` audio; throws an Error with the detail. */
export async function synthesize({ input, model = "espeak", voice = "espeak-fa", speed = 1, format = "wav" }) {
  const response = await send("/v1/audio/speech", {
    json: { model, input, voice, speed, response_format: format },
  });
  if (!response.ok) throw new Error(await errorDetail(response));
  const blob = await response.blob();
  if (!blob.size) throw new Error(`HTTP ${response.status}: no audio`);
  return format === "wav" ? fixWavLengths(blob) : blob;
}

/**
 * A streamed wav cannot know its length when its header is written, so the header
 * may carry a placeholder; with the whole file here, write the true lengths, so the
 * player shows the duration and a saved file opens everywhere.
 */
export async function fixWavLengths(blob) {
  const bytes = await blob.arrayBuffer();
  const view = new DataView(bytes);
  const tag = (at) => String.fromCharCode(...new Uint8Array(bytes, at, 4));
  if (bytes.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") return blob;
  view.setUint32(4, bytes.byteLength - 8, true);
  for (let at = 12; at + 8 <= bytes.byteLength; ) {
    const size = view.getUint32(at + 4, true);
    if (tag(at) === "data") {
      view.setUint32(at + 4, bytes.byteLength - at - 8, true);
      break;
    }
    at += 8 + size + (size & 1);
  }
  return new Blob([bytes], { type: "audio/wav" });
}

/** Put `blob` in `audio` (revoking its previous one) and try to play it; a browser
 * that refuses to start playing by itself leaves the controls for the user. */
export function playInto(audio, blob) {
  if (audio.src.startsWith("blob:")) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(blob);
  audio.hidden = false;
  audio.play().catch(() => {});
  return audio.src;
}

/** 75.5 -> "1:15.5" (Persian digits in Persian). */
export function clock(seconds, lang = document.documentElement.lang) {
  const total = Math.max(0, seconds || 0);
  const m = Math.floor(total / 60);
  const s = (total % 60).toFixed(1).padStart(4, "0");
  const text = `${m}:${s}`;
  return lang === "fa" ? text.replace(/\d/g, (d) => "۰۱۲۳۴۵۶۷۸۹"[d]) : text;
}
