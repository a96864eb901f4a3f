// Polls the job's progress and updates the bar until the job ends. No inline script (CSP).
(function () {
  var bar = document.querySelector("progress.job-progress");
  if (!bar) return;
  var text = document.querySelector(".job-progress-text");
  var url = window.location.pathname.replace(/change\/?$/, "progress/");
  // The status the page was rendered with: when the job has ended since, reload so every
  // field (status, counts, samples) is current, not only the bar.
  var rendered = bar.getAttribute("data-status");
  var active = function (s) { return s === "queued" || s === "running"; };
  function tick() {
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        bar.max = d.count; bar.value = d.done;
        if (text) text.textContent = d.done + " / " + d.count + " (" + d.status + "), published " + d.published + ", rejected " + d.rejected;
        if (active(d.status)) {
          setTimeout(tick, 1000);
        } else if (active(rendered)) {
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  tick();
})();
