// The patient's (and guest's) page at /join/<link token>.
//
// One clear step per screen: link check → browser check → camera →
// microphone → speaker → privacy → questionnaire (patients) → waiting room
// → call. Someone who has done the checks on this device before only sees
// the camera again; answers already sent are not asked for again.
//
// A reload mid-call resumes the seat (the resume token lives in
// sessionStorage for this tab only) and rebuilds the media connections
// without a new admission. Leaving asks first, and the page then offers to
// join again while the visit lasts (the clinician's admission holds).
// Cameras and microphones are released whenever the call ends, for any
// reason.

import { SignalingClient } from '/js/signaling.js';
import { MediaSession } from '/js/media_session.js';
import { CallView } from '/js/call_view.js';
import { CallQuality } from '/js/call_quality.js';
import { t, toggle, translate } from '/js/i18n.js';

const linkToken = decodeURIComponent(location.pathname.split('/').pop() ?? '');
const seatKey = `teleconsult.seat.${linkToken.slice(0, 16)}`;
const checkedKey = `teleconsult.checked.${linkToken.slice(0, 16)}`;

const state = {
  phase: 'loading',
  role: null,
  link: null,
  stream: null,
  audioOnly: false,
  signaling: null,
  media: null,
  micPeak: 0,
  leaving: false,
  lastError: null,
  /** The error page shown: [code, values], re-rendered on a language switch. */
  page: null,
  unread: 0,
  /** Every local track this page ever opened (a test checks they all end). */
  localTracks: [],
};
const $ = (id) => document.getElementById(id);
const view = new CallView($('call-view'), t);
// In a group session the leader is shown large, the others small.
view.autoPin = (info) => isGroup() && info.role === 'clinician';

/** How often the speaking marks are refreshed. */
const SPEAKING_POLL_MS = 400;
const quality = new CallQuality();

window.teleconsultJoin = {
  state,
  view,
  async stats() {
    return state.media ? state.media.inboundStats() : { framesDecoded: 0, packetsReceived: 0, byParticipant: {} };
  },
};

function show(screen) {
  state.phase = screen;
  for (const s of document.querySelectorAll('.screen')) s.hidden = s.id !== `screen-${screen}`;
  const heading = $(`screen-${screen}`)?.querySelector('h1');
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

/** A plain-words page for `code` (a link error code or a page state). */
function fail(code, values = {}, { rejoin = false } = {}) {
  state.lastError = code;
  state.page = [code, values];
  renderPage();
  $('rejoin').hidden = !rejoin;
  show('error');
}

function renderPage() {
  if (!state.page) return;
  const [code, values] = state.page;
  $('error-title').textContent = t(`${code}_title`, values);
  $('error-body').textContent = [t(`${code}_body`, values), values.message].filter(Boolean).join(' ');
}

function supported() {
  return 'RTCPeerConnection' in window && navigator.mediaDevices?.getUserMedia && 'WebSocket' in window;
}

function saveSeat(resumeToken) {
  // The visit's kind is kept too: a reloaded page does not exchange the
  // link again, and a class still needs simulcast and the leader large.
  sessionStorage.setItem(seatKey, JSON.stringify({ resume_token: resumeToken, visit_kind: state.visitKind }));
}

/** Whether this is a group session (a class). */
function isGroup() {
  return state.visitKind === 'group';
}

async function exchangeLink() {
  let r;
  try {
    r = await fetch(`/api/join/${encodeURIComponent(linkToken)}`, { method: 'POST' });
  } catch {
    fail('network');
    return null;
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const code = body.error?.code ?? 'link_unknown';
    const start = body.error?.details?.scheduled_start;
    const when = start ? new Date(start).toLocaleString(document.documentElement.lang, { dateStyle: 'full', timeStyle: 'short' }) : '';
    const known = ['link_expired', 'link_not_yet_valid', 'link_revoked', 'link_denied', 'visit_ended', 'link_unknown'];
    fail(known.includes(code) ? code : 'link_unknown', { start: when });
    return null;
  }
  state.link = body;
  state.visitKind = body.visit?.kind;
  state.role = body.role;
  return body;
}

// ----- camera and microphone ---------------------------------------------

async function openDevices() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    state.audioOnly = false;
  } catch (error) {
    if (error.name === 'NotAllowedError' || error.name === 'SecurityError') throw error;
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    state.audioOnly = true;
  }
  state.localTracks.push(...stream.getTracks());
  state.stream = stream;
  return stream;
}

