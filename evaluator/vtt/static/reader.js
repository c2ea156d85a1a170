// The reading page: NiiVue (served by this app, never fetched from elsewhere) draws the current
// case's three planes from the NIfTI file the reader's own API sends; slices scroll with the
// wheel or the keyboard; window presets; the label map when the study shows one; the answer form.
"use strict";
const { Niivue, SLICE_TYPE, MULTIPLANAR_TYPE, SHOW_RENDER } = window.niivue;
const PLANES = ["axial", "coronal", "sagittal"];
const AXIS = { sagittal: 0, coronal: 1, axial: 2 }; // the voxel axis a plane's slices step along
const LABEL_COLOURS = [[230, 60, 60], [60, 200, 90], [70, 130, 240], [240, 200, 40]];
const LABEL_OPACITY = 0.45;
const state = { study: null, cases: [], current: 0, window: 0, active: "axial", loads: 0 };
const viewer = new Niivue({
  backColor: [0, 0, 0, 1],
  crosshairColor: [1, 0.75, 0, 0.6],
  crosshairWidth: 0.1,
  isRadiologicalConvention: true, // the patient's left on the right, as radiologists read
  isNearestInterpolation: true, // the voxels as they are, not smoothed between them
  multiplanarLayout: MULTIPLANAR_TYPE.ROW,
  multiplanarShowRender: SHOW_RENDER.NEVER,
  dragAndDropEnabled: false, // readers look at their cases only
  viewModeHotKey: "", // A, C, S, W, O are the page's keys; no view changes by NiiVue's own
  clipPlaneHotKey: "",
  cycleClipPlaneHotKey: "",
  isColorbar: false,
});

async function api(path, options) {
  const reply = await fetch(path, options);
  if (!reply.ok) {
    const detail = await reply.json().catch(() => ({}));
    throw new Error(detail.detail || `${reply.status} ${reply.statusText}`);
  }
  return reply.json();
}

function showSlices() {
  if (viewer.volumes.length === 0) return;
  const voxel = viewer.frac2vox(viewer.scene.crosshairPos);
  for (const plane of PLANES) {
    const axis = AXIS[plane];
    const caption = document.getElementById(`slice-${plane}`);
    caption.textContent = `${plane} ${voxel[axis] + 1} / ${state.study.shape[axis]}`;
    caption.classList.toggle("active", plane === state.active);
  }
}

function applyWindow() {
  const { low, high } = state.study.windows[state.window];
  const image = viewer.volumes[0];
  image.cal_min = low;
  image.cal_max = high;
  document.getElementById("window").value = String(state.window);
  viewer.updateGLVolume();
}

function applyLabels() {
  if (viewer.volumes.length < 2) return;
  const shown = document.getElementById("labels").checked;
  viewer.setOpacity(1, shown ? LABEL_OPACITY : 0);
}

function labelColours() {
  const colours = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
  state.study.labels.forEach(({ value, name }, index) => {
    const [r, g, b] = LABEL_COLOURS[index % LABEL_COLOURS.length];
    colours.R.push(r);
    colours.G.push(g);
    colours.B.push(b);
    colours.A.push(255);
    colours.I.push(value);
    colours.labels.push(name);
  });
  return colours;
}

async function loadCase(caseId) {
  const load = ++state.loads;
  const canvas = document.getElementById("viewer");
  delete canvas.dataset.case;
  document.getElementById("submit").disabled = true;
  const volumes = [{ url: `/api/cases/${caseId}/image.nii` }];
  if (state.study.labels.length) volumes.push({ url: `/api/cases/${caseId}/labels.nii` });
  await viewer.loadVolumes(volumes);
  if (load !== state.loads) return; // the reader moved on while this case loaded
  if (viewer.volumes.length > 1) viewer.volumes[1].setColormapLabel(labelColours());
  applyWindow();
  applyLabels();
  showSlices();
  canvas.dataset.case = caseId;
  document.getElementById("submit").disabled = state.cases[state.current].answer !== null;
}

function move(plane, step) {
  const delta = [0, 0, 0];
  delta[AXIS[plane]] = step;
  state.active = plane;
  viewer.moveCrosshairInVox(...delta);
  showSlices();
}

function showCase(position) {
  state.current = position;
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
  loadCase(entry.case).catch((error) => {
    document.getElementById("error").textContent = `case not shown: ${error.message || error}`;
  });
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
  if (event.target.tagName === "TEXTAREA" || viewer.volumes.length === 0) return;
  const key = event.key.toLowerCase();
  const planes = { a: "axial", c: "coronal", s: "sagittal" };
  if (event.key === "ArrowUp" || event.key === "ArrowDown") {
    event.preventDefault();
    move(state.active, event.key === "ArrowDown" ? 1 : -1);
  } else if (planes[key]) {
    state.active = planes[key];
    showSlices();
  } else if (key === "w") {
    state.window = (state.window + 1) % state.study.windows.length;
    applyWindow();
  } else if (key === "o" && state.study.labels.length) {
    const box = document.getElementById("labels");
    box.checked = !box.checked;
    applyLabels();
  }
}

async function start() {
  try {
    state.study = await api("/api/study");
    const me = await api("/api/me");
    document.getElementById("reader").textContent = me.reader;
    state.cases = me.cases;
    const select = document.getElementById("window");
    state.study.windows.forEach(({ name }, index) => select.add(new Option(name, String(index))));
    select.addEventListener("change", () => { state.window = Number(select.value); applyWindow(); });
    if (state.study.labels.length) {
      document.getElementById("labels-choice").hidden = false;
      document.getElementById("labels-key").hidden = false;
      document.getElementById("labels").addEventListener("change", applyLabels);
    }
    viewer.onLocationChange = (where) => {
      if (where.axCorSag >= 0) state.active = PLANES[where.axCorSag];
      showSlices();
    };
    const canvas = document.getElementById("viewer");
    await viewer.attachToCanvas(canvas);
    // NiiVue's double click windows to the volume's own range; here it returns to the preset
    canvas.addEventListener("dblclick", () => { if (viewer.volumes.length) applyWindow(); });
    viewer.setSliceType(SLICE_TYPE.MULTIPLANAR);
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
    document.getElementById("error").textContent = `${error.message || error}`;
  }
}
start();
