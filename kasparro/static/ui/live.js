// Status page behaviour: refresh each [data-live] region from its fragment URL, and queue runs.
// The API key typed into the queue form is sent once as the X-API-Key header and then dropped:
// never written to the page, storage or a cookie.
(function () {
  "use strict";
  var PERIOD_MS = 5000;

  function openDetails(region) {
    return Array.prototype.map.call(region.querySelectorAll("details[open][id]"), function (d) { return d.id; });
  }

  function refresh(region) {
    if (document.visibilityState === "hidden") { return; }
    fetch(region.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var open = openDetails(region);  // keep what the reader unfolded
        region.innerHTML = html;
        open.forEach(function (id) { var d = document.getElementById(id); if (d) { d.open = true; } });
        region.removeAttribute("data-stale");
      })
      .catch(function () { region.setAttribute("data-stale", "true"); });
  }

  function showResult(target, text, good) {
    target.textContent = text;
    target.className = good ? "good" : "bad";
  }

  function queue(event) {
    event.preventDefault();
    var input = document.getElementById("api-key");
    var result = document.getElementById("queue-result");
    var key = input.value;
    input.value = "";
    showResult(result, "Sending…", true);
    fetch("/run-etl", { method: "POST", headers: { "X-API-Key": key, "Accept": "application/json" },
                        credentials: "omit", cache: "no-store" })
      .then(function (response) {
        return response.json().then(function (body) { return { status: response.status, body: body }; });
      })
      .then(function (answer) {
        if (answer.status < 300) {
          var run = answer.body.data;
          showResult(result, "Run #" + run.run_id + " " + (answer.status === 202 ? "queued" : "already active") +
                     " (" + run.status + ").", true);
          var link = document.createElement("a");
          link.href = "/ui/runs/" + encodeURIComponent(run.run_id);
          link.textContent = " Follow it";
          result.appendChild(link);
        } else {
          var error = answer.body.error || {};
          showResult(result, answer.status + ": " + (error.message || "the run was not queued"), false);
        }
      })
      .catch(function () { showResult(result, "The server did not answer; try again.", false); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll(".js-only"), function (el) { el.hidden = false; });
    var form = document.getElementById("queue-form");
    if (form) { form.addEventListener("submit", queue); }
    Array.prototype.forEach.call(document.querySelectorAll("[data-live]"), function (region) {
      setInterval(function () { refresh(region); }, PERIOD_MS);
    });
  });
}());