/** Stops the camera and microphone: the light goes off. */
function releaseDevices() {
  for (const track of state.stream?.getTracks() ?? []) track.stop();
  state.stream = null;
  $('self').srcObject = null;
  $('preview').srcObject = null;
}

async function cameraStep() {
  show('camera');
  // Continue waits for the camera: a tap before it opens would be lost.
  $('camera-next').disabled = true;
  try {
    await openDevices();
  } catch (error) {
    fail(error.name === 'NotAllowedError' || error.name === 'SecurityError' ? 'camera_denied' : 'unsupported');
    return false;
  }
  if (state.audioOnly) {
    show('no-camera');
    await new Promise((resolve) => $('audio-only').addEventListener('click', resolve, { once: true }));
    return true;
  }
  $('preview').srcObject = state.stream;
  const next = new Promise((resolve) => $('camera-next').addEventListener('click', resolve, { once: true }));
  $('camera-next').disabled = false;
  await next;
  return true;
}

async function micStep() {
  show('mic');
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  context.createMediaStreamSource(state.stream).connect(analyser);
  const samples = new Uint8Array(analyser.fftSize);
  let running = true;
  const tick = () => {
    if (!running) return;
    analyser.getByteTimeDomainData(samples);
    const peak = samples.reduce((m, v) => Math.max(m, Math.abs(v - 128)), 0);
    const level = Math.min(100, Math.round((peak / 128) * 200));
    state.micPeak = Math.max(state.micPeak, level);
    $('mic-level').value = level;
    requestAnimationFrame(tick);
  };
  tick();
  await new Promise((resolve) => $('mic-next').addEventListener('click', resolve, { once: true }));
  running = false;
  await context.close();
}

async function speakerStep() {
  show('speaker');
  $('play-sound').onclick = async () => {
    const context = new AudioContext();
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.frequency.value = 660;
    gain.gain.value = 0.2;
    tone.connect(gain).connect(context.destination);
    tone.start();
    tone.stop(context.currentTime + 0.6);
    tone.onended = () => context.close();
  };
  await new Promise((resolve) => $('speaker-next').addEventListener('click', resolve, { once: true }));
}

async function privacyStep() {
  show('privacy');
  await new Promise((resolve) => $('privacy-next').addEventListener('click', resolve, { once: true }));
}

async function questionnaireStep() {
  show('questionnaire');
  const form = $('questionnaire');
  $('pain').addEventListener('input', () => { $('pain-value').value = $('pain').value; });
  await new Promise((resolve) => {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const answers = {
        fever: form.fever.checked,
        cough: form.cough.checked,
        breathlessness: form.breathlessness.checked,
        fatigue: form.fatigue.checked,
        pain: Number(form.pain.value),
        new_symptoms: form.new_symptoms.value,
      };
      // The answers are worth sending, but never worth blocking the visit for.
      await fetch(`/api/join/${encodeURIComponent(linkToken)}/questionnaire`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(answers),
      }).catch(() => {});
      resolve();
    }, { once: true });
  });
}

// ----- waiting room and call --------------------------------------------

