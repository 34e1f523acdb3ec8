// The staff scheduling page: weekly availability, the follow-up queue
// (assign, book sooner, cancel), CSV import with a preview, the calendar
// feed link, the notification inbox, group classes and symptom monitoring.

import { StaffSession } from '/js/staff_session.js';
import { t, toggle, translate, when } from '/js/schedule_i18n.js';

const $ = (id) => document.getElementById(id);
const session = new StaffSession();
let availability = null;
let importBytes = null;
let lastQueue = [];
let lastInbox = [];
let lastMonitoring = null;
/** The caller's group classes, each as `GET /api/group-sessions/{id}` answers. */
let lastClasses = [];

/** Weekday names as the API takes them, Monday first (as `day_0`…`day_6`). */
const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

/** An element with text and attributes. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function say(text) {
  $('status').textContent = text;
}

/** A JSON API call; throws `{ code, message }` on an error answer. */
async function api(path, options = {}) {
  const r = await session.fetch(path, options);
  const body = r.status === 204 ? {} : await r.json().catch(() => ({}));
  if (!r.ok && !(options.accept ?? []).includes(r.status)) {
    throw { status: r.status, code: body.error?.code ?? 'error', message: body.error?.message ?? `HTTP ${r.status}`, details: body.error?.details };
  }
  return { status: r.status, body };
}

function failed(e) {
  say(t('error_generic', { message: e.message ?? String(e) }));
}

// ----- availability -----

function hhmm(minutes) {
  return `${String(Math.floor(minutes / 60)).padStart(2, '0')}:${String(minutes % 60).padStart(2, '0')}`;
}

function periodRow(day, period) {
  const row = el('div', { class: 'period' });
  const start = el('input', { type: 'time', value: period.start, required: true, 'aria-label': `${t(`day_${day}`)} ${t('period_start')}`, class: 'start' });
  const end = el('input', { type: 'time', value: period.end, required: true, 'aria-label': `${t(`day_${day}`)} ${t('period_end')}`, class: 'end' });
  row.append(
    el('span', { text: t('period_start'), 'aria-hidden': 'true' }), start,
    el('span', { text: t('period_end'), 'aria-hidden': 'true' }), end,
    el('button', { type: 'button', class: 'secondary', text: t('remove_period'), 'aria-label': `${t('remove_period')} (${t(`day_${day}`)} ${period.start})`, onclick: () => { row.remove(); } }),
  );
  return row;
}

function renderWeek() {
  const week = $('week');
  week.replaceChildren();
  for (let day = 0; day < 7; day += 1) {
    const periods = (availability?.weekly ?? []).filter((p) => p.weekday === day).sort((a, b) => a.start_minute - b.start_minute);
    const list = el('div', { class: 'periods', 'data-weekday': day });
    for (const p of periods) list.append(periodRow(day, { start: hhmm(p.start_minute), end: hhmm(p.end_minute) }));
    const box = el('div', { class: 'day', role: 'group', 'aria-labelledby': `day-${day}` },
      el('h3', { id: `day-${day}`, text: t(`day_${day}`) }),
      list,
      el('button', { type: 'button', class: 'secondary add-period', text: t('add_period'), 'aria-label': `${t('add_period')} (${t(`day_${day}`)})`, onclick: () => list.append(periodRow(day, { start: '09:00', end: '12:00' })) }),
    );
    week.append(box);
  }
}

async function loadAvailability() {
  const { body } = await api(`/api/clinicians/${session.me.id}/availability`);
  availability = body.availability;
  $('time-zone').value = availability?.time_zone ?? 'Europe/Paris';
  $('slot-minutes').value = availability?.slot_minutes ?? 20;
  $('days-off').value = (availability?.days_off ?? []).join('\n');
  renderWeek();
}

async function saveAvailability(event) {
  event.preventDefault();
  const weekly = [];
  for (const list of document.querySelectorAll('#week .periods')) {
    for (const row of list.querySelectorAll('.period')) {
      weekly.push({ weekday: Number(list.dataset.weekday), start: row.querySelector('.start').value, end: row.querySelector('.end').value });
    }
  }
  const body = {
    time_zone: $('time-zone').value.trim(),
    slot_minutes: Number($('slot-minutes').value),
    weekly,
    days_off: $('days-off').value.split(/\s+/).filter(Boolean),
  };
  try {
    const r = await api(`/api/clinicians/${session.me.id}/availability`, { method: 'PUT', body: JSON.stringify(body) });
    availability = r.body.availability;
    renderWeek();
    say(t('saved'));
  } catch (e) {
    failed(e);
  }
}

