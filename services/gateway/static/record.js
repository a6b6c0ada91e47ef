// To record in Clio: the header checkbox selects every item. Progressive enhancement only.
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("record-all");
  if (!all) return;
  all.addEventListener("change", () => {
    document.querySelectorAll('#record tbody input[name="ids"]').forEach((box) => {
      box.checked = all.checked;
    });
  });
});
