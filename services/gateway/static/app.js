// Progressive enhancement only: every page works without it.
document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("invoices");
  const header = document.getElementById("select-page");
  const count = document.getElementById("selected-count");
  const boxes = () => Array.from(document.querySelectorAll('#invoices tbody input[name="invoice_ids"]'));
  const update = () => {
    if (!count) return;
    const n = boxes().filter((b) => b.checked).length;
    count.textContent = n ? `${n} selected` : "";
  };
  if (table && header) {
    // As the seed warns: this selects the unpaid invoices on the current page only.
    header.addEventListener("change", () => {
      boxes().forEach((box) => {
        const row = box.closest("tr");
        if (row && row.dataset.unpaid === "true" && !box.disabled) box.checked = header.checked;
      });
      update();
    });
    table.addEventListener("change", update);
  }
  // A form marked data-once submits once: a double click does not post twice.
  document.querySelectorAll("form[data-once]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (form.dataset.submitted) {
        event.preventDefault();
        return;
      }
      form.dataset.submitted = "1";
      form.querySelectorAll("button[type=submit]").forEach((b) => b.setAttribute("aria-busy", "true"));
    });
  });
  // Send All Envelopes: live progress, polled until every envelope is sent or failed.
  const progress = document.getElementById("progress");
  if (progress && progress.dataset.done !== "true") {
    const set = (id, value) => {
      const el = document.getElementById(id);
      if (el) el.textContent = String(value);
    };
    const poll = async () => {
      try {
        const resp = await fetch(progress.dataset.url, { credentials: "same-origin" });
        if (resp.ok) {
          const p = await resp.json();
          set("sent", p.sent);
          set("total", p.total);
          set("count-sent", p.sent);
          set("count-failed", p.failed);
          set("count-queued", p.queued);
          const fill = document.getElementById("fill");
          if (fill && p.total) fill.style.width = `${Math.round((100 * (p.sent + p.failed)) / p.total)}%`;
          if (p.done) {
            // Reload once for the final page, with the list of failures.
            window.location.reload();
            return;
          }
        }
      } catch (e) {
        /* the next poll tries again */
      }
      setTimeout(poll, 700);
    };
    setTimeout(poll, 500);
  }
});

// Add autofill fields: a click on a field inserts {{ field }} at the cursor of the Subject or
// Message field last focused (the Message until one is).
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-autofill]").forEach((picker) => {
    const form = picker.closest("form");
    if (!form) return;
    const targets = Array.from(form.querySelectorAll('input[name="subject"], textarea[name="body"]'));
    if (!targets.length) return;
    let target = targets.find((t) => t.name === "body") || targets[0];
    targets.forEach((t) => t.addEventListener("focus", () => { target = t; }));
    picker.querySelectorAll("button[data-field]").forEach((button) => {
      // Keep the focus (and the cursor) in the field while the button is pressed.
      button.addEventListener("mousedown", (event) => event.preventDefault());
      button.addEventListener("click", () => {
        const text = `{{ ${button.dataset.field} }}`;
        const start = target.selectionStart ?? target.value.length;
        const end = target.selectionEnd ?? start;
        target.setRangeText(text, start, end, "end");
        target.focus();
        target.dispatchEvent(new Event("input", { bubbles: true }));
      });
    });
  });
});