async function connectSignaling() {
  const signaling = await SignalingClient.connect();
  const current = () => signaling === state.signaling;
  state.signaling = signaling;
  signaling.addEventListener('wait_message', ({ detail }) => {
    const p = document.createElement('p');
    p.className = 'wait-message';
    p.textContent = `${t('message_from_doctor')} ${detail.message}`;
    $('wait-messages').append(p);
  });
  signaling.addEventListener('admitted', ({ detail }) => {
    view.reset(detail.participants);
    startCall(false).catch(onCallError);
  });
  signaling.addEventListener('denied', ({ detail }) => endHere('denied', { message: detail.message }));
  signaling.addEventListener('room_closed', () => endHere('ended'));
  signaling.addEventListener('participant_joined', ({ detail }) => view.joined(detail.participant));
  signaling.addEventListener('participant_left', ({ detail }) => {
    view.left(detail.participant_id);
    state.media?.dropParticipant(detail.participant_id);
  });
  signaling.addEventListener('mute_changed', ({ detail }) => view.muted(detail.participant_id, detail.kind, detail.muted));
  signaling.addEventListener('hand_changed', ({ detail }) => {
    if (detail.participant_id !== state.participantId) return view.hand(detail.participant_id, detail.raised);
    // The leader lowered our hand.
    setHand(detail.raised);
    if (!detail.raised) view.notify(t('hand_lowered_by_leader'));
  });
  signaling.addEventListener('mute_requested', () => {
    const track = state.stream?.getAudioTracks()[0];
    if (track?.enabled) $('toggle-mic').click();
    view.notify(t('muted_by_leader'));
  });
  signaling.addEventListener('video_paused', ({ detail }) => view.videoPaused(detail.track.participant_id, detail.paused));
  signaling.addEventListener('chat_message', ({ detail }) => addChat(detail.display_name, detail.text));
  // The media server lost our media (a fault, a restarted worker): publish again.
  signaling.addEventListener('media_removed', () => {
    if (state.phase === 'call' && !state.leaving) startCall(false).catch(onCallError);
  });
  signaling.addEventListener('close', ({ detail }) => {
    if (!current() || state.leaving) return;
    // Another tab or device took this seat; the link was withdrawn.
    if (detail.code === 4000 || detail.code === 4005) return endHere('elsewhere');
    if (detail.code === 4004) return endHere('link_revoked');
    if (detail.code === 4003) return;
    // The room moved to another server node: join again at once (the
    // admission is kept, so a patient in the call goes straight back in).
    if (detail.code === 4010) return onMoved();
    onSignalingLost();
  });
  return signaling;
}

async function joinWaitingRoom(joinToken) {
  state.leaving = false;
  const signaling = await connectSignaling();
  let joined;
  try {
    joined = await signaling.request({ type: 'join', token: joinToken });
  } catch (error) {
    const pages = { waiting_room_full: 'waiting_room_full', room_full: 'waiting_room_full', visit_closed: 'visit_ended', link_revoked: 'link_revoked', link_denied: 'link_denied' };
    if (pages[error.code]) return endHere(pages[error.code]);
    state.signaling = null;
    signaling.close();
    throw error;
  }
  saveSeat(joined.resume_token);
  state.participantId = joined.participant_id;
  view.setSelf({ display_name: state.link?.display_name ?? t('you'), role: joined.role });
  view.reset(joined.participants);
  if (joined.admitted) {
    handStartsDown();
    await startCall(false);
  } else {
    show('waiting');
  }
}

/** Shows our hand as raised or not (the button and its state). */
function setHand(raised) {
  state.handRaised = raised;
  const button = $('raise-hand');
  button.setAttribute('aria-pressed', String(raised));
  button.dataset.i18n = raised ? 'lower_my_hand' : 'raise_hand';
  button.textContent = t(button.dataset.i18n);
}

/**
 * Back in a class after a reload or a rejoin: our hand starts down (the
 * page forgot it), and the server is told so.
 */
function handStartsDown() {
  if (!isGroup()) return;
  setHand(false);
  state.signaling?.request({ type: 'raise_hand', raised: false }).catch(() => {});
}

/**
 * In a group session the leader's video is pinned: on a link too poor for
 * every picture, the server keeps the leader's (in its lowest layer) and
 * pauses the others' (BENCHMARKS.md, "Simulcast on a slow link").
 */
function pinned(participantId) {
  return isGroup() && view.roleOf(participantId) === 'clinician';
}

async function startCall(newConnections) {
  show('call');
  $('raise-hand').hidden = !isGroup();
  state.media?.close();
  const media = new MediaSession(state.signaling);
  state.media = media;
  media.addEventListener('track', ({ detail }) => {
    view.addTrack(detail.participantId, detail.track);
    if (detail.track.kind === 'video') {
      media.preferSize(detail.participantId, view.tileHeight(detail.participantId), pinned(detail.participantId));
    }
  });
  view.onTileSize = (participantId, height) => media.preferSize(participantId, height, pinned(participantId));
  media.addEventListener('trackgone', ({ detail }) => view.removeTrack(detail.participantId, detail.track));
  media.addEventListener('stall', () => onStall());
  media.addEventListener('stallcause', ({ detail }) => {
    if (!detail.local && media === state.media && !state.leaving) setBanner('others_connection_lost');
  });
  media.addEventListener('flowing', () => { $('reconnecting').hidden = true; });
  if (!state.stream) await openDevices();
  $('self').srcObject = state.stream;
  if (newConnections) {
    // A reloaded page: the old subscribe connection is gone.
    await state.signaling.request({ type: 'subscribe_restart', new_connection: true }).catch(() => {});
  }
  // Group sessions: the camera in three layers, for a dozen viewers.
  await media.publish(state.stream, { simulcast: isGroup() });
  if (state.audioOnly) {
    await state.signaling.request({ type: 'mute', kind: 'video', muted: true }).catch(() => {});
  }
}

