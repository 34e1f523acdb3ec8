// Media for one seat: a publish connection (we offer our camera and
// microphone, send-only) and a subscribe connection (the server offers
// everyone else's tracks; we answer every renegotiation).
//
// Remote tracks are grouped by their msid stream id, which is the
// publisher's participant id (docs/protocol.md). Events:
// - `track` {participantId, track}: a remote track arrived;
// - `trackgone` {participantId, track}: it ended (renegotiated away);
// - `connectionstate` {connection, state};
// - `stall` / `flowing`: remote media stopped arriving (ICE down, or no
//   packets for STALL_MS while someone publishes) / arrives again. A stall
//   that lasts gets an ICE restart, once the server answers over the
//   WebSocket (see #restartIfReachable);
// - `stallcause` {local}: shortly after a stall, whether our own network
//   is down (false: the server answers, the others' media stopped);
// - `error` {connection, error}: something we could not recover from.
//
// A subscribe offer the browser refuses is never swallowed: the
// connection is replaced by a fresh one (`subscribe_restart` with
// `new_connection: true`), which tells the server and gets every current
// track offered again.

/**
 * Remote media silent this long (while someone publishes) is a stall.
 * Audio alone brings 50 packets a second, muted or not.
 */
const STALL_MS = 800;
/** How often arrival is checked. */
const WATCH_MS = 200;
/** A stall this long is met with an ICE restart (before that, the network may simply come back). */
const RESTART_AFTER_MS = 4000;
/** A ping over the WebSocket answered within this shows the server is reachable. */
const PING_TIMEOUT_MS = 1500;
/** Fresh subscribe connections allowed per minute before giving up. */
const MAX_SUBSCRIBE_RESETS = 3;
/**
 * Simulcast layers of the camera, low to high as the server expects
 * (docs/media.md): a quarter, a half and the full size. The server sends
 * each viewer one of them, by its link and its tile's size.
 */
export const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', maxBitrate: 1500000 },
];

/**
 * `relay` when this tab was opened with `?ice_transport=relay` (kept for
 * the tab's reloads): media then goes through the TURN server only. Support
 * staff use it to check a TURN set-up from a given network, and the tests to
 * prove the relay path; patients never need it. Otherwise `all`, and the
 * browser picks the best path itself (direct UDP, then TCP, then TURN).
 */
export function iceTransportPolicy() {
  const key = 'teleconsult.ice_transport';
  try {
    const asked = new URLSearchParams(location.search).get('ice_transport');
    if (asked === 'relay' || asked === 'all') sessionStorage.setItem(key, asked);
    return sessionStorage.getItem(key) === 'relay' ? 'relay' : 'all';
  } catch {
    return 'all';
  }
}

export class MediaSession extends EventTarget {
  /**
   * `iceServers`: STUN/TURN servers; by default the ones the server handed
   * out on `signaling` (`joined`, `admitted`, `resumed`), read afresh for
   * every new connection so that credentials stay current.
   */
  constructor(signaling, { iceServers = null, iceTransportPolicy: policy = iceTransportPolicy() } = {}) {
    super();
    this.signaling = signaling;
    this.iceServers = iceServers;
    this.iceTransportPolicy = policy;
    this.publishPc = null;
    this.subscribePc = null;
    /** participant id -> MediaStream of their live remote tracks */
    this.remoteStreams = new Map();
    /** remote track id -> participant id (for per-participant stats) */
    this.trackOwners = new Map();
    this.stalled = false;
    this.closed = false;
    this.#onOffer = (event) => {
      // Offers are answered one at a time, in order.
      this.#offers = this.#offers.then(() => this.#answerSubscribe(event.detail.sdp));
    };
    signaling.addEventListener('subscribe_offer', this.#onOffer);
    this.#watch = setInterval(() => this.#checkArrival().catch(() => {}), WATCH_MS);
  }

  #onOffer;
  #offers = Promise.resolve();
  /** participant id -> the last `preferred_size` sent ("height:pinned") */
  #sizes = new Map();
  #resets = [];
  #watch;
  #restartTimer;
  #lastArrived = 0;
  #lastArrival = performance.now();

