// The call as people see it, shared by the console and the patient's page:
// one tile per remote participant (name, role, microphone and camera
// state, a placeholder when there is no picture), everyone's audio, a
// list of who is in the call, and a short spoken notice when someone
// joins or leaves.
//
// It knows nothing of signaling or peer connections: the page feeds it
// participants (from `joined`, `admitted`, `resumed`, `participant_*` and
// `mute_changed`) and remote tracks (from MediaSession).

/** How long a join or leave notice stays. */
const NOTICE_MS = 8000;

/** Audio level (0..1, from RTP) above which a participant counts as speaking. */
const SPEAKING_LEVEL = 0.02;

export class CallView {
  /**
   * @param {HTMLElement} root holds `.tiles`, `.people` and `.notices`
   * @param {(key: string, values?: object) => string} t strings (see i18n.js)
   */
  constructor(root, t) {
    this.root = root;
    this.t = t;
    this.tiles = root.querySelector('.tiles');
    this.people = root.querySelector('.people');
    this.notices = root.querySelector('.notices');
    /** participant id -> { info, tile, video, stream } */
    this.remote = new Map();
    this.self = null;
    /** The participant shown large, if any. */
    this.pinnedId = null;
    /** Called with a participant id when the tile's pin button is pressed (none: no button). */
    this.onPin = null;
    /** Says whether a participant coming in is pinned (when none is). */
    this.autoPin = null;
    /** Called with (participant id, tile height in device pixels) when a tile appears or changes size. */
    this.onTileSize = null;
    this.#resize = typeof ResizeObserver === 'function'
      ? new ResizeObserver((entries) => {
        for (const e of entries) {
          const id = e.target.closest('.tile')?.dataset.participant;
          if (id) this.onTileSize?.(id, this.tileHeight(id));
        }
      })
      : null;
  }

  #resize;

  /** A remote participant's role (`clinician`, `patient`, `guest`), or null if unknown. */
  roleOf(participantId) {
    return this.remote.get(participantId)?.info?.role ?? null;
  }

  /** The height of a participant's picture on screen, in device pixels (0: hidden). */
  tileHeight(participantId) {
    const video = this.remote.get(participantId)?.video;
    if (!video) return 0;
    return Math.round(video.getBoundingClientRect().height * (window.devicePixelRatio || 1));
  }

  /** The server paused (or resumed) someone's video because our link is too poor for it. */
  videoPaused(participantId, paused) {
    const entry = this.remote.get(participantId);
    if (!entry) return;
    entry.paused.hidden = !paused;
    entry.tile.classList.toggle('video-paused', paused);
  }

  /** Who we are (listed first, as "You"). */
  setSelf(info) {
    this.self = info;
    this.#renderPeople();
  }

  /** Everyone else in the call now (after joined, admitted or resumed). */
  reset(participants) {
    const present = new Set();
    for (const p of participants) {
      if (p.admitted === false) continue;
      present.add(p.participant_id);
      this.#upsert(p);
    }
    for (const id of [...this.remote.keys()]) {
      if (!present.has(id) && this.remote.get(id).info) this.#remove(id);
    }
    this.#renderPeople();
  }

  /** Someone came into the call. */
  joined(info) {
    const known = this.remote.get(info.participant_id)?.info;
    this.#upsert(info);
    if (!known) this.#notice(this.t('notice_joined', { name: info.display_name }));
    this.#renderPeople();
  }

  /** Someone left the call. */
  left(participantId) {
    const entry = this.remote.get(participantId);
    if (!entry) return;
    this.#remove(participantId);
    if (entry.info) this.#notice(this.t('notice_left', { name: entry.info.display_name }));
    this.#renderPeople();
  }

  /** A participant muted or unmuted a microphone or camera. */
  muted(participantId, kind, muted) {
    const entry = this.remote.get(participantId);
    if (!entry?.info) return;
    entry.info[kind === 'audio' ? 'audio_muted' : 'video_muted'] = muted;
    this.#renderTile(entry);
    this.#renderPeople();
  }

