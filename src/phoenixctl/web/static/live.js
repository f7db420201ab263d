// Live updates: the server sends the page's version (a digest of the servers' states and the
// newest operation) as server-sent events; when it changes, the page's <main> is fetched
// again and swapped in place, so a rotation can be watched without reloading.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-events");
  var main = document.querySelector("main");
  if (!url || !window.EventSource || !main) return;
  var version = main.getAttribute("data-version");
  var marker = document.getElementById("live");
  var busy = false;

  function refresh() {
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        if (fresh) {
          document.querySelector("main").replaceWith(fresh);
          version = fresh.getAttribute("data-version");
        }
      })
      .catch(function () { if (marker) marker.textContent = "live (retrying)"; })
      .then(function () { busy = false; });
  }

  var source = new EventSource(url);
  source.addEventListener("version", function (event) {
    if (marker) marker.textContent = "live";
    if (event.data !== version && !busy) refresh();
  });
  source.onerror = function () { if (marker) marker.textContent = "live (reconnecting)"; };
})();
