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
});