  /** Someone's hand went up or down (group sessions). */
  hand(participantId, raised) {
    const entry = this.remote.get(participantId);
    if (!entry?.info) return;
    const was = entry.info.hand_raised;
    entry.info.hand_raised = raised;
    this.#renderTile(entry);
    this.#renderPeople();
    if (raised && !was) this.#notice(this.t('notice_hand', { name: entry.info.display_name }));
  }

  /** Remote participants whose hand is up. */
  get raisedHands() {
    return [...this.remote.entries()].filter(([, e]) => e.info?.hand_raised).map(([id]) => id);
  }

  /**
   * Shows one participant large, the others small beside (or, on a phone,
   * under) it; `null` returns to the grid.
   */
  pin(participantId) {
    this.pinnedId = participantId;
    for (const [id, entry] of this.remote) entry.tile.classList.toggle('pinned', id === participantId);
    this.#layout();
  }

  /**
   * Marks who is speaking, from the subscribe connection's audio receivers
   * (their RTP audio level, RFC 6464): called a few times a second.
   * @param {RTCRtpReceiver[]} receivers
   */
  speakingFrom(receivers) {
    const levels = new Map();
    for (const r of receivers) {
      if (r.track?.kind !== 'audio') continue;
      const level = r.getSynchronizationSources?.()[0]?.audioLevel ?? 0;
      levels.set(r.track.id, level);
    }
    for (const entry of this.remote.values()) {
      const audio = entry.stream.getAudioTracks()[0];
      const speaking = Boolean(audio) && !entry.info?.audio_muted && (levels.get(audio.id) ?? 0) > SPEAKING_LEVEL;
      if (entry.tile.classList.contains('speaking') !== speaking) {
        entry.tile.classList.toggle('speaking', speaking);
        entry.speaking.hidden = !speaking;
      }
    }
  }

  /** A remote track arrived (it may come before the participant's info). */
  addTrack(participantId, track) {
    const entry = this.#entry(participantId);
    for (const old of entry.stream.getTracks()) {
      if (old.kind === track.kind) entry.stream.removeTrack(old);
    }
    entry.stream.addTrack(track);
    // Re-assigning makes every browser pick up a track added later.
    entry.video.srcObject = entry.stream;
    entry.video.play?.().catch(() => {});
    this.#renderTile(entry);
  }

  /** A remote track went away. */
  removeTrack(participantId, track) {
    const entry = this.remote.get(participantId);
    if (!entry) return;
    entry.stream.removeTrack(track);
    this.#renderTile(entry);
  }

  /** Redraws every label (after a language switch). */
  retranslate() {
    for (const entry of this.remote.values()) this.#renderTile(entry);
    this.#renderPeople();
  }

  /** Empties the view (the call ended). */
  clear() {
    for (const id of [...this.remote.keys()]) this.#remove(id);
    this.notices.replaceChildren();
    this.#renderPeople();
  }

  /** Participant ids with a tile. */
  get participantIds() {
    return [...this.remote.keys()];
  }

