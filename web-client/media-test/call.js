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
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
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

  // `hd=1`: a 1280×720 camera, so that a browser sends all three simulcast layers.
  const video = params.get('hd') === '1' ? { width: 1280, height: 720 } : true;
  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video });
  document.getElementById('local').srcObject = local;
  // `simulcast=1` in the fragment: the camera in three layers (tests of layer choice).
  await media.publish(local, { simulcast: params.get('simulcast') === '1' });
  state.phase = 'in_call';
  setStatus('In the call.');
}

window.teleconsultTest = {
  state,
  media: null,
  async stats() {
    return this.media ? this.media.inboundStats() : { framesDecoded: 0, packetsReceived: 0 };
  },
  /**
   * Asks for a participant's video at most `height` pixels tall
   * (`preferred_size`); `pinned` keeps it when the link is too poor for all.
   */
  size(participantId, height, pinned = false) {
    this.media?.preferSize(participantId, height, pinned);
  },
  /** The decoded width of a participant's video (0 before the first frame). */
  videoWidth(participantId) {
    return document.getElementById(`remote-${participantId}`)?.videoWidth ?? 0;
  },
};

main().catch((error) => {
  state.phase = 'failed';
  state.error = error.code ?? error.name ?? 'error';
  setStatus(`Could not join: ${error.message}`);
});
