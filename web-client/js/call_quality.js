// Connection quality in words (good, fair, poor) from the subscribe
// connection's stats, with the figures kept for whoever asks for details.

/** Loss and round-trip time past which a call is fair, then poor. */
const FAIR = { loss: 0.01, rttMs: 150 };
const POOR = { loss: 0.05, rttMs: 400 };

/** Samples a connection once a second; `sample()` returns the latest grade. */
export class CallQuality {
  #previous = null;

  /**
   * Reads `pc`'s stats; returns { grade, kbps, loss, rttMs } over the time
   * since the last call, or null on the first.
   */
  async sample(pc) {
    if (!pc) return null;
    const report = await pc.getStats();
    let bytes = 0, lost = 0, received = 0, rttMs = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        bytes += s.bytesReceived ?? 0;
        lost += s.packetsLost ?? 0;
        received += s.packetsReceived ?? 0;
      }
      if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime != null) rttMs = s.currentRoundTripTime * 1000;
    });
    const now = performance.now();
    const previous = this.#previous;
    this.#previous = { bytes, lost, received, at: now };
    if (!previous) return null;
    const kbps = ((bytes - previous.bytes) * 8) / Math.max(1, now - previous.at);
    const dl = Math.max(0, lost - previous.lost), dr = Math.max(0, received - previous.received);
    const loss = dl + dr > 0 ? dl / (dl + dr) : 0;
    const rtt = rttMs ?? 0;
    const grade = loss > POOR.loss || rtt > POOR.rttMs ? 'poor' : loss > FAIR.loss || rtt > FAIR.rttMs ? 'fair' : 'good';
    return { grade, kbps, loss, rttMs };
  }
}

/** The details line: "511 kbit/s received, 0.0% lost, 12 ms round trip". */
export function qualityDetails(q) {
  return `${q.kbps.toFixed(0)} kbit/s received, ${(q.loss * 100).toFixed(1)}% lost, ${q.rttMs == null ? '–' : `${q.rttMs.toFixed(0)} ms`} round trip`;
}
