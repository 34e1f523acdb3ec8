// The patient's (and guest's) page at /join/<link token>.
//
// One clear step per screen: link check → browser check → camera →
// microphone → speaker → privacy → questionnaire (patients) → waiting room
// → call. A reload mid-call resumes the seat (the resume token lives in
// sessionStorage for this tab only) and rebuilds the media connections
// without a new admission.

import { SignalingClient } from '/js/signaling.js';
import { MediaSession } from '/js/media_session.js';
import { t, toggle, translate } from '/js/i18n.js';

const linkToken = decodeURIComponent(location.pathname.split('/').pop() ?? '');
const seatKey = `teleconsult.seat.${linkToken.slice(0, 16)}`;
const state = {
  phase: 'loading',
  role: null,
  stream: null,
  audioOnly: false,
  signaling: null,
  media: null,
  micPeak: 0,
  leaving: false,
  lastError: null,
};
window.teleconsultJoin = {
  state,
  async stats() {
    return state.media ? state.media.inboundStats() : { framesDecoded: 0, packetsReceived: 0 };
  },
};

const $ = (id) => document.getElementById(id);

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
function fail(code, values = {}) {
  state.lastError = code;
  $('error-title').textContent = t(`${code}_title`, values);
  $('error-body').textContent = t(`${code}_body`, values);
  show('error');
}

function supported() {
  return 'RTCPeerConnection' in window && navigator.mediaDevices?.getUserMedia && 'WebSocket' in window;
}

function saveSeat(resumeToken) {
  sessionStorage.setItem(seatKey, JSON.stringify({ resume_token: resumeToken }));
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
    fail(['link_expired', 'link_not_yet_valid', 'link_revoked', 'visit_ended', 'link_unknown'].includes(code) ? code : 'link_unknown', { start: when });
    return null;
  }
  return body;
}

// ----- device checks ---------------------------------------------------

async function cameraStep() {
  show('camera');
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    $('preview').srcObject = state.stream;
  } catch (error) {
    if (error.name === 'NotAllowedError' || error.name === 'SecurityError') {
      fail('camera_denied');
      return false;
    }
    // No camera (or none usable): offer to join with the voice only.
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      state.audioOnly = true;
      show('no-camera');
      await new Promise((resolve) => $('audio-only').addEventListener('click', resolve, { once: true }));
      return true;
    } catch (audioError) {
      fail(audioError.name === 'NotAllowedError' ? 'camera_denied' : 'unsupported');
      return false;
    }
  }
  await new Promise((resolve) => $('camera-next').addEventListener('click', resolve, { once: true }));
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
  state.signaling = signaling;
  signaling.addEventListener('wait_message', ({ detail }) => {
    const p = document.createElement('p');
    p.className = 'wait-message';
    p.textContent = `${t('message_from_doctor')} ${detail.message}`;
    $('wait-messages').append(p);
  });
  signaling.addEventListener('admitted', () => startCall(false));
  signaling.addEventListener('denied', ({ detail }) => {
    state.leaving = true;
    sessionStorage.removeItem(seatKey);
    fail('denied');
    if (detail.message) $('error-body').textContent = `${t('denied_body')} ${detail.message}`;
  });
  signaling.addEventListener('room_closed', () => {
    state.leaving = true;
    sessionStorage.removeItem(seatKey);
    state.media?.close();
    fail('ended');
  });
  signaling.addEventListener('participant_left', ({ detail }) => state.media?.dropParticipant(detail.participant_id));
  signaling.addEventListener('chat_message', ({ detail }) => {
    const li = document.createElement('li');
    li.textContent = `${detail.display_name}: ${detail.text}`;
    $('chat-log').append(li);
  });
  signaling.addEventListener('close', () => onSignalingLost());
  return signaling;
}

async function joinWaitingRoom(joinToken) {
  const signaling = await connectSignaling();
  const joined = await signaling.request({ type: 'join', token: joinToken });
  saveSeat(joined.resume_token);
  if (joined.admitted) {
    await startCall(false);
  } else {
    show('waiting');
  }
}

