// The clinician console at /: sign in, today's visits, and a visit's room:
// the waiting room (admit, ask to wait, deny), the call (mute, camera,
// device choice, screen share, chat, connection quality, timer) and ending
// the visit.

import { SignalingClient } from '/js/signaling.js';
import { MediaSession } from '/js/media_session.js';
import { StaffSession } from '/js/staff_session.js';

const session = new StaffSession();
const state = {
  visitId: null,
  signaling: null,
  media: null,
  stream: null,
  sharing: null,
  callStarted: null,
  quality: null,
  waiting: new Map(),
};
window.teleconsultConsole = {
  state,
  async stats() {
    return state.media ? state.media.inboundStats() : { framesDecoded: 0 };
  },
};

const $ = (id) => document.getElementById(id);
const status = (text) => { $('status').textContent = text; };
const showOnly = (...ids) => {
  for (const id of ['signin', 'today', 'visit', 'ended']) $(id).hidden = !ids.includes(id);
};

async function api(path, options = {}) {
  const r = await session.fetch(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(body.error?.message ?? `HTTP ${r.status}`), { code: body.error?.code });
  return body;
}

async function signIn(event) {
  event.preventDefault();
  const error = await session.signIn($('email').value, $('password').value);
  if (error) return status(error);
  await showToday();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function showToday() {
  $('who').textContent = `${session.me.display_name} (${session.me.specialty.replace('_', ' ')})`;
  showOnly('today');
  const offset = -new Date().getTimezoneOffset();
  const { visits } = await api(`/api/visits?tz_offset_minutes=${offset}`);
  const body = $('visits').tBodies[0];
  body.replaceChildren();
  if (visits.length === 0) cell(body.insertRow(), 'No visits today.').colSpan = 6;
  for (const v of visits) {
    const row = body.insertRow();
    row.dataset.visit = v.id;
    cell(row, new Date(v.scheduled_start).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
    cell(row, v.patient?.display_name ?? '–');
    cell(row, v.kind.replace('_', ' '));
    cell(row, v.status.replace('_', ' '));
    cell(row, v.red_flags.join(', ') || '–', v.red_flags.length ? 'flag' : '');
    const actions = row.insertCell();
    if (['scheduled', 'in_progress'].includes(v.status)) {
      const start = document.createElement('button');
      start.type = 'button';
      start.className = 'start';
      start.textContent = v.status === 'in_progress' ? 'Rejoin' : 'Start';
      start.setAttribute('aria-label', `${start.textContent} the visit with ${v.patient?.display_name ?? 'the patient'}`);
      start.addEventListener('click', () => startVisit(v.id));
      const guest = document.createElement('button');
      guest.type = 'button';
      guest.className = 'secondary guest-link';
      guest.textContent = 'Copy a guest link';
      guest.setAttribute('aria-label', `Copy a guest link for ${v.patient?.display_name ?? 'the patient'}`);
      guest.addEventListener('click', () => copyGuestLink(v.id));
      actions.append(start, guest);
    }
  }
  status(`${visits.length} visit(s) today.`);
  await showQueue();
}

async function showQueue() {
  const { follow_ups: items } = await api('/api/follow-ups');
  const body = $('queue').tBodies[0];
  body.replaceChildren();
  if (items.length === 0) cell(body.insertRow(), 'No follow-ups waiting.').colSpan = 5;
  for (const f of items) {
    const row = body.insertRow();
    row.dataset.followUp = f.id;
    cell(row, new Date(f.due).toLocaleDateString([], { dateStyle: 'medium' }));
    cell(row, f.priority, f.priority === 'urgent' ? 'flag' : '');
    cell(row, f.reason);
    cell(row, f.overdue ? 'overdue, unplaced' : f.status, f.overdue ? 'flag' : '');
    cell(row, f.visit_id ?? '–');
  }
}

async function copyGuestLink(visitId) {
  const { link } = await api(`/api/visits/${visitId}/guest-links`, { method: 'POST', body: JSON.stringify({ label: 'Guest' }) });
  state.lastGuestLink = link.url;
  try {
    await navigator.clipboard.writeText(link.url);
    $('copied').textContent = 'A guest link was copied. Send it to the family member or interpreter.';
  } catch {
    $('copied').textContent = `Guest link: ${link.url}`;
  }
}

// ----- the visit -----------------------------------------------------------

async function startVisit(visitId) {
  state.visitId = visitId;
  state.bookingKey = null;
  await api(`/api/visits/${visitId}/start`, { method: 'POST' });
  const { join_token: joinToken } = await api(`/api/visits/${visitId}/join-token`, { method: 'POST' });
  showOnly('visit');
  $('visit-title').textContent = `Visit ${visitId}`;
  state.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  $('self').srcObject = state.stream;
  await listDevices();
  const signaling = await SignalingClient.connect();
  state.signaling = signaling;
  signaling.addEventListener('participant_waiting', ({ detail }) => addWaiting(detail));
  signaling.addEventListener('participant_joined', ({ detail }) => removeWaiting(detail.participant.participant_id));
  signaling.addEventListener('participant_left', ({ detail }) => {
    removeWaiting(detail.participant_id);
    state.media?.dropParticipant(detail.participant_id);
  });
  signaling.addEventListener('chat_message', ({ detail }) => addChat(detail.display_name, detail.text));
  signaling.addEventListener('room_closed', () => finish());
  await signaling.request({ type: 'join', token: joinToken });
  const media = new MediaSession(signaling);
  state.media = media;
  media.addEventListener('remotestream', ({ detail }) => { $('remote').srcObject = detail.stream; });
  await media.publish(state.stream);
  state.callStarted = Date.now();
  status('In the visit.');
}

function addWaiting(detail) {
  const id = detail.participant.participant_id;
  state.waiting.set(id, { ...detail, since: Date.now() - detail.waited_secs * 1000 });
  renderWaiting();
}

function removeWaiting(id) {
  state.waiting.delete(id);
  renderWaiting();
}

function renderWaiting() {
  const list = $('waiting-list');
  list.replaceChildren();
  $('nobody-waiting').hidden = state.waiting.size > 0;
  for (const [id, w] of state.waiting) {
    const li = document.createElement('li');
    li.dataset.participant = id;
    const title = document.createElement('p');
    const secs = Math.round((Date.now() - w.since) / 1000);
    title.innerHTML = '';
    const strong = document.createElement('strong');
    strong.textContent = w.participant.display_name;
    title.append(strong, ` (${w.participant.role}) has waited `);
    const waited = document.createElement('span');
    waited.className = 'waited';
    waited.textContent = `${Math.floor(secs / 60)} min ${secs % 60} s`;
    title.append(waited);
    li.append(title);
    if (w.questionnaire) {
      const q = w.questionnaire;
      const answers = document.createElement('p');
      const items = [
        q.fever ? 'fever' : null, q.cough ? 'cough' : null, q.breathlessness ? 'breathless' : null, q.fatigue ? 'fatigue' : null,
        `pain ${q.pain}/10`,
      ].filter(Boolean);
      answers.textContent = `Questionnaire: ${items.join(', ')}${q.new_symptoms ? `. New: “${q.new_symptoms}”` : ''}`;
      li.append(answers);
      if (w.red_flags.length) {
        const flags = document.createElement('p');
        flags.className = 'flag';
        flags.textContent = `Red flags: ${w.red_flags.join(', ')}`;
        li.append(flags);
      }
    }
    const note = document.createElement('input');
    note.type = 'text';
    note.maxLength = 500;
    note.placeholder = 'Message, e.g. 5 minutes';
    note.setAttribute('aria-label', `Message to ${w.participant.display_name}`);
    const button = (text, cls, onClick, label) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = cls;
      b.textContent = text;
      b.setAttribute('aria-label', label);
      b.addEventListener('click', onClick);
      return b;
    };
    li.append(
      button('Admit', 'admit', () => state.signaling.request({ type: 'admit', participant_id: id }).then(() => removeWaiting(id)), `Admit ${w.participant.display_name}`),
      note,
      button('Ask to wait', 'secondary ask', () => state.signaling.request({ type: 'ask_to_wait', participant_id: id, message: note.value || '5 minutes' }), `Ask ${w.participant.display_name} to wait`),
      button('Deny', 'danger deny', () => state.signaling.request({ type: 'deny', participant_id: id, message: note.value || undefined }).then(() => removeWaiting(id)), `Deny ${w.participant.display_name}`),
    );
    list.append(li);
  }
}

function addChat(name, text) {
  const li = document.createElement('li');
  li.textContent = `${name}: ${text}`;
  $('chat-log').append(li);
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [select, kind] of [[$('camera-select'), 'videoinput'], [$('mic-select'), 'audioinput']]) {
    select.replaceChildren();
    for (const d of devices.filter((x) => x.kind === kind)) {
      const option = document.createElement('option');
      option.value = d.deviceId;
      option.textContent = d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${select.length + 1}`;
      select.append(option);
    }
  }
}

/** Swaps the sent track of `kind` without renegotiating. */
async function replaceTrack(kind, track) {
  const sender = state.media?.publishPc?.getSenders().find((s) => s.track?.kind === kind || (!s.track && kind === 'video'));
  if (sender) await sender.replaceTrack(track);
}

async function chooseDevice(kind, deviceId) {
  const constraints = kind === 'video' ? { video: { deviceId: { exact: deviceId } } } : { audio: { deviceId: { exact: deviceId } } };
  const fresh = await navigator.mediaDevices.getUserMedia(constraints);
  const track = fresh.getTracks()[0];
  const old = kind === 'video' ? state.stream.getVideoTracks()[0] : state.stream.getAudioTracks()[0];
  if (old) {
    state.stream.removeTrack(old);
    old.stop();
  }
  state.stream.addTrack(track);
  await replaceTrack(kind, track);
}

async function toggleShare() {
  if (state.sharing) {
    state.sharing.getTracks().forEach((t) => t.stop());
    state.sharing = null;
    await replaceTrack('video', state.stream.getVideoTracks()[0]);
    $('share').textContent = 'Share screen';
    $('share').setAttribute('aria-pressed', 'false');
    return;
  }
  state.sharing = await navigator.mediaDevices.getDisplayMedia({ video: true });
  const track = state.sharing.getVideoTracks()[0];
  track.addEventListener('ended', () => { if (state.sharing) toggleShare(); });
  await replaceTrack('video', track);
  $('share').textContent = 'Stop sharing';
  $('share').setAttribute('aria-pressed', 'true');
}

function wireControls() {
  $('signin-form').addEventListener('submit', signIn);
  $('mic').addEventListener('click', () => {
    const track = state.stream?.getAudioTracks()[0];
    if (!track) return;
    track.enabled = !track.enabled;
    $('mic').textContent = track.enabled ? 'Mute' : 'Unmute';
    $('mic').setAttribute('aria-pressed', String(!track.enabled));
    state.signaling?.send({ type: 'mute', kind: 'audio', muted: !track.enabled });
  });
  $('cam').addEventListener('click', () => {
    const track = state.stream?.getVideoTracks()[0];
    if (!track) return;
    track.enabled = !track.enabled;
    $('cam').textContent = track.enabled ? 'Camera off' : 'Camera on';
    $('cam').setAttribute('aria-pressed', String(!track.enabled));
    state.signaling?.send({ type: 'mute', kind: 'video', muted: !track.enabled });
  });
  $('share').addEventListener('click', () => toggleShare().catch(() => status('Screen sharing was not started.')));
  $('camera-select').addEventListener('change', (e) => chooseDevice('video', e.target.value));
  $('mic-select').addEventListener('change', (e) => chooseDevice('audio', e.target.value));
  $('chat-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('chat-text').value.trim();
    if (!text) return;
    state.signaling?.request({ type: 'chat', text }).catch(() => status('The message was not sent.'));
    $('chat-text').value = '';
  });
  $('end').addEventListener('click', async () => {
    await state.signaling?.request({ type: 'end_visit' }).catch(() => {});
    finish();
  });
  $('back').addEventListener('click', () => showToday());
  $('booking').addEventListener('submit', (event) => {
    event.preventDefault();
    bookFollowUp().catch((error) => { $('booking-result').textContent = `Not booked: ${error.message}`; });
  });
  // A changed form is a new booking; the same form sent again (a double
  // click, a retry after a lost answer) reuses its key and books once.
  $('booking').addEventListener('input', () => { state.bookingKey = newKey(); });
}

/** A random idempotency key (128 bits, hex). */
function newKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function bookFollowUp() {
  const body = {
    due_in: { [$('due-unit').value]: Number($('due-count').value) },
    duration_minutes: Number($('duration').value),
    priority: $('priority').value,
    reason: $('reason').value,
  };
  state.bookingKey ??= newKey();
  const submit = $('booking').querySelector('button[type=submit]');
  submit.disabled = true;
  let result;
  try {
    result = await api(`/api/visits/${state.visitId}/follow-ups`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'Idempotency-Key': state.bookingKey },
    });
  } finally {
    submit.disabled = false;
  }
  state.lastFollowUp = result;
  $('booking-result').textContent = result.follow_up.status === 'placed'
    ? `Booked for ${new Date(result.visit.scheduled_start).toLocaleString([], { dateStyle: 'full', timeStyle: 'short' })}. The patient's link: ${result.patient_link.url}`
    : 'No free slot near that date: the follow-up is in the queue, to be placed.';
}

function finish() {
  if ($('ended').hidden === false) return;
  state.media?.close();
  state.sharing?.getTracks().forEach((t) => t.stop());
  state.stream?.getTracks().forEach((t) => t.stop());
  state.media = null;
  state.callStarted = null;
  state.waiting.clear();
  showOnly('ended');
  status('The visit has ended.');
}

/** Timer, waiting times and connection quality, every second. */
let previous = null;
setInterval(async () => {
  if (state.callStarted) {
    const s = Math.round((Date.now() - state.callStarted) / 1000);
    $('timer').textContent = `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  }
  for (const li of document.querySelectorAll('#waiting-list li')) {
    const w = state.waiting.get(li.dataset.participant);
    if (!w) continue;
    const secs = Math.round((Date.now() - w.since) / 1000);
    li.querySelector('.waited').textContent = `${Math.floor(secs / 60)} min ${secs % 60} s`;
  }
  const pc = state.media?.subscribePc;
  if (!pc) return;
  const report = await pc.getStats();
  let bytes = 0, lost = 0, received = 0, rtt = null;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp') { bytes += s.bytesReceived ?? 0; lost += s.packetsLost ?? 0; received += s.packetsReceived ?? 0; }
    if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime != null) rtt = s.currentRoundTripTime * 1000;
  });
  const now = Date.now();
  if (previous) {
    const kbps = ((bytes - previous.bytes) * 8) / (now - previous.at);
    const dl = lost - previous.lost, dr = received - previous.received;
    const loss = dl + dr > 0 ? dl / (dl + dr) : 0;
    const grade = loss > 0.05 || (rtt ?? 0) > 400 ? 'poor' : loss > 0.01 || (rtt ?? 0) > 150 ? 'fair' : 'good';
    state.quality = { kbps, loss, rtt, grade };
    $('quality').textContent = `Connection ${grade}: ${kbps.toFixed(0)} kbit/s, loss ${(loss * 100).toFixed(1)}%, RTT ${rtt == null ? '–' : `${rtt.toFixed(0)} ms`}`;
    $('quality').className = `quality-${grade}`;
  }
  previous = { bytes, lost, received, at: now };
}, 1000);

wireControls();
(async () => {
  if (await session.refresh()) {
    await showToday();
  } else {
    showOnly('signin');
    status('Sign in to see your visits.');
  }
})();
