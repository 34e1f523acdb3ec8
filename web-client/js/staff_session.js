// Staff sign-in, shared by the clinician console and the ops dashboard:
// a short-lived access token in memory, renewed through the HttpOnly
// refresh cookie.

/** Renews the session from the refresh cookie; the session body, or null. */
export async function refreshSession() {
  const r = await fetch('/api/auth/refresh', { method: 'POST' });
  return r.ok ? r.json() : null;
}

/** Signs in; `{ session }` on success, else `{ error }` in plain words. */
export async function signIn(email, password) {
  const r = await fetch('/api/auth/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  const body = await r.json().catch(() => ({}));
  if (r.ok) return { session: body };
  return {
    error: body.error?.code === 'too_many_attempts'
      ? 'Too many attempts: wait a moment and try again.'
      : 'Wrong email or password.',
  };
}