  #entry(participantId) {
    let entry = this.remote.get(participantId);
    if (entry) return entry;
    const tile = document.createElement('figure');
    tile.className = 'tile';
    tile.dataset.participant = participantId;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    const placeholder = document.createElement('div');
    placeholder.className = 'placeholder';
    placeholder.setAttribute('aria-hidden', 'true');
    const caption = document.createElement('figcaption');
    const name = document.createElement('span');
    name.className = 'name';
    const role = document.createElement('span');
    role.className = 'role';
    const mic = document.createElement('span');
    mic.className = 'state mic-off';
    const cam = document.createElement('span');
    cam.className = 'state camera-off';
    const paused = document.createElement('span');
    paused.className = 'state video-paused';
    paused.textContent = this.t('video_paused');
    paused.hidden = true;
    const hand = document.createElement('span');
    hand.className = 'state hand';
    hand.hidden = true;
    const speaking = document.createElement('span');
    speaking.className = 'state speaking-now';
    speaking.hidden = true;
    caption.append(name, ' ', role, ' ', mic, ' ', cam, ' ', paused, ' ', hand, ' ', speaking);
    tile.append(video, placeholder, caption);
    let pinButton = null;
    if (this.onPin) {
      pinButton = document.createElement('button');
      pinButton.type = 'button';
      pinButton.className = 'pin secondary';
      pinButton.addEventListener('click', () => this.onPin(participantId));
      tile.append(pinButton);
    }
    if (participantId === this.pinnedId) tile.classList.add('pinned');
    this.tiles.append(tile);
    this.#resize?.observe(video);
    entry = { info: null, tile, video, placeholder, name, role, mic, cam, paused, hand, speaking, pinButton, stream: new MediaStream() };
    this.remote.set(participantId, entry);
    this.#layout();
    return entry;
  }

  #upsert(info) {
    const entry = this.#entry(info.participant_id);
    entry.info = { ...info };
    if (!this.remote.has(this.pinnedId) && this.autoPin?.(info)) this.pin(info.participant_id);
    this.#renderTile(entry);
  }

  #remove(participantId) {
    const entry = this.remote.get(participantId);
    if (!entry) return;
    entry.video.srcObject = null;
    this.#resize?.unobserve(entry.video);
    entry.tile.remove();
    this.remote.delete(participantId);
    this.#layout();
  }

  #renderTile(entry) {
    const info = entry.info;
    const name = info?.display_name ?? this.t('someone');
    const hasVideo = entry.stream.getVideoTracks().length > 0 && !info?.video_muted;
    entry.name.textContent = name;
    entry.role.textContent = info ? `(${this.t(`role_${info.role}`)})` : '';
    entry.mic.textContent = this.t('mic_is_off');
    entry.mic.hidden = !info?.audio_muted;
    entry.cam.textContent = this.t('camera_is_off');
    entry.cam.hidden = !info?.video_muted;
    entry.hand.textContent = this.t('hand_raised');
    entry.hand.hidden = !info?.hand_raised;
    entry.speaking.textContent = this.t('speaking');
    if (entry.pinButton) {
      const pinned = entry.tile.classList.contains('pinned');
      const label = this.t(pinned ? 'unpin' : 'pin');
      entry.pinButton.textContent = label;
      entry.pinButton.setAttribute('aria-pressed', String(pinned));
      // The spoken name starts with the visible one, then says whose tile.
      entry.pinButton.setAttribute('aria-label', `${label}: ${name}`);
    }
    entry.placeholder.textContent = initials(name);
    entry.placeholder.hidden = hasVideo;
    entry.video.classList.toggle('no-picture', !hasVideo);
    entry.video.setAttribute('aria-label', this.t('video_of', { name }));
    entry.tile.setAttribute('aria-label', name);
  }

  #renderPeople() {
    if (!this.people) return;
    const items = [];
    if (this.self) items.push({ ...this.self, display_name: `${this.self.display_name} – ${this.t('you')}` });
    for (const entry of this.remote.values()) if (entry.info) items.push(entry.info);
    this.people.replaceChildren(...items.map((p) => {
      const li = document.createElement('li');
      const states = [
        p.hand_raised ? this.t('hand_raised') : null,
        p.audio_muted ? this.t('mic_is_off') : null,
        p.video_muted ? this.t('camera_is_off') : null,
      ].filter(Boolean);
      li.textContent = `${p.display_name} (${this.t(`role_${p.role}`)})${states.length ? ` – ${states.join(', ')}` : ''}`;
      return li;
    }));
  }

  #layout() {
    this.tiles.dataset.count = String(this.remote.size);
    const pinned = this.pinnedId && this.remote.has(this.pinnedId);
    if (pinned) this.tiles.dataset.pinned = 'true';
    else delete this.tiles.dataset.pinned;
    for (const entry of this.remote.values()) if (entry.info) this.#renderTile(entry);
  }

  /** A short spoken notice (the same as for joins and leaves). */
  notify(text) {
    this.#notice(text);
  }

  #notice(text) {
    const p = document.createElement('p');
    p.textContent = text;
    this.notices.append(p);
    setTimeout(() => p.remove(), NOTICE_MS);
  }
}

function initials(name) {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('') || '?';
}
