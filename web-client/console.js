// The clinician console at /: sign in and out, today's visits with who is
// waiting, and a visit's room: the waiting room (admit, ask to wait,
// deny), the call (one tile per person, mute, camera, device choice,
// screen share, chat with an unread count, quality in words, timer,
// inviting a family member or interpreter) and ending the visit.

import { SignalingClient } from '/js/signaling.js';
import { MediaSession } from '/js/media_session.js';
import { StaffSession } from '/js/staff_session.js';
import { CallView } from '/js/call_view.js';
import { CallQuality, qualityDetails } from '/js/call_quality.js';
import { inLanguage } from '/js/i18n.js';

/** Roles that run visits; others get a page that says where to go. */
const ROLES_WITH_VISITS = ['clinician', 'admin'];
/** How often the day list refreshes who is waiting. */
const TODAY_REFRESH_MS = 10000;

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
  unread: 0,
  localTracks: [],
};
const $ = (id) => document.getElementById(id);
const view = new CallView($('call-view'), inLanguage('en'));
// Any tile can be shown large (a class's leader watches one patient's movement).
view.onPin = (participantId) => {
  view.pin(view.pinnedId === participantId ? null : participantId);
  for (const id of view.participantIds) state.media?.preferSize(id, view.tileHeight(id), id === view.pinnedId);
};

/** How often the speaking marks are refreshed. */
const SPEAKING_POLL_MS = 400;
const quality = new CallQuality();
window.teleconsultConsole = {
  state,
  view,
  async stats() {
    return state.media ? state.media.inboundStats() : { framesDecoded: 0, byParticipant: {} };
  },
};

const status = (text) => { $('status').textContent = text; };
const showOnly = (...ids) => {
  for (const id of ['signin', 'no-console', 'today', 'visit', 'ended']) $(id).hidden = !ids.includes(id);
  $('sign-out').hidden = ids.includes('signin');
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
  await home();
}

/** Today's visits, or, for a role without visits, where to go instead. */
async function home() {
  if (!ROLES_WITH_VISITS.includes(session.me?.role)) {
    $('who').textContent = session.me?.display_name ?? '';
    showOnly('no-console');
    status('Signed in.');
    return;
  }
  await showToday();
}

