// Ticks every "so far" on the page once a second: the elapsed time of a phase still going.
// The server renders each such element with data-elapsed (its seconds when the page, or the
// fragment htmx swapped in, was made); the time since this script first saw the element is added,
// so a browser's clock that is off does not matter. Formats as views.duration does (no build step,
// so the few lines of formatting are written here again).
(() => {
  "use strict";
  const duration = (seconds) => {
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const whole = Math.floor(seconds);
    if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
    if (whole < 86400) return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
    return `${Math.floor(whole / 86400)} d ${Math.floor((whole % 86400) / 3600)} h`;
  };
  const firstSeen = new WeakMap();
  const tick = () => {
    const now = performance.now();
    for (const element of document.querySelectorAll("[data-elapsed]")) {
      if (!firstSeen.has(element)) firstSeen.set(element, now);
      const seconds = parseFloat(element.dataset.elapsed) + (now - firstSeen.get(element)) / 1000;
      if (Number.isFinite(seconds)) element.textContent = `${duration(seconds)} so far`;
    }
  };
  tick();
  setInterval(tick, 1000);
})();