function onCallError(error) {
  state.lastError = error?.code ?? error?.name ?? 'error';
  if (!state.leaving) onSignalingLost();
}

/**
 * Media stopped arriving: say so at once (`stallcause` then says whose
 * network it is). The media session restarts ICE if the stall lasts; the
 * WebSocket's own loss is handled below.
 */
function onStall() {
  if (state.leaving) return;
  setBanner('connection_lost');
}

/** The reconnecting banner, shown, in words that follow the language switch. */
function setBanner(key) {
  const banner = $('reconnecting');
  banner.dataset.i18n = key;
  banner.textContent = t(key);
  banner.hidden = false;
}

/** The WebSocket dropped: resume the seat on a new one; last, a full rejoin. */
let resuming = false;
async function onSignalingLost() {
  if (state.leaving || resuming) return;
  resuming = true;
  setBanner('connection_lost');
  try {
    for (let attempt = 0; attempt < 10; attempt++) {
      const saved = JSON.parse(sessionStorage.getItem(seatKey) ?? 'null');
      if (!saved?.resume_token || state.leaving) break;
      await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 5000)));
      try {
        const signaling = await connectSignaling();
        const resumed = await signaling.request({ type: 'resume', resume_token: saved.resume_token });
        saveSeat(resumed.resume_token);
        view.reset(resumed.participants);
        state.media?.attach(signaling);
        // Media removed while the socket was down: publish again.
        if (state.phase === 'call' && resumed.admitted && !resumed.media) await startCall(false);
        if (!state.media?.stalled) $('reconnecting').hidden = true;
        return;
      } catch (error) {
        if (error.code === 'resume_failed') break;
      }
    }
    if (state.leaving) return;
    sessionStorage.removeItem(seatKey);
    const link = await exchangeLink();
    if (link) {
      state.media?.close();
      state.media = null;
      await joinWaitingRoom(link.join_token);
      $('reconnecting').hidden = true;
    } else {
      releaseDevices();
    }
  } finally {
    resuming = false;
  }
}

/**
 * The server moved the room to another node (`move`, close 4010): the old
 * seat and media are gone there, so join again through the link at once.
 */
async function onMoved() {
  if (state.leaving || resuming) return;
  resuming = true;
  setBanner('connection_lost');
  try {
    sessionStorage.removeItem(seatKey);
    state.media?.close();
    state.media = null;
    for (let attempt = 0; attempt < 10 && !state.leaving; attempt++) {
      const link = await exchangeLink();
      if (!link) return releaseDevices();
      try {
        await joinWaitingRoom(link.join_token);
        if (!state.media?.stalled) $('reconnecting').hidden = true;
        return;
      } catch {
        // No node could take the room yet: try again shortly.
        await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** attempt, 3000)));
      }
    }
  } finally {
    resuming = false;
  }
}

/** A reload: take the seat back, and rebuild media if we were in the call. */
async function resumeAfterReload(saved) {
  state.visitKind = saved.visit_kind;
  const signaling = await connectSignaling();
  const resumed = await signaling.request({ type: 'resume', resume_token: saved.resume_token });
  saveSeat(resumed.resume_token);
  state.role = resumed.role;
  state.participantId = resumed.participant_id;
  view.reset(resumed.participants);
  if (!resumed.admitted) {
    show('waiting');
    return;
  }
  handStartsDown();
  await openDevices();
  await startCall(true);
}

/** The call is over for this page: release everything, say why. */
function endHere(code, values = {}) {
  state.leaving = true;
  sessionStorage.removeItem(seatKey);
  state.media?.close();
  state.media = null;
  releaseDevices();
  view.clear();
  $('reconnecting').hidden = true;
  state.signaling?.close();
  fail(code, values, { rejoin: code === 'left' });
}

async function leave() {
  state.leaving = true;
  await state.signaling?.request({ type: 'leave' }).catch(() => {});
  endHere('left');
}

/** Back in after leaving: a new join through the same link. */
async function rejoin() {
  $('rejoin').hidden = true;
  const link = await exchangeLink();
  if (!link) return;
  show('loading');
  try {
    await openDevices();
  } catch {
    return fail('camera_denied');
  }
  await joinWaitingRoom(link.join_token);
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
  $('unread').textContent = t('new_messages', { count: state.unread });
}

