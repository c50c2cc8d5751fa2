// nervesfleet dashboard. One event stream (/api/events: the fleet first,
// then state changes and a memory summary every 2 s) keeps the page live;
// the only other requests are the levers, one guest's details when it is
// picked, and a fresh list when the stream says the fleet changed size.
// With a token, open the page as http://HOST:PORT/#token=TOKEN: it is kept
// for the tab and sent as `Authorization: Bearer` on every API call.
'use strict';

const STATES = ['created', 'queued', 'starting', 'booting', 'ready', 'unhealthy', 'stopping',
  'stopped', 'backoff', 'failed'];
const css = getComputedStyle(document.documentElement);
const COLORS = Object.fromEntries(STATES.map((s) => [s, css.getPropertyValue('--' + s).trim()]));
const $ = (id) => document.getElementById(id);

const nf = {
  guests: new Map(), // id -> guest document (as in ps --json)
  order: [],         // ids in grid order
  fleet: '',
  stats: [],         // recent `stats` events, for the chart
  selected: null,
  live: false,
};
window.nf = nf; // for people poking around, and the browser test

// --- token ------------------------------------------------------------------------
(function takeToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem('nf-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname);
  }
})();
function headers(json) {
  const h = {};
  const t = sessionStorage.getItem('nf-token');
  if (t) h.Authorization = 'Bearer ' + t;
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method, headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const doc = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((doc.error && doc.error.message) || res.statusText);
  return doc;
}

// Server-sent events over fetch (EventSource cannot send a token).
async function stream(path, onEvent, signal) {
  const res = await fetch(path, { headers: headers(false), signal });
  if (!res.ok) throw new Error('HTTP ' + res.status);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) name = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

// --- fleet state ---------------------------------------------------------------------
function setFleet(ps) {
  nf.fleet = ps.fleet;
  nf.guests = new Map(ps.guests.map((g) => [g.id, g]));
  reorder();
  $('fleet').textContent = '· ' + ps.fleet;
  $('scale-n').placeholder = String(ps.count);
  draw();
}
function reorder() {
  nf.order = [...nf.guests.keys()].sort((a, b) => a - b);
}

function onState(ev) {
  let g = nf.guests.get(ev.id);
  if (!g) {
    g = { id: ev.id, name: ev.name, state: ev.to, restarts: 0, last_exit: null };
    nf.guests.set(ev.id, g);
    reorder();
  }
  g.state = ev.to;
  g.running = ['starting', 'booting', 'ready', 'unhealthy', 'stopping'].includes(ev.to);
  g.pid = ev.pid || null;
  if (ev.exit) g.last_exit = { kind: ev.exit, reason: ev.reason, time: ev.time };
  draw();
  if (nf.selected === ev.id) refreshGuest();
}

function onStats(st) {
  nf.stats.push(st);
  if (nf.stats.length > 150) nf.stats.shift();
  // Scaled down guests leave without an event of their own: one fresh list.
  if (st.counts && st.counts.total !== nf.guests.size) {
    api('GET', '/api/guests').then(setFleet).catch(() => {});
  }
  showMemory(st);
  drawChart();
}

