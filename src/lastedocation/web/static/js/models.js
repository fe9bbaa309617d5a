// Model pages: the archive upload (with progress, to the page route that answers the
// new model's address, or an alert to show) and delete confirmation.
import { csrfToken } from "/static/js/app.js";

function uploadArchive(form) {
  const progress = form.querySelector("#archive-progress");
  const statusLine = form.querySelector("#archive-status");
  const errorBox = form.querySelector("#archive-error");
  const button = form.querySelector("button");
  const file = form.querySelector('input[type="file"]').files[0];
  if (!file) return;
  const body = new FormData();
  body.append("file", file);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", form.action);
  xhr.setRequestHeader("X-CSRF-Token", csrfToken());
  xhr.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable) return;
    const percent = Math.round((100 * event.loaded) / event.total);
    progress.value = percent;
    statusLine.textContent = `${percent.toLocaleString(document.documentElement.lang)}%`;
  });
  xhr.upload.addEventListener("load", () => {
    statusLine.textContent = form.dataset.checking || "";
  });
  xhr.addEventListener("load", () => {
    if (xhr.status === 201) {
      window.location.assign(xhr.getResponseHeader("Location") || "/models");
      return;
    }
    progress.hidden = true;
    button.disabled = false;
    statusLine.textContent = "";
    errorBox.innerHTML = xhr.responseText; // the server's escaped alert fragment
  });
  xhr.addEventListener("error", () => {
    progress.hidden = true;
    button.disabled = false;
    statusLine.textContent = form.dataset.failed || "";
  });
  errorBox.innerHTML = "";
  progress.value = 0;
  progress.hidden = false;
  button.disabled = true;
  xhr.send(body);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("archive-form");
  form?.addEventListener("submit", (event) => {
    event.preventDefault();
    uploadArchive(form);
  });
  for (const guarded of document.querySelectorAll("form[data-confirm]")) {
    guarded.addEventListener("submit", (event) => {
      if (!window.confirm(guarded.dataset.confirm)) event.preventDefault();
    });
  }
});
