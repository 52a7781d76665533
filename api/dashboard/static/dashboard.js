// The dashboard's few behaviours: confirm destructive forms, and optionally reload every 10 seconds.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

(() => {
  const box = document.getElementById("auto-refresh");
  if (!box) return;
  box.checked = localStorage.getItem("dashboard-refresh") === "on";
  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    // Drop a one-off notice from the URL so that it is not shown again on every reload.
    const url = new URL(window.location.href);
    url.searchParams.delete("notice");
    if (box.checked) timer = setTimeout(() => window.location.replace(url), 10000);
  };
  box.addEventListener("change", () => {
    localStorage.setItem("dashboard-refresh", box.checked ? "on" : "off");
    schedule();
  });
  schedule();
})();