async function events() {
  for (;;) {
    try {
      await stream('/api/events', (name, doc) => {
        if (name === 'ps') { setFleet(doc); setLive(true); }
        else if (name === 'state') onState(doc);
        else if (name === 'stats') onStats(doc);
        else if (name === 'notice') say(doc.message);
      });
    } catch (e) { /* shown below; retried */ }
    setLive(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}
function setLive(on) {
  nf.live = on;
  $('conn').textContent = on ? 'live' : 'reconnecting…';
  $('conn').className = 'conn ' + (on ? 'live' : 'down');
}

// --- grid --------------------------------------------------------------------------------
const grid = $('grid');
let layout = { cell: 20, cols: 1, gap: 2 };
let drawPending = false;
function draw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; paint(); });
}
function paint() {
  const dpr = window.devicePixelRatio || 1;
  const w = grid.clientWidth, h = grid.clientHeight;
  if (grid.width !== Math.round(w * dpr) || grid.height !== Math.round(h * dpr)) {
    grid.width = Math.round(w * dpr);
    grid.height = Math.round(h * dpr);
  }
  const n = Math.max(nf.order.length, 1);
  // The largest square cells that fit every guest in the panel.
  let cell = Math.floor(Math.sqrt((w * h) / n));
  while (cell > 4 && Math.floor(w / cell) * Math.floor(h / cell) < n) cell--;
  cell = Math.max(4, Math.min(cell, 64));
  const gap = cell >= 10 ? 2 : 1;
  const cols = Math.max(1, Math.floor(w / cell));
  layout = { cell, cols, gap };
  const ctx = grid.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  nf.order.forEach((id, i) => {
    const g = nf.guests.get(id);
    const x = (i % cols) * cell, y = Math.floor(i / cols) * cell;
    ctx.fillStyle = COLORS[g.state] || '#fff';
    ctx.fillRect(x, y, cell - gap, cell - gap);
    if (cell >= 30) {
      ctx.fillStyle = '#0d1117cc';
      ctx.font = `${Math.min(14, Math.floor(cell / 3))}px system-ui, sans-serif`;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(String(id), x + (cell - gap) / 2, y + (cell - gap) / 2);
    }
    if (id === nf.selected) {
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = 2;
      ctx.strokeRect(x + 1, y + 1, cell - gap - 2, cell - gap - 2);
    }
  });
  counters();
}
function cellAt(ev) {
  const r = grid.getBoundingClientRect();
  const col = Math.floor((ev.clientX - r.left) / layout.cell);
  const row = Math.floor((ev.clientY - r.top) / layout.cell);
  if (col >= layout.cols) return null;
  const id = nf.order[row * layout.cols + col];
  return id === undefined ? null : nf.guests.get(id);
}
grid.addEventListener('mousemove', (ev) => {
  const g = cellAt(ev), hv = $('hover');
  if (!g) { hv.style.display = 'none'; return; }
  hv.textContent = `${g.name} ${g.serial || ''} ${g.state}`;
  hv.style.display = 'block';
  hv.style.left = ev.offsetX + 14 + 'px';
  hv.style.top = ev.offsetY + 40 + 'px';
});
grid.addEventListener('mouseleave', () => { $('hover').style.display = 'none'; });
grid.addEventListener('click', (ev) => { const g = cellAt(ev); if (g) select(g.id); });
window.addEventListener('resize', () => { draw(); drawChart(); });

// The colour a guest's cell shows now, as [r, g, b] (read back from the canvas).
nf.cellColor = (id) => {
  const i = nf.order.indexOf(id);
  if (i < 0) return null;
  const dpr = window.devicePixelRatio || 1;
  // Near the cell's corner: its middle may carry the guest's id.
  const x = (i % layout.cols) * layout.cell + 2;
  const y = Math.floor(i / layout.cols) * layout.cell + 2;
  const px = grid.getContext('2d').getImageData(Math.floor(x * dpr), Math.floor(y * dpr), 1, 1).data;
  return [px[0], px[1], px[2]];
};
nf.stateColor = (state) => {
  const c = COLORS[state];
  return [1, 3, 5].map((k) => parseInt(c.slice(k, k + 2), 16));
};

function counters() {
  const c = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const g of nf.guests.values()) c[g.state] = (c[g.state] || 0) + 1;
  const shown = [['total', nf.guests.size, null], ['ready', c.ready, 'ready'],
    ['booting', c.queued + c.starting + c.booting, 'booting'], ['restarting', c.backoff, 'backoff'],
    ['unhealthy', c.unhealthy, 'unhealthy'], ['stopped', c.stopped + c.stopping + c.created, 'stopped'],
    ['failed', c.failed, 'failed']];
  $('counters').innerHTML = shown.map(([label, v, s]) =>
    `<div class="counter" data-count="${label}"><b>${v}</b><small>${s ? `<i class="st-${s}"></i>` : ''}${label}</small></div>`).join('');
  $('guest-count').textContent = `(${nf.guests.size})`;
}
$('legend').innerHTML = STATES.filter((s) => s !== 'created').map((s) =>
  `<span><i class="st-${s}"></i>${s === 'backoff' ? 'restarting' : s}</span>`).join('');

