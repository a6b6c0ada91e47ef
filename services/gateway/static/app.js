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

// Add contacts (review window): typing a name lists the firm's matching Clio contacts; picking
// one adds its email to To. To stays a plain field: what it says is what is sent.
document.addEventListener("DOMContentLoaded", () => {
  const picker = document.querySelector(".contact-picker[data-contacts]");
  const form = picker && picker.closest("form");
  const to = form && form.querySelector('input[name="to"]');
  if (!picker || !to) return;
  const input = picker.querySelector("#add-contact");
  const list = picker.querySelector("#contact-options");
  picker.hidden = false;
  let options = [];
  let active = -1;
  let timer = null;
  let asked = 0;

  // Split as the server splits To (services/gateway/deps.py: parse_emails).
  const addresses = () => to.value.split(/[,;\s]+/).filter(Boolean);
  const close = () => {
    list.hidden = true;
    list.replaceChildren();
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    options = [];
    active = -1;
  };
  const highlight = (i) => {
    active = i;
    Array.from(list.children).forEach((li, j) => li.setAttribute("aria-selected", String(j === i)));
    if (i >= 0 && list.children[i]) input.setAttribute("aria-activedescendant", list.children[i].id);
  };
  const choose = (contact) => {
    const have = addresses();
    if (!have.some((a) => a.toLowerCase() === contact.email.toLowerCase())) have.push(contact.email);
    to.value = have.join(", ");
    to.dispatchEvent(new Event("input", { bubbles: true }));
    input.value = "";
    close();
    input.focus();
  };
  const show = (found) => {
    const have = new Set(addresses().map((a) => a.toLowerCase()));
    options = found.filter((c) => !have.has(c.email.toLowerCase()));
    list.replaceChildren();
    if (!options.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = found.length ? "Already in To" : "No contact with an email matches";
      list.append(li);
    }
    options.forEach((c, i) => {
      const li = document.createElement("li");
      li.id = `contact-option-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", "false");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = c.name;
      const email = document.createElement("span");
      email.className = "email";
      email.textContent = c.email;
      li.append(name, email);
      // Pick on mousedown, before the field loses focus and the list closes.
      li.addEventListener("mousedown", (event) => {
        event.preventDefault();
        choose(c);
      });
      list.append(li);
    });
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    highlight(options.length ? 0 : -1);
  };
  const lookup = async () => {
    const q = input.value.trim();
    if (!q) return close();
    const mine = ++asked;
    try {
      const resp = await fetch(`${picker.dataset.contacts}?q=${encodeURIComponent(q)}`, { credentials: "same-origin" });
      if (mine !== asked) return; // a later keystroke asked again
      show(resp.ok ? await resp.json() : []);
    } catch (e) {
      if (mine === asked) close();
    }
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(lookup, 150);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" && options.length) {
      event.preventDefault();
      highlight((active + 1) % options.length);
    } else if (event.key === "ArrowUp" && options.length) {
      event.preventDefault();
      highlight((active - 1 + options.length) % options.length);
    } else if (event.key === "Enter") {
      // Enter picks a contact here; it never submits the envelope.
      event.preventDefault();
      if (active >= 0 && options[active]) choose(options[active]);
    } else if (event.key === "Escape") {
      close();
    }
  });
  input.addEventListener("blur", () => setTimeout(close, 100));
});
