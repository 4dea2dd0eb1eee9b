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