async function startCall(newConnections) {
  show('call');
  const media = new MediaSession(state.signaling);
  state.media = media;
  media.addEventListener('remotestream', ({ detail }) => { $('remote').srcObject = detail.stream; });
  media.addEventListener('connectionstate', ({ detail }) => {
    if (detail.state === 'failed' || detail.state === 'disconnected') restartIce();
    if (detail.state === 'connected') $('reconnecting').hidden = true;
  });
  $('self').srcObject = state.stream;
  if (newConnections) {
    // A reloaded page: the old subscribe connection is gone.
    await state.signaling.request({ type: 'subscribe_restart', new_connection: true }).catch(() => {});
  }
  await media.publish(state.stream);
  if (state.audioOnly) {
    await state.signaling.request({ type: 'mute', kind: 'video', muted: true }).catch(() => {});
  }
}

/** First remedy when media stalls: an ICE restart on both connections. */
let restarting = false;
async function restartIce() {
  if (restarting || state.leaving || !state.media?.publishPc) return;
  restarting = true;
  $('reconnecting').hidden = false;
  try {
    const pc = state.media.publishPc;
    pc.restartIce();
    const offer = await pc.createOffer({ iceRestart: true });
    await pc.setLocalDescription(offer);
    const reply = await state.signaling.request({ type: 'publish_offer', sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
    await state.signaling.request({ type: 'subscribe_restart', new_connection: false });
  } catch {
    // The WebSocket may be down too; its own reconnection takes over.
  } finally {
    restarting = false;
  }
}

/** Second remedy: resume the seat on a new WebSocket; last, a full rejoin. */
async function onSignalingLost() {
  if (state.leaving) return;
  $('reconnecting').hidden = false;
  const saved = JSON.parse(sessionStorage.getItem(seatKey) ?? 'null');
  for (let attempt = 0; attempt < 10 && saved?.resume_token; attempt++) {
    await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 5000)));
    try {
      const signaling = await connectSignaling();
      const resumed = await signaling.request({ type: 'resume', resume_token: JSON.parse(sessionStorage.getItem(seatKey)).resume_token });
      saveSeat(resumed.resume_token);
      state.media?.attach(signaling);
      $('reconnecting').hidden = true;
      return;
    } catch {
      // Try again until the grace period is surely over.
    }
  }
  sessionStorage.removeItem(seatKey);
  const link = await exchangeLink();
  if (link) {
    state.media?.close();
    await joinWaitingRoom(link.join_token);
    $('reconnecting').hidden = true;
  }
}

/** A reload: take the seat back, and rebuild media if we were in the call. */
async function resumeAfterReload(saved) {
  const signaling = await connectSignaling();
  const resumed = await signaling.request({ type: 'resume', resume_token: saved.resume_token });
  saveSeat(resumed.resume_token);
  state.role = resumed.role;
  if (!resumed.admitted) {
    show('waiting');
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch {
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    state.audioOnly = true;
  }
  await startCall(true);
}

function wireControls() {
  $('lang').addEventListener('click', () => toggle());
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
  $('leave').addEventListener('click', async () => {
    state.leaving = true;
    sessionStorage.removeItem(seatKey);
    await state.signaling?.request({ type: 'leave' }).catch(() => {});
    state.media?.close();
    for (const track of state.stream?.getTracks() ?? []) track.stop();
    $('error-title').textContent = t('left_title');
    $('error-body').textContent = '';
    show('error');
    state.lastError = 'left';
  });
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
    }
  }
  const link = await exchangeLink();
  if (!link) return;
  state.role = link.role;
  show('check');
  await new Promise((resolve) => $('check-next').addEventListener('click', resolve, { once: true }));
  if (!(await cameraStep())) return;
  await micStep();
  await speakerStep();
  await privacyStep();
  if (link.role === 'patient') await questionnaireStep();
  show('waiting');
  await joinWaitingRoom(link.join_token);
}

main().catch((error) => {
  state.lastError = error.code ?? error.name ?? 'error';
  fail('network');
});
