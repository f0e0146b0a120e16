// Live refresh: the server sends "devices" when the inventory changes (at
// most once a second) and "tick" every few seconds; a page marked
// data-live="devices" or "tick" then re-reads itself and swaps the #live
// region. The HTML comes from this same server, rendered by the same
// templates; nothing else is fetched. While a form field inside the region
// has focus the swap waits, so keyboard users and typing are not disturbed.
(function () {
  "use strict";
  var want = document.body.getAttribute("data-live");
  var region = document.getElementById("live");
  if (!want || !region || !window.EventSource || !window.fetch || !window.DOMParser) { return; }
  var busy = false, again = false;

  function editing() {
    var a = document.activeElement;
    return a && region.contains(a) && /^(INPUT|SELECT|TEXTAREA|BUTTON|SUMMARY)$/.test(a.tagName);
  }

  function refresh() {
    if (editing()) { return; }
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (!fresh || editing()) { return; }
        // Keep open <details> open across the swap.
        var open = {};
        region.querySelectorAll("details[open] > summary").forEach(function (s) { open[s.textContent.split(":")[0]] = true; });
        region.replaceChildren.apply(region, Array.prototype.slice.call(fresh.childNodes));
        region.querySelectorAll("details > summary").forEach(function (s) {
          if (open[s.textContent.split(":")[0]]) { s.parentNode.open = true; }
        });
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* keep the last good page; the next event retries */ })
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  var es = new EventSource("/events");
  es.addEventListener(want, refresh);
})();
