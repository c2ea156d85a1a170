// The reading page: three planes of the current case, scrolled with the wheel or the keyboard,
// a window preset, and the answer form. Everything shown comes from the reader's own API.
"use strict";
const VIEW_PIXELS = 320; // the longest side of a view on screen
const state = { study: null, cases: [], current: 0, window: "", active: "axial", slices: {} };

async function api(path, options) {
  const reply = await fetch(path, options);
  if (!reply.ok) {
    const detail = await reply.json().catch(() => ({}));
    throw new Error(detail.detail || `${reply.status} ${reply.statusText}`);
  }
  return reply.json();
}

function planeGeometry(plane) {
  const [x, y, z] = state.study.shape;
  const [sx, sy, sz] = state.study.spacing;
  // (columns, rows, mm per column, mm per row, slices)
  if (plane === "axial") return [x, y, sx, sy, z];
  if (plane === "coronal") return [x, z, sx, sz, y];
  return [y, z, sy, sz, x];
}

function sliceUrl(plane) {
  const caseId = state.cases[state.current].case;
  const index = state.slices[plane];
  const window = encodeURIComponent(state.window);
  return `/api/cases/${caseId}/slices/${plane}/${index}.png?window=${window}`;
}

function drawViews() {
  for (const plane of state.study.planes) {
    const view = document.getElementById(`view-${plane}`);
    view.classList.toggle("active", plane === state.active);
    view.querySelector("img").src = sliceUrl(plane);
    const [, , , , count] = planeGeometry(plane);
    view.querySelector(".caption").textContent = `${plane} ${state.slices[plane] + 1} / ${count}`;
  }
}

function scroll(plane, step) {
  const [, , , , count] = planeGeometry(plane);
  state.slices[plane] = Math.min(count - 1, Math.max(0, state.slices[plane] + step));
  state.active = plane;
  drawViews();
}

function buildViews() {
  const views = document.getElementById("views");
  let longest = 0;
  for (const plane of state.study.planes) {
    const [cols, rows, mmCol, mmRow] = planeGeometry(plane);
    longest = Math.max(longest, cols * mmCol, rows * mmRow);
  }
  for (const plane of state.study.planes) {
    const [cols, rows, mmCol, mmRow] = planeGeometry(plane);
    const view = document.createElement("div");
    view.className = "view";
    view.id = `view-${plane}`;
    const img = document.createElement("img");
    img.alt = `${plane} slice`;
    img.width = Math.round((cols * mmCol * VIEW_PIXELS) / longest);
    img.height = Math.round((rows * mmRow * VIEW_PIXELS) / longest);
    const caption = document.createElement("div");
    caption.className = "caption";
    view.append(img, caption);
    view.addEventListener("wheel", (event) => {
      event.preventDefault();
      scroll(plane, event.deltaY > 0 ? 1 : -1);
    });
    view.addEventListener("click", () => { state.active = plane; drawViews(); });
    views.appendChild(view);
  }
}

function showCase(position) {
  state.current = position;
  for (const plane of state.study.planes) {
    state.slices[plane] = Math.floor(planeGeometry(plane)[4] / 2);
  }
  const entry = state.cases[position];
  document.getElementById("position").textContent = `case ${position + 1} of ${state.cases.length}`;
  const form = document.getElementById("answer");
  form.reset();
  const answered = entry.answer !== null;
  for (const input of form.elements) input.disabled = answered;
  if (answered) {
    form.querySelector(`input[name=call][value=${entry.answer.call}]`).checked = true;
    form.querySelector(`input[name=confidence][value="${entry.answer.confidence}"]`).checked = true;
    form.comment.value = entry.answer.comment;
  }
  document.getElementById("saved").textContent = answered ? "answered (answers are final)" : "";
  drawViews();
}

function showProgress() {
  const answered = state.cases.filter((c) => c.answer !== null).length;
  document.getElementById("progress").textContent =
    `${answered} of ${state.cases.length} cases answered`;
  const done = answered === state.cases.length;
  document.getElementById("done").hidden = !done;
  return done;
}

function nextUnanswered(from) {
  for (let step = 1; step <= state.cases.length; step += 1) {
    const position = (from + step) % state.cases.length;
    if (state.cases[position].answer === null) return position;
  }
  return from;
}

async function submitAnswer(event) {
  event.preventDefault();
  const form = event.target;
  const entry = state.cases[state.current];
  const body = {
    call: form.call.value,
    confidence: Number(form.confidence.value),
    comment: form.comment.value,
  };
  try {
    const stored = await api(`/api/answers/${entry.case}`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    entry.answer = stored;
    document.getElementById("error").textContent = "";
    if (!showProgress()) showCase(nextUnanswered(state.current));
    else showCase(state.current);
  } catch (error) {
    document.getElementById("error").textContent = `not saved: ${error.message}`;
  }
}

function onKey(event) {
  if (event.target.tagName === "TEXTAREA") return;
  const planes = { a: "axial", c: "coronal", s: "sagittal" };
  if (event.key === "ArrowUp" || event.key === "ArrowDown") {
    event.preventDefault();
    scroll(state.active, event.key === "ArrowDown" ? 1 : -1);
  } else if (planes[event.key.toLowerCase()]) {
    state.active = planes[event.key.toLowerCase()];
    drawViews();
  } else if (event.key.toLowerCase() === "w") {
    const names = state.study.windows;
    state.window = names[(names.indexOf(state.window) + 1) % names.length];
    document.getElementById("window").value = state.window;
    drawViews();
  }
}

async function start() {
  try {
    state.study = await api("/api/study");
    const me = await api("/api/me");
    document.getElementById("reader").textContent = me.reader;
    state.cases = me.cases;
    state.window = state.study.windows[0];
    const select = document.getElementById("window");
    for (const name of state.study.windows) select.add(new Option(name, name));
    select.addEventListener("change", () => { state.window = select.value; drawViews(); });
    buildViews();
    const first = state.cases.findIndex((c) => c.answer === null);
    showProgress();
    showCase(first === -1 ? 0 : first);
    document.getElementById("answer").addEventListener("submit", submitAnswer);
    document.getElementById("previous").addEventListener("click", () =>
      showCase((state.current + state.cases.length - 1) % state.cases.length));
    document.getElementById("next").addEventListener("click", () =>
      showCase((state.current + 1) % state.cases.length));
    document.addEventListener("keydown", onKey);
  } catch (error) {
    document.getElementById("error").textContent = `${error.message}`;
  }
}
start();