// --- memory ----------------------------------------------------------------------------
const MiB = 1024 * 1024;
const fmt = (b) => b >= 1024 * MiB ? (b / 1024 / MiB).toFixed(1) + ' GiB' : Math.round(b / MiB) + ' MiB';
function showMemory(st) {
  const used = st.host_memory_total_bytes - st.host_memory_available_bytes;
  const per = st.running ? st.guests_rss_bytes / st.running : 0;
  $('mem-figures').innerHTML = [
    ['host used', `${fmt(used)} of ${fmt(st.host_memory_total_bytes)}`],
    ['guests RSS', `${fmt(st.guests_rss_bytes)} (${st.running} running)`],
    ['per guest', per ? `${(per / MiB).toFixed(1)} MiB` : '-'],
    ['balloons', fmt(st.guests_balloon_bytes)],
    ['KSM saved', fmt(st.ksm_saved_bytes)],
  ].map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join('');
}
function drawChart() {
  const cv = $('chart'), dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth, h = cv.clientHeight;
  cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr);
  const ctx = cv.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.strokeStyle = '#30363d';
  ctx.strokeRect(0.5, 0.5, w - 1, h - 1);
  const s = nf.stats;
  if (s.length < 2) return;
  // Scaled to what is drawn, labelled: the host's total is in the figures.
  let top = 1;
  for (const p of s) top = Math.max(top, p.host_memory_total_bytes - p.host_memory_available_bytes, p.guests_rss_bytes);
  const max = top * 1.15;
  const span = Math.max(s.length - 1, 30);
  ctx.fillStyle = '#8b949e';
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillText(fmt(max), 4, 12);
  ctx.fillText(`${Math.round((span * 2) / 60)} min`, w - 40, h - 4);
  const line = (f, color) => {
    ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.beginPath();
    s.forEach((p, i) => {
      const x = (i / span) * (w - 2) + 1, y = h - 1 - (f(p) / max) * (h - 2);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  };
  line((p) => p.host_memory_total_bytes - p.host_memory_available_bytes, '#58a6ff');
  line((p) => p.guests_rss_bytes, '#2ea043');
}

// --- one guest ---------------------------------------------------------------------------
let consoleAbort = null;
async function select(id) {
  nf.selected = id;
  draw();
  if (consoleAbort) consoleAbort.abort();
  consoleAbort = new AbortController();
  const pre = $('console');
  pre.textContent = '';
  refreshGuest();
  stream(`/api/guests/${id}/console`, (name, text) => {
    if (name !== 'console') return;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    // Terminal control sequences and carriage returns mean nothing here.
    const clean = text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
    pre.textContent = (pre.textContent + clean).slice(-20000);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }, consoleAbort.signal).catch(() => {});
}
let refreshTimer = null;
function refreshGuest() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    if (nf.selected === null) return;
    try {
      const g = await api('GET', `/api/guests/${nf.selected}`);
      nf.guests.set(g.id, g);
      showGuest(g);
    } catch (e) { $('g-figures').textContent = e.message; }
  }, 150);
}
function showGuest(g) {
  $('g-name').textContent = `${g.name} · ${g.serial || ''}`;
  const le = g.last_exit;
  $('g-figures').innerHTML = [
    ['state', g.state], ['pid', g.pid || '-'],
    ['uptime', g.uptime_s ? Math.round(g.uptime_s) + ' s' : '-'], ['restarts', g.restarts],
    ['balloon', g.balloon_bytes ? fmt(g.balloon_bytes) : '-'], ['RSS', g.rss_bytes ? fmt(g.rss_bytes) : '-'],
    ['last exit', le ? `${le.kind}: ${le.reason || ''}` : '-'],
  ].map(([k, v]) => `<dt>${k}</dt><dd></dd>`).join('');
  // Values as text: reasons quote qemu's stderr.
  const dds = $('g-figures').querySelectorAll('dd');
  [g.state, g.pid || '-', g.uptime_s ? Math.round(g.uptime_s) + ' s' : '-', g.restarts,
    g.balloon_bytes ? fmt(g.balloon_bytes) : '-', g.rss_bytes ? fmt(g.rss_bytes) : '-',
    le ? `${le.kind}: ${le.reason || ''}` : '-'].forEach((v, i) => { dds[i].textContent = v; });
}

// --- levers -------------------------------------------------------------------------------
function say(text, err) {
  $('result').textContent = text;
  $('result').className = 'result' + (err ? ' err' : '');
}
async function lever(label, fn) {
  say(label + '…');
  try { say(label + ': ' + JSON.stringify(await fn())); } catch (e) { say(label + ': ' + e.message, true); }
}
$('scale-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const n = parseInt($('scale-n').value, 10);
  lever(`scale ${n}`, () => api('POST', '/api/scale', { count: n }));
});
document.querySelectorAll('#target-form button').forEach((b) => b.addEventListener('click', () => {
  const t = encodeURIComponent($('targets').value.trim() || 'all');
  const act = b.dataset.act;
  if (act === 'kill' && !confirm(`SIGKILL guests ${$('targets').value}?`)) return;
  lever(`${act} ${$('targets').value}`, () => api('POST', `/api/guests/${t}/${act}`, {}));
}));
$('balloon-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = encodeURIComponent($('targets').value.trim() || 'all');
  const mib = parseInt($('balloon-mib').value, 10);
  lever(`balloon ${mib} MiB`, () => api('POST', `/api/guests/${t}/balloon`, { bytes: mib * MiB }));
});

nf.select = select;
events();