// ----- the follow-up queue -----

function renderQueue() {
  const tbody = $('queue-table').querySelector('tbody');
  tbody.replaceChildren();
  $('queue-empty').hidden = lastQueue.length > 0;
  $('queue-table').hidden = lastQueue.length === 0;
  for (const f of lastQueue) {
    const name = f.patient ? `${f.patient.display_name}${f.patient.hospital_id ? ` (${f.patient.hospital_id})` : ''}` : f.patient_id;
    const at = el('input', { type: 'datetime-local', 'aria-label': `${t('assign_at')} — ${name}`, class: 'assign-at' });
    const actions = el('td', {},
      el('button', { type: 'button', class: 'sooner', text: t('book_sooner'), 'aria-label': `${t('book_sooner')} — ${name}`, onclick: () => bookSooner(f) }),
      el('button', { type: 'button', class: 'secondary assign', text: t('assign'), 'aria-label': `${t('assign')} — ${name}`, onclick: () => assign(f, null) }),
      el('span', { class: 'row' }, at,
        el('button', { type: 'button', class: 'secondary assign-exact', text: t('assign_at'), 'aria-label': `${t('assign_at')} — ${name}`, onclick: () => at.value && assign(f, new Date(at.value).toISOString()) })),
      el('button', { type: 'button', class: 'danger cancel', text: t('cancel'), 'aria-label': `${t('cancel')} — ${name}`, onclick: () => cancel(f) }),
    );
    const due = `${when(f.due)}${f.overdue ? ` (${t('overdue')})` : ''}`;
    tbody.append(el('tr', { 'data-follow-up': f.id, class: f.priority === 'urgent' ? 'urgent' : null },
      el('th', { scope: 'row', text: name }),
      el('td', { text: due }),
      el('td', { class: `priority-${f.priority}`, text: t(`priority_${f.priority}`) }),
      el('td', { text: t(`status_${f.status}`) }),
      el('td', { text: when(f.scheduled_start) }),
      actions));
  }
}

async function loadQueue() {
  const { body } = await api('/api/follow-ups');
  lastQueue = body.follow_ups;
  renderQueue();
}

async function bookSooner(f) {
  try {
    const { body } = await api(`/api/follow-ups/${f.id}/book-sooner`, { method: 'POST' });
    say(t(`sooner_${body.outcome}`, { when: when(body.visit?.scheduled_start) }));
    await Promise.all([loadQueue(), loadInbox()]);
  } catch (e) {
    failed(e);
  }
}

async function assign(f, start) {
  try {
    const { body } = await api(`/api/follow-ups/${f.id}/assign`, {
      method: 'POST',
      headers: { 'Idempotency-Key': crypto.randomUUID() },
      body: JSON.stringify(start ? { scheduled_start: start } : {}),
    });
    say(body.follow_up.status === 'placed' ? t('assigned') : t('no_slot'));
    await loadQueue();
  } catch (e) {
    failed(e);
  }
}

async function cancel(f) {
  if (!window.confirm(t('confirm_cancel'))) return;
  try {
    await api(`/api/follow-ups/${f.id}/cancel`, { method: 'POST' });
    say(t('cancelled_done'));
    await loadQueue();
  } catch (e) {
    failed(e);
  }
}

// ----- CSV import -----

function reportTable(caption, rows) {
  const table = el('table', {}, el('caption', { text: caption }),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: t('col_line') }), el('th', { scope: 'col', text: t('col_field') }), el('th', { scope: 'col', text: t('col_problem') }))));
  const tbody = el('tbody');
  for (const e of rows) tbody.append(el('tr', {}, el('td', { text: String(e.line) }), el('td', { text: e.field }), el('td', { text: e.message })));
  table.append(tbody);
  return el('div', { class: 'scroll' }, table);
}

function renderReport(report, committed) {
  const box = $('import-report');
  box.replaceChildren();
  const summary = t('import_summary', {
    rows: report.rows, separator: report.separator, encoding: report.encoding,
    imported: report.imported, errors: report.errors.length, warnings: report.warnings.length,
  });
  box.append(el('p', { class: 'report-summary', text: summary }));
  if (committed) box.append(el('p', { text: report.imported > 0 ? t('import_done', { imported: report.imported }) : t('import_refused') }));
  if (report.errors.length) box.append(reportTable(t('refused'), report.errors));
  if (report.warnings.length) box.append(reportTable(t('to_check'), report.warnings));
}

