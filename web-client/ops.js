// Operations dashboard: signs in (ops or admin), streams live snapshots
// from /api/ops/stream, and shows the week's figures. No patient names ever
// reach this page: rooms are visit ids, people are roles.

import { StaffSession } from '/js/staff_session.js';

const session = new StaffSession();
const state = { lastSnapshot: null, weekStart: null };
window.teleconsultOps = state;

const $ = (id) => document.getElementById(id);
const status = (text) => { $('status').textContent = text; };

const api = (path, options) => session.fetch(path, options);

async function signIn(event) {
  event.preventDefault();
  const error = await session.signIn($('email').value, $('password').value);
  if (error) return status(error);
  await start();
}

async function start() {
  $('signin').hidden = true;
  const probe = await api('/api/ops/weekly');
  if (probe.status === 403) {
    status('Your account may not see operations. Ask an administrator for the ops role.');
    return;
  }
  $('dashboard').hidden = false;
  status('Live.');
  renderWeek(await probe.json());
  stream();
}

// Reads the event stream with fetch, which (unlike EventSource) can send
// the bearer token. Reconnects after errors, refreshing the token if needed.
async function stream() {
  for (;;) {
    try {
      // A 401 has already been retried once with a renewed token.
      const r = await api('/api/ops/stream');
      if (!r.ok) throw new Error(`stream ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
          if (data) render(JSON.parse(data));
        }
      }
    } catch (error) {
      status(`Reconnecting… (${error.message})`);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

/** Appends a label and its value to a description list. */
function addFigure(list, label, value) {
  const div = document.createElement('div');
  const dt = document.createElement('dt');
  dt.textContent = label;
  const dd = document.createElement('dd');
  dd.textContent = value;
  div.append(dt, dd);
  list.append(div);
}

const fmt = (v, digits = 0) => (v == null ? '–' : Number(v).toFixed(digits));
const duration = (s) => `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;

function render(snapshot) {
  state.lastSnapshot = snapshot;
  status(`Live. Last update ${new Date(snapshot.at).toLocaleTimeString()}.`);
  const node = $('node');
  node.replaceChildren();
  const figure = (label, value) => addFigure(node, label, value);
  figure('CPU', `${fmt(snapshot.node.cpu_pct, 1)}% of one core`);
  figure('Memory', `${fmt(snapshot.node.rss_mib, 0)} MiB`);
  figure('Connections', String(snapshot.node.ws_connections));
  for (const w of snapshot.node.workers) figure(`Media worker ${w.worker} (UDP ${w.port})`, `${w.rooms} rooms, ${w.participants} participants`);

  renderCluster(snapshot.cluster ?? []);

  const body = $('rooms').tBodies[0];
  body.replaceChildren();
  if (snapshot.rooms.length === 0) {
    const row = body.insertRow();
    const td = cell(row, 'No live rooms.');
    td.colSpan = 12;
  }
  for (const room of snapshot.rooms) {
    const people = room.participants.length ? room.participants : [null];
    people.forEach((p, i) => {
      const row = body.insertRow();
      row.dataset.room = room.room_id;
      cell(row, i === 0 ? room.room_id : '');
      cell(row, i === 0 ? (room.specialty ?? '–').replace('_', ' ') : '');
      cell(row, i === 0 ? duration(room.duration_secs) : '');
      cell(row, i === 0 ? String(room.waiting) : '');
      if (!p) {
        cell(row, 'nobody in the call yet');
        for (let k = 0; k < 7; k++) cell(row, '');
        return;
      }
      cell(row, p.role || '–');
      // How the media reaches the server: direct UDP, direct TCP, or a TURN relay.
      cell(row, { udp: 'UDP', tcp: 'TCP', relay: 'relay (TURN)' }[p.path] ?? '–', 'path');
      cell(row, fmt(p.kbps_in), 'kbps-in');
      cell(row, fmt(p.kbps_out), 'kbps-out');
      cell(row, `${fmt(p.loss * 100, 1)}%`);
      cell(row, p.rtt_ms == null ? '–' : `${fmt(p.rtt_ms, 0)} ms`);
      cell(row, p.jitter_ms == null ? '–' : `${fmt(p.jitter_ms, 1)} ms`);
      cell(row, p.health, `health health-${p.health}`);
    });
  }
  renderCharts(snapshot.history);
}

/** The cluster's nodes (hidden on a single node). */
function renderCluster(nodes) {
  $('cluster-section').hidden = nodes.length === 0;
  const body = $('cluster').tBodies[0];
  body.replaceChildren();
  for (const n of nodes) {
    const row = body.insertRow();
    row.dataset.node = n.node_id;
    cell(row, n.this_node ? `${n.node_id} (this node)` : n.node_id);
    cell(row, n.state, `state state-${n.state}`);
    cell(row, `${fmt(n.cpu_pct, 1)}%`);
    cell(row, String(n.participants));
    cell(row, n.rooms.length ? n.rooms.join(', ') : '–', 'node-rooms');
  }
}

function renderCharts(history) {
  const charts = $('charts');
  charts.replaceChildren();
  const series = [
    ['Rooms', (h) => h.rooms],
    ['Participants', (h) => h.participants],
    ['Media in, kbit/s', (h) => h.kbps],
    ['Worst loss, %', (h) => h.loss * 100],
  ];
  for (const [title, pick] of series) {
    const values = history.map(pick);
    const max = Math.max(1, ...values);
    const box = document.createElement('figure');
    box.className = 'chart';
    const caption = document.createElement('p');
    caption.textContent = `${title}: now ${fmt(values.at(-1) ?? 0, title.includes('loss') ? 1 : 0)}, peak ${fmt(max, title.includes('loss') ? 1 : 0)}`;
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 360 80');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', caption.textContent);
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', '#0b4f8a');
    line.setAttribute('stroke-width', '2');
    line.setAttribute('points', values.map((v, i) => `${(i * 360) / Math.max(1, values.length - 1)},${78 - (v / max) * 74}`).join(' '));
    svg.append(line);
    box.append(caption, svg);
    charts.append(box);
  }
}

function renderWeek(week) {
  state.weekStart = week.week_start;
  const body = $('week').tBodies[0];
  body.replaceChildren();
  for (const d of week.days) {
    const row = body.insertRow();
    cell(row, d.date);
    cell(row, String(d.completed));
    cell(row, String(d.no_show));
    cell(row, String(d.cancelled));
    cell(row, String(d.scheduled));
  }
  const figures = $('week-figures');
  figures.replaceChildren();
  const add = (label, value) => addFigure(figures, label, value);
  add('Teleconsultations', String(week.teleconsultations));
  add('Median wait', week.median_wait_secs == null ? '–' : duration(week.median_wait_secs));
  add('Share of all consultations', week.teleconsultation_share == null ? 'enter the week\u2019s total below' : `${fmt(week.teleconsultation_share * 100, 0)}%`);
}

async function downloadCsv() {
  const r = await api(`/api/ops/weekly.csv?start=${state.weekStart}`);
  if (!r.ok) return status('Could not export the week.');
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = `teleconsult-week-${state.weekStart}.csv`;
  a.click();
  URL.revokeObjectURL(url);
}

async function saveTotal(event) {
  event.preventDefault();
  const r = await api('/api/ops/consultation-totals', {
    method: 'PUT',
    body: JSON.stringify({ week_start: state.weekStart, total: Number($('total').value) }),
  });
  if (!r.ok) return status('Could not save the total.');
  renderWeek(await (await api(`/api/ops/weekly?start=${state.weekStart}`)).json());
}

$('signin-form').addEventListener('submit', signIn);
$('csv').addEventListener('click', downloadCsv);
$('total-form').addEventListener('submit', saveTotal);
(async () => {
  if (await session.refresh()) {
    await start();
  } else {
    $('signin').hidden = false;
    status('Sign in with an ops or admin account.');
  }
})();