  /** Moves to a new signaling connection (after a WebSocket resume). */
  attach(signaling) {
    this.signaling.removeEventListener('subscribe_offer', this.#onOffer);
    this.signaling = signaling;
    signaling.addEventListener('subscribe_offer', this.#onOffer);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #newPeer(connection) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers ?? this.signaling.iceServers ?? [],
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
    });
    pc.addEventListener('icecandidate', (event) => {
      if (event.candidate) {
        this.signaling.send({ type: 'trickle', connection, candidate: event.candidate.toJSON() });
      }
    });
    pc.addEventListener('connectionstatechange', () => {
      if (this.closed) return;
      this.#emit('connectionstate', { connection, state: pc.connectionState });
      if (['disconnected', 'failed'].includes(pc.connectionState)) this.#setStalled(true);
    });
    return pc;
  }

  /**
   * Publishes the tracks of `stream` (send-only); with `simulcast`, the
   * camera in three layers (group sessions, where viewers differ).
   */
  async publish(stream, { simulcast = false } = {}) {
    const pc = this.#newPeer('publish');
    this.publishPc = pc;
    for (const track of stream.getTracks()) {
      const init = { direction: 'sendonly', streams: [stream] };
      if (simulcast && track.kind === 'video') init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
      pc.addTransceiver(track, init);
    }
    if (stream.getTracks().length === 0) {
      // Neither camera nor microphone: publish nothing, still receive.
      pc.addTransceiver('audio', { direction: 'recvonly' });
    }
    await pc.setLocalDescription(await pc.createOffer());
    const reply = await this.signaling.request({ type: 'publish_offer', sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
  }

  /**
   * Whether the server answers a ping over the WebSocket within
   * PING_TIMEOUT_MS. During a stall it tells whose network failed: when it
   * answers, ours works, and the others' media stopped at their end.
   */
  async serverReachable() {
    return this.signaling.isOpen
      && this.signaling.request({ type: 'ping' }, PING_TIMEOUT_MS).then(() => true, () => false);
  }

  /** An ICE restart on both connections (the first remedy for a stall). */
  async restartIce() {
    const pc = this.publishPc;
    if (!pc || this.closed) return;
    await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
    const reply = await this.signaling.request({ type: 'publish_offer', sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
    await this.signaling.request({ type: 'subscribe_restart', new_connection: false });
  }

  async #answerSubscribe(sdp) {
    if (this.closed) return;
    if (!this.subscribePc) {
      const pc = this.#newPeer('subscribe');
      pc.addEventListener('track', (event) => this.#onTrack(event));
      this.subscribePc = pc;
    }
    const pc = this.subscribePc;
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
    } catch (error) {
      // The browser refused the offer: start over on a fresh connection.
      await this.#resetSubscribe(error);
      return;
    }
    try {
      await this.signaling.request({ type: 'subscribe_answer', sdp: pc.localDescription.sdp });
    } catch (error) {
      // A lost socket: the offer is sent again after `resume`.
      if (error.code !== 'closed' && error.code !== 'timeout') this.#emit('error', { connection: 'subscribe', error });
    }
  }

  async #resetSubscribe(cause) {
    const now = Date.now();
    this.#resets = this.#resets.filter((at) => now - at < 60000);
    if (this.#resets.length >= MAX_SUBSCRIBE_RESETS) {
      this.#emit('error', { connection: 'subscribe', error: cause });
      return;
    }
    this.#resets.push(now);
    console.warn('subscribe offer refused; starting a fresh subscribe connection:', cause?.message ?? cause);
    const old = this.subscribePc;
    this.subscribePc = null;
    for (const [participantId, stream] of this.remoteStreams) {
      for (const track of stream.getTracks()) this.#trackGone(participantId, stream, track);
    }
    // The server drops the old connection first; closing ours afterwards
    // is then no news to it.
    await this.signaling.request({ type: 'subscribe_restart', new_connection: true }).catch(() => {});
    old?.close();
  }

  #onTrack(event) {
    const participantId = event.streams[0]?.id ?? 'unknown';
    let stream = this.remoteStreams.get(participantId);
    if (!stream) {
      stream = new MediaStream();
      this.remoteStreams.set(participantId, stream);
    }
    const { track } = event;
    // A track of the same kind replaces an older one (a publisher's rejoin).
    for (const old of stream.getTracks()) {
      if (old.kind === track.kind && old !== track) this.#trackGone(participantId, stream, old);
    }
    stream.addTrack(track);
    this.trackOwners.set(track.id, participantId);
    // An inactive m-line (the track was renegotiated away) mutes its track
    // for good; `ended` comes only when the connection closes.
    const transceiver = event.transceiver;
    const gone = () => {
      if (stream.getTracks().includes(track)) this.#trackGone(participantId, stream, track);
    };
    track.addEventListener('ended', gone);
    track.addEventListener('mute', () => {
      if (transceiver && ['inactive', 'stopped'].includes(transceiver.currentDirection)) gone();
    });
    this.#emit('track', { participantId, track, stream });
  }

  #trackGone(participantId, stream, track) {
    stream.removeTrack(track);
    this.trackOwners.delete(track.id);
    if (stream.getTracks().length === 0) this.remoteStreams.delete(participantId);
    this.#emit('trackgone', { participantId, track });
  }