/** Ends the session here and on the server (the refresh family is revoked). */
async function signOut() {
  if (state.signaling) await leaveCall();
  await fetch('/api/auth/logout', { method: 'POST' }).catch(() => {});
  session.token = null;
  session.me = null;
  $('who').textContent = '';
  $('password').value = '';
  showOnly('signin');
  status('Signed out.');
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function presence(room) {
  const parts = [];
  if (room?.waiting) parts.push(`${room.waiting} waiting`);
  if (room?.in_call) parts.push(`${room.in_call} in the call`);
  return parts.join(', ') || '–';
}

let todayTimer = null;
async function showToday() {
  $('who').textContent = `${session.me.display_name} (${session.me.specialty.replace('_', ' ')})`;
  // The rows from before a visit are stale (a visit just ended still reads
  // "scheduled"): clear them so nobody acts on them while the fresh list loads.
  const table = $('visits');
  table.setAttribute('aria-busy', 'true');
  cell(table.tBodies[0].insertRow(0), 'Loading today’s visits…').colSpan = 7;
  while (table.tBodies[0].rows.length > 1) table.tBodies[0].deleteRow(1);
  showOnly('today');
  await renderToday().finally(() => table.removeAttribute('aria-busy'));
  await showQueue();
  clearInterval(todayTimer);
  todayTimer = setInterval(() => {
    if ($('today').hidden) return clearInterval(todayTimer);
    renderToday().catch(() => {});
  }, TODAY_REFRESH_MS);
}

async function renderToday() {
  const offset = -new Date().getTimezoneOffset();
  const { visits } = await api(`/api/visits?tz_offset_minutes=${offset}`);
  const body = $('visits').tBodies[0];
  body.replaceChildren();
  if (visits.length === 0) cell(body.insertRow(), 'No visits today.').colSpan = 7;
  for (const v of visits) {
    const row = body.insertRow();
    row.dataset.visit = v.id;
    cell(row, new Date(v.scheduled_start).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
    cell(row, v.patient?.display_name ?? '–');
    cell(row, v.kind.replace('_', ' '));
    cell(row, v.status.replace('_', ' '));
    cell(row, presence(v.room), v.room?.waiting ? 'waiting-now' : '');
    cell(row, v.red_flags.join(', ') || '–', v.red_flags.length ? 'flag' : '');
    const actions = row.insertCell();
    if (['scheduled', 'in_progress'].includes(v.status)) {
      const start = document.createElement('button');
      start.type = 'button';
      start.className = 'start';
      start.textContent = v.status === 'in_progress' ? 'Rejoin' : 'Start';
      start.setAttribute('aria-label', `${start.textContent} the visit with ${v.patient?.display_name ?? 'the patient'}`);
      start.addEventListener('click', () => startVisit(v).catch((e) => status(`The visit could not start: ${e.message}`)));
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

async function startVisit(visit) {
  const visitId = visit.id;
  if (state.starting) return;
  state.starting = true;
  try {
    state.visitId = visitId;
    // Group sessions publish the camera in three layers (simulcast): each
    // of up to a dozen viewers gets the one its tile and link can carry.
    state.simulcast = visit.kind === 'group';
    state.bookingKey = null;
    await api(`/api/visits/${visitId}/start`, { method: 'POST' });
    const { join_token: joinToken } = await api(`/api/visits/${visitId}/join-token`, { method: 'POST' });
    showOnly('visit');
    $('visit-title').textContent = visit.patient?.display_name ? `Visit with ${visit.patient.display_name}` : 'Visit';
    $('chat-log').replaceChildren();
    $('invite-result').textContent = '';
    state.unread = 0;
    renderUnread();
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    state.localTracks.push(...state.stream.getTracks());
    $('self').srcObject = state.stream;
    await listDevices();
    await connect(joinToken);
    state.callStarted = Date.now();
    status('In the visit.');
  } finally {
    state.starting = false;
  }
}

/** Joins the room on a new WebSocket and publishes. */
async function connect(joinToken) {
  const signaling = await SignalingClient.connect();
  state.signaling = signaling;
  signaling.addEventListener('participant_waiting', ({ detail }) => addWaiting(detail));
  signaling.addEventListener('participant_joined', ({ detail }) => {
    removeWaiting(detail.participant.participant_id);
    view.joined(detail.participant);
  });
  signaling.addEventListener('participant_left', ({ detail }) => {
    removeWaiting(detail.participant_id);
    view.left(detail.participant_id);
    state.media?.dropParticipant(detail.participant_id);
    renderHands();
  });
  signaling.addEventListener('mute_changed', ({ detail }) => view.muted(detail.participant_id, detail.kind, detail.muted));
  signaling.addEventListener('hand_changed', ({ detail }) => {
    view.hand(detail.participant_id, detail.raised);
    renderHands();
  });
  signaling.addEventListener('video_paused', ({ detail }) => view.videoPaused(detail.track.participant_id, detail.paused));
  signaling.addEventListener('chat_message', ({ detail }) => addChat(detail.display_name, detail.text));
  signaling.addEventListener('room_closed', () => finish());
  // The media server lost our media (a fault, a restarted worker): publish again.
  signaling.addEventListener('media_removed', () => {
    if (state.callStarted && signaling === state.signaling) republish(signaling).catch(() => {});
  });
  signaling.addEventListener('close', ({ detail }) => {
    if (signaling !== state.signaling || !state.callStarted) return;
    if (detail.code === 4000 || detail.code === 4005) {
      status('This visit was opened in another window, which now holds your place.');
      return leaveCall();
    }
    // 4010: the room moved to another server node; join again at once.
    reconnect(joinToken, detail.code === 4010);
  });
  const joined = await signaling.request({ type: 'join', token: joinToken });
  view.setSelf({ display_name: session.me.display_name, role: 'clinician' });
  view.reset(joined.participants);
  renderHands();
  $('mute-all').hidden = !state.simulcast;
  for (const p of joined.participants) removeWaiting(p.participant_id);
  await republish(signaling);
}

/** The raised hands, each with a button to lower it. */
function renderHands() {
  const raised = view.raisedHands;
  $('hands').hidden = raised.length === 0;
  $('hands-list').replaceChildren(...raised.map((id) => {
    const name = view.remote.get(id)?.info?.display_name ?? 'Someone';
    const li = document.createElement('li');
    const lower = document.createElement('button');
    lower.type = 'button';
    lower.className = 'secondary';
    lower.textContent = 'Lower hand';
    lower.setAttribute('aria-label', `Lower ${name}’s hand`);
    lower.addEventListener('click', async () => {
      await state.signaling?.request({ type: 'lower_hand', participant_id: id }).catch(() => {});
      view.hand(id, false);
      renderHands();
    });
    li.append(`${name} `, lower);
    return li;
  }));
}

/** New media connections on `signaling`: publish, and receive everyone. */
async function republish(signaling) {
  state.media?.close();
  const media = new MediaSession(signaling);
  state.media = media;
  media.addEventListener('track', ({ detail }) => {
    view.addTrack(detail.participantId, detail.track);
    if (detail.track.kind === 'video') {
      media.preferSize(detail.participantId, view.tileHeight(detail.participantId), detail.participantId === view.pinnedId);
    }
  });
  view.onTileSize = (participantId, height) => media.preferSize(participantId, height, participantId === view.pinnedId);
  media.addEventListener('trackgone', ({ detail }) => view.removeTrack(detail.participantId, detail.track));
  media.addEventListener('stall', () => {
    $('reconnecting').textContent = 'Sound and picture stopped arriving. Reconnecting…';
    $('reconnecting').hidden = false;
  });
  media.addEventListener('stallcause', ({ detail }) => {
    if (!detail.local && media === state.media) {
      $('reconnecting').textContent = 'Your connection works; sound and picture from the others stopped arriving at their end. Waiting for them…';
    }
  });
  media.addEventListener('flowing', () => { $('reconnecting').hidden = true; });
  // A media session the server still holds (a takeover after a dropped
  // socket) gets every track offered to this new connection.
  await signaling.request({ type: 'subscribe_restart', new_connection: true }).catch(() => {});
  await media.publish(state.stream, { simulcast: state.simulcast });
}

/** The WebSocket dropped: take the seat again (same account: same seat). */
async function reconnect(joinToken, moved = false) {
  $('reconnecting').textContent = 'The connection to the visit was lost. Reconnecting…';
  $('reconnecting').hidden = false;
  for (let attempt = 0; attempt < 10 && state.callStarted; attempt++) {
    const delay = moved ? Math.min(250 * (2 ** attempt - 1), 3000) : Math.min(500 * 2 ** attempt, 5000);
    await new Promise((r) => setTimeout(r, delay));
    try {
      const fresh = await api(`/api/visits/${state.visitId}/join-token`, { method: 'POST' }).catch(() => ({ join_token: joinToken }));
      await connect(fresh.join_token);
      $('reconnecting').hidden = true;
      return;
    } catch {
      // The server may be restarting; try again.
    }
  }
  status('The connection to the visit was lost. Go back to today’s visits and rejoin.');
}

/** Leaves the call without ending the visit (sign-out, another window). */
async function leaveCall() {
  const signaling = state.signaling;
  state.signaling = null;
  state.callStarted = null;
  await signaling?.request({ type: 'leave' }).catch(() => {});
  signaling?.close();
  releaseCall();
}

/** Releases the call's media: connections closed, camera and microphone off. */
function releaseCall() {
  state.media?.close();
  state.media = null;
  state.sharing?.getTracks().forEach((t) => t.stop());
  state.sharing = null;
  state.stream?.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $('self').srcObject = null;
  view.clear();
  $('reconnecting').hidden = true;
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

/**
 * Draws the waiting list. Entries are kept, not rebuilt, so a note being
 * typed or a button being pressed survives someone else arriving.
 */
function renderWaiting() {
  const list = $('waiting-list');
  $('nobody-waiting').hidden = state.waiting.size > 0;
  for (const li of [...list.children]) {
    if (!state.waiting.has(li.dataset.participant)) li.remove();
  }
  for (const [id, w] of state.waiting) {
    let li = list.querySelector(`li[data-participant="${CSS.escape(id)}"]`);
    if (!li) {
      li = waitingEntry(id, w);
      list.append(li);
    }
    const secs = Math.round((Date.now() - w.since) / 1000);
    li.querySelector('.waited').textContent = `${Math.floor(secs / 60)} min ${secs % 60} s`;
    li.querySelector('.answers').replaceChildren(...questionnaireLines(w));
  }
}

function questionnaireLines(w) {
  if (!w.questionnaire) return [];
  const q = w.questionnaire;
  const answers = document.createElement('p');
  const items = [
    q.fever ? 'fever' : null, q.cough ? 'cough' : null, q.breathlessness ? 'breathless' : null, q.fatigue ? 'fatigue' : null,
    `pain ${q.pain}/10`,
  ].filter(Boolean);
  answers.textContent = `Questionnaire: ${items.join(', ')}${q.new_symptoms ? `. New: “${q.new_symptoms}”` : ''}`;
  if (!w.red_flags.length) return [answers];
  const flags = document.createElement('p');
  flags.className = 'flag';
  flags.textContent = `Red flags: ${w.red_flags.join(', ')}`;
  return [answers, flags];
}

function waitingEntry(id, w) {
  const name = w.participant.display_name;
  const li = document.createElement('li');
  li.dataset.participant = id;
  const title = document.createElement('p');
  const strong = document.createElement('strong');
  strong.textContent = name;
  const waited = document.createElement('span');
  waited.className = 'waited';
  title.append(strong, ` (${w.participant.role}) has waited `, waited);
  const answers = document.createElement('div');
  answers.className = 'answers';
  const note = document.createElement('input');
  note.type = 'text';
  note.maxLength = 500;
  note.placeholder = 'Message, e.g. 5 minutes';
  note.setAttribute('aria-label', `Message to ${name}`);
  const button = (text, cls, onClick, label) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = cls;
    b.textContent = text;
    b.setAttribute('aria-label', label);
    b.addEventListener('click', () => {
      b.disabled = true;
      onClick().catch((e) => status(`${text} failed: ${e.message}`)).finally(() => { b.disabled = false; });
    });
    return b;
  };
  li.append(
    title,
    answers,
    button('Admit', 'admit', () => state.signaling.request({ type: 'admit', participant_id: id }).then(() => removeWaiting(id)), `Admit ${name}`),
    note,
    button('Ask to wait', 'secondary ask', () => state.signaling.request({ type: 'ask_to_wait', participant_id: id, message: note.value || '5 minutes' }), `Ask ${name} to wait`),
    button('Deny', 'danger deny', () => state.signaling.request({ type: 'deny', participant_id: id, message: note.value || undefined }).then(() => removeWaiting(id)), `Deny ${name}`),
  );
  return li;
}

function addChat(name, text) {
  const li = document.createElement('li');
  li.textContent = `${name}: ${text}`;
  $('chat-log').append(li);
  if (!chatVisible) {
    state.unread += 1;
    renderUnread();
  }
}

let chatVisible = false;
function renderUnread() {
  $('unread').hidden = state.unread === 0;
  $('unread').textContent = `${state.unread} new`;
}

async function invite(event) {
  event.preventDefault();
  const label = $('invite-label').value.trim();
  if (!label) return;
  const { link } = await api(`/api/visits/${state.visitId}/guest-links`, { method: 'POST', body: JSON.stringify({ label }) });
  state.lastGuestLink = link.url;
  $('invite-label').value = '';
  let copied = false;
  try {
    await navigator.clipboard.writeText(link.url);
    copied = true;
  } catch {
    // No clipboard (an insecure origin, a refused permission): show the link.
  }
  $('invite-result').textContent = `${copied ? 'Copied. ' : ''}Send this link to ${label}: ${link.url}`;
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
  $('sign-out').addEventListener('click', () => signOut());
  $('invite').addEventListener('submit', (event) => invite(event).catch((e) => { $('invite-result').textContent = `No link was created: ${e.message}`; }));
  $('quality-details-toggle').addEventListener('click', () => {
    const open = $('quality-details').hidden;
    $('quality-details').hidden = !open;
    $('quality-details-toggle').setAttribute('aria-expanded', String(open));
  });
  new IntersectionObserver(([entry]) => {
    chatVisible = entry.isIntersecting;
    if (chatVisible && state.unread) {
      state.unread = 0;
      renderUnread();
    }
  }).observe($('chat-form'));
  $('mute-all').addEventListener('click', async () => {
    await state.signaling?.request({ type: 'mute_all' }).catch(() => {});
    status('Everyone in the call was asked to mute; each can unmute to speak.');
  });
  setInterval(() => {
    if (state.callStarted) view.speakingFrom(state.media?.subscribePc?.getReceivers() ?? []);
  }, SPEAKING_POLL_MS);
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
  $('end').addEventListener('click', () => $('end-dialog').showModal());
  $('end-dialog').addEventListener('close', async () => {
    if ($('end-dialog').returnValue !== 'end') return;
    await state.signaling?.request({ type: 'end_visit' }).catch(() => {});
    finish();
  });
  $('back').addEventListener('click', () => home());
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
  state.callStarted = null;
  const signaling = state.signaling;
  state.signaling = null;
  signaling?.close();
  releaseCall();
  state.waiting.clear();
  renderWaiting();
  showOnly('ended');
  status('The visit has ended.');
}

/** Timer, waiting times and connection quality, every second. */
setInterval(async () => {
  if (state.callStarted) {
    const s = Math.round((Date.now() - state.callStarted) / 1000);
    $('timer').textContent = `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  }
  if (state.waiting.size) renderWaiting();
  const q = await quality.sample(state.media?.subscribePc).catch(() => null);
  if (!q) return;
  state.quality = q;
  $('quality').textContent = `Connection ${q.grade}`;
  $('quality').className = `quality quality-${q.grade}`;
  $('quality-details').textContent = qualityDetails(q);
}, 1000);

wireControls();
(async () => {
  if (await session.refresh()) {
    await home();
  } else {
    showOnly('signin');
    status('Sign in to see your visits.');
  }
})();
