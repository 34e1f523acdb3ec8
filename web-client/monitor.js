// The patient's twice-daily symptom questionnaire, opened from the link
// their care team sent (no account). The token stays in the page: the
// Referrer-Policy keeps it from leaving.

import { t, toggle, translate, useLanguage } from '/js/schedule_i18n.js';

const $ = (id) => document.getElementById(id);
const token = location.pathname.split('/').pop();
const api = `/api/monitor/${encodeURIComponent(token)}`;
let status = null;

function show(id) {
  for (const s of document.querySelectorAll('.screen')) s.hidden = s.id !== id;
}

function showError(code) {
  const known = ['link_unknown', 'link_revoked', 'link_expired'].includes(code) ? code : 'network';
  $('error-title').textContent = t(`${known}_title`);
  $('error-body').textContent = t(`${known}_body`);
  show('screen-error');
  $('error-title').focus();
}

function render() {
  translate();
  if (!status) return;
  const slot = status.slot.name;
  $('form-title').textContent = t(`monitor_slot_${slot}`);
  $('done-body').textContent = t('monitor_done_body', {
    slot: t(`monitor_slot_${slot}`).toLowerCase(),
    next: t(slot === 'morning' ? 'monitor_next_evening' : 'monitor_next_morning'),
  });
}

async function load() {
  let r;
  try {
    r = await fetch(api);
  } catch {
    showError('network');
    return;
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    showError(body.error?.code);
    return;
  }
  status = body;
  if (!localStorage.getItem('teleconsult.lang')) useLanguage(status.language);
  render();
  show(status.slot.answered ? 'screen-done' : 'screen-form');
}

$('pain').addEventListener('input', () => { $('pain-value').textContent = $('pain').value; });
$('lang').addEventListener('click', () => { toggle(); render(); });
$('check-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.target;
  const answers = {
    fever: form.fever.checked,
    cough: form.cough.checked,
    breathlessness: form.breathlessness.checked,
    fatigue: form.fatigue.checked,
    pain: Number(form.pain.value),
    new_symptoms: form.new_symptoms.value.trim(),
  };
  let r;
  try {
    r = await fetch(`${api}/check-ins`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(answers) });
  } catch {
    showError('network');
    return;
  }
  const body = await r.json().catch(() => ({}));
  if (r.status === 201 || body.error?.code === 'already_answered') {
    $('done-flag').hidden = !(body.red_flags?.length > 0);
    show('screen-done');
    $('done-title').focus();
  } else if (r.status === 422) {
    $('form-error').textContent = t('error_generic', { message: body.error?.message ?? '' });
    $('form-error').hidden = false;
  } else {
    showError(body.error?.code);
  }
});

translate();
load();