  /** Forgets a participant's media (after participant_left). */
  /**
   * Tells the server how tall (device pixels) `participantId`'s tile is, so
   * that a simulcast publisher is sent in the layer that fits; `pinned`
   * keeps that video when the link is too poor for all. A size already
   * sent is not sent again.
   */
  preferSize(participantId, height, pinned = false) {
    if (this.closed) return;
    const h = Math.max(1, Math.round(height));
    const key = `${h}:${pinned}`;
    if (this.#sizes.get(participantId) === key) return;
    this.#sizes.set(participantId, key);
    this.signaling
      .request({ type: 'preferred_size', participant_id: participantId, height: h, pinned })
      // Not publishing yet (participant_not_found): sent again with their track.
      .catch(() => this.#sizes.delete(participantId));
  }

  dropParticipant(participantId) {
    this.#sizes.delete(participantId);
    const stream = this.remoteStreams.get(participantId);
    if (!stream) return;
    for (const track of stream.getTracks()) this.#trackGone(participantId, stream, track);
  }

  #setStalled(stalled) {
    if (this.stalled === stalled || this.closed) return;
    this.stalled = stalled;
    clearTimeout(this.#restartTimer);
    if (stalled) this.#restartTimer = setTimeout(() => this.#restartIfReachable(), RESTART_AFTER_MS);
    this.#emit(stalled ? 'stall' : 'flowing', {});
    if (stalled) this.#tellWhoseNetwork();
  }

  /**
   * Whose network failed, for the words on the screen: a server that
   * answers a ping over the WebSocket means ours works, and the others'
   * media stopped at their end (`stallcause` with `local: false`).
   */
  async #tellWhoseNetwork() {
    const reachable = await this.serverReachable();
    if (this.stalled && !this.closed) this.#emit('stallcause', { local: !reachable });
  }

  /**
   * The second remedy for a stall (the first is to wait: ICE consent
   * checks pick the path up again by themselves when a cut network
   * returns). A restart needs the server: while a ping over the WebSocket
   * goes unanswered our own network is down, and a restart offer would
   * only queue behind it in TCP's retransmissions, delaying recovery, so
   * it waits. A WebSocket that drops is the caller's to resume.
   */
  async #restartIfReachable() {
    if (!this.stalled || this.closed) return;
    const reachable = await this.serverReachable();
    if (!this.stalled || this.closed) return;
    if (reachable) await this.restartIce().catch(() => {});
    if (this.stalled && !this.closed) this.#restartTimer = setTimeout(() => this.#restartIfReachable(), RESTART_AFTER_MS);
  }

