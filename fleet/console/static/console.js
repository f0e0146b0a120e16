// Live refresh of the device table: the server sends an event when the
// inventory changes (at most once a second); the page then re-reads the
// device list from the JSON API and rebuilds the rows. Text is set with
// textContent only, never parsed as HTML.
(function () {
  "use strict";
  var table = document.getElementById("devices");
  if (!table || !window.EventSource || !window.fetch) { return; }
  var limit = table.getAttribute("data-limit") || "500";
  var busy = false, again = false;

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function render(list) {
    var body = table.tBodies[0];
    var rows = document.createDocumentFragment();
    var online = 0;
    list.devices.forEach(function (d) {
      if (d.status === "online") { online++; }
      var tr = document.createElement("tr");
      cell(tr, d.id);
      var st = document.createElement("span");
      st.className = "status " + (d.status === "online" ? "online" : "offline");
      st.textContent = d.status;
      cell(tr, "").appendChild(st);
      cell(tr, d.profile);
      cell(tr, d.active_model || "");
      var t = document.createElement("time");
      t.dateTime = d.last_seen;
      t.textContent = d.last_seen;
      cell(tr, "").appendChild(t);
      var labels = cell(tr, "");
      Object.keys(d.labels || {}).sort().forEach(function (k) {
        var s = document.createElement("span");
        s.className = "label";
        s.textContent = k + "=" + d.labels[k];
        labels.appendChild(s);
        labels.appendChild(document.createTextNode(" "));
      });
      rows.appendChild(tr);
    });
    if (list.devices.length === 0) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      var td = cell(tr, "No devices yet. Start an agent or the simulator against this server's MQTT address.");
      td.colSpan = 6;
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    document.getElementById("online").textContent = online;
    document.getElementById("total").textContent = list.devices.length;
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch("/api/v1/devices?limit=" + encodeURIComponent(limit), { headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(render)
      .catch(function () { /* keep the last good table; the next event retries */ })
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  var es = new EventSource("/events");
  es.addEventListener("devices", refresh);
})();
