// Minimal call page: join with the token in the URL fragment (never sent to
// the server in a request line or a Referer), publish the camera and
// microphone, show every remote participant. Exposes window.teleconsultTest
// for browser tests.

import { SignalingClient } from '/js/signaling.js';
import { MediaSession } from '/js/media_session.js';

const status = document.getElementById('status');
const state = { phase: 'starting', participantId: null, error: null };

function setStatus(text) {
  status.textContent = text;
}

async function main() {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (!token) {
    throw Object.assign(new Error('This page needs a join token in its address.'), { code: 'no_token' });
  }
  const signaling = await SignalingClient.connect();
  const joined = await signaling.request({ type: 'join', token });
  state.participantId = joined.participant_id;
  setStatus(`Joined room ${joined.room_id} as ${joined.role}.`);

  const media = new MediaSession(signaling);
  window.teleconsultTest.media = media;
  media.addEventListener('track', ({ detail }) => {
    let video = document.getElementById(`remote-${detail.participantId}`);
    if (!video) {
      video = document.createElement('video');
      video.id = `remote-${detail.participantId}`;
      video.autoplay = true;
      video.playsInline = true;
      video.setAttribute('aria-label', `Participant ${detail.participantId}`);
      document.getElementById('remotes').append(video);
    }
    video.srcObject = detail.stream;
  });
  media.addEventListener('error', ({ detail }) => console.error(`${detail.connection}: ${detail.error?.message ?? detail.error}`));
  signaling.addEventListener('participant_left', ({ detail }) => {
    media.dropParticipant(detail.participant_id);
    document.getElementById(`remote-${detail.participant_id}`)?.remove();
  });

  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  document.getElementById('local').srcObject = local;
  await media.publish(local);
  state.phase = 'in_call';
  setStatus('In the call.');
}

window.teleconsultTest = {
  state,
  media: null,
  async stats() {
    return this.media ? this.media.inboundStats() : { framesDecoded: 0, packetsReceived: 0 };
  },
};

main().catch((error) => {
  state.phase = 'failed';
  state.error = error.code ?? error.name ?? 'error';
  setStatus(`Could not join: ${error.message}`);
});