async function sendImport(dryRun) {
  const partial = $('import-partial').checked;
  const query = `?partial=${partial}${dryRun ? '&dry_run=true' : ''}`;
  const headers = dryRun ? {} : { 'Idempotency-Key': crypto.randomUUID() };
  try {
    const { body } = await api(`/api/visits/import${query}`, { method: 'POST', headers, body: importBytes, accept: [422] });
    if (!body.import) throw { message: body.error?.message ?? '' };
    renderReport(body.import, !dryRun);
    $('import-commit').disabled = !dryRun || body.import.imported === 0 || (body.import.errors.length > 0 && !partial);
    if (!dryRun) await loadQueue();
  } catch (e) {
    if (e.status === 403) say(t('admins_only'));
    else failed(e);
  }
}

async function previewImport(event) {
  event.preventDefault();
  const file = $('import-file').files[0];
  if (!file) return;
  importBytes = await file.arrayBuffer();
  await sendImport(true);
}

// ----- calendar feed -----

async function createFeed() {
  try {
    const { body } = await api('/api/calendar-token', { method: 'POST' });
    $('calendar-url').value = body.url;
    $('calendar-link').hidden = false;
    $('calendar-create').textContent = t('calendar_replace');
    $('calendar-url').select();
  } catch (e) {
    failed(e);
  }
}

async function revokeFeed() {
  try {
    await api('/api/calendar-token', { method: 'DELETE' });
    $('calendar-url').value = '';
    $('calendar-link').hidden = true;
    $('calendar-create').textContent = t('calendar_create');
    say(t('calendar_revoked'));
  } catch (e) {
    failed(e);
  }
}

// ----- inbox -----

function renderInbox(unread) {
  const list = $('inbox-list');
  list.replaceChildren();
  $('inbox-empty').hidden = lastInbox.length > 0;
  const badge = $('unread-badge');
  badge.hidden = unread === 0;
  badge.textContent = t('unread', { n: unread });
  for (const n of lastInbox) {
    const detail = n.kind === 'booked_sooner' || n.kind === 'follow_up_handed_over' ? when(n.detail) : n.detail;
    const item = el('li', { class: n.read_at ? null : 'unread', 'data-notification': n.id },
      el('span', { text: `${when(n.created_at)} — ${t(`kind_${n.kind}`, { detail })}` }));
    if (n.visit_id) item.append(' ', el('a', { href: `/schedule?visit=${encodeURIComponent(n.visit_id)}#monitoring`, text: n.visit_id }));
    if (!n.read_at) item.append(' ', el('button', { type: 'button', class: 'secondary mark-read', text: t('mark_read'), onclick: () => markRead(n) }));
    list.append(item);
  }
}

async function loadInbox() {
  const { body } = await api('/api/notifications');
  lastInbox = body.notifications;
  renderInbox(body.unread);
}

async function markRead(n) {
  try {
    await api(`/api/notifications/${n.id}/read`, { method: 'POST' });
    await loadInbox();
  } catch (e) {
    failed(e);
  }
}

// ----- group classes -----

function renderClassDays() {
  const box = $('class-days');
  const checked = new Set([...box.querySelectorAll('input:checked')].map((i) => i.value));
  box.replaceChildren(el('legend', { text: t('class_days') }));
  WEEKDAYS.forEach((day, i) => {
    const id = `class-day-${day}`;
    box.append(el('input', { type: 'checkbox', id, value: day, checked: checked.has(day) }), el('label', { for: id, text: t(`day_${i}`) }), ' ');
  });
}

