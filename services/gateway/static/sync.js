// Sync with Clio: live progress, polled from /sync/progress.json until the sync ends.
// Progressive enhancement only: without it the page refreshes itself (noscript).
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("sync-progress");
  if (!box || box.dataset.running !== "true") return;
  const set = (id, value) => {
    const el = document.getElementById(id);
    if (el) el.textContent = String(value);
  };
  const poll = async () => {
    try {
      const resp = await fetch(box.dataset.url, { credentials: "same-origin" });
      if (resp.ok) {
        const p = await resp.json();
        if (!p.running) {
          // Reload once for the finished page (counts, errors, the sync issues link).
          window.location.reload();
          return;
        }
        set("sync-fetched", p.fetched);
        if (p.total !== null && p.total !== undefined) {
          set("sync-total", p.total);
          const wrap = document.getElementById("sync-total-wrap");
          if (wrap) wrap.hidden = false;
        }
        const fill = document.getElementById("sync-fill");
        if (fill) fill.style.width = `${p.percent}%`;
        set("sync-left", p.left ? `${p.left} left at the current rate` : "Estimating the time left…");
      }
    } catch (e) {
      /* the next poll tries again */
    }
    setTimeout(poll, 1000);
  };
  setTimeout(poll, 500);
});
