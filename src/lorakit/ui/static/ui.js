// lorakit ui: small behaviours on top of htmx. Everything is served by this server.
"use strict";

htmx.config.responseHandling = [
  { code: "204", swap: false },
  { code: "[23]..", swap: true },
  { code: "422", swap: true, error: false },
  { code: "[45]..", swap: false, error: true },
];

// Epochs and steps are whole numbers: the x axis ticks only at integers.
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

function lossChart(el, series, labels) {
  // series: [x[], y1[], y2[]...]; returns the uPlot instance (setData to update).
  const colours = ["#8aa4ff", "#ff9f43", "#2ecc71"];
  const opts = {
    width: Math.max(320, el.clientWidth || 640),
    height: 220,
    scales: { x: { time: false } },
    axes: [{ label: labels[0], incrs: WHOLE_STEPS }, { label: "loss" }],
    series: [{ label: labels[0] }].concat(
      labels.slice(1).map((label, i) => ({ label, stroke: colours[i], width: 1.5, spanGaps: true }))
    ),
  };
  return new uPlot(opts, series, el);
}

function setText(id, value) {
  const el = document.getElementById(id);
  if (el && value !== undefined && value !== null) el.textContent = value;
}

function watchJob(box) {
  const id = box.dataset.job;
  const chartEl = document.getElementById("live-chart");
  const source = new EventSource(`/jobs/${id}/events`);
  source.addEventListener("update", (event) => {
    const data = JSON.parse(event.data);
    setText("job-state", data.label);
    box.dataset.state = data.state;
    const p = data.progress;
    if (p) {
      setText("p-step", p.step);
      setText("p-total", p.total ?? "?");
      setText("p-percent", p.percent);
      setText("p-loss", p.loss);
      setText("p-rate", p.rate);
      setText("p-eta", p.eta);
      const bar = document.getElementById("p-bar");
      if (bar) bar.value = p.percent;
      if (chartEl && p.chart[0].length) {
        if (!chartEl.chart) chartEl.chart = lossChart(chartEl, p.chart, ["step", "loss", "average"]);
        else chartEl.chart.setData(p.chart);
        chartEl.dataset.points = p.chart[0].length;
      }
    }
    const log = document.getElementById("job-log");
    if (log && data.log) log.textContent = data.log.join("\n");
    const samples = document.getElementById("samples");
    if (samples && data.samples) {
      for (const name of data.samples) {
        if (samples.querySelector(`[data-sample="${CSS.escape(name)}"]`)) continue;
        const img = document.createElement("img");
        img.src = `/p/${box.dataset.project}/out/samples/${encodeURIComponent(name)}`;
        img.dataset.sample = name;
        img.alt = name;
        img.title = name;
        samples.appendChild(img);
      }
    }
    const msg = document.getElementById("job-message");
    if (msg) msg.textContent = data.message || "";
    if (data.final) {
      source.close();
      document.body.dispatchEvent(new Event("job-finished"));
    }
  });
}

function captionKeys(form) {
  const go = (rel) => {
    const link = document.querySelector(`a[data-nav="${rel}"]`);
    if (link) window.location = link.href;
  };
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      e.preventDefault();
      htmx.trigger(form, "submit");
    } else if (e.altKey && e.key === "ArrowRight") {
      e.preventDefault();
      go("next");
    } else if (e.altKey && e.key === "ArrowLeft") {
      e.preventDefault();
      go("prev");
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.body.addEventListener("click", (e) => {
    const pick = e.target.closest("[data-pick]");
    if (pick) document.getElementById("folder-input").value = pick.dataset.pick;
  });
  const zone = document.getElementById("dropzone");
  if (zone) {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      document.getElementById("upload-files").files = e.dataTransfer.files;
    });
  }
  for (const el of document.querySelectorAll("[data-chart]")) {
    const spec = JSON.parse(el.dataset.chart);
    if (spec.series[0].length) el.chart = lossChart(el, spec.series, spec.labels);
  }
  const live = document.getElementById("job-live");
  if (live && ["queued", "running"].includes(live.dataset.state)) watchJob(live);
  const captionForm = document.getElementById("caption-form");
  if (captionForm) captionKeys(captionForm);
  document.body.dataset.ready = "1";
});