function renderClasses() {
  const box = $('class-list');
  box.replaceChildren();
  if (lastClasses.length === 0) box.append(el('p', { text: t('class_none') }));
  for (const c of lastClasses) {
    const days = c.weekdays.map((d) => t(`day_${WEEKDAYS.indexOf(d)}`)).join(', ');
    const head = el('p', {},
      t('class_summary', { days, time: c.start_time, minutes: c.duration_minutes, weeks: c.weeks, first: c.first_day }), ' — ',
      t('class_places', { n: c.enrolled, cap: c.capacity }), ' — ',
      c.next_occurrence ? t('class_next', { when: when(c.next_occurrence.scheduled_start) }) : t('class_no_next'));
    const table = el('table', {}, el('caption', { text: c.title }),
      el('thead', {}, el('tr', {}, ...['col_patient', 'col_attended', 'col_next_link', 'col_actions'].map((k) => el('th', { scope: 'col', text: t(k) })))));
    const tbody = el('tbody');
    for (const e of c.enrolments) {
      const name = e.withdrawn_at ? `${e.patient.display_name} (${t('class_withdrawn')})` : e.patient.display_name;
      const link = e.next_link ? el('input', { type: 'url', readonly: true, value: e.next_link, 'aria-label': `${t('col_next_link')}: ${e.patient.display_name}` }) : null;
      const withdraw = e.withdrawn_at ? null : el('button', { type: 'button', class: 'secondary', text: t('class_withdraw'), 'aria-label': `${t('class_withdraw')}: ${e.patient.display_name}`, onclick: () => withdrawFromClass(c, e) });
      tbody.append(el('tr', { 'data-patient': e.patient.id }, el('td', { text: name }), el('td', { text: String(e.attended) }), el('td', {}, link), el('td', {}, withdraw)));
    }
    table.append(tbody);
    const nameId = `class-enrol-${c.id}`;
    // One Idempotency-Key per name typed: a double click enrols once; a
    // new name is a new request.
    const enrolForm = el('form', { class: 'row class-enrol', onsubmit: (event) => enrolInClass(event, c) },
      el('label', { for: nameId, text: t('class_enrol_name') }),
      el('input', { id: nameId, required: true, maxlength: 200, autocomplete: 'off', oninput: (event) => { event.target.form.dataset.key = crypto.randomUUID(); } }),
      el('button', { type: 'submit', text: t('class_enrol') }));
    enrolForm.dataset.key = crypto.randomUUID();
    box.append(el('div', { class: 'group-class', 'data-class': c.id }, el('h3', { text: c.title }), head, el('div', { class: 'scroll' }, table), enrolForm));
  }
}

async function loadClasses() {
  const { body } = await api('/api/group-sessions');
  lastClasses = await Promise.all(body.group_sessions.map(async (c) => (await api(`/api/group-sessions/${c.id}`)).body));
  renderClasses();
}

async function createClass(event) {
  event.preventDefault();
  const button = event.target.querySelector('button[type=submit]');
  if (button.disabled) return;
  button.disabled = true;
  const body = {
    title: $('class-title').value.trim(),
    time_zone: availability?.time_zone ?? undefined,
    weekdays: [...$('class-days').querySelectorAll('input:checked')].map((i) => i.value),
    start_time: $('class-start').value,
    duration_minutes: Number($('class-length').value),
    first_day: $('class-first').value,
    weeks: Number($('class-weeks').value),
    capacity: Number($('class-capacity').value),
  };
  try {
    const r = await api('/api/group-sessions', { method: 'POST', body: JSON.stringify(body) });
    say(t('class_created', { n: r.body.occurrences.length }));
    $('class-title').value = '';
    await loadClasses();
  } catch (e) {
    if (e.code === 'slot_taken') say(t('class_clash', { when: when(e.details?.scheduled_start) }));
    else failed(e);
  } finally {
    button.disabled = false;
  }
}

async function enrolInClass(event, c) {
  event.preventDefault();
  const input = event.target.querySelector('input');
  const name = input.value.trim();
  try {
    await api(`/api/group-sessions/${c.id}/enrolments`, {
      method: 'POST',
      headers: { 'Idempotency-Key': event.target.dataset.key },
      body: JSON.stringify({ patient: { display_name: name } }),
    });
    say(t('class_enrolled', { name }));
    await loadClasses();
  } catch (e) {
    if (e.code === 'class_full') say(t('class_full'));
    else failed(e);
  }
}

async function withdrawFromClass(c, e) {
  try {
    await api(`/api/group-sessions/${c.id}/enrolments/${e.patient.id}`, { method: 'DELETE' });
    await loadClasses();
  } catch (err) {
    failed(err);
  }
}

// ----- symptom monitoring -----

