// mailer admin: progressive enhancement only; every page works without this file.
// 1. Live fragments: an element with data-refresh-url and data-live="true" is fetched again every
//    REFRESH_MS and swapped; it stops when the server answers with data-live="false" (nothing runs).
// 2. The mailout form counts its audience as the filter and window are typed.
// 3. The import form uploads with a progress bar and shows the result in place.
"use strict";

const REFRESH_MS = 3000;
const AUDIENCE_DELAY_MS = 300;
const FETCH_HEADERS = { "X-Requested-With": "fetch", "Accept": "text/html-fragment" };

function csrfToken() {
  const field = document.querySelector('input[name="csrf_token"]');
  return field ? field.value : "";
}

function parseFragment(html) {
  const template = document.createElement("template");
  template.innerHTML = html.trim();
  return template.content.firstElementChild;
}

function watch(element) {
  if (element.dataset.live !== "true") {
    return;
  }
  window.setTimeout(async () => {
    try {
      const response = await fetch(element.dataset.refreshUrl, { headers: FETCH_HEADERS, credentials: "same-origin" });
      if (response.status === 401) {
        element.insertAdjacentHTML("afterbegin", '<p class="error" role="alert">Signed out: reload the page to sign in again.</p>');
        return;
      }
      if (!response.ok) {
        watch(element);
        return;
      }
      const fresh = parseFragment(await response.text());
      if (fresh === null) {
        watch(element);
        return;
      }
      element.replaceWith(fresh);
      watch(fresh);
    } catch (error) {
      watch(element);  // the network blinked: try again at the next beat
    }
  }, REFRESH_MS);
}

function countAudience(form) {
  const output = document.getElementById("audience");
  if (!output) {
    return;
  }
  let timer = null;
  let sequence = 0;
  const update = () => {
    const mine = ++sequence;
    const body = new URLSearchParams(new FormData(form));
    fetch(form.dataset.audienceUrl, {
      method: "POST",
      body,
      headers: { ...FETCH_HEADERS, "X-CSRF-Token": csrfToken() },
      credentials: "same-origin",
    }).then((response) => response.ok ? response.text() : Promise.reject(response.status))
      .then((html) => { if (mine === sequence) { output.innerHTML = html; } })
      .catch(() => { if (mine === sequence) { output.textContent = "The audience could not be counted just now."; } });
  };
  form.querySelectorAll("[data-audience]").forEach((input) => {
    input.addEventListener("input", () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(update, AUDIENCE_DELAY_MS);
    });
  });
  update();
}

function uploadWithProgress(form) {
  const box = form.querySelector(".upload");
  const bar = document.getElementById("import-progress");
  const text = document.getElementById("import-progress-text");
  const result = document.getElementById("import-result");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("X-Requested-With", "fetch");
    request.setRequestHeader("X-CSRF-Token", csrfToken());
    box.hidden = false;
    bar.value = 0;
    text.textContent = "Uploading…";
    request.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) {
        const pct = Math.round((100 * e.loaded) / e.total);
        bar.value = pct;
        bar.textContent = pct + "%";
        text.textContent = pct < 100 ? "Uploaded " + pct + "%" : "Uploaded; importing…";
      }
    });
    request.addEventListener("load", () => {
      bar.value = 100;
      text.textContent = request.status === 200 ? "Done." : "Refused (" + request.status + ").";
      result.innerHTML = request.responseText;
    });
    request.addEventListener("error", () => { text.textContent = "The upload failed; try again."; });
    request.send(new FormData(form));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh-url]").forEach(watch);
  const mailoutForm = document.querySelector("form[data-audience-url]");
  if (mailoutForm) {
    countAudience(mailoutForm);
  }
  const importForm = document.getElementById("import-form");
  if (importForm) {
    uploadWithProgress(importForm);
  }
});
