// app.js — the brewslm dashboard: a hash-routed page (#/jobs, #/jobs/ID,
// #/compare, #/submit) that reads the same public /v1 API as curl users.
// Live data comes from the job's SSE stream, read with fetch() and a
// ReadableStream parser (EventSource cannot send Authorization), and the
// metrics endpoint supplies the history so a reload or late join shows the
// whole curve. Charts are Chart.js instances published on window.__charts
// (chart name -> Chart) so tests read plotted data, not pixels.
'use strict';

(function () {
  const TOKEN_KEY = 'brewslm.token';
  const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'blocked'];
  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'blocked']);
  // Okabe-Ito, ordered for lines on white (yellow last: low contrast).
  const PALETTE = [
    '#0072B2',
    '#E69F00',
    '#009E73',
    '#D55E00',
    '#CC79A7',
    '#56B4E9',
    '#000000',
    '#F0E442',
  ];
  // One chart per panel; each series also gets its eval_ twin, drawn dashed
  // with diamond markers so eval points stand apart without relying on colour.
  const PANELS = [
    { name: 'loss', title: 'Loss', keys: ['loss'] },
    { name: 'margins', title: 'Preference margin (rewards/margins)', keys: ['rewards/margins'] },
    {
      name: 'accuracies',
      title: 'Reward accuracy (rewards/accuracies)',
      keys: ['rewards/accuracies'],
      min: 0,
      max: 1,
    },
    {
      name: 'rewards',
      title: 'Rewards: chosen vs rejected',
      keys: ['rewards/chosen', 'rewards/rejected'],
    },
    {
      name: 'logps',
      title: 'Log-probs: chosen vs rejected',
      keys: ['logps/chosen', 'logps/rejected'],
    },
    {
      name: 'orpo',
      title: 'ORPO: nll_loss and log_odds_ratio',
      keys: ['nll_loss', 'log_odds_ratio'],
    },
    { name: 'learning_rate', title: 'Learning rate', keys: ['learning_rate'] },
    { name: 'tokens_per_second', title: 'Throughput (tokens/s)', keys: ['tokens_per_second'] },
  ];
  const PANEL_KEYS = new Set(PANELS.flatMap((p) => p.keys));
  // Values that are bookkeeping, not curves.
  const NOT_PLOTTED = new Set(['epoch', 'step', 'total_steps', 'is_eval']);
  const COMPARE_DEFAULT_METRICS = [
    'loss',
    'rewards/margins',
    'rewards/accuracies',
    'nll_loss',
    'log_odds_ratio',
    'learning_rate',
    'tokens_per_second',
  ];

  window.__charts = {};
  // Test and debugging hooks: what the page is showing and how its stream is doing.
  const debug = (window.__dashboard = {
    view: null,
    jobId: null,
    stream: null,
    lastEventId: null,
    eventsSeen: 0,
    metricRows: 0,
  });

  const main = document.getElementById('main');
  const announcer = document.getElementById('announcer');
  let cleanupView = () => {};
  let viewGeneration = 0;

  // ---- helpers -----------------------------------------------------------

  // h('div.card#x', {attr: v, onclick: f}, child...) builds an element; text
  // goes in through text nodes only, so API strings can never become markup.
  function h(spec, attrs, ...children) {
    const m = /^([a-z0-9]+)((?:[.#][\w-]+)*)$/i.exec(spec);
    const el = document.createElement(m ? m[1] : spec);
    if (m && m[2]) {
      for (const part of m[2].match(/[.#][\w-]+/g)) {
        if (part[0] === '.') el.classList.add(part.slice(1));
        else el.id = part.slice(1);
      }
    }
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else if (k === 'dataset') Object.assign(el.dataset, v);
        else if (k === 'text') el.textContent = v;
        else if (k in el && typeof v !== 'string') el[k] = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    append(el, children);
    return el;
  }
  function append(el, ...children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  function announce(text) {
    announcer.textContent = '';
    setTimeout(() => {
      announcer.textContent = text;
    }, 30);
  }

  function parseTime(t) {
    if (t === null || t === undefined || t === '') return null;
    if (typeof t === 'number') return t < 1e12 ? t * 1000 : t;
    const ms = Date.parse(t);
    return Number.isFinite(ms) ? ms : null;
  }
  function fmtDuration(sec) {
    if (!Number.isFinite(sec) || sec < 0) return '—';
    sec = Math.round(sec);
    if (sec < 60) return sec + 's';
    const m = Math.floor(sec / 60),
      s = sec % 60;
    if (m < 60) return m + 'm ' + String(s).padStart(2, '0') + 's';
    const hr = Math.floor(m / 60);
    if (hr < 48) return hr + 'h ' + String(m % 60).padStart(2, '0') + 'm';
    return Math.floor(hr / 24) + 'd ' + (hr % 24) + 'h';
  }
  function fmtAge(ms) {
    if (ms === null) return '—';
    const sec = Math.max(0, (Date.now() - ms) / 1000);
    if (sec < 5) return 'just now';
    if (sec < 60) return Math.floor(sec) + 's ago';
    if (sec < 3600) return Math.floor(sec / 60) + 'm ago';
    if (sec < 86400) return Math.floor(sec / 3600) + 'h ago';
    return Math.floor(sec / 86400) + 'd ago';
  }
  function fmtNum(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '—';
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    if (Number.isInteger(v)) return String(v);
    return v
      .toPrecision(4)
      .replace(/(\.\d*?)0+$/, '$1')
      .replace(/\.$/, '');
  }
  function fmtBytes(n) {
    if (!Number.isFinite(n)) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  }
  function basename(p) {
    return String(p).split('/').filter(Boolean).pop() || String(p);
  }

  // ---- API ---------------------------------------------------------------

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    const tok = sessionStorage.getItem(TOKEN_KEY);
    if (tok) headers.Authorization = 'Bearer ' + tok;
    return headers;
  }

  // Calls the API; resolves to {ok, status, data} (data: parsed JSON or
  // {raw: text}); rejects only when the network fails.
  async function api(method, path, opts) {
    opts = opts || {};
    const headers = authHeaders(Object.assign({ Accept: 'application/json' }, opts.headers));
    if (opts.body !== undefined) headers['Content-Type'] = opts.contentType || 'application/json';
    const res = await fetch(path, {
      method,
      headers,
      body: opts.body,
      signal: opts.signal,
      cache: 'no-store',
    });
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = { raw: text };
      }
    }
    if (res.status === 401) askToken('The server answered 401: it needs a valid API token.');
    return { ok: res.ok, status: res.status, data, retryAfter: res.headers.get('Retry-After') };
  }
  function errorText(r) {
    if (!r) return 'no answer';
    const e = r.data && r.data.error;
    if (e && typeof e === 'object') return e.message || e.type || e.code || JSON.stringify(e);
    if (typeof e === 'string') return e;
    if (r.data && r.data.raw) return r.data.raw.slice(0, 300);
    return 'HTTP ' + r.status;
  }
  function listOf(data, ...keys) {
    if (Array.isArray(data)) return data;
    for (const k of keys) if (data && Array.isArray(data[k])) return data[k];
    return [];
  }

  // A job as the list and the page need it, whatever optional fields the
  // server filled.
  function jobView(j) {
    const recipe = (j && typeof j.recipe === 'object' && j.recipe) || {};
    const prog = j.progress || {};
    let model = j.model || recipe.model || '';
    if (!model && recipe.model_init) {
      const mi = recipe.model_init;
      model =
        'init ' +
        [mi.dim && 'd' + mi.dim, mi.n_layers && 'L' + mi.n_layers].filter(Boolean).join(' ');
    }
    const step = Number(prog.step ?? j.step ?? 0) || 0;
    const total = Number(prog.total_steps ?? j.total_steps ?? 0) || 0;
    return {
      id: j.id,
      status: j.status || 'unknown',
      method: j.method || recipe.method || '',
      model: model ? (model.startsWith('job:') ? model : basename(model)) : '',
      modelFull: model,
      step,
      total,
      epoch: prog.epoch ?? j.epoch,
      created: parseTime(j.created_at),
      started: parseTime(j.started_at),
      finished: parseTime(j.finished_at),
      recipe,
      raw: j,
    };
  }
  function etaSeconds(v) {
    if (v.status !== 'running' || !v.started || v.step <= 0 || v.total <= v.step) return null;
    const elapsed = (Date.now() - v.started) / 1000;
    return (elapsed / v.step) * (v.total - v.step);
  }

  function badge(status) {
    return h(
      'span.badge.' + (STATUSES.includes(status) ? status : 'queued'),
      { dataset: { status } },
      status,
    );
  }
  // A bar plus "step/total" (or "NN%" where the step is shown beside it).
  function progressCell(v, percentOnly) {
    const pct =
      v.total > 0
        ? Math.min(100, Math.round((100 * v.step) / v.total))
        : v.status === 'succeeded'
          ? 100
          : 0;
    const label = percentOnly
      ? pct + '%'
      : v.total > 0
        ? v.step + '/' + v.total
        : v.step
          ? String(v.step)
          : '—';
    return h(
      'div.progress',
      null,
      h('progress', { max: 100, value: pct, 'aria-label': 'progress ' + pct + '%' }),
      h('span.mono', null, label),
    );
  }

  // ---- token -------------------------------------------------------------

  const tokenDialog = document.getElementById('token-dialog');
  const tokenButton = document.getElementById('token-button');
  const tokenInput = document.getElementById('token-input');
  function refreshTokenButton() {
    const set = !!sessionStorage.getItem(TOKEN_KEY);
    tokenButton.dataset.set = set ? '1' : '0';
    tokenButton.textContent = set ? 'Token set \u2713' : 'API token';
  }
  function askToken(why) {
    if (tokenDialog.open) return;
    document.getElementById('token-why').textContent =
      (why ? why + ' ' : '') +
      'The token is kept in this tab only (sessionStorage) and sent as Authorization: Bearer.';
    tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || '';
    if (typeof tokenDialog.showModal === 'function') tokenDialog.showModal();
    tokenInput.focus();
  }
  tokenButton.addEventListener('click', () => askToken(''));
  tokenDialog.addEventListener('close', () => {
    const v = tokenDialog.returnValue;
    if (v === 'save' && tokenInput.value.trim())
      sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    else if (v === 'forget') sessionStorage.removeItem(TOKEN_KEY);
    tokenInput.value = '';
    refreshTokenButton();
    if (v === 'save' || v === 'forget') route();
  });

  // ---- SSE over fetch ----------------------------------------------------

  // Reads url as text/event-stream with the Authorization header, calling
  // onEvent(type, data, id) per event and reconnecting with Last-Event-ID
  // (after `retry` ms, as the server may set) until close() or until
  // shouldStop() says the stream has nothing more to give.
  class EventStream {
    constructor(url, onEvent, opts) {
      this.url = url;
      this.onEvent = onEvent;
      this.onState = (opts && opts.onState) || (() => {});
      this.shouldStop = (opts && opts.shouldStop) || (() => false);
      this.lastEventId = (opts && opts.lastEventId) || '';
      this.retry = 1000;
      this.closed = false;
      this.ctrl = null;
      this.run();
    }
    close() {
      this.closed = true;
      if (this.ctrl) this.ctrl.abort();
      this.onState('closed');
    }
    async run() {
      while (!this.closed) {
        this.ctrl = new AbortController();
        try {
          const headers = authHeaders({ Accept: 'text/event-stream' });
          if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
          this.onState('connecting');
          const res = await fetch(this.url, {
            headers,
            signal: this.ctrl.signal,
            cache: 'no-store',
          });
          if (res.status === 401) {
            askToken('The event stream answered 401: it needs a valid API token.');
            await sleep(3000);
            continue;
          }
          if (res.status === 404) {
            this.onState('gone');
            return;
          }
          if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
          this.onState('open');
          await this.read(res.body);
        } catch (e) {
          if (this.closed) return;
          this.onState('error');
        }
        if (this.closed || this.shouldStop()) break;
        this.onState('reconnecting');
        await sleep(this.retry);
      }
      if (!this.closed) this.onState('ended');
    }
    async read(body) {
      const reader = body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      let data = [],
        type = '',
        id = null;
      const dispatch = () => {
        if (id !== null) this.lastEventId = id;
        if (data.length) this.onEvent(type || 'message', data.join('\n'), this.lastEventId);
        data = [];
        type = '';
        id = null;
      };
      const line = (l) => {
        if (l === '') return dispatch();
        if (l[0] === ':') return; // comment / heartbeat
        const c = l.indexOf(':');
        const field = c < 0 ? l : l.slice(0, c);
        let value = c < 0 ? '' : l.slice(c + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (field === 'data') data.push(value);
        else if (field === 'event') type = value;
        else if (field === 'id') {
          if (!value.includes('\0')) id = value;
        } else if (field === 'retry') {
          if (/^\d+$/.test(value)) this.retry = Number(value);
        }
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let m;
        const eol = /\r\n|\r|\n/g;
        let start = 0;
        while ((m = eol.exec(buf)) !== null) {
          // A lone CR at the very end may be the first half of CRLF.
          if (m[0] === '\r' && m.index === buf.length - 1) break;
          line(buf.slice(start, m.index));
          start = m.index + m[0].length;
        }
        buf = buf.slice(start);
      }
    }
  }

  // ---- metric store and charts ------------------------------------------

  // Per-metric maps step -> value, so history and live rows merge without
  // duplicates however they overlap (a resumed run re-logs the same steps).
  class MetricStore {
    constructor() {
      this.series = new Map();
      this.maxStep = -1;
      this.rows = 0;
    }
    add(step, values, isEval) {
      step = Number(step);
      if (!Number.isFinite(step) || !values) return;
      for (const [k0, v] of Object.entries(values)) {
        if (NOT_PLOTTED.has(k0) || typeof v !== 'number' || !Number.isFinite(v)) continue;
        const k = isEval && !k0.startsWith('eval_') ? 'eval_' + k0 : k0;
        if (!this.series.has(k)) this.series.set(k, new Map());
        this.series.get(k).set(step, v);
      }
      if (!isEval) this.maxStep = Math.max(this.maxStep, step);
      this.rows++;
    }
    // Accepts a metrics-endpoint row {step, is_eval, values} or a flat
    // {step, loss, ...} (an SSE metrics event may be either shape).
    addRow(row) {
      if (!row || typeof row !== 'object') return;
      if (row.values && typeof row.values === 'object')
        this.add(row.step, row.values, !!row.is_eval);
      else this.add(row.step, row, !!row.is_eval);
    }
    points(key) {
      const m = this.series.get(key);
      if (!m) return [];
      return [...m.entries()].sort((a, b) => a[0] - b[0]).map(([x, y]) => ({ x, y }));
    }
    latest(key) {
      const m = this.series.get(key);
      if (!m || !m.size) return null;
      let best = -Infinity,
        v = null;
      for (const [s, y] of m)
        if (s >= best) {
          best = s;
          v = y;
        }
      return v;
    }
    keys() {
      return [...this.series.keys()];
    }
  }

  function baseKey(k) {
    return k.startsWith('eval_') ? k.slice(5) : k;
  }

  function chartOptions(panel) {
    const y = { ticks: { callback: (v) => fmtNum(v) }, grid: { color: '#e5e8eb' } };
    if (panel && panel.min !== undefined) {
      y.suggestedMin = panel.min;
      y.suggestedMax = panel.max;
    }
    return {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      parsing: false,
      normalized: true,
      spanGaps: true,
      interaction: { mode: 'nearest', axis: 'x', intersect: false },
      scales: {
        x: {
          type: 'linear',
          title: { display: true, text: 'step' },
          ticks: { precision: 0 },
          grid: { color: '#eef0f2' },
        },
        y,
      },
      plugins: {
        legend: { labels: { usePointStyle: true, pointStyleWidth: 18, boxHeight: 8 } },
        tooltip: { callbacks: { label: (c) => c.dataset.label + ': ' + fmtNum(c.parsed.y) } },
      },
    };
  }
  function lineDataset(label, color, isEval, key) {
    return {
      label,
      key,
      borderColor: color,
      backgroundColor: color,
      borderWidth: isEval ? 2 : 1.75,
      borderDash: isEval ? [6, 4] : [],
      pointStyle: isEval ? 'rectRot' : 'line',
      pointRadius: isEval ? 5 : 0,
      pointHoverRadius: isEval ? 7 : 4,
      tension: 0,
      data: [],
    };
  }

  function chartCard(name, title, tall) {
    const canvas = h('canvas', { role: 'img', 'aria-label': title + ' chart' });
    const latest = h('span.latest', { 'aria-live': 'off' });
    const card = h(
      'section.chart-card',
      { dataset: { chart: name }, 'aria-label': title },
      h('h3', null, h('span', null, title), latest),
      h('div.chart-box' + (tall ? '.tall' : ''), null, canvas),
    );
    return { card, canvas, latest };
  }

  function makeChart(name, canvas, datasets, panel) {
    if (typeof window.Chart !== 'function') return null;
    const chart = new window.Chart(canvas, {
      type: 'line',
      data: { datasets },
      options: chartOptions(panel),
    });
    window.__charts[name] = chart;
    return chart;
  }
  function destroyCharts() {
    for (const [k, c] of Object.entries(window.__charts)) {
      try {
        c.destroy();
      } catch (e) {
        /* already gone */
      }
      delete window.__charts[k];
    }
  }

  // The job page's chart grid: fixed panels plus one panel per extra metric
  // the run logs (grad_norm, logits/...). Panels without data stay hidden.
  class JobCharts {
    constructor(container, store) {
      this.container = container;
      this.store = store;
      this.panels = new Map();
      for (const p of PANELS) this.addPanel(p);
      this.pending = false;
    }
    addPanel(p) {
      const { card, canvas, latest } = chartCard(p.name, p.title, false);
      card.hidden = true;
      const datasets = [];
      p.keys.forEach((k, i) => {
        const color = PALETTE[i % PALETTE.length];
        datasets.push(lineDataset(k, color, false, k));
        datasets.push(lineDataset('eval ' + k, color, true, 'eval_' + k));
      });
      this.container.append(card);
      const chart = makeChart(p.name, canvas, datasets, p);
      this.panels.set(p.name, { p, card, chart, latest });
    }
    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        if (!this.destroyed) this.update();
      });
    }
    update() {
      for (const k of this.store.keys()) {
        const b = baseKey(k);
        if (!PANEL_KEYS.has(b) && !this.panels.has(b)) {
          this.addPanel({ name: b, title: b, keys: [b] });
        }
      }
      for (const { p, card, chart, latest } of this.panels.values()) {
        let any = false;
        if (chart && chart.canvas) {
          // a destroyed chart has no canvas
          for (const ds of chart.data.datasets) {
            ds.data = this.store.points(ds.key);
            ds.hidden = false;
            if (ds.data.length) any = true;
          }
          // Keep the legend to series that exist (no "eval loss" without eval).
          chart.options.plugins.legend.labels.filter = (item, data) =>
            data.datasets[item.datasetIndex].data.length > 0;
          chart.update('none');
        } else {
          any = p.keys.some((k) => this.store.series.has(k) || this.store.series.has('eval_' + k));
        }
        card.hidden = !any;
        latest.textContent = p.keys
          .map((k) => {
            const v = this.store.latest(k);
            return v === null
              ? ''
              : (p.keys.length > 1 ? k.split('/').pop() + ' ' : '') + fmtNum(v);
          })
          .filter(Boolean)
          .join(' · ');
      }
    }
  }

  // ---- views ---------------------------------------------------------------

  function setNav(name) {
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }
  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/jobs';
    const q = raw.indexOf('?');
    const path = q < 0 ? raw : raw.slice(0, q);
    return {
      parts: path.split('/').filter(Boolean).map(decodeURIComponent),
      query: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)),
    };
  }
  let firstRoute = true;
  function route() {
    cleanupView();
    cleanupView = () => {};
    destroyCharts();
    clear(main);
    const gen = ++viewGeneration;
    const alive = () => gen === viewGeneration;
    const { parts, query } = parseHash();
    let cleanup;
    if (parts[0] === 'jobs' && parts[1]) {
      setNav('jobs');
      cleanup = viewJob(parts[1], alive);
    } else if (parts[0] === 'compare') {
      setNav('compare');
      cleanup = viewCompare(query, alive);
    } else if (parts[0] === 'submit') {
      setNav('submit');
      cleanup = viewSubmit(alive);
    } else {
      setNav('jobs');
      cleanup = viewJobs(query, alive);
    }
    cleanupView = cleanup || (() => {});
    if (!firstRoute) main.focus({ preventScroll: false });
    firstRoute = false;
  }

  // Runs fn now and every ms while the view is alive; returns a stopper.
  function every(ms, alive, fn) {
    let timer = null,
      stopped = false;
    const tick = async () => {
      if (stopped || !alive()) return;
      try {
        await fn();
      } catch (e) {
        /* shown by fn */
      }
      if (!stopped && alive()) timer = setTimeout(tick, ms);
    };
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  // ---- job list ----------------------------------------------------------

  function viewJobs(query, alive) {
    debug.view = 'jobs';
    const selected = new Set();
    let filter = query.get('status') || '';
    const statusSel = h(
      'select#status-filter',
      { name: 'status' },
      h('option', { value: '' }, 'All'),
      STATUSES.map((s) => h('option', { value: s }, s)),
    );
    statusSel.value = filter;
    const compareBtn = h('button.primary', { type: 'button', disabled: true }, 'Compare selected');
    const summary = h('p.muted#jobs-summary', { 'aria-live': 'polite' }, 'Loading…');
    const tbody = h('tbody');
    const table = h(
      'table.jobs',
      null,
      h('caption.visually-hidden', null, 'Jobs, newest first'),
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          h('th', { scope: 'col' }, h('span.visually-hidden', null, 'Select for compare')),
          ['Job', 'Status', 'Method', 'Model', 'Progress', 'Age'].map((t) =>
            h('th', { scope: 'col' }, t),
          ),
        ),
      ),
      tbody,
    );
    const errorBox = h('div');
    append(
      main,
      h(
        'div.row',
        null,
        h('h1', null, 'Jobs'),
        h('span.spacer'),
        h('a.button', { href: '#/submit' }, 'New job'),
      ),
      h(
        'div.card',
        null,
        h(
          'div.row',
          null,
          h('label', { for: 'status-filter' }, 'Status'),
          statusSel,
          h('span.spacer'),
          compareBtn,
        ),
        errorBox,
        summary,
        h('div.table-wrap', null, table),
      ),
    );

    statusSel.addEventListener('change', () => {
      filter = statusSel.value;
      history.replaceState(null, '', filter ? '#/jobs?status=' + filter : '#/jobs');
      refresh();
    });
    compareBtn.addEventListener('click', () => {
      location.hash = '#/compare?ids=' + [...selected].join(',');
    });

    const rows = new Map();
    let order = [];
    function rowFor(v) {
      let r = rows.get(v.id);
      if (!r) {
        const cb = h('input', {
          type: 'checkbox',
          'aria-label': 'Select ' + v.id + ' for compare',
        });
        cb.addEventListener('change', () => {
          if (cb.checked) selected.add(v.id);
          else selected.delete(v.id);
          compareBtn.disabled = selected.size < 2;
          compareBtn.textContent =
            'Compare selected' + (selected.size ? ' (' + selected.size + ')' : '');
        });
        r = { tr: h('tr', { dataset: { jobId: v.id } }), cb, key: '' };
        r.cells = {
          sel: h('td', null, cb),
          id: h(
            'td',
            { 'data-label': 'Job' },
            h('a.mono', { href: '#/jobs/' + encodeURIComponent(v.id) }, v.id),
          ),
          status: h('td', { 'data-label': 'Status' }),
          method: h('td', { 'data-label': 'Method' }),
          model: h('td.mono', { 'data-label': 'Model' }),
          progress: h('td', { 'data-label': 'Progress' }),
          age: h('td.num', { 'data-label': 'Age' }),
        };
        append(r.tr, Object.values(r.cells));
        rows.set(v.id, r);
      }
      // Rewrite cells only when something changed, so focus and hover stay put.
      const key = [v.status, v.method, v.model, v.step, v.total].join('|');
      if (key !== r.key) {
        r.key = key;
        r.tr.dataset.status = v.status;
        clear(r.cells.status).append(badge(v.status));
        r.cells.method.textContent = v.method.toUpperCase();
        r.cells.model.textContent = v.model || '—';
        r.cells.model.title = v.modelFull || '';
        clear(r.cells.progress).append(progressCell(v));
      }
      r.cells.age.textContent = fmtAge(v.created);
      r.cells.age.title = v.created ? new Date(v.created).toISOString() : '';
      return r;
    }

    async function refresh() {
      const qs = new URLSearchParams({ limit: '100' });
      if (filter) qs.set('status', filter);
      let r;
      try {
        r = await api('GET', '/v1/jobs?' + qs);
      } catch (e) {
        r = null;
      }
      if (!alive()) return;
      clear(errorBox);
      if (!r || !r.ok) {
        errorBox.append(
          h('p.notice.error', { role: 'alert' }, 'Could not list jobs: ' + errorText(r)),
        );
        return;
      }
      let jobs = listOf(r.data, 'jobs', 'items', 'data').map(jobView);
      if (filter) jobs = jobs.filter((v) => v.status === filter);
      const ids = jobs.map((v) => v.id);
      for (const id of [...rows.keys()]) {
        if (!ids.includes(id)) {
          rows.get(id).tr.remove();
          rows.delete(id);
          selected.delete(id);
        }
      }
      const trs = jobs.map((v) => rowFor(v).tr);
      if (ids.join() !== order.join()) {
        for (const tr of trs) tbody.append(tr);
        order = ids;
      }
      const running = jobs.filter((v) => v.status === 'running').length;
      const more = r.data && r.data.has_more ? ' Showing the newest ' + jobs.length + '.' : '';
      summary.textContent =
        jobs.length === 0
          ? filter
            ? 'No ' + filter + ' jobs.'
            : 'No jobs yet. Submit a recipe to start one.'
          : jobs.length +
            ' job' +
            (jobs.length === 1 ? '' : 's') +
            (filter ? ' ' + filter : '') +
            (running ? ', ' + running + ' running' : '') +
            '.' +
            more;
    }
    return every(2000, alive, refresh);
  }

  // ---- job page ------------------------------------------------------------

  function blockerList(blockers, warning) {
    return h(
      'ul.blockers',
      null,
      (blockers || []).map((b) =>
        h(
          'li' + (warning ? '.warning' : ''),
          { dataset: { code: b.code || '' } },
          h(
            'div',
            null,
            h('span.code', null, b.code || 'blocker'),
            b.field ? [' ', h('span.field', null, '(' + b.field + ')')] : null,
          ),
          h('div', null, b.message || ''),
          b.hint ? h('div.hint', null, b.hint) : null,
        ),
      ),
    );
  }

  function viewJob(id, alive) {
    debug.view = 'job';
    debug.jobId = id;
    debug.stream = null;
    debug.eventsSeen = 0;
    debug.metricRows = 0;
    const store = new MetricStore();
    let job = null;
    let stream = null;
    const stops = [];

    const title = h('h1', null, 'Job ', h('span.mono', null, id));
    const statusHolder = h('span#job-status', { 'aria-live': 'polite' });
    const cancelBtn = h('button.danger#cancel-job', { type: 'button', hidden: true }, 'Cancel job');
    const compareLink = h(
      'a.button',
      { href: '#/compare?ids=' + encodeURIComponent(id) },
      'Compare…',
    );
    const facts = h('dl.facts');
    const alerts = h('div#job-alerts');
    const chartsGrid = h('div.charts#charts');
    const chartsNote = h('p.muted', null, 'Waiting for the first logged step…');
    const ckptBody = h('div#checkpoints', null, h('p.muted', null, 'Loading…'));
    const recipePre = h('pre.recipe#recipe');
    const logPre = h('pre.log#log', { 'aria-label': 'Job log' });
    const samples = h('section.card#before-after', { hidden: true, 'aria-labelledby': 'ba-title' });

    append(
      main,
      h('p', null, h('a', { href: '#/jobs' }, '← All jobs')),
      h(
        'section.card',
        { 'aria-labelledby': 'job-title' },
        h(
          'div.job-head',
          null,
          h('div.titles', null, Object.assign(title, { id: 'job-title' }), statusHolder),
          h('div.row', null, compareLink, cancelBtn),
        ),
        facts,
      ),
      alerts,
      h(
        'section',
        { 'aria-labelledby': 'charts-title' },
        h('h2#charts-title', null, 'Training curves'),
        chartsNote,
        chartsGrid,
      ),
      samples,
      h(
        'div.two-col',
        null,
        h(
          'section.card',
          { 'aria-labelledby': 'ckpt-title' },
          h('h2#ckpt-title', null, 'Checkpoints'),
          ckptBody,
        ),
        h(
          'section.card',
          { 'aria-labelledby': 'recipe-title' },
          h('h2#recipe-title', null, 'Recipe'),
          recipePre,
        ),
      ),
      h('section.card', null, h('details', null, h('summary', null, 'Log'), logPre)),
    );

    const charts = new JobCharts(chartsGrid, store);
    function onMetrics() {
      debug.metricRows = store.rows;
      chartsNote.hidden = store.rows > 0;
      charts.schedule();
    }

    function renderFacts() {
      if (!job) return;
      const v = jobView(job);
      const eta = etaSeconds(v);
      const etaText = eta === null ? 'estimating…' : fmtDuration(eta);
      const end = v.finished || (v.status === 'running' ? Date.now() : null);
      const items = [
        ['Method', v.method.toUpperCase() || '—'],
        ['Model', v.modelFull || '—'],
        ['Step', v.total ? v.step + ' / ' + v.total : String(v.step)],
        ['Progress', progressCell(v, true)],
        ['ETA', v.status === 'running' ? etaText : '—'],
        ['Epoch', v.epoch === undefined || v.epoch === null ? '—' : fmtNum(Number(v.epoch))],
        ['Created', v.created ? fmtAge(v.created) : '—'],
        ['Run time', v.started && end ? fmtDuration((end - v.started) / 1000) : '—'],
      ];
      if (job.attempts > 1) items.push(['Attempts', String(job.attempts)]);
      if (job.depends_on)
        items.push([
          'Waits for',
          h('a.mono', { href: '#/jobs/' + job.depends_on }, job.depends_on),
        ]);
      clear(facts);
      for (const [k, val] of items)
        facts.append(h('div', null, h('dt', null, k), h('dd', null, val)));
    }

    function renderJob() {
      const v = jobView(job);
      const prevStatus = statusHolder.dataset.status;
      clear(statusHolder).append(badge(v.status));
      statusHolder.dataset.status = v.status;
      if (prevStatus && prevStatus !== v.status) announce('Job ' + id + ' is now ' + v.status);
      cancelBtn.hidden = !(v.status === 'queued' || v.status === 'running');
      cancelBtn.disabled = !!job.cancel_requested;
      if (job.cancel_requested) cancelBtn.textContent = 'Cancelling…';
      renderFacts();
      clear(alerts);
      if (v.status === 'failed' && job.error) {
        const e = job.error;
        const msg = typeof e === 'string' ? e : e.message || JSON.stringify(e);
        const code = typeof e === 'object' ? e.code || e.type : null;
        alerts.append(
          h(
            'div.notice.error.card#job-error',
            { role: 'alert' },
            h('h2', null, 'The job failed'),
            code ? h('p.mono', null, code + (e.param ? ' (' + e.param + ')' : '')) : null,
            h('p', null, msg),
          ),
        );
      }
      if (v.status === 'cancelled') {
        const e = job.error;
        const why = e && typeof e === 'object' ? e.message || e.reason : e;
        alerts.append(
          h('div.notice.warn.card#job-cancelled', null, 'Cancelled' + (why ? ': ' + why : '.')),
        );
      }
      if (Array.isArray(job.blockers) && job.blockers.length) {
        alerts.append(
          h(
            'section.card#job-blockers',
            { 'aria-labelledby': 'blk-title' },
            h('h2#blk-title', null, 'Blocked: this job cannot run'),
            blockerList(job.blockers),
          ),
        );
      }
      if (Array.isArray(job.warnings) && job.warnings.length) {
        alerts.append(
          h(
            'section.card',
            null,
            h('h2', null, 'Preflight warnings'),
            blockerList(job.warnings, true),
          ),
        );
      }
      recipePre.textContent = JSON.stringify(v.recipe, null, 2);
      if (v.status === 'succeeded') setupSamples();
    }

    async function loadJob() {
      let r;
      try {
        r = await api('GET', '/v1/jobs/' + encodeURIComponent(id));
      } catch (e) {
        return;
      }
      if (!alive()) return;
      if (!r.ok) {
        if (r.status === 404) {
          clear(main).append(
            h('h1', null, 'No such job'),
            h(
              'p',
              null,
              'There is no job ',
              h('code', null, id),
              '. ',
              h('a', { href: '#/jobs' }, 'Back to the list'),
            ),
          );
          cleanup();
        }
        return;
      }
      job = r.data && r.data.job ? r.data.job : r.data;
      renderJob();
      return job;
    }

    async function loadCheckpoints() {
      let r;
      try {
        r = await api('GET', '/v1/jobs/' + encodeURIComponent(id) + '/checkpoints');
      } catch (e) {
        return;
      }
      if (!alive()) return;
      clear(ckptBody);
      if (!r.ok) {
        ckptBody.append(h('p.muted', null, 'Checkpoints unavailable: ' + errorText(r)));
        return;
      }
      const list = listOf(r.data, 'checkpoints', 'items', 'data');
      if (!list.length) {
        ckptBody.append(h('p.muted', null, 'No checkpoints yet.'));
        return;
      }
      ckptBody.append(
        h(
          'div.table-wrap',
          null,
          h(
            'table',
            null,
            h(
              'thead',
              null,
              h(
                'tr',
                null,
                ['Step', 'Size', 'Saved', 'Path'].map((t) => h('th', { scope: 'col' }, t)),
              ),
            ),
            h(
              'tbody',
              null,
              list.map((c) =>
                h(
                  'tr',
                  null,
                  h('td.num', null, String(c.step)),
                  h('td.num', null, fmtBytes(Number(c.bytes))),
                  h('td', null, fmtAge(parseTime(c.created_at))),
                  h('td.mono', null, c.path || ''),
                ),
              ),
            ),
          ),
        ),
      );
    }

    async function loadHistory(after) {
      let url = '/v1/jobs/' + encodeURIComponent(id) + '/metrics';
      if (after >= 0) url += '?after_step=' + after;
      let r;
      try {
        r = await api('GET', url);
      } catch (e) {
        return;
      }
      if (!alive() || !r.ok) return;
      for (const row of listOf(r.data, 'metrics', 'items', 'data')) store.addRow(row);
      onMetrics();
    }

    const logLines = [];
    function log(line) {
      logLines.push(line);
      if (logLines.length > 300) logLines.shift();
      logPre.textContent = logLines.join('\n');
    }

    let finalSync = null;
    function onEvent(type, data, seq) {
      debug.eventsSeen++;
      debug.lastEventId = seq;
      let d;
      try {
        d = JSON.parse(data);
      } catch (e) {
        d = data;
      }
      if (type === 'metrics' && d && typeof d === 'object') {
        store.addRow(d);
        if (job && job.progress) {
          if (Number.isFinite(d.step)) job.progress.step = Math.max(job.progress.step || 0, d.step);
          if (Number.isFinite(d.total_steps)) job.progress.total_steps = d.total_steps;
          if (Number.isFinite(d.epoch)) job.progress.epoch = d.epoch;
          renderFacts();
        }
        onMetrics();
      } else if (type === 'status') {
        const st = d && d.status;
        log('[status] ' + (d && d.previous ? d.previous + ' → ' : '') + st);
        if (job && st) {
          job.status = st;
          renderJob();
        }
        loadJob().then(() => {
          loadCheckpoints();
          if (st && TERMINAL.has(st) && !finalSync) {
            // The run is over: take any rows the stream had not delivered and
            // stop listening (the server has nothing more to say).
            finalSync = loadHistory(-1).then(() => {
              if (stream) stream.close();
            });
          }
        });
      } else if (type === 'log') {
        log(typeof d === 'string' ? d : (d && (d.line || d.message)) || JSON.stringify(d));
      }
    }

    function cleanup() {
      charts.destroyed = true;
      for (const s of stops) s();
      if (stream) stream.close();
      stream = null;
    }

    cancelBtn.addEventListener('click', async () => {
      cancelBtn.disabled = true;
      let r;
      try {
        r = await api('POST', '/v1/jobs/' + encodeURIComponent(id) + '/cancel');
      } catch (e) {
        r = null;
      }
      if (!r || !r.ok) {
        cancelBtn.disabled = false;
        alerts.prepend(h('p.notice.error', { role: 'alert' }, 'Cancel failed: ' + errorText(r)));
      } else {
        announce('Cancel requested');
      }
      loadJob();
    });

    // Before / after: each prompt completed by the job's starting weights
    // ("base") and its tuned weights ("final") through POST
    // /v1/jobs/{id}/generate. A line written as a JSON array of ids
    // ("[1, 2, 3]") is sent as prompt_ids, for jobs trained without a tokenizer.
    let samplesReady = false;
    function setupSamples() {
      if (samplesReady) return;
      samplesReady = true;
      samples.hidden = false;
      const prompts = h(
        'textarea#ba-prompts',
        { rows: 4, 'aria-describedby': 'ba-help' },
        'Explain why the sky is blue to a five-year-old.\nWrite one kind sentence about rain.\n' +
          'What should I do if I feel tired?',
      );
      const maxTok = h('input#ba-max', { type: 'number', min: 1, max: 1024, value: 48 });
      const temp = h('input#ba-temp', { type: 'number', min: 0, max: 5, step: 0.1, value: 0 });
      const go = h('button.primary#ba-run', { type: 'button' }, 'Compare base vs tuned');
      const out = h('div.samples#ba-results', { 'aria-live': 'polite' });
      append(
        samples,
        h('h2#ba-title', null, 'Before / after'),
        h(
          'p.muted#ba-help',
          null,
          'One prompt per line (or a JSON array of token ids). Each is completed by the ' +
            'starting (base) model and by the tuned (final) model; temperature 0 is greedy.',
        ),
        h('label', { for: 'ba-prompts' }, 'Prompts'),
        prompts,
        h(
          'div.row',
          null,
          h('label', { for: 'ba-max' }, 'Max new tokens'),
          maxTok,
          h('label', { for: 'ba-temp' }, 'Temperature'),
          temp,
          go,
        ),
        out,
      );

      // The request body for one line of the textarea.
      function promptBody(line) {
        if (/^\[[\d,\s]*\]$/.test(line)) {
          try {
            return { prompt_ids: JSON.parse(line) };
          } catch (e) {
            // not ids after all: send it as text
          }
        }
        return { prompt: line };
      }
      // One generation; a busy server (503) is asked again after its Retry-After.
      async function generateOnce(body) {
        for (let attempt = 0; ; attempt++) {
          let r;
          try {
            r = await api('POST', '/v1/jobs/' + encodeURIComponent(id) + '/generate', {
              body: JSON.stringify(body),
            });
          } catch (e) {
            return null;
          }
          if (r.status !== 503 || attempt >= 5 || !alive()) return r;
          const wait = Math.min(10, Number(r.retryAfter) || 1);
          await sleep(wait * 1000);
        }
      }
      function completionNode(r) {
        const d = r.data || {};
        const node = h('div.completion');
        if (typeof d.text === 'string') {
          node.append(h('span.text', null, d.text === '' ? '(nothing)' : d.text));
        } else {
          node.append(h('span.mono', null, 'ids: ' + JSON.stringify(d.ids || [])));
        }
        if (d.finish_reason === 'eos') node.append(h('span.muted', null, ' ⏹'));
        node.title =
          d.finish_reason === 'eos' ? 'stopped at end of sequence' : 'stopped at the token limit';
        return node;
      }

      go.addEventListener('click', async () => {
        const list = prompts.value
          .split('\n')
          .map((s) => s.trim())
          .filter(Boolean)
          .slice(0, 8);
        clear(out);
        if (!list.length) return;
        go.disabled = true;
        try {
          for (const line of list) {
            const box = h('div.sample', null, h('h3', null, line));
            const pair = h('div.pair');
            box.append(pair);
            out.append(box);
            for (const which of ['base', 'final']) {
              const cell = h(
                'div',
                { dataset: { model: which } },
                h('h4', null, which === 'base' ? 'Before (base)' : 'After (tuned)'),
                '…',
              );
              pair.append(cell);
              const r = await generateOnce(
                Object.assign(promptBody(line), {
                  max_new_tokens: Math.min(1024, Math.max(1, Number(maxTok.value) || 48)),
                  temperature: Math.min(5, Math.max(0, Number(temp.value) || 0)),
                  model: which,
                }),
              );
              if (!alive()) return;
              cell.lastChild.remove();
              // No generate route on this server (an older or slimmer daemon).
              const code = r && r.data && r.data.error && r.data.error.code;
              const missing =
                (r && r.status === 404 && code === 'route_not_found') ||
                (r && (r.status === 405 || r.status === 501));
              if (missing) {
                clear(out).append(
                  h(
                    'p.notice.warn#ba-unavailable',
                    null,
                    'This server does not offer text generation for jobs (' +
                      r.status +
                      ': ' +
                      errorText(r) +
                      ').',
                  ),
                );
                return;
              }
              if (r && r.ok) {
                cell.dataset.state = 'done';
                cell.append(completionNode(r));
              } else {
                cell.dataset.state = 'error';
                cell.append(h('span.muted', null, 'error: ' + errorText(r)));
              }
            }
          }
        } finally {
          go.disabled = false;
        }
      });
    }

    (async () => {
      const j = await loadJob();
      if (!alive() || !j) return;
      loadCheckpoints();
      // Stream first, then history: rows logged in between arrive on the
      // stream, and the store merges the overlap by step.
      const terminal = TERMINAL.has(j.status);
      if (!terminal) {
        stream = new EventStream('/v1/jobs/' + encodeURIComponent(id) + '/events', onEvent, {
          onState: (s) => {
            debug.stream = s;
          },
          shouldStop: () => !!(job && TERMINAL.has(job.status)),
        });
      } else {
        debug.stream = 'not needed';
      }
      await loadHistory(-1);
      if (terminal) {
        if (store.rows === 0) chartsNote.textContent = 'This job logged no metrics.';
        return;
      }
      // Progress, ETA and checkpoints drift between events: refresh them.
      stops.push(
        every(5000, alive, async () => {
          renderFacts();
          if (job && !TERMINAL.has(job.status)) {
            await loadJob();
            await loadCheckpoints();
          }
        }),
      );
    })();

    return cleanup;
  }

  // ---- compare ---------------------------------------------------------------

  function viewCompare(query, alive) {
    debug.view = 'compare';
    const ids = new Set(
      (query.get('ids') || '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    );
    let metric = query.get('metric') || 'loss';
    const stores = new Map(); // id -> {store, status, lastStep}
    const pick = h('fieldset.pick-list#compare-jobs', null, h('legend', null, 'Jobs to overlay'));
    const metricSel = h('select#compare-metric');
    const note = h('p.muted#compare-note');
    const { card, canvas, latest } = chartCard('compare', 'Compare', true);
    latest.remove();
    append(
      main,
      h('h1', null, 'Compare runs'),
      h(
        'div.two-col',
        null,
        h('section.card', null, pick),
        h(
          'section.card',
          null,
          h('label', { for: 'compare-metric' }, 'Metric'),
          ' ',
          metricSel,
          note,
        ),
      ),
      card,
    );
    const chart = makeChart('compare', canvas, [], null);

    let optionKeys = '';
    function syncUrl() {
      history.replaceState(
        null,
        '',
        '#/compare?ids=' + [...ids].join(',') + '&metric=' + encodeURIComponent(metric),
      );
    }
    function redraw() {
      const keys = new Set(COMPARE_DEFAULT_METRICS);
      for (const { store } of stores.values()) for (const k of store.keys()) keys.add(baseKey(k));
      // Rebuild the options only when the set changed, so an open menu stays open.
      const sorted = [...keys].sort();
      if (sorted.join('\n') !== optionKeys) {
        optionKeys = sorted.join('\n');
        clear(metricSel);
        for (const k of sorted) metricSel.append(h('option', { value: k }, k));
      }
      metricSel.value = metric;
      if (!chart || !chart.canvas || !alive()) return;
      const datasets = [];
      let i = 0;
      for (const id of ids) {
        const entry = stores.get(id);
        const color = PALETTE[i++ % PALETTE.length];
        if (!entry) continue;
        const train = lineDataset(id + ' ' + metric, color, false, metric);
        train.data = entry.store.points(metric);
        train.jobId = id;
        datasets.push(train);
        const ev = entry.store.points('eval_' + metric);
        if (ev.length) {
          const e = lineDataset(id + ' eval ' + metric, color, true, 'eval_' + metric);
          e.data = ev;
          e.jobId = id;
          datasets.push(e);
        }
      }
      chart.data.datasets = datasets;
      chart.options.plugins.title = { display: true, text: metric };
      chart.update('none');
      note.textContent =
        ids.size < 2
          ? 'Pick two or more jobs to overlay their curves.'
          : datasets.every((d) => !d.data.length)
            ? 'None of these jobs logged ' + metric + ' yet.'
            : '';
    }
    metricSel.addEventListener('change', () => {
      metric = metricSel.value;
      syncUrl();
      redraw();
    });

    async function loadStore(id) {
      let entry = stores.get(id);
      if (!entry) {
        entry = { store: new MetricStore(), status: null };
        stores.set(id, entry);
      }
      if (entry.status && TERMINAL.has(entry.status)) return;
      const after = entry.store.maxStep;
      let r;
      try {
        r = await api(
          'GET',
          '/v1/jobs/' +
            encodeURIComponent(id) +
            '/metrics' +
            (after >= 0 ? '?after_step=' + after : ''),
        );
      } catch (e) {
        return;
      }
      if (r.ok)
        for (const row of listOf(r.data, 'metrics', 'items', 'data')) entry.store.addRow(row);
    }

    async function refresh() {
      let r;
      try {
        r = await api('GET', '/v1/jobs?limit=100');
      } catch (e) {
        r = null;
      }
      if (!alive()) return;
      const jobs = r && r.ok ? listOf(r.data, 'jobs', 'items', 'data').map(jobView) : [];
      clear(pick).append(h('legend', null, 'Jobs to overlay'));
      if (!jobs.length)
        pick.append(
          h('p.muted', null, r && r.ok ? 'No jobs yet.' : 'Could not list jobs: ' + errorText(r)),
        );
      for (const v of jobs) {
        const cb = h('input', { type: 'checkbox', value: v.id, checked: ids.has(v.id) });
        cb.addEventListener('change', async () => {
          if (cb.checked) ids.add(v.id);
          else ids.delete(v.id);
          syncUrl();
          if (cb.checked) await loadStore(v.id);
          redraw();
        });
        pick.append(
          h(
            'label',
            null,
            cb,
            h('span.mono', null, v.id),
            badge(v.status),
            h('span.muted', null, v.method.toUpperCase() + ' · ' + (v.model || '—')),
          ),
        );
      }
      const statuses = new Map(jobs.map((v) => [v.id, v.status]));
      await Promise.all(
        [...ids].map(async (id) => {
          await loadStore(id);
          const e = stores.get(id);
          // One more read after the job ends, then the curve is final.
          if (e) e.status = statuses.get(id) || e.status;
        }),
      );
      if (alive()) redraw();
    }
    redraw();
    return every(3000, alive, refresh);
  }

  // ---- submit ----------------------------------------------------------------

  const EXAMPLE_RECIPE = [
    '# A DPO run on a tiny model initialised from scratch.',
    "# Paths are relative to the server's data root.",
    'recipe:',
    '  method: dpo          # routes to the AlignmentHandler',
    '  beta: 0.1            # how hard to push toward chosen vs stay near the reference',
    '  data: preference     # rows of {prompt, chosen, rejected}',
    '  train_file: prefs.jsonl',
    '  model_init:',
    '    dim: 32',
    '    n_layers: 2',
    '    n_heads: 4',
    '    n_kv_heads: 4',
    '    hidden_dim: 64',
    '    max_seq_len: 64',
    '  learning_rate: 0.001',
    '  per_device_train_batch_size: 4',
    '  max_steps: 40',
    '  logging_steps: 1',
    '',
  ].join('\n');

  function viewSubmit(alive) {
    debug.view = 'submit';
    const text = h('textarea#recipe-text', {
      rows: 18,
      spellcheck: 'false',
      'aria-describedby': 'recipe-help',
    });
    text.value = sessionStorage.getItem('brewslm.draft') || '';
    const file = h('input#recipe-file', {
      type: 'file',
      accept: '.yaml,.yml,.json,application/json,application/yaml,text/yaml',
    });
    const exampleBtn = h('button', { type: 'button' }, 'Insert example');
    const preflightBtn = h('button#run-preflight', { type: 'button' }, 'Run preflight');
    const submitBtn = h('button.primary#submit-job', { type: 'button' }, 'Submit job');
    const result = h('div#preflight-result', { 'aria-live': 'polite' });
    append(
      main,
      h('h1', null, 'Submit a recipe'),
      h(
        'section.card',
        null,
        h('label', { for: 'recipe-text' }, 'Recipe (YAML or JSON)'),
        h(
          'p.muted#recipe-help',
          null,
          'Paste a recipe or load a file. Preflight checks it without running it: missing ' +
            'files, dataset schema, model/tokenizer agreement, hyperparameters, memory.',
        ),
        text,
        h(
          'div.row',
          null,
          h('label', { for: 'recipe-file' }, 'Load file'),
          file,
          exampleBtn,
          h('span.spacer'),
          preflightBtn,
          submitBtn,
        ),
      ),
      result,
    );

    let idemKey = null,
      idemText = null;
    text.addEventListener('input', () => sessionStorage.setItem('brewslm.draft', text.value));
    exampleBtn.addEventListener('click', () => {
      text.value = EXAMPLE_RECIPE;
      text.dispatchEvent(new Event('input'));
      text.focus();
    });
    file.addEventListener('change', async () => {
      const f = file.files && file.files[0];
      if (!f) return;
      text.value = await f.text();
      text.dispatchEvent(new Event('input'));
    });
    function contentType(body) {
      return /^\s*[{[]/.test(body) ? 'application/json' : 'application/yaml';
    }
    function renderReport(rep, heading) {
      clear(result);
      const d = rep.data || {};
      const blockers = d.blockers || (d.preflight && d.preflight.blockers) || [];
      const warnings = d.warnings || (d.preflight && d.preflight.warnings) || [];
      const est = d.estimate || (d.preflight && d.preflight.estimate) || null;
      const ok = rep.ok && blockers.length === 0 && d.ok !== false;
      const card = h('section.card#preflight-report', { dataset: { ok: ok ? '1' : '0' } });
      card.append(
        h('h2', null, heading),
        h(
          'p.notice.' + (ok ? 'ok' : 'error'),
          { role: ok ? 'status' : 'alert' },
          ok
            ? 'No blockers: this recipe can run.'
            : blockers.length
              ? blockers.length +
                ' blocker' +
                (blockers.length > 1 ? 's' : '') +
                ' — fix them and run preflight again.'
              : 'The server refused the recipe: ' + errorText(rep),
        ),
      );
      if (blockers.length) card.append(h('h3', null, 'Blockers'), blockerList(blockers));
      // A recipe that does not parse has no blockers but a typed error naming the field.
      const e = d.error;
      if (!blockers.length && !rep.ok && e && typeof e === 'object') {
        card.append(blockerList([{ code: e.code || e.type, field: e.param, message: e.message }]));
      }
      if (warnings.length) card.append(h('h3', null, 'Warnings'), blockerList(warnings, true));
      if (est) {
        card.append(
          h('h3', null, 'Estimate'),
          h(
            'dl.facts.estimate#estimate',
            null,
            [
              ['Parameters', fmtNum(Number(est.parameters))],
              ['Memory', fmtBytes(Number(est.memory_bytes))],
              ['Training rows', fmtNum(Number(est.train_rows))],
              ['Optimizer steps', fmtNum(Number(est.steps))],
            ].map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v))),
          ),
        );
      }
      result.append(card);
      return ok;
    }
    async function send(path, heading, btn) {
      const body = text.value;
      if (!body.trim()) {
        clear(result).append(h('p.notice.error', { role: 'alert' }, 'The recipe is empty.'));
        return null;
      }
      btn.disabled = true;
      try {
        const headers = {};
        if (path === '/v1/jobs') {
          if (idemText !== body) {
            idemText = body;
            idemKey = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
          }
          headers['Idempotency-Key'] = idemKey;
        }
        const r = await api('POST', path, { body, contentType: contentType(body), headers });
        if (!alive()) return null;
        return { r, ok: renderReport(r, heading) };
      } catch (e) {
        clear(result).append(h('p.notice.error', { role: 'alert' }, 'Network error: ' + e.message));
        return null;
      } finally {
        btn.disabled = false;
      }
    }
    preflightBtn.addEventListener('click', () => send('/v1/preflight', 'Preflight', preflightBtn));
    submitBtn.addEventListener('click', async () => {
      const res = await send('/v1/jobs', 'Submission', submitBtn);
      if (!res || !res.r.ok) return;
      const d = res.r.data || {};
      const newId = d.id || (d.job && d.job.id);
      if (newId) {
        sessionStorage.removeItem('brewslm.draft');
        location.hash = '#/jobs/' + encodeURIComponent(newId);
      }
    });
    return () => {};
  }

  // ---- start -----------------------------------------------------------------

  refreshTokenButton();
  window.addEventListener('hashchange', route);
  route();
})();