function renderMonitoring() {
  const box = $('monitoring-list');
  box.replaceChildren();
  if (!lastMonitoring) return;
  $('monitoring-enrol').hidden = false;
  if (lastMonitoring.length === 0) box.append(el('p', { text: t('monitoring_none') }));
  for (const e of lastMonitoring) {
    const state = e.active ? t('monitoring_active', { until: when(e.ends_at) }) : t('monitoring_ended');
    const table = el('table', {}, el('caption', { text: `${state} — ${t('missed_slots', { n: e.missed.length })}` }),
      el('thead', {}, el('tr', {}, ...['col_slot', 'col_pain', 'col_flags', 'col_symptoms'].map((k) => el('th', { scope: 'col', text: t(k) })))));
    const tbody = el('tbody');
    for (const c of e.check_ins) {
      const symptoms = ['fever', 'cough', 'breathlessness', 'fatigue'].filter((s) => c.answers[s]).join(', ');
      const words = [symptoms, c.answers.new_symptoms].filter(Boolean).join(' — ');
      tbody.append(el('tr', { class: c.red_flags.length ? 'urgent' : null },
        el('td', { text: `${t(c.slot)} ${when(c.slot_start)}` }),
        el('td', {}, el('meter', { min: 0, max: 10, value: c.pain, 'aria-label': `${t('col_pain')} ${c.pain}/10` }), ` ${c.pain}/10`),
        el('td', { text: c.red_flags.join(', ') }),
        el('td', { text: words })));
    }
    table.append(tbody);
    const section = el('div', { class: 'enrolment', 'data-enrolment': e.id }, el('div', { class: 'scroll' }, table));
    if (e.active) section.append(el('button', { type: 'button', class: 'danger revoke-monitoring', text: t('monitoring_revoke'), onclick: () => revokeMonitoring(e) }));
    box.append(section);
  }
}

async function loadMonitoring(event) {
  event?.preventDefault();
  const visit = $('monitoring-visit').value.trim();
  if (!visit) return;
  try {
    const { body } = await api(`/api/visits/${encodeURIComponent(visit)}/monitoring`);
    lastMonitoring = body.enrolments;
    renderMonitoring();
  } catch (e) {
    failed(e);
  }
}

async function enrol(event) {
  event.preventDefault();
  const visit = $('monitoring-visit').value.trim();
  const body = { days: Number($('monitoring-days').value), missed_after: Number($('monitoring-missed').value), language: $('monitoring-language').value };
  try {
    const r = await api(`/api/visits/${encodeURIComponent(visit)}/monitoring`, { method: 'POST', body: JSON.stringify(body) });
    $('monitoring-url').value = r.body.link.url;
    $('monitoring-new-link').hidden = false;
    await loadMonitoring();
  } catch (e) {
    failed(e);
  }
}

async function revokeMonitoring(e) {
  try {
    await api(`/api/monitoring/${e.id}/revoke`, { method: 'POST' });
    $('monitoring-new-link').hidden = true;
    await loadMonitoring();
  } catch (err) {
    failed(err);
  }
}

// ----- start -----

function rerender() {
  translate();
  if (!session.me) return;
  renderWeek();
  renderQueue();
  renderInbox(lastInbox.filter((n) => !n.read_at).length);
  renderMonitoring();
  renderClassDays();
  renderClasses();
}

async function signedIn() {
  $('signin').hidden = true;
  $('app').hidden = false;
  const visit = new URLSearchParams(location.search).get('visit');
  if (visit) $('monitoring-visit').value = visit;
  try {
    await Promise.all([loadAvailability(), loadQueue(), loadInbox(), loadClasses(), visit ? loadMonitoring() : null]);
  } catch (e) {
    failed(e);
  }
  document.body.dataset.ready = 'true';
  setInterval(() => loadInbox().catch(() => {}), 30000);
}

$('lang').addEventListener('click', () => { toggle(); rerender(); });
$('availability-form').addEventListener('submit', saveAvailability);
$('import-form').addEventListener('submit', previewImport);
$('import-file').addEventListener('change', () => { $('import-commit').disabled = true; $('import-report').replaceChildren(); });
$('import-commit').addEventListener('click', () => sendImport(false));
$('calendar-create').addEventListener('click', createFeed);
$('calendar-revoke').addEventListener('click', revokeFeed);
$('class-form').addEventListener('submit', createClass);
$('monitoring-load').addEventListener('submit', loadMonitoring);
$('monitoring-enrol').addEventListener('submit', enrol);
$('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const error = await session.signIn($('email').value, $('password').value);
  if (error) {
    $('signin-error').textContent = error;
    return;
  }
  await signedIn();
});

translate();
renderClassDays();
if (await session.refresh()) await signedIn();
else $('signin').hidden = false;
