// sevd status page: append live events from /api/v1/events (Server-Sent Events).
// Served from the page's origin so the Content-Security-Policy can forbid inline script.
"use strict";
(function () {
  const list = document.getElementById("events");
  const live = document.getElementById("live");
  const stale = document.getElementById("stale");
  document.documentElement.dataset.js = "on";
  if (!list || !window.EventSource) { return; }
  const source = new EventSource("/api/v1/events");
  source.onopen = function () {
    live.textContent = "live";
    live.classList.add("connected");
  };
  source.onerror = function () {
    live.textContent = "reconnecting";
    live.classList.remove("connected");
  };
  source.onmessage = function (e) { show(e); };
  function show(e) {
    let ev;
    try { ev = JSON.parse(e.data); } catch (err) { return; }
    const li = document.createElement("li");
    const when = new Date(ev.timestamp.seconds * 1000 + ev.timestamp.microseconds / 1000);
    li.textContent = when.toISOString() + " " + ev.event +
      (ev.guest ? " " + ev.guest : "") + (ev.data ? " " + JSON.stringify(ev.data) : "");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 100) { list.removeChild(list.lastChild); }
    stale.hidden = false;
  }
})();
