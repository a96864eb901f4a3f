// Polls the job's progress and updates the bar until the job ends. No inline script (CSP).
(function () {
  var bar = document.querySelector("progress.job-progress");
  if (!bar) return;
  var text = document.querySelector(".job-progress-text");
  var url = window.location.pathname.replace(/change\/?$/, "progress/");
  var watched = false; // saw the job active on this page
  function tick() {
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        bar.max = d.count; bar.value = d.done;
        if (text) text.textContent = d.done + " / " + d.count + " (" + d.status + "), published " + d.published + ", rejected " + d.rejected;
        if (d.status === "queued" || d.status === "running") {
          watched = true;
          setTimeout(tick, 1000);
        } else if (watched) {
          // It ended while we watched: reload so every field (status, counts, samples) is current.
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  tick();
})();
