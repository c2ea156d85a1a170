// The invitation link carries the token in the URL fragment, which browsers never send to a
// server: post it once, get it back as an HttpOnly cookie, and drop it from the address bar.
"use strict";
async function signIn(token) {
  const status = document.getElementById("status");
  const reply = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (!reply.ok) {
    status.textContent = "This link is not valid: ask the study's organiser for yours.";
    status.className = "error";
    document.getElementById("manual").hidden = false;
    return;
  }
  const { page } = await reply.json();
  window.location.replace(page);
}
const fragment = window.location.hash.slice(1);
history.replaceState(null, "", window.location.pathname);
document.getElementById("manual").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn(document.getElementById("token").value.trim());
});
if (fragment) {
  signIn(fragment);
} else {
  document.getElementById("status").textContent = "Open your invitation link, or paste your token.";
  document.getElementById("manual").hidden = false;
}
