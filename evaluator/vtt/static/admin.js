"use strict";
async function showProgress() {
  const reply = await fetch("/api/admin/progress");
  const body = document.querySelector("#progress tbody");
  body.textContent = "";
  for (const row of await reply.json()) {
    const tr = document.createElement("tr");
    for (const value of [row.reader, row.answered, row.total]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}
showProgress();
setInterval(showProgress, 10000);
