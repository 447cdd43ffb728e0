// The operator console's only script (served from /admin/static, no inline code: the pages'
// Content-Security-Policy allows nothing else). Progressive: every page works without it.
"use strict";

// Review queue: a checkbox that selects every answer on the page.
function wireSelectAll() {
  const all = document.getElementById("select-all");
  if (!all) return;
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll('#mark-form input[name="id"]')) box.checked = all.checked;
  });
}

// Runs page: poll the current run's progress every second; when the list of runs changes (the
// run ended and was recorded), reload to show it there.
function wireProgress() {
  const section = document.getElementById("progress");
  if (!section) return;
  const url = section.dataset.url;
  const latest = section.dataset.latest || "";
  const field = (name) => section.querySelector(`[data-field="${name}"]`);
  const stamp = (ts) => (ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–");

  async function poll() {
    let delay = 1000;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.ok) {
        const data = await response.json();
        if ((data.latest_started || "") !== latest) {
          window.location.reload();
          return;
        }
        const p = data.progress;
        field("run").textContent = p ? p.run : "–";
        field("status").textContent = p ? p.status : "no run in progress";
        field("step").textContent = p ? p.step : "–";
        field("train").textContent = p && p.train_steps ? `${p.train_step ?? 0} / ${p.train_steps}` : "–";
        field("loss").textContent = p && p.loss !== null && p.loss !== undefined ? p.loss.toFixed(4) : "–";
        field("updated").textContent = p ? stamp(p.updated) : "–";
        field("bar").value = p && p.train_steps ? (p.train_step || 0) / p.train_steps : 0;
        section.dataset.state = p ? p.status : "idle";
        if (!(p && p.active) && !data.requested) delay = 5000; // idle: look less often
      } else if (response.status === 401 || response.status === 403) {
        return; // logged out: stop
      }
    } catch (err) {
      delay = 5000;
    }
    window.setTimeout(poll, delay);
  }
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  wireSelectAll();
  wireProgress();
});