  /**
   * A stall is ICE down on either connection, or, while someone publishes
   * to us, no packet for STALL_MS (a cut network shows here long before
   * ICE notices).
   */
  async #checkArrival() {
    const pc = this.subscribePc;
    if (!pc || this.closed) return;
    // Media, not packets: with bandwidth estimation on, the server may pad
    // or probe a connection whose real media stopped. Audio flows at 50
    // packets a second (muted or not); video counts by frames received.
    const { audioPackets, framesReceived } = await this.inboundStats();
    const arrived = audioPackets + framesReceived;
    const now = performance.now();
    if (arrived > this.#lastArrived) {
      this.#lastArrived = arrived;
      this.#lastArrival = now;
      const down = [this.publishPc, pc].some((c) => c && ['disconnected', 'failed'].includes(c.connectionState));
      if (!down) this.#setStalled(false);
      return;
    }
    this.#lastArrived = arrived;
    const expecting = this.remoteStreams.size > 0;
    if (expecting && now - this.#lastArrival > STALL_MS) this.#setStalled(true);
    if (!expecting) this.#lastArrival = now;
  }

  /**
   * Inbound totals over the subscribe connection, and per remote
   * participant: video frames decoded, audio and video packets.
   */
  async inboundStats() {
    const totals = {
      framesDecoded: 0, framesReceived: 0, audioPackets: 0, packetsReceived: 0, bytesReceived: 0, packetsLost: 0,
      audioLevel: null, byParticipant: {},
    };
    const pc = this.subscribePc;
    if (!pc) return totals;
    const owners = new Map();
    for (const t of pc.getTransceivers()) {
      const owner = this.trackOwners.get(t.receiver.track?.id);
      if (owner && t.mid != null) owners.set(t.mid, owner);
    }
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      totals.packetsReceived += s.packetsReceived ?? 0;
      totals.bytesReceived += s.bytesReceived ?? 0;
      totals.packetsLost += s.packetsLost ?? 0;
      if (s.kind === 'video') {
        totals.framesDecoded += s.framesDecoded ?? 0;
        totals.framesReceived += s.framesReceived ?? s.framesDecoded ?? 0;
      } else {
        totals.audioPackets += s.packetsReceived ?? 0;
      }
      if (s.kind === 'audio' && s.audioLevel != null) totals.audioLevel = Math.max(totals.audioLevel ?? 0, s.audioLevel);
      const owner = this.trackOwners.get(s.trackIdentifier) ?? owners.get(s.mid);
      if (!owner) return;
      const p = (totals.byParticipant[owner] ??= { framesDecoded: 0, audioPackets: 0, videoPackets: 0 });
      if (s.kind === 'video') {
        p.framesDecoded += s.framesDecoded ?? 0;
        p.videoPackets += s.packetsReceived ?? 0;
      } else {
        p.audioPackets += s.packetsReceived ?? 0;
      }
    });
    return totals;
  }

  /**
   * How each connection reaches the server, from its selected candidate
   * pair: `{publish, subscribe}`, each `{type, protocol, relayProtocol}`
   * of the local candidate (`host`/`srflx`/`prflx`/`relay`; `udp`/`tcp`;
   * for `relay`, how the browser reaches the TURN server: `udp`, `tcp` or
   * `tls`), or null before a pair is selected.
   */
  async paths() {
    const path = async (pc) => {
      if (!pc) return null;
      const report = await pc.getStats();
      let pairId = null;
      report.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
      const pair = pairId && report.get(pairId);
      const local = pair && report.get(pair.localCandidateId);
      if (!local) return null;
      return { type: local.candidateType, protocol: local.protocol, relayProtocol: local.relayProtocol ?? null };
    };
    return { publish: await path(this.publishPc), subscribe: await path(this.subscribePc) };
  }

  /** Closes both connections. The caller stops its own camera and microphone. */
  close() {
    this.closed = true;
    clearInterval(this.#watch);
    clearTimeout(this.#restartTimer);
    this.signaling.removeEventListener('subscribe_offer', this.#onOffer);
    this.publishPc?.close();
    this.subscribePc?.close();
    this.publishPc = null;
    this.subscribePc = null;
    this.remoteStreams.clear();
    this.trackOwners.clear();
  }
}
