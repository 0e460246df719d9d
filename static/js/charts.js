// Run curves with uPlot (static/vendor/uplot): each <figure data-chart> holds its data as a JSON
// block ({name, steps, values}); this draws it with axis values, a hover readout (the legend
// under the chart) and a smoothed line beside the raw one (an exponential moving average,
// debiased at the start as TensorBoard's is). Drag across a chart to zoom, double-click to reset.
// The run page's live part is swapped by htmx every few seconds: a chart drawn before is moved
// into the new part and given the new data, so it keeps its place and does not flicker.
(function () {
  "use strict";
  const SMOOTHING = 0.6; // weight of the past in the moving average
  const plots = new Map(); // metric name -> uPlot

  function smoothed(values) {
    let last = 0;
    return values.map(function (v, i) {
      last = last * SMOOTHING + (1 - SMOOTHING) * v;
      return last / (1 - Math.pow(SMOOTHING, i + 1));
    });
  }

  function widthOf(box) {
    return Math.max(240, Math.floor(box.getBoundingClientRect().width));
  }

  function options(name, width) {
    return {
      width: width,
      height: 170,
      scales: { x: { time: false } },
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      axes: [{ label: "step", size: 40 }, { size: 60 }],
      series: [
        { label: "step" },
        { label: name, stroke: "#9db4ef", width: 1 },
        { label: "smoothed", stroke: "#2456d6", width: 2 },
      ],
    };
  }

  function draw(root) {
    if (typeof window.uPlot !== "function") return;
    root.querySelectorAll("figure[data-chart]").forEach(function (figure) {
      const block = figure.querySelector('script[type="application/json"]');
      const box = figure.querySelector(".chart-plot");
      if (!block || !box) return;
      const d = JSON.parse(block.textContent);
      const data = [d.steps, d.values, smoothed(d.values)];
      const plot = plots.get(d.name);
      if (plot) {
        box.appendChild(plot.root);
        plot.setData(data);
        return;
      }
      plots.set(d.name, new window.uPlot(options(d.name, widthOf(box)), data, box));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    draw(document);
  });
  // htmx fires htmx:load on every piece of content it swaps in.
  document.addEventListener("htmx:load", function (event) {
    if (event.target !== document.body) draw(event.target);
  });
  window.addEventListener("resize", function () {
    plots.forEach(function (plot) {
      const box = plot.root.parentElement;
      if (box) plot.setSize({ width: widthOf(box), height: 170 });
    });
  });
})();
