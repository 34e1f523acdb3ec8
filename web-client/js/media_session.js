// Media for one seat: a publish connection (we offer our camera and
// microphone, send-only) and a subscribe connection (the server offers
// everyone else's tracks; we answer every renegotiation).
// Remote tracks are grouped by their msid stream id, which is the
// publisher's participant id.

export class MediaSession extends EventTarget {
  constructor(signaling, { iceServers = [] } = {}) {
    super();
    this.signaling = signaling;
    this.iceServers = iceServers;
    this.publishPc = null;
    this.subscribePc = null;
    this.remoteStreams = new Map(); // participant id -> MediaStream
    this.#onOffer = (event) => this.#answerSubscribe(event.detail.sdp).catch((e) => this.#fail('subscribe', e));
    signaling.addEventListener('subscribe_offer', this.#onOffer);
  }

  #onOffer;

  /** Moves to a new signaling connection (after a WebSocket resume). */
  attach(signaling) {
    this.signaling.removeEventListener('subscribe_offer', this.#onOffer);
    this.signaling = signaling;
    signaling.addEventListener('subscribe_offer', this.#onOffer);
  }

  #fail(which, error) {
    this.dispatchEvent(new CustomEvent('error', { detail: { connection: which, error } }));
  }

  /** Publishes the tracks of `stream` (send-only). */
  async publish(stream) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.publishPc = pc;
    for (const track of stream.getTracks()) {
      pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    }
    pc.addEventListener('icecandidate', (event) => {
      if (event.candidate) {
        this.signaling.send({ type: 'trickle', connection: 'publish', candidate: event.candidate.toJSON() });
      }
    });
    pc.addEventListener('connectionstatechange', () => {
      this.dispatchEvent(new CustomEvent('connectionstate', { detail: { connection: 'publish', state: pc.connectionState } }));
    });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const reply = await this.signaling.request({ type: 'publish_offer', sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
  }

  async #answerSubscribe(sdp) {
    if (!this.subscribePc) {
      const pc = new RTCPeerConnection({ iceServers: this.iceServers });
      this.subscribePc = pc;
      pc.addEventListener('track', (event) => this.#onTrack(event));
      pc.addEventListener('icecandidate', (event) => {
        if (event.candidate) {
          this.signaling.send({ type: 'trickle', connection: 'subscribe', candidate: event.candidate.toJSON() });
        }
      });
      pc.addEventListener('connectionstatechange', () => {
        this.dispatchEvent(new CustomEvent('connectionstate', { detail: { connection: 'subscribe', state: pc.connectionState } }));
      });
    }
    const pc = this.subscribePc;
    await pc.setRemoteDescription({ type: 'offer', sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await this.signaling.request({ type: 'subscribe_answer', sdp: pc.localDescription.sdp });
  }

  #onTrack(event) {
    const participantId = event.streams[0]?.id ?? 'unknown';
    let stream = this.remoteStreams.get(participantId);
    if (!stream) {
      stream = new MediaStream();
      this.remoteStreams.set(participantId, stream);
    }
    stream.addTrack(event.track);
    event.track.addEventListener('ended', () => stream.removeTrack(event.track));
    this.dispatchEvent(new CustomEvent('remotestream', { detail: { participantId, stream, track: event.track } }));
  }

  /** Removes a participant's stream (after participant_left). */
  dropParticipant(participantId) {
    const stream = this.remoteStreams.get(participantId);
    if (stream) {
      this.remoteStreams.delete(participantId);
      this.dispatchEvent(new CustomEvent('remotestreamremoved', { detail: { participantId, stream } }));
    }
  }

  /** Totals over the subscribe connection's inbound video: frames decoded, packets, bytes. */
  async inboundStats() {
    const totals = { framesDecoded: 0, packetsReceived: 0, bytesReceived: 0, packetsLost: 0, audioLevel: null };
    if (!this.subscribePc) return totals;
    const report = await this.subscribePc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      totals.packetsReceived += s.packetsReceived ?? 0;
      totals.bytesReceived += s.bytesReceived ?? 0;
      totals.packetsLost += s.packetsLost ?? 0;
      if (s.kind === 'video') totals.framesDecoded += s.framesDecoded ?? 0;
      if (s.kind === 'audio' && s.audioLevel != null) totals.audioLevel = Math.max(totals.audioLevel ?? 0, s.audioLevel);
    });
    return totals;
  }

  close() {
    this.signaling.removeEventListener('subscribe_offer', this.#onOffer);
    this.publishPc?.close();
    this.subscribePc?.close();
    this.publishPc = null;
    this.subscribePc = null;
  }
}
