// Sparklines: a series of [at, value] points drawn as a small inline SVG line over a window
// of time (the fleet overview's CPU and memory over the last hour), 0 to 100 %. A series
// younger than the window spans the width (but at least 10 s), so a new host shows a
// line, not a dot; a stretch without points longer than `gap` seconds breaks the line.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 120;
const HEIGHT = 28;
/** The narrowest span drawn. */
const MIN_SPAN_SECONDS = 10;

function svgElement(tag, attributes) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  return element;
}

/**
 * An <svg> drawing `points` ([[at, value]…], oldest first) of the `window` seconds before
 * `until` (Unix seconds). `data-points` says how many points it drew.
 */
export function sparkline(points, { until, window = 3600, gap = 180, max = 100, label = '' }) {
  const shown = points.filter(([at, value]) => at >= until - window && Number.isFinite(value));
  const since = Math.min(shown[0]?.[0] ?? until, until - MIN_SPAN_SECONDS);
  const span = until - since;
  const svg = svgElement('svg', { class: 'sparkline', viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: 'none', role: 'img' });
  svg.dataset.points = String(shown.length);
  const title = svgElement('title', {});
  title.textContent = label;
  svg.append(title);
  const x = (at) => (((at - since) / span) * WIDTH).toFixed(1);
  const y = (value) => (HEIGHT - 1 - (Math.min(max, Math.max(0, value)) / max) * (HEIGHT - 2)).toFixed(1);
  let segment = [];
  const flush = () => {
    if (segment.length === 1) svg.append(svgElement('circle', { cx: segment[0][0], cy: segment[0][1], r: 1.2 }));
    if (segment.length > 1) svg.append(svgElement('polyline', { points: segment.map((p) => p.join(',')).join(' ') }));
    segment = [];
  };
  shown.forEach(([at, value], i) => {
    if (i > 0 && at - shown[i - 1][0] > gap) flush();
    segment.push([x(at), y(value)]);
  });
  flush();
  return svg;
}
