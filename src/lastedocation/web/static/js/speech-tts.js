// The speech page's text to speech: the chosen voice's licence and note beside it,
// and the hear button, which reads the text through POST /v1/audio/speech, plays it
// and offers the audio as a download.
import { alertIn, playInto, synthesize } from "/static/js/speech-audio.js";

const $ = (id) => document.getElementById(id);

function showVoice() {
  const option = $("tts-voice").selectedOptions[0];
  $("voice-note").hidden = !option;
  if (!option) return;
  $("voice-licence").textContent = option.dataset.licence;
  $("voice-about").textContent = option.dataset.note;
}

async function hear(words) {
  const option = $("tts-voice").selectedOptions[0];
  const input = $("tts-text").value.trim();
  if (!option || !input) return;
  $("tts-error").replaceChildren();
  $("hear").disabled = true;
  $("tts-status").textContent = words.synthesizing;
  const format = $("tts-format").value;
  try {
    const blob = await synthesize({
      input,
      model: option.dataset.engine,
      voice: option.value,
      speed: Number($("tts-speed").value) || 1,
      format,
    });
    const url = playInto($("tts-audio"), blob);
    const link = $("tts-download");
    link.href = url;
    link.download = `speech.${format === "opus" ? "ogg" : format}`;
    link.hidden = false;
    $("tts-status").textContent = words.synthesized;
  } catch (error) {
    $("tts-status").textContent = "";
    const why = error instanceof TypeError ? words.network : error.message;
    alertIn($("tts-error"), `${words.ttsFailed} ${why}`);
  } finally {
    $("hear").disabled = false;
  }
}

/** Wire the form; `root.dataset` holds the page's translated messages. */
export function setUpTextToSpeech(root) {
  $("tts-form").addEventListener("submit", (event) => {
    event.preventDefault();
    hear(root.dataset);
  });
  $("tts-voice").addEventListener("change", showVoice);
  showVoice();
}
