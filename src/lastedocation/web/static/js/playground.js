// The playground: a conversation with one model over the OpenAI-compatible API.
// POST /v1/chat/completions with stream: true; the answer arrives as server-sent
// events (`data: {chunk}` lines, then `data: [DONE]`) read from the response body,
// each delta appended as it comes. Stop aborts the request: the server notices the
// closed connection and stops generating.
//
// Speech: the microphone button records a question and fills the message box with
// its transcript (POST /v1/audio/transcriptions, the default speech model, Persian);
// each answer has a hear button that reads it aloud (POST /v1/audio/speech, espeak-ng).
import { csrfToken } from "/static/js/app.js";
import {
  MicrophoneError,
  alertIn,
  errorDetail,
  microphoneMessage,
  playInto,
  send as sendForm,
  startRecording,
  synthesize,
} from "/static/js/speech-audio.js";

const root = document.getElementById("playground");
const $ = (id) => document.getElementById(id);
const history = []; // {role, content} turns sent with every request
let controller = null;

function addMessage(role, text) {
  $("empty-note")?.remove();
  const item = document.createElement("li");
  item.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? root.dataset.you : root.dataset.assistant;
  const body = document.createElement("div");
  body.className = "text";
  body.dir = "auto"; // Persian reads right to left, English left to right, each on its own
  body.textContent = text;
  item.append(who, body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function note(item, text) {
  const line = document.createElement("span");
  line.className = "note";
  line.textContent = text;
  item.append(line);
}

function showError(message) {
  const box = document.createElement("div");
  box.className = "alert error";
  const prefix = document.createElement("span");
  prefix.textContent = `${root.dataset.failed} `;
  const detail = document.createElement("span");
  detail.dir = "auto";
  detail.textContent = message;
  box.append(prefix, detail);
  $("chat-error").replaceChildren(box);
}

function number(id) {
  const value = Number($(id).value);
  return Number.isFinite(value) ? value : undefined;
}

function requestBody() {
  const stop = $("stop_strings").value.split("\n").filter((s) => s.length > 0);
  const system = $("system").value.trim();
  return {
    model: $("model").value,
    messages: [...(system ? [{ role: "system", content: system }] : []), ...history],
    stream: true,
    temperature: number("temperature"),
    top_p: number("top_p"),
    max_tokens: number("max_tokens"),
    repetition_penalty: number("repetition_penalty"), // the studio's extension field
    ...(stop.length ? { stop } : {}),
  };
}

async function* sseData(response) {
  // Each event is separated by a blank line; we only need its `data:` lines.
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data:")) yield line.slice(5).trim();
      }
    }
  }
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body?.error?.message || body?.detail || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
  $("clear").disabled = on;
  $("model").disabled = on;
}

async function send(prompt) {
  $("chat-error").replaceChildren();
  history.push({ role: "user", content: prompt });
  addMessage("user", prompt);
  const item = addMessage("assistant", "");
  const text = item.querySelector(".text");
  item.classList.add("streaming");
  controller = new AbortController();
  busy(true);
  $("chat-status").textContent = root.dataset.answering;
  let answer = "";
  let finish = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorOf(response));
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices?.[0];
      if (choice?.delta?.content) {
        answer += choice.delta.content;
        text.textContent = answer;
        item.scrollIntoView({ block: "end" });
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
    }
    $("chat-status").textContent = root.dataset.done;
    if (finish === "length") note(item, root.dataset.length);
  } catch (error) {
    if (error.name === "AbortError") {
      note(item, root.dataset.stopped);
      $("chat-status").textContent = root.dataset.stopped;
    } else {
      showError(error instanceof TypeError ? root.dataset.network : error.message);
      $("chat-status").textContent = "";
      if (!answer) item.remove();
    }
  } finally {
    item.classList.remove("streaming");
    if (answer && item.isConnected) addHearButton(item, answer);
    if (answer) history.push({ role: "assistant", content: answer });
    else history.pop(); // the question had no answer: let the user ask again
    controller = null;
    busy(false);
    $("prompt").focus();
  }
}

function addHearButton(item, answer) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary hear";
  button.textContent = root.dataset.hear;
  button.setAttribute("aria-label", root.dataset.hearLabel);
  button.addEventListener("click", () => hear(item, button, answer));
  item.append(button);
}

