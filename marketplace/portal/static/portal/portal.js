// Browser-side checks of the upload form and its progress bar. The server checks everything
// again; this only spares a vendor a long upload that would be refused.
(function () {
  "use strict";

  function extensionMatches(name, extensions) {
    var lower = name.toLowerCase();
    return extensions.some(function (ext) { return lower.endsWith(ext); });
  }

  function checkArtifact(form) {
    var input = form.querySelector("input[type=file][name=artifact]");
    var format = form.querySelector("select[name=artifact_format]");
    if (!input || !format) { return true; }
    input.setCustomValidity("");
    var file = input.files && input.files[0];
    if (!file) { return true; }
    var max = parseInt(input.dataset.maxBytes || "0", 10);
    var table = JSON.parse(form.dataset.formatExtensions || "{}");
    var allowed = table[format.value] || [];
    if (file.size === 0) {
      input.setCustomValidity("The file is empty.");
    } else if (max && file.size > max) {
      input.setCustomValidity("The file is " + file.size + " bytes; the limit is " + max + " bytes.");
    } else if (allowed.length && !extensionMatches(file.name, allowed)) {
      input.setCustomValidity("A " + format.options[format.selectedIndex].text + " model is usually a " +
        allowed.join(" or ") + " file.");
    }
    return input.checkValidity();
  }

  document.addEventListener("change", function (event) {
    var form = event.target.closest("form[data-upload]");
    if (form) { checkArtifact(form); form.querySelector("input[name=artifact]").reportValidity(); }
  });

  document.addEventListener("htmx:configRequest", function (event) {
    var form = event.detail.elt.closest ? event.detail.elt.closest("form[data-upload]") : null;
    if (form && !checkArtifact(form)) { event.preventDefault(); form.reportValidity(); }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt;
    if (!form.matches || !form.matches("form[data-upload]")) { return; }
    var wrap = form.querySelector("[data-progress]");
    if (wrap) { wrap.hidden = false; }
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
  });

  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.detail.elt;
    if (!form.matches || !form.matches("form[data-upload]") || !event.detail.lengthComputable) { return; }
    var bar = form.querySelector("progress");
    var label = form.querySelector("[data-progress-label]");
    var percent = Math.round((event.detail.loaded / event.detail.total) * 100);
    if (bar) { bar.value = percent; }
    if (label) { label.textContent = percent + "% uploaded"; }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (!form.matches || !form.matches("form[data-upload]")) { return; }
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = false; }
  });
})();

// Scrollable tables must be reachable by keyboard (WCAG 2.1.1): every table box gets a tab stop
// and a name, from its table's caption or the heading before it, unless the template gave one.
(function () {
  "use strict";

  function nameOf(wrap) {
    var caption = wrap.querySelector("caption");
    if (caption) { return caption.textContent.trim().slice(0, 80); }
    var el = wrap.previousElementSibling;
    while (el && !/^H[1-6]$/.test(el.tagName)) { el = el.previousElementSibling; }
    return el ? el.textContent.trim().slice(0, 80) : "Table";
  }

  function label(root) {
    root.querySelectorAll(".table-wrap:not([tabindex]), .prose table:not([tabindex]), pre:not([tabindex])").forEach(function (wrap) {
      wrap.setAttribute("tabindex", "0");
      wrap.setAttribute("role", "region");
      if (!wrap.hasAttribute("aria-label")) {
        wrap.setAttribute("aria-label", wrap.tagName === "PRE" ? "Code" : nameOf(wrap));
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { label(document); });
  document.addEventListener("htmx:afterSwap", function () { label(document); });
})();