function wireControls() {
  $('lang').addEventListener('click', () => toggle());
  window.addEventListener('teleconsult-language', () => {
    renderPage();
    view.retranslate();
    renderUnread();
  });
  // Messages count as read once the chat is on screen.
  new IntersectionObserver(([entry]) => {
    chatVisible = entry.isIntersecting;
    if (chatVisible && state.unread) {
      state.unread = 0;
      renderUnread();
    }
  }).observe($('chat-form'));
  $('toggle-mic').addEventListener('click', () => {
    const track = state.stream?.getAudioTracks()[0];
    if (!track) return;
    track.enabled = !track.enabled;
    const muted = !track.enabled;
    $('toggle-mic').setAttribute('aria-pressed', String(muted));
    $('toggle-mic').textContent = t(muted ? 'unmute' : 'mute');
    $('toggle-mic').dataset.i18n = muted ? 'unmute' : 'mute';
    state.signaling?.send({ type: 'mute', kind: 'audio', muted });
  });
  $('raise-hand').addEventListener('click', () => {
    const raised = !state.handRaised;
    setHand(raised);
    state.signaling?.request({ type: 'raise_hand', raised }).catch(() => setHand(!raised));
  });
  // Who is speaking, from the audio levels the browser reads off RTP.
  setInterval(() => {
    if (state.phase === 'call') view.speakingFrom(state.media?.subscribePc?.getReceivers() ?? []);
  }, SPEAKING_POLL_MS);
  $('toggle-camera').addEventListener('click', () => {
    const track = state.stream?.getVideoTracks()[0];
    if (!track) return;
    track.enabled = !track.enabled;
    const off = !track.enabled;
    $('toggle-camera').setAttribute('aria-pressed', String(off));
    $('toggle-camera').textContent = t(off ? 'camera_on' : 'camera_off');
    $('toggle-camera').dataset.i18n = off ? 'camera_on' : 'camera_off';
    state.signaling?.send({ type: 'mute', kind: 'video', muted: off });
  });
  $('chat-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('chat-text').value.trim();
    if (text) state.signaling?.request({ type: 'chat', text }).catch(() => {});
    $('chat-text').value = '';
  });
  $('leave').addEventListener('click', () => $('leave-dialog').showModal());
  $('leave-dialog').addEventListener('close', () => {
    if ($('leave-dialog').returnValue === 'leave') leave();
  });
  $('rejoin').addEventListener('click', () => rejoin().catch(() => fail('network')));
}

/** The camera preview alone, for someone who did the checks on this device before. */
async function quickCheck() {
  return cameraStep();
}

async function main() {
  translate();
  wireControls();
  if (!supported()) return fail('unsupported');
  const saved = JSON.parse(sessionStorage.getItem(seatKey) ?? 'null');
  if (saved?.resume_token) {
    try {
      return await resumeAfterReload(saved);
    } catch {
      sessionStorage.removeItem(seatKey);
      state.signaling?.close();
    }
  }
  const link = await exchangeLink();
  if (!link) return;
  if (localStorage.getItem(checkedKey)) {
    if (!(await quickCheck())) return;
  } else {
    show('check');
    await new Promise((resolve) => $('check-next').addEventListener('click', resolve, { once: true }));
    if (!(await cameraStep())) return;
    await micStep();
    await speakerStep();
    await privacyStep();
    localStorage.setItem(checkedKey, '1');
  }
  if (link.role === 'patient' && !link.questionnaire_answered) await questionnaireStep();
  show('waiting');
  await joinWaitingRoom(link.join_token);
}

/** Connection quality in words, once a second during the call. */
setInterval(async () => {
  const q = await quality.sample(state.media?.subscribePc).catch(() => null);
  $('quality').textContent = q && state.phase === 'call' ? t(`quality_${q.grade}`) : '';
  $('quality').className = q ? `quality quality-${q.grade}` : 'quality';
}, 1000);

window.addEventListener('pagehide', () => {
  // A reload keeps the seat (resume); the devices are released either way.
  for (const track of state.stream?.getTracks() ?? []) track.stop();
});

main().catch((error) => {
  state.lastError = error.code ?? error.name ?? 'error';
  if (!state.leaving) endHere('network');
});