async function hear(item, button, answer) {
  let audio = item.querySelector("audio");
  if (audio) {
    audio.currentTime = 0;
    audio.play().catch(() => {});
    return;
  }
  button.disabled = true;
  item.querySelector(".note.speech")?.remove();
  const waiting = document.createElement("span");
  waiting.className = "note speech";
  waiting.textContent = root.dataset.reading;
  item.append(waiting);
  try {
    // the studio's voices read at most 4,096 characters at a time, as OpenAI's
    const blob = await synthesize({ input: answer.slice(0, 4096), model: "espeak", voice: "espeak-fa" });
    audio = document.createElement("audio");
    audio.controls = true;
    audio.setAttribute("aria-label", root.dataset.audioLabel);
    waiting.remove();
    item.append(audio);
    playInto(audio, blob);
  } catch (error) {
    const why = error instanceof TypeError ? root.dataset.network : error.message;
    waiting.textContent = `${root.dataset.ttsFailed} ${why}`;
    waiting.dir = "auto";
  } finally {
    button.disabled = false;
  }
}

// The microphone: one press starts recording, the next stops it and transcribes.
let recording = null;

function micNotice(text) {
  alertIn($("chat-error"), text, "warn");
}

function micState(on) {
  $("mic").setAttribute("aria-pressed", String(on));
  $("mic").classList.toggle("recording", on);
}

async function toggleMicrophone() {
  $("chat-error").replaceChildren();
  if (recording) return finishRecording();
  $("mic").disabled = true;
  try {
    recording = await startRecording({ maxSeconds: 120, onLimit: finishRecording });
    micState(true);
    $("chat-status").textContent = root.dataset.listening;
  } catch (error) {
    micNotice(microphoneMessage(error, root));
  } finally {
    $("mic").disabled = false;
  }
}

async function finishRecording() {
  const current = recording;
  if (!current) return;
  recording = null;
  micState(false);
  $("mic").disabled = true;
  $("chat-status").textContent = root.dataset.transcribing;
  try {
    const file = await current.stop();
    const form = new FormData();
    form.append("file", file);
    form.append("model", "whisper-1"); // the studio's default speech model
    form.append("language", "fa");
    form.append("response_format", "json");
    const response = await sendForm("/v1/audio/transcriptions", { form });
    if (!response.ok) throw new Error(await errorDetail(response));
    const text = String((await response.json()).text ?? "").trim();
    if (!text) {
      $("chat-status").textContent = root.dataset.noSpeech;
      return;
    }
    const prompt = $("prompt");
    prompt.value = prompt.value.trim() ? `${prompt.value.trimEnd()} ${text}` : text;
    followTextDirection(prompt);
    prompt.focus();
    $("chat-status").textContent = root.dataset.transcribed;
  } catch (error) {
    $("chat-status").textContent = "";
    if (error instanceof MicrophoneError) micNotice(microphoneMessage(error, root));
    else micNotice(`${root.dataset.sttFailed} ${error instanceof TypeError ? root.dataset.network : error.message}`);
  } finally {
    $("mic").disabled = false;
  }
}

function updateModelLink() {
  const option = $("model").selectedOptions[0];
  if (!option) return;
  $("model-link").href = `/models/${option.dataset.id}`;
  $("model-name").textContent = option.value;
}

function followTextDirection(field) {
  // Typed text takes its own direction; empty, the field (and its placeholder) keeps
  // the page's, so a Persian placeholder does not read backwards.
  if (field.value) field.dir = "auto";
  else field.removeAttribute("dir");
}

if (root) {
  updateModelLink();
  for (const field of document.querySelectorAll("[data-auto-dir]")) {
    field.addEventListener("input", () => followTextDirection(field));
  }
  $("model").addEventListener("change", updateModelLink);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt || controller) return;
    $("prompt").value = "";
    followTextDirection($("prompt"));
    send(prompt);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => controller?.abort());
  $("mic").addEventListener("click", toggleMicrophone);
  $("clear").addEventListener("click", () => {
    history.length = 0;
    $("messages").replaceChildren();
    $("chat-error").replaceChildren();
    $("chat-status").textContent = "";
  });
}
