// Sparklines: a series of [at, value] points drawn as a small inline SVG line over a fixed
// window of time (the fleet overview's CPU and memory over the last hour), 0 to 100 %.
// A stretch without points longer than `gap` seconds breaks the line, as the charts do.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 120;
const HEIGHT = 28;

function svgElement(tag, attributes) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  return element;
}

/**
 * An <svg> drawing `points` ([[at, value]…], oldest first) from `until - window` to `until`
 * (Unix seconds). `data-points` says how many points it drew.
 */
export function sparkline(points, { until, window = 3600, gap = 180, max = 100, label = '' }) {
  const since = until - window;
  const shown = points.filter(([at, value]) => at >= since && Number.isFinite(value));
  const svg = svgElement('svg', { class: 'sparkline', viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: 'none', role: 'img' });
  svg.dataset.points = String(shown.length);
  const title = svgElement('title', {});
  title.textContent = label;
  svg.append(title);
  const x = (at) => (((at - since) / window) * WIDTH).toFixed(1);
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
