// Crossdock console: the little behaviour htmx does not give by itself. No inline script (the CSP
// forbids it), no framework.
(function () {
  "use strict";

  function banner(text) {
    var el = document.getElementById("banner");
    if (!el) return;
    el.textContent = text;
    el.hidden = !text;
  }

  // The queue's "select all on this page" box.
  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t && t.id === "select-all") {
      document.querySelectorAll("#queue-select input.pick").forEach(function (box) { box.checked = t.checked; });
    }
  });

  // Live updates: say whether the stream is connected.
  function live(text, state) {
    var el = document.getElementById("live-status");
    if (el) { el.textContent = text; el.dataset.state = state; }
  }
  document.body.addEventListener("htmx:sseOpen", function () { live("Live updates: on", "on"); });
  document.body.addEventListener("htmx:sseError", function () { live("Live updates: reconnecting… (reload the page if this stays)", "off"); });
  document.body.addEventListener("htmx:sseMessage", function (ev) {
    if (ev.detail && ev.detail.type === "changed") { live("Live updates: on (updated " + new Date().toLocaleTimeString() + ")", "on"); }
  });

  // Errors htmx does not swap: say what happened and what to do.
  document.body.addEventListener("htmx:responseError", function (ev) {
    var status = ev.detail.xhr ? ev.detail.xhr.status : "?";
    banner("The server answered " + status + ". Nothing on this page changed; try again, and if it persists check the server's log.");
  });
  document.body.addEventListener("htmx:sendError", function () {
    banner("The server could not be reached. Check the connection, then try again.");
  });
  document.body.addEventListener("htmx:beforeRequest", function () { banner(""); });

  // The chat: clear the box after sending, keep the newest answer in view.
  document.body.addEventListener("htmx:afterRequest", function (ev) {
    var form = ev.detail.elt;
    if (form && form.id === "chat-form" && ev.detail.successful) {
      var box = document.getElementById("chat-message");
      if (box) { box.value = ""; box.focus(); }
      var empty = document.getElementById("chat-empty");
      if (empty) empty.remove();
      var log = document.getElementById("chat-log");
      if (log && log.lastElementChild) log.lastElementChild.scrollIntoView({block: "nearest"});
    }
  });

  // After a boosted form answers (approve, reject), move focus to its verdict for screen readers.
  document.body.addEventListener("htmx:afterSettle", function () {
    var v = document.getElementById("verdict");
    if (v && document.activeElement === document.body) v.focus();
  });
})();
