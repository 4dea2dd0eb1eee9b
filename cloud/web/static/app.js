// Small behaviours without inline script (the CSP forbids it).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Language menu and filter selects submit on change.
  for (const form of document.querySelectorAll("form.js-autosubmit")) {
    for (const field of form.querySelectorAll("select")) {
      field.addEventListener("change", () => form.submit());
    }
  }
  for (const field of document.querySelectorAll("select.js-autosubmit-field")) {
    field.addEventListener("change", () => field.form.submit());
  }
  // Confirmation for destructive buttons.
  for (const form of document.querySelectorAll("form.js-confirm")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // Remote commands: while one waits for the terminal, refresh their list.
  const commands = document.getElementById("command-list");
  if (commands) {
    const refresh = async () => {
      const list = document.getElementById("command-list");
      if (!list || !list.dataset.pending) return;
      try {
        const response = await fetch(list.dataset.url, {credentials: "same-origin"});
        if (response.ok) {
          const holder = document.createElement("div");
          holder.innerHTML = await response.text();
          list.replaceWith(holder.firstElementChild);
        }
      } catch (err) {
        // Offline for a moment: try again at the next tick.
      }
      window.setTimeout(refresh, 2000);
    };
    window.setTimeout(refresh, 2000);
  }
  // Download text shown on the page as a file (the provisioning site file).
  for (const button of document.querySelectorAll("button.js-download")) {
    button.addEventListener("click", () => {
      const text = document.getElementById(button.dataset.source).textContent;
      const url = URL.createObjectURL(new Blob([text], {type: "application/json"}));
      const a = document.createElement("a");
      a.href = url;
      a.download = button.dataset.filename;
      document.body.appendChild(a);
      a.click();
      a.remove();
      URL.revokeObjectURL(url);
    });
  }
});
