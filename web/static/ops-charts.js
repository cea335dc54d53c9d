/* ops-charts.js: the back-office dashboard's charts, drawn from its tables.
 *
 * Every <table data-chart="bar|stacked|line"> gets an SVG chart before it:
 * the first column is the x labels, every other column a series (its header
 * is the series' name; a header with data-chart-skip is left out), cells are
 * numbers as the page writes them (18 503, −40, 12,5). The table stays: it is
 * the data without JavaScript and for screen readers (the chart is hidden
 * from them). No dependency; CSP default-src 'self' holds: no inline style,
 * no eval; colours come from the classes ops-s0..ops-s7 of ops.css. */
(function () {
  'use strict';
  const SVG = 'http://www.w3.org/2000/svg';
  const WIDTH = 720, HEIGHT = 260;
  const PAD = { top: 12, right: 12, bottom: 28, left: 72 };
  const SERIES_CLASSES = 8;
  const CHAR_WIDTH = 6.5; // about, of an 11px label: x labels are spaced so that they do not overlap

  function parseNumber(text) {
    const clean = text.replace(/[\s\u00a0\u2009\u202f]/g, '').replace('\u2212', '-').replace(',', '.');
    const value = Number.parseFloat(clean);
    return Number.isFinite(value) ? value : 0;
  }

  // 18503 -> "18 503" with a narrow no-break space; the typographic minus.
  function formatNumber(value) {
    const rounded = Math.round(value * 10) / 10;
    const [whole, fraction] = Math.abs(rounded).toString().split('.');
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, '\u202f');
    return (rounded < 0 ? '\u2212' : '') + grouped + (fraction ? ',' + fraction : '');
  }

  function readTable(table) {
    const headers = Array.from(table.querySelectorAll('thead tr:last-child th'));
    const columns = [];
    headers.forEach((th, index) => {
      if (index > 0 && !th.hasAttribute('data-chart-skip')) columns.push({ index, name: th.textContent.trim() });
    });
    const rows = Array.from(table.querySelectorAll('tbody tr'));
    const labels = rows.map((tr) => (tr.cells[0] ? tr.cells[0].textContent.trim() : ''));
    const series = columns.map((column) => ({
      name: column.name,
      values: rows.map((tr) => (tr.cells[column.index] ? parseNumber(tr.cells[column.index].textContent) : 0)),
    }));
    return { labels, series };
  }

  // A step of 1, 2 or 5 times a power of ten giving about `count` ticks over [low, high].
  function niceTicks(low, high, count) {
    const span = high - low || 1;
    const raw = span / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const ticks = [];
    for (let t = Math.floor(low / step) * step; t <= high + step / 2; t += step) ticks.push(Math.round(t / step) * step);
    return ticks;
  }

  function el(name, attrs, parent, text) {
    const node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach((key) => node.setAttribute(key, String(attrs[key])));
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function range(kind, series, count) {
    let low = 0, high = 0;
    for (let i = 0; i < count; i += 1) {
      let up = 0, down = 0;
      series.forEach((s) => {
        const v = s.values[i];
        if (kind === 'stacked') { if (v >= 0) up += v; else down += v; } else { up = Math.max(up, v); down = Math.min(down, v); }
      });
      high = Math.max(high, up);
      low = Math.min(low, down);
    }
    return high === low ? [low, low + 1] : [low, high];
  }

  function draw(table, kind) {
    const data = readTable(table);
    const count = data.labels.length;
    if (!count || !data.series.some((s) => s.values.some((v) => v !== 0))) return null; // nothing to draw
    const svg = el('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: `ops-chart-svg ops-${kind}`, 'aria-hidden': 'true', focusable: 'false' });
    const plotW = WIDTH - PAD.left - PAD.right, plotH = HEIGHT - PAD.top - PAD.bottom;
    const ticks = niceTicks(...range(kind, data.series, count), 4);
    const low = ticks[0], high = ticks[ticks.length - 1];
    const y = (v) => PAD.top + plotH - ((v - low) / (high - low || 1)) * plotH;
    const slot = plotW / count;
    const x = (i) => PAD.left + slot * (i + 0.5);

    ticks.forEach((t) => {
      el('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(t), y2: y(t), class: t === 0 ? 'ops-axis' : 'ops-grid' }, svg);
      el('text', { x: PAD.left - 6, y: y(t) + 4, 'text-anchor': 'end', class: 'ops-tick' }, svg, formatNumber(t));
    });
    const longest = Math.max(...data.labels.map((label) => label.length));
    const fit = Math.max(Math.floor(plotW / (longest * CHAR_WIDTH + 16)), 1);
    const every = Math.ceil(count / fit);
    data.labels.forEach((label, i) => {
      if (i % every === 0) {
        const last = i === count - 1 && count > 1; // the last label ends at the edge rather than past it
        el('text', { x: last ? WIDTH - PAD.right : x(i), y: HEIGHT - 8, 'text-anchor': last ? 'end' : 'middle', class: 'ops-tick' }, svg, label);
      }
    });

    const barW = Math.max(slot * 0.8, 1);
    data.series.forEach((s, k) => {
      const cls = `ops-s${k % SERIES_CLASSES}`;
      if (kind === 'line') {
        const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
        el('polyline', { points, fill: 'none', 'stroke-width': 2, class: `ops-line ${cls}` }, svg);
      }
      s.values.forEach((v, i) => {
        let top, bottom, left = x(i) - barW / 2, width = barW;
        if (kind === 'line') {
          el('title', {}, el('circle', { cx: x(i), cy: y(v), r: count > 40 ? 1.5 : 3, class: `ops-dot ${cls}` }, svg),
            `${data.labels[i]} · ${s.name}: ${formatNumber(v)}`);
          return;
        }
        if (kind === 'stacked') {
          const before = data.series.slice(0, k).map((o) => o.values[i]).filter((o) => (v >= 0 ? o >= 0 : o < 0));
          const base = before.reduce((a, b) => a + b, 0);
          [top, bottom] = v >= 0 ? [y(base + v), y(base)] : [y(base), y(base + v)];
        } else {
          width = barW / data.series.length;
          left += width * k;
          [top, bottom] = v >= 0 ? [y(v), y(0)] : [y(0), y(v)];
        }
        if (v !== 0) {
          el('title', {}, el('rect', { x: left, y: top, width, height: Math.max(bottom - top, 0.5), class: `ops-bar ${cls}` }, svg),
            `${data.labels[i]} · ${s.name}: ${formatNumber(v)}`);
        }
      });
    });

    const figure = document.createElement('figure');
    figure.className = 'ops-chart';
    figure.appendChild(svg);
    const legend = document.createElement('ul');
    legend.className = 'ops-legend';
    data.series.forEach((s, k) => {
      const item = document.createElement('li');
      const swatch = document.createElement('span');
      swatch.className = `ops-swatch ops-s${k % SERIES_CLASSES}`;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.name));
      legend.appendChild(item);
    });
    figure.appendChild(legend);
    const anchor = table.closest('.ops-scroll') || table; // before a long table's scrolling box, not inside it
    anchor.parentNode.insertBefore(figure, anchor);
    return figure;
  }

  function drawAll(root) {
    root.querySelectorAll('table[data-chart]').forEach((table) => {
      const kind = table.getAttribute('data-chart');
      if (['bar', 'stacked', 'line'].includes(kind) && !table.hasAttribute('data-charted')) {
        table.setAttribute('data-charted', '');
        draw(table, kind);
      }
    });
  }

  window.opsCharts = { drawAll, formatNumber, parseNumber };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => drawAll(document));
  else drawAll(document);
}());
