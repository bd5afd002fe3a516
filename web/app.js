// HashInsight live portfolio dashboard.
//
// Plain browser JavaScript, no build step. The page signs in by exchanging an API token for the
// HttpOnly `hi_session` cookie (POST /api/session); every later request, the EventSource
// included, authenticates with that cookie. The token itself is never stored.
//
// The portfolio is never polled: it is read once on sign-in and then updated from the
// `portfolio` events of GET /api/portfolio/stream. Only the pipeline health is polled (10 s).
'use strict';

(() => {
  const HEALTH_INTERVAL_MS = 10000;
  const STREAM_REOPEN_MS = 3000;

  // State the tests read: the last portfolio shown and the last push received.
  const hiState = {
    portfolio: null,
    lastPush: null,
    pushes: [],
    models: new Map(),
    scopes: null,
    // Who is signed in (user, tenant, scopes; never the token), as /api/session answers it.
    session: null,
    lastWrite: null,
    visibleAfterMs: null,
  };
  window.hiState = hiState;

  let stream = null;
  let streamReopenTimer = null;
  let healthTimer = null;
  let projectionChart = null;
  let forecastChart = null;
  let refreshPending = null;
  let signedIn = false;
  // The write whose visibility is being timed, and the pushes seen since its click.
  let pendingWrite = null;

  const $ = (selector, root = document) => root.querySelector(selector);
  const byTestId = (id) => $(`[data-testid="${id}"]`);

  // ---------------------------------------------------------------- formatting

  const nf = (digits) => new Intl.NumberFormat('en-US', {
    minimumFractionDigits: digits, maximumFractionDigits: digits,
  });
  const fmt = {
    int: (v) => nf(0).format(v),
    num: (v, d = 2) => nf(d).format(v),
    usd: (v) => (v < 0 ? '−$' : '$') + nf(2).format(Math.abs(v)),
    usd0: (v) => (v < 0 ? '−$' : '$') + nf(0).format(Math.abs(v)),
    btc: (v) => (v < 0 ? '−' : '') + nf(8).format(Math.abs(v)) + ' BTC',
    age: (ms) => {
      if (ms < 1000) return `${Math.round(ms)} ms`;
      if (ms < 120000) return `${nf(1).format(ms / 1000)} s`;
      if (ms < 7200000) return `${Math.round(ms / 60000)} min`;
      return `${nf(1).format(ms / 3600000)} h`;
    },
  };

  // Sets an element's text and its raw value (data-value) so tests need not parse formatting.
  function setValue(testId, value, text) {
    const el = byTestId(testId);
    if (!el) return;
    el.textContent = text;
    if (value === null || value === undefined || Number.isNaN(value)) {
      el.removeAttribute('data-value');
    } else {
      el.dataset.value = String(value);
    }
  }

  function toNumber(v) {
    const n = typeof v === 'number' ? v : parseFloat(v);
    return Number.isFinite(n) ? n : 0;
  }

  // ---------------------------------------------------------------- messages

  let bannerTimer = null;
  function showBanner(text, kind = 'warn', ms = 8000) {
    const el = byTestId('banner');
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = false;
    clearTimeout(bannerTimer);
    if (ms > 0) bannerTimer = setTimeout(() => { el.hidden = true; }, ms);
  }

  function errorOf(body) {
    return body && typeof body === 'object' && body.error ? body.error : null;
  }

  // ---------------------------------------------------------------- HTTP

  class SessionExpired extends Error {}

  // fetch with the session cookie. Answers {status, ok, body, headers}. A 401 on a data route
  // ends the page's session; a 429 shows how long to wait. Callers handle the rest.
  async function api(method, path, { body, headers = {} } = {}) {
    const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let parsed = null;
    const text = await res.text();
    if (text) {
      try { parsed = JSON.parse(text); } catch { parsed = { raw: text }; }
    }
    const out = { status: res.status, ok: res.ok, body: parsed, headers: res.headers };
    if (res.status === 401 && signedIn) {
      expireSession('Your session has expired: sign in again.');
      throw new SessionExpired();
    }
    if (res.status === 429) {
      const retry = parseInt(res.headers.get('Retry-After') || '1', 10);
      showBanner(`Slow down, retry in ${Number.isFinite(retry) ? retry : 1} s.`, 'warn');
    }
    return out;
  }

  // ---------------------------------------------------------------- views

  function showSignIn(message = '') {
    signedIn = false;
    $('#dashboard-view').hidden = true;
    $('#session-bar').hidden = true;
    $('#signin-view').hidden = false;
    const msg = byTestId('signin-message');
    msg.textContent = message;
    msg.dataset.kind = message ? 'info' : '';
    $('#token-input').value = '';
  }

  function showDashboard() {
    signedIn = true;
    $('#signin-view').hidden = true;
    $('#dashboard-view').hidden = false;
    $('#session-bar').hidden = false;
  }

  // Forgets everything about the signed-in user and stops the live parts.
  function teardown() {
    closeStream();
    clearInterval(healthTimer);
    healthTimer = null;
    hiState.portfolio = null;
    hiState.lastPush = null;
    hiState.pushes = [];
    hiState.lastWrite = null;
    hiState.visibleAfterMs = null;
    pendingWrite = null;
    hiState.scopes = null;
    hiState.session = null;
    if (projectionChart) { projectionChart.destroy(); projectionChart = null; }
    if (forecastChart) { forecastChart.destroy(); forecastChart = null; }
    $('#model-rows').replaceChildren();
    $('#miner-rows').replaceChildren();
    byTestId('visible-after').hidden = true;
  }

  function expireSession(message) {
    teardown();
    showSignIn(message);
  }

  // ---------------------------------------------------------------- sign-in

  // The part of POST / GET /api/session's answer the page keeps.
  function sessionOf(body) {
    return {
      user_id: body?.user_id, tenant_id: body?.tenant_id,
      scopes: Array.isArray(body?.scopes) ? body.scopes : null, expires_at: body?.expires_at,
    };
  }

  async function signIn(token) {
    const msg = byTestId('signin-message');
    msg.textContent = '';
    token = token.trim().replace(/^Bearer\s+/i, '');
    if (!token) {
      msg.textContent = 'Paste a token first.';
      return;
    }
    let res;
    try {
      res = await fetch('/api/session', {
        method: 'POST', credentials: 'same-origin',
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
      });
    } catch (e) {
      msg.textContent = `The API cannot be reached (${e.message}).`;
      return;
    }
    const body = await res.json().catch(() => null);
    if (res.status === 201) {
      teardown();
      await startDashboard(null, sessionOf(body));
      return;
    }
    if (res.status === 401) {
      msg.textContent = `That token was not accepted: ${errorOf(body)?.message || 'unauthorized'}.`;
    } else if (res.status === 429) {
      msg.textContent = `Slow down, retry in ${res.headers.get('Retry-After') || 1} s.`;
    } else {
      msg.textContent = errorOf(body)?.message || `Sign-in failed (HTTP ${res.status}).`;
    }
  }

  async function signOut() {
    try {
      await fetch('/api/session', { method: 'DELETE', credentials: 'same-origin' });
    } catch {
      // Signed out locally all the same; the cookie expires with the token.
    }
    teardown();
    showSignIn('Signed out.');
  }

  function hasScope(scope) {
    return !hiState.scopes || hiState.scopes.includes(scope);
  }

  // ---------------------------------------------------------------- dashboard

  async function startDashboard(initialPortfolio, session) {
    showDashboard();
    hiState.session = session;
    hiState.scopes = session?.scopes || null;
    setStreamState('connecting');
    refreshHealth();
    healthTimer = setInterval(refreshHealth, HEALTH_INTERVAL_MS);
    try {
      await loadModels();
      if (initialPortfolio) {
        renderPortfolio(initialPortfolio);
      } else {
        const res = await api('GET', '/api/portfolio');
        if (res.ok) renderPortfolio(res.body);
        else showBanner(errorOf(res.body)?.message || `Portfolio: HTTP ${res.status}`, 'error');
      }
      openStream();
      await Promise.all([loadProjection(), loadForecast(), loadMiners()]);
    } catch (e) {
      if (!(e instanceof SessionExpired)) showBanner(`Something went wrong: ${e.message}`, 'error');
    }
  }

  async function loadModels() {
    const res = await api('GET', '/api/miner-models');
    if (!res.ok || !Array.isArray(res.body)) return;
    hiState.models = new Map(res.body.map((m) => [Number(m.id), m]));
    const select = $('#model-select');
    const groups = new Map();
    for (const m of res.body) {
      if (!groups.has(m.manufacturer)) groups.set(m.manufacturer, []);
      groups.get(m.manufacturer).push(m);
    }
    const nodes = [];
    for (const [maker, models] of groups) {
      const group = document.createElement('optgroup');
      group.label = maker;
      for (const m of models) {
        const opt = document.createElement('option');
        opt.value = String(m.id);
        const price = m.price_usd == null ? '' : ` · ${fmt.usd0(toNumber(m.price_usd))}`;
        opt.textContent = `${m.name} — ${fmt.num(toNumber(m.hashrate_ths), 0)} TH/s, ` +
          `${fmt.num(toNumber(m.power_w), 0)} W${price}`;
        group.append(opt);
      }
      nodes.push(group);
    }
    select.replaceChildren(...nodes);
    const allowed = hasScope('miners:write');
    $('#add-miner-form').hidden = !allowed;
    const forbidden = byTestId('add-miner-forbidden');
    forbidden.hidden = allowed;
    forbidden.textContent = allowed ? '' :
      'Your role cannot add or change miners: that needs the miners:write scope.';
  }

  // ---------------------------------------------------------------- portfolio

  // Derived figures: BTC price implied by the revenue, BTC values, ROI and break-even.
  function derive(p) {
    const revenueUsd = toNumber(p.revenue_usd_day);
    const revenueBtc = toNumber(p.revenue_btc_day);
    const costUsd = toNumber(p.cost_usd_day);
    const profitUsd = toNumber(p.profit_usd_day);
    const powerKw = toNumber(p.power_kw);
    const price = revenueBtc > 0 && revenueUsd > 0 ? revenueUsd / revenueBtc : null;
    let capex = 0;
    let capexKnown = true;
    for (const row of p.breakdown || []) {
      const model = hiState.models.get(Number(row.model_id));
      if (!model || model.price_usd == null) { capexKnown = false; continue; }
      capex += toNumber(row.units) * toNumber(model.price_usd);
    }
    return {
      price,
      costBtc: price ? costUsd / price : null,
      profitBtc: price ? profitUsd / price : null,
      capex: capexKnown ? capex : null,
      roiDays: capexKnown && profitUsd > 0 ? capex / profitUsd : null,
      breakEven: powerKw > 0 ? revenueUsd / (powerKw * 24) : null,
      // W per TH/s is J per TH.
      efficiency: toNumber(p.hashrate_ths) > 0 ? (powerKw * 1000) / toNumber(p.hashrate_ths) : null,
    };
  }

  // Shows a portfolio unless the one shown already includes later events.
  function renderPortfolio(p) {
    if (!p || typeof p !== 'object') return false;
    const seq = toNumber(p.through_seq);
    const shown = hiState.portfolio;
    if (shown && seq <= toNumber(shown.through_seq)) return false;
    hiState.portfolio = p;

    const d = derive(p);
    const units = toNumber(p.units);
    setValue('units', units, fmt.int(units));
    setValue('hashrate_ths', toNumber(p.hashrate_ths), fmt.num(toNumber(p.hashrate_ths), 1));
    setValue('power_kw', toNumber(p.power_kw), fmt.num(toNumber(p.power_kw), 2));
    setValue('btc_price_usd', d.price, d.price ? fmt.usd0(d.price) : '–');
    setValue('revenue_usd_day', toNumber(p.revenue_usd_day), fmt.usd(toNumber(p.revenue_usd_day)));
    setValue('cost_usd_day', toNumber(p.cost_usd_day), fmt.usd(toNumber(p.cost_usd_day)));
    setValue('profit_usd_day', toNumber(p.profit_usd_day), fmt.usd(toNumber(p.profit_usd_day)));
    setValue('revenue_btc_day', toNumber(p.revenue_btc_day), fmt.btc(toNumber(p.revenue_btc_day)));
    setValue('cost_btc_day', d.costBtc, d.costBtc === null ? '–' : fmt.btc(d.costBtc));
    setValue('profit_btc_day', d.profitBtc, d.profitBtc === null ? '–' : fmt.btc(d.profitBtc));
    let roiText = '–';
    if (units > 0 && d.capex !== null) {
      roiText = d.roiDays === null ? 'never' : `${fmt.num(d.roiDays, 0)} days`;
    }
    setValue('roi_days', d.roiDays, roiText);
    setValue('capex_usd', d.capex, d.capex === null || units === 0 ? '–' : `capex ${fmt.usd0(d.capex)}`);
    setValue('break_even_usd_kwh', d.breakEven, d.breakEven === null ? '–' : fmt.num(d.breakEven, 4));
    setValue('efficiency_j_th', d.efficiency, d.efficiency === null ? '–' : fmt.num(d.efficiency, 1));
    setValue('through_seq', seq, fmt.int(seq));
    setValue('computed_at', null, p.computed_at ? new Date(p.computed_at).toLocaleString() : 'never');
    const tenant = hiState.session && String(hiState.session.user_id) === String(p.user_id)
      ? ` · tenant ${hiState.session.tenant_id}` : '';
    byTestId('who').textContent = `user ${p.user_id}${tenant}`;
    $('.kpi-profit').dataset.sign = toNumber(p.profit_usd_day) < 0 ? 'neg' : 'pos';

    renderBreakdown(p.breakdown || []);
    if (shown) scheduleRefresh();
    return true;
  }

  function renderBreakdown(rows) {
    const body = $('#model-rows');
    body.replaceChildren(...rows.map((r) => {
      const tr = document.createElement('tr');
      tr.dataset.testid = 'model-row';
      tr.setAttribute('data-testid', 'model-row');
      tr.dataset.modelId = String(r.model_id);
      const cells = [
        [r.model_name || hiState.models.get(Number(r.model_id))?.name || `#${r.model_id}`, ''],
        [fmt.int(toNumber(r.units)), 'num'],
        [fmt.num(toNumber(r.hashrate_ths), 1), 'num'],
        [fmt.num(toNumber(r.power_kw), 2), 'num hide-sm'],
        [fmt.usd(toNumber(r.revenue_usd_day)), 'num hide-sm'],
        [fmt.usd(toNumber(r.cost_usd_day)), 'num hide-sm'],
        [fmt.usd(toNumber(r.profit_usd_day)), toNumber(r.profit_usd_day) < 0 ? 'num neg' : 'num pos'],
      ];
      for (const [text, cls] of cells) {
        const td = document.createElement('td');
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      return tr;
    }));
    const empty = $('#models-empty');
    empty.hidden = rows.length > 0;
    empty.textContent = hasScope('miners:write') ? 'No active miners yet: add some below.' : 'No active miners.';
    $('.models-table').hidden = rows.length === 0;
  }

  // ---------------------------------------------------------------- live stream

  function setStreamState(state) {
    const el = byTestId('stream-state');
    const text = { live: 'live', reconnecting: 'reconnecting…', connecting: 'connecting…' }[state];
    el.textContent = text;
    el.dataset.state = state;
  }

  function openStream() {
    closeStream();
    const es = new EventSource('/api/portfolio/stream');
    stream = es;
    es.addEventListener('open', () => {
      if (stream === es) setStreamState('live');
    });
    es.addEventListener('portfolio', (event) => onPush(event));
    es.addEventListener('error', () => {
      if (stream !== es) return;
      setStreamState('reconnecting');
      checkSessionAfterStreamError(es);
    });
  }

  function closeStream() {
    clearTimeout(streamReopenTimer);
    streamReopenTimer = null;
    if (stream) {
      stream.close();
      stream = null;
    }
  }

  // On a stream error: if the session is gone, back to sign-in. EventSource retries by itself
  // after a network error; after an HTTP error it stays closed, so it is reopened here.
  async function checkSessionAfterStreamError(es) {
    let res;
    try {
      res = await fetch('/api/portfolio', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    } catch {
      res = null;
    }
    if (stream !== es) return;
    if (res && res.status === 401) {
      expireSession('Your session has expired: sign in again.');
      return;
    }
    if (res && res.ok) {
      // The stream will catch up by itself; showing the answer now costs nothing.
      renderPortfolio(await res.json().catch(() => null));
    }
    if (es.readyState === EventSource.CLOSED && !streamReopenTimer) {
      streamReopenTimer = setTimeout(() => {
        streamReopenTimer = null;
        if (stream === es) openStream();
      }, STREAM_REOPEN_MS);
    }
  }

  function onPush(event) {
    const at = performance.now();
    let p;
    try { p = JSON.parse(event.data); } catch { return; }
    const seq = toNumber(p.through_seq);
    hiState.lastPush = p;
    hiState.pushes.push({ through_seq: seq, user_id: p.user_id, event_id: event.lastEventId, at });
    if (hiState.pushes.length > 200) hiState.pushes.shift();
    setStreamState('live');
    if (pendingWrite) {
      pendingWrite.pushes.push({ seq, at });
      checkVisible();
    }
    renderPortfolio(p);
  }

  // "Visible" = the first push whose through_seq reaches the write's seq (CONTRACTS.md). The
  // push may come before the POST's answer, so pushes are kept from the click on.
  function checkVisible() {
    const w = pendingWrite;
    if (!w || w.seq === null) return;
    const hit = w.pushes.find((x) => x.seq >= w.seq);
    if (!hit) return;
    const ms = Math.max(0, Math.round(hit.at - w.clickedAt));
    pendingWrite = null;
    hiState.visibleAfterMs = ms;
    const el = byTestId('visible-after');
    el.textContent = `Visible after ${ms} ms (event ${w.seq}).`;
    el.dataset.ms = String(ms);
    el.hidden = false;
    const msg = byTestId('add-miner-message');
    if (msg.dataset.waitingSeq === String(w.seq)) {
      msg.textContent = msg.textContent.replace(/; waiting for it to show…$/, `: visible after ${ms} ms.`);
      delete msg.dataset.waitingSeq;
    }
  }

  // ---------------------------------------------------------------- projection

  // A new portfolio: the projection and the miners list follow (one read each, not a poll).
  function scheduleRefresh() {
    clearTimeout(refreshPending);
    refreshPending = setTimeout(() => {
      loadProjection().catch(() => {});
      loadMiners().catch(() => {});
    }, 250);
  }

  const GOLD = '#f5b700';
  const TEAL = '#38bdf8';

  function chartDefaults() {
    if (!window.Chart) return false;
    Chart.defaults.color = '#9aa4bf';
    Chart.defaults.borderColor = 'rgba(148, 163, 200, 0.12)';
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    return true;
  }

  async function loadProjection() {
    const res = await api('GET', '/api/portfolio/projection?days=30&decay_per_month=0.01');
    const total = byTestId('projection-total');
    if (!res.ok) {
      total.textContent = errorOf(res.body)?.message || `Projection unavailable (HTTP ${res.status}).`;
      return;
    }
    const points = res.body.points || [];
    const labels = points.map((pt) => String(pt.day).slice(5));
    const profit = points.map((pt) => toNumber(pt.profit_usd_day));
    const cumulative = points.map((pt) => toNumber(pt.cumulative_profit_usd));
    total.textContent = `30-day profit ${fmt.usd(toNumber(res.body.total_profit_usd))}` +
      (res.body.network ? ` at ${fmt.usd0(toNumber(res.body.network.btc_price_usd))}/BTC` : '');
    if (!chartDefaults()) return;
    if (projectionChart) {
      projectionChart.data.labels = labels;
      projectionChart.data.datasets[0].data = profit;
      projectionChart.data.datasets[1].data = cumulative;
      projectionChart.update();
      return;
    }
    projectionChart = new Chart($('#projection-chart'), {
      type: 'line',
      data: {
        labels,
        datasets: [
          {
            label: 'profit USD/day', data: profit, borderColor: GOLD, backgroundColor: 'rgba(245, 183, 0, 0.15)',
            fill: 'origin', tension: 0.25, pointRadius: 0, yAxisID: 'y',
          },
          {
            label: 'cumulative USD', data: cumulative, borderColor: TEAL, borderDash: [5, 4],
            pointRadius: 0, tension: 0.25, yAxisID: 'y1',
          },
        ],
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: 'index', intersect: false },
        plugins: { legend: { labels: { boxWidth: 12 } } },
        scales: {
          x: { ticks: { maxTicksLimit: 8 } },
          y: { beginAtZero: true, title: { display: true, text: 'USD/day' } },
          y1: { position: 'right', grid: { drawOnChartArea: false }, title: { display: true, text: 'cumulative' } },
        },
      },
    });
  }

  // ---------------------------------------------------------------- forecast

  async function loadForecast() {
    const box = $('#forecast-box');
    const msg = byTestId('forecast-message');
    const res = await api('GET', '/api/intelligence/forecast');
    if (res.status === 403) {
      box.hidden = true;
      msg.hidden = false;
      msg.dataset.kind = 'forbidden';
      msg.textContent = 'Your role cannot see intelligence forecasts: they need the intel:read scope, ' +
        'which this session does not have.';
      byTestId('forecast-model').textContent = '';
      return;
    }
    if (!res.ok) {
      box.hidden = true;
      msg.hidden = false;
      msg.dataset.kind = 'error';
      msg.textContent = errorOf(res.body)?.message || `Forecast unavailable (HTTP ${res.status}).`;
      return;
    }
    const series = res.body?.series?.btc_price_usd;
    const points = series?.points || [];
    if (points.length === 0) {
      box.hidden = true;
      msg.hidden = false;
      msg.textContent = 'No BTC price forecast yet.';
      return;
    }
    box.hidden = false;
    msg.hidden = true;
    byTestId('forecast-model').textContent = `${series.model || 'forecast'}, 95 % interval`;
    if (!chartDefaults()) return;
    const labels = points.map((pt) => String(pt.day).slice(5));
    const value = points.map((pt) => toNumber(pt.value));
    const lower = points.map((pt) => toNumber(pt.lower_95));
    const upper = points.map((pt) => toNumber(pt.upper_95));
    if (forecastChart) forecastChart.destroy();
    forecastChart = new Chart($('#forecast-chart'), {
      type: 'line',
      data: {
        labels,
        datasets: [
          { label: 'forecast', data: value, borderColor: GOLD, backgroundColor: GOLD, pointRadius: 3, tension: 0.2 },
          {
            label: 'lower 95%', data: lower, borderColor: 'rgba(212, 160, 23, 0.55)', borderWidth: 1,
            pointRadius: 0, fill: false, tension: 0.2,
          },
          {
            label: 'upper 95%', data: upper, borderColor: 'rgba(212, 160, 23, 0.55)', borderWidth: 1,
            pointRadius: 0, backgroundColor: 'rgba(212, 160, 23, 0.16)', fill: 1, tension: 0.2,
          },
        ],
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: 'index', intersect: false },
        plugins: {
          legend: { labels: { boxWidth: 12 } },
          tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmt.usd0(c.parsed.y)}` } },
        },
        scales: { y: { ticks: { callback: (v) => fmt.usd0(v) } } },
      },
    });
  }

  // ---------------------------------------------------------------- miners

  const STATUSES = ['active', 'inactive', 'maintenance'];

  async function loadMiners() {
    const res = await api('GET', '/api/miners');
    if (!res.ok || !Array.isArray(res.body)) return;
    const canWrite = hasScope('miners:write');
    const rows = res.body.map((m) => {
      const tr = document.createElement('tr');
      tr.setAttribute('data-testid', 'miner-row');
      tr.dataset.minerId = String(m.id);
      const model = hiState.models.get(Number(m.model_id));
      const price = m.electricity_price_usd_kwh == null ? 'default' : fmt.num(toNumber(m.electricity_price_usd_kwh), 3);
      for (const [text, cls] of [[String(m.id), 'muted hide-sm'], [model?.name || m.model, ''],
        [fmt.int(toNumber(m.quantity)), 'num'], [price, 'num hide-sm']]) {
        const td = document.createElement('td');
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      const td = document.createElement('td');
      const select = document.createElement('select');
      select.setAttribute('data-testid', 'miner-status');
      select.setAttribute('aria-label', `status of miner ${m.id}`);
      select.disabled = !canWrite;
      const options = STATUSES.includes(m.status) ? STATUSES : [...STATUSES, m.status];
      for (const s of options) {
        const opt = document.createElement('option');
        opt.value = s;
        opt.textContent = s;
        opt.selected = s === m.status;
        select.append(opt);
      }
      select.dataset.status = m.status;
      select.addEventListener('change', () => changeStatus(m.id, select));
      td.append(select);
      tr.append(td);
      return tr;
    });
    $('#miner-rows').replaceChildren(...rows);
    $('#miners-empty').hidden = rows.length > 0;
    $('.miners-table').hidden = rows.length === 0;
  }

  async function changeStatus(id, select) {
    const write = beginWrite();
    const msg = byTestId('miners-message');
    msg.textContent = '';
    const status = select.value;
    select.disabled = true;
    try {
      const res = await api('PATCH', `/api/miners/${encodeURIComponent(id)}/status`, {
        body: { status }, headers: { 'Idempotency-Key': crypto.randomUUID() },
      });
      if (res.ok) {
        select.dataset.status = status;
        hiState.lastWrite = { id, seq: res.body?.seq, at: write.clickedAt };
        finishWrite(write, res.body?.seq);
      } else {
        abandonWrite(write);
        select.value = select.dataset.status;
        msg.textContent = describeError(res, `Miner ${id}`);
      }
    } catch (e) {
      abandonWrite(write);
      select.value = select.dataset.status;
      if (!(e instanceof SessionExpired)) msg.textContent = `Miner ${id}: ${e.message}`;
    } finally {
      select.disabled = !hasScope('miners:write');
    }
  }

  function describeError(res, prefix = '') {
    const err = errorOf(res.body);
    const lead = prefix ? `${prefix}: ` : '';
    switch (res.status) {
      case 403: return `${lead}your role may not do this (${err?.message || 'forbidden'}).`;
      case 404: return `${lead}not found.`;
      case 409: return `${lead}${err?.message || 'conflict'}.`;
      case 429: return `${lead}slow down, retry in ${res.headers.get('Retry-After') || 1} s.`;
      default: return `${lead}${err?.message || `HTTP ${res.status}`}.`;
    }
  }

  // A write's visibility is timed from the click: pushes are recorded from then on, and the
  // write's seq is filled in when its answer comes.
  function beginWrite() {
    pendingWrite = { clickedAt: performance.now(), seq: null, pushes: [] };
    hiState.visibleAfterMs = null;
    byTestId('visible-after').hidden = true;
    return pendingWrite;
  }

  function finishWrite(write, seq) {
    if (pendingWrite !== write) return;
    if (seq === undefined || seq === null) {
      pendingWrite = null;
      return;
    }
    write.seq = toNumber(seq);
    checkVisible();
  }

  function abandonWrite(write) {
    if (pendingWrite === write) pendingWrite = null;
  }

  // ---------------------------------------------------------------- add miner

  function clearFieldErrors(form) {
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  async function addMiner(event) {
    event.preventDefault();
    const write = beginWrite();
    const form = event.currentTarget;
    const button = $('button[type="submit"]', form);
    const msg = byTestId('add-miner-message');
    clearFieldErrors(form);
    msg.textContent = '';
    msg.dataset.kind = '';

    const body = { model_id: Number($('#model-select').value) };
    const qty = $('#quantity-input').value.trim();
    body.quantity = /^-?\d+$/.test(qty) ? Number(qty) : qty;
    const price = $('#price-input').value.trim();
    if (price !== '') body.electricity_price_usd_kwh = Number.isFinite(Number(price)) ? Number(price) : price;

    button.disabled = true;
    try {
      const res = await api('POST', '/api/miners', {
        body, headers: { 'Idempotency-Key': crypto.randomUUID() },
      });
      if (res.status === 201) {
        hiState.lastWrite = { id: res.body.id, seq: res.body.seq, at: write.clickedAt };
        const model = hiState.models.get(body.model_id);
        msg.dataset.kind = 'ok';
        msg.textContent = `Added ${body.quantity} × ${model?.name || `model ${body.model_id}`} ` +
          `(miner ${res.body.id}, event ${res.body.seq}); waiting for it to show…`;
        msg.dataset.waitingSeq = String(res.body.seq);
        finishWrite(write, res.body.seq);
        return;
      }
      abandonWrite(write);
      const err = errorOf(res.body);
      msg.dataset.kind = 'error';
      if ((res.status === 400 || res.status === 422) && err?.field) {
        const slot = form.querySelector(`.field-error[data-field="${CSS.escape(err.field)}"]`);
        if (slot) {
          slot.textContent = err.message;
          form.querySelector(`[name="${CSS.escape(err.field)}"]`)?.setAttribute('aria-invalid', 'true');
          return;
        }
      }
      if (res.status === 409) {
        msg.textContent = `Not added: ${err?.message || 'conflict'}.`;
        return;
      }
      msg.textContent = describeError(res, 'Not added');
    } catch (e) {
      abandonWrite(write);
      if (!(e instanceof SessionExpired)) {
        msg.dataset.kind = 'error';
        msg.textContent = `Not added: ${e.message}`;
      }
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- health

  function healthItem(label, status, value) {
    const div = document.createElement('div');
    div.className = 'health-item';
    div.dataset.status = status || 'unknown';
    const dot = document.createElement('span');
    dot.className = 'dot';
    const name = document.createElement('span');
    name.className = 'health-label';
    name.textContent = label;
    const v = document.createElement('span');
    v.className = 'health-value';
    v.textContent = value;
    div.append(dot, name, v);
    return div;
  }

  async function refreshHealth() {
    const status = byTestId('health-status');
    let body = null;
    let code = 0;
    try {
      const res = await fetch('/api/health', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      code = res.status;
      body = await res.json().catch(() => null);
    } catch {
      body = null;
    }
    if (!body || !body.checks) {
      status.textContent = code ? `HTTP ${code}` : 'unreachable';
      status.dataset.status = 'unhealthy';
      return;
    }
    const c = body.checks;
    const items = [];
    const events = (n) => `${fmt.int(toNumber(n))} ${toNumber(n) === 1 ? 'event' : 'events'}`;
    const ms = (check) => `${fmt.num(toNumber(check.response_time_ms), 1)} ms`;
    if (c.outbox) items.push(healthItem('outbox', c.outbox.status, `backlog ${events(c.outbox.backlog)}`));
    if (c.relay) {
      const age = c.relay.last_ack_age_ms == null
        ? 'no ack yet' : `ack ${fmt.age(toNumber(c.relay.last_ack_age_ms))} ago`;
      items.push(healthItem('relay', c.relay.status, `${fmt.int(toNumber(c.relay.lag_bytes))} B · ${age}`));
    }
    for (const [group, g] of Object.entries(c.consumers || {})) {
      items.push(healthItem(group.replace(/-group$/, ''), g.status, `lag ${fmt.int(toNumber(g.lag))}`));
    }
    if (c.dlq) items.push(healthItem('dead letters', c.dlq.status, events(c.dlq.count)));
    if (c.database) items.push(healthItem('database', c.database.status, ms(c.database)));
    if (c.redis) items.push(healthItem('redis', c.redis.status, ms(c.redis)));
    $('#health-grid').replaceChildren(...items);
    status.textContent = body.status;
    status.dataset.status = body.status;
    byTestId('health-time').textContent = `checked ${new Date(body.time || Date.now()).toLocaleTimeString()}` +
      (body.version ? ` · v${body.version}` : '');
  }

  // ---------------------------------------------------------------- start

  async function boot() {
    $('#signin-form').addEventListener('submit', (e) => {
      e.preventDefault();
      signIn($('#token-input').value);
    });
    $('#sign-out').addEventListener('click', signOut);
    $('#add-miner-form').addEventListener('submit', addMiner);

    const params = new URLSearchParams(location.search);
    const token = params.get('token');
    if (token !== null) {
      params.delete('token');
      const rest = params.toString();
      history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
      await signIn(token);
      if (!signedIn) $('#signin-view').hidden = false;
      return;
    }
    // A reload: the HttpOnly cookie, if any, is all the page has; /api/session says whom it
    // stands for (tenant and scopes), /api/portfolio gives the first figures.
    const get = (path) => fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    let res;
    let session;
    try {
      res = await get('/api/session');
      if (res.status !== 200) {
        showSignIn(res.status === 401 ? '' : `The session cannot be checked (HTTP ${res.status}): reload, or sign in again.`);
        return;
      }
      session = sessionOf(await res.json().catch(() => null));
      res = await get('/api/portfolio');
    } catch (e) {
      showSignIn(`The API cannot be reached (${e.message}).`);
      return;
    }
    if (res.status === 200) {
      await startDashboard(await res.json(), session);
    } else if (res.status === 403) {
      showSignIn('This session cannot read a portfolio (it needs portfolio:read): sign in with another token.');
    } else {
      showSignIn('');
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', boot);
  } else {
    boot();
  }
})();
