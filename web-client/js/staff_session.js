// Staff sign-in, shared by the clinician console and the ops dashboard:
// a short-lived access token in memory, renewed through the HttpOnly
// refresh cookie.

/** A staff member's session: the access token and who signed in. */
export class StaffSession {
  constructor() {
    /** The bearer access token, or null before sign-in. */
    this.token = null;
    /** The signed-in account (`clinician` in the session body), or null. */
    this.me = null;
  }

  /**
   * Renews the session from the refresh cookie; true when signed in. Tabs
   * take turns (Web Locks): a refresh token is single-use, and two tabs
   * sending the same one at once would look like a stolen token and end
   * the session. The second tab sends the cookie the first one received.
   */
  async refresh() {
    const renew = async () => {
      const r = await fetch('/api/auth/refresh', { method: 'POST' });
      if (!r.ok) return false;
      this.#accept(await r.json());
      return true;
    };
    return navigator.locks ? navigator.locks.request('teleconsult-refresh', renew) : renew();
  }

  /** Signs in; null on success, else the reason in plain words. */
  async signIn(email, password) {
    const r = await fetch('/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      this.#accept(body);
      return null;
    }
    return body.error?.code === 'too_many_attempts'
      ? 'Too many attempts: wait a moment and try again.'
      : 'Wrong email or password.';
  }

  /** `fetch` with the bearer token; after a 401 it renews once and retries. */
  async fetch(path, options = {}) {
    const send = () => {
      const headers = { ...(options.headers ?? {}) };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      if (options.body) headers['Content-Type'] = 'application/json';
      return fetch(path, { ...options, headers });
    };
    const r = await send();
    return r.status === 401 && await this.refresh() ? send() : r;
  }

  #accept(body) {
    this.token = body.access_token;
    this.me = body.clinician;
  }
}
