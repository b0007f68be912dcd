// dashboard.test.mjs — drives the dashboard brewslmd serves at GET / in a real
// headless Chromium (Debian's, through playwright-core) against a real
// brewslmd running real DPO / ORPO jobs on a tiny model_init model:
//   - the assets come with their content types, ETag / 304 and Cache-Control;
//   - with auth on, the token is asked for once and every call (the fetch()
//     SSE stream included) carries it;
//   - a recipe with a missing train_file shows its typed dataset_not_found
//     blocker (with its hint) in the submit form, on preflight and on submit;
//   - a DPO job submitted through the form appears in the job list and its
//     charts gain points while it runs (read from window.__charts, the Chart.js
//     instances), it ends succeeded, and the plotted curve equals the metrics
//     the API reports; a reload rebuilds the whole curve from history;
//   - a second (ORPO) job fills the ORPO panel, and the compare view overlays
//     both jobs' curves; the before/after panel shows the base and the tuned
//     model's completions of each prompt, equal to what POST /v1/jobs/{id}/generate
//     answers; the page fits a phone-width viewport;
//   - screenshots of the job page go to $BREWSLM_BUILD/artifacts/.
// Exits 0 on success, 1 on failure, 77 (meson's "skipped") when Chromium or
// playwright-core is not installed. Every wait has a timeout.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BUILD = path.resolve(process.env.BREWSLM_BUILD || path.join(HERE, '..', '..', 'build'));
const DAEMON = path.join(BUILD, 'daemon', 'brewslmd');
const CHROMIUM = process.env.BREWSLM_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(BUILD, 'artifacts');
const TOKEN = 'dash-' + Math.random().toString(36).slice(2);
// Sanitized builds (deploy/sanitize.sh) run 2-4x slower and export
// BREWSLM_TIME_SCALE: every wait below is stretched by it; what is checked is not.
const TIME_SCALE = Math.max(1, Number(process.env.BREWSLM_TIME_SCALE) || 1);
const scaled = (ms) => ms * TIME_SCALE;
const TOTAL_TIMEOUT_MS = scaled(240000);

const failures = [];
let checks = 0;
function check(cond, what) {
  checks++;
  if (!cond) {
    failures.push(what);
    console.error('FAIL: ' + what);
  } else {
    console.log('ok: ' + what);
  }
  return !!cond;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.log('SKIP: playwright-core is not installed (npm ci in tests/browser)');
  process.exit(77);
}
if (!fs.existsSync(CHROMIUM)) {
  console.log('SKIP: no Chromium at ' + CHROMIUM + ' (apt-get install chromium)');
  process.exit(77);
}
if (!fs.existsSync(DAEMON)) {
  console.error('FAIL: brewslmd not built at ' + DAEMON);
  process.exit(1);
}

// ---- fixtures ----------------------------------------------------------------

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'brewslm-dash-'));
const dataRoot = path.join(tmp, 'data');
const stateDir = path.join(tmp, 'state');
fs.mkdirSync(dataRoot);
fs.mkdirSync(stateDir);

// Preference pairs with a learnable rule (chosen answers the sum, rejected
// refuses), so the DPO margin visibly grows.
function prefRows(n, offset) {
  const rows = [];
  for (let i = 0; i < n; i++) {
    const a = (i * 7 + offset) % 10,
      b = (i * 3 + 1 + offset) % 10;
    rows.push(
      JSON.stringify({
        prompt: `Q: ${a}+${b}?\nA:`,
        chosen: ` ${a + b}.`,
        rejected: ' I do not know.',
      }),
    );
  }
  return rows.join('\n') + '\n';
}
fs.writeFileSync(path.join(dataRoot, 'prefs.jsonl'), prefRows(48, 0));
fs.writeFileSync(path.join(dataRoot, 'prefs-eval.jsonl'), prefRows(8, 5));
// Pre-tokenized pairs for a job whose model is another job's output (its
// tokenizer is not known before that job ends).
fs.writeFileSync(
  path.join(dataRoot, 'prefs-ids.jsonl'),
  Array.from({ length: 8 }, (_, i) =>
    JSON.stringify({ prompt_ids: [1, 2, 3 + i], chosen_ids: [5, 6], rejected_ids: [7, 8] }),
  ).join('\n') + '\n',
);

const MODEL_INIT = {
  dim: 48,
  n_layers: 2,
  n_heads: 4,
  n_kv_heads: 4,
  hidden_dim: 128,
  max_seq_len: 32,
};
// Long enough (about a second of training on 2 cores) that the live checks
// below see the job running several times: at 80 steps the tiny model's
// job once ran between two polls.
const DPO_STEPS = 240;
const dpoRecipe = [
  'recipe:',
  '  method: dpo',
  '  beta: 0.1',
  '  data: preference',
  '  train_file: prefs.jsonl',
  '  eval_file: prefs-eval.jsonl',
  '  eval_steps: 60',
  '  model_init:',
  ...Object.entries(MODEL_INIT).map(([k, v]) => `    ${k}: ${v}`),
  '  max_length: 32',
  '  max_prompt_length: 16',
  '  learning_rate: 0.002',
  '  per_device_train_batch_size: 8',
  `  max_steps: ${DPO_STEPS}`,
  '  logging_steps: 1',
  '  save_steps: 120',
  '  seed: 7',
  '  threads: 1',
  '',
].join('\n');
const blockedRecipe = dpoRecipe.replace('train_file: prefs.jsonl', 'train_file: missing.jsonl');
const orpoRecipe = {
  method: 'orpo',
  beta: 0.1,
  train_file: 'prefs.jsonl',
  model_init: MODEL_INIT,
  max_length: 32,
  max_prompt_length: 16,
  learning_rate: 0.002,
  per_device_train_batch_size: 8,
  max_steps: 12,
  logging_steps: 1,
  seed: 3,
  threads: 1,
};
// Long enough that it is still running when the cancel button is pressed.
const longRecipe = Object.assign({}, orpoRecipe, { method: 'dpo', max_steps: 100000 });

// ---- the daemon ----------------------------------------------------------------

let daemon = null,
  browser = null;
const daemonLog = [];
async function startDaemon() {
  daemon = spawn(
    DAEMON,
    [
      '--listen',
      '127.0.0.1:0',
      '--db',
      path.join(tmp, 'db.sqlite'),
      '--data-root',
      dataRoot,
      '--state-dir',
      stateDir,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: Object.assign({}, process.env, { OPENBLAS_NUM_THREADS: '1', BREWSLM_TOKEN: TOKEN }),
    },
  );
  daemon.stderr.on('data', (d) => {
    daemonLog.push(String(d));
  });
  const lines = readline.createInterface({ input: daemon.stdout });
  const first = await new Promise((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error('brewslmd printed no address in 20 s')),
      scaled(20000),
    );
    daemon.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error('brewslmd exited ' + code));
    });
    lines.once('line', (l) => {
      clearTimeout(t);
      resolve(l);
    });
  });
  lines.on('line', (l) => daemonLog.push(l + '\n'));
  const m = /^brewslmd listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(first);
  if (!m) throw new Error('unexpected first line: ' + first);
  return m[1];
}
// A daemon that does not exit 0 on SIGTERM fails the test: under the
// sanitizers a leak or error found at exit makes its status non-zero, and a
// SIGKILL would skip the leak check.
async function stopDaemon() {
  if (!daemon || daemon.exitCode !== null) return;
  const exited = new Promise((r) => daemon.once('exit', (code, sig) => r(sig || code)));
  daemon.kill('SIGTERM');
  const t = setTimeout(() => daemon.kill('SIGKILL'), scaled(10000));
  const status = await exited;
  clearTimeout(t);
  check(status === 0, 'brewslmd exited 0 on SIGTERM (status ' + status + ')');
}

let BASE = '';
async function apiJson(method, p, body, contentType) {
  const headers = { Authorization: 'Bearer ' + TOKEN };
  if (body !== undefined) headers['Content-Type'] = contentType || 'application/json';
  const res = await fetch(BASE + p, { method, headers, body });
  const text = await res.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch (e) {
    data = text;
  }
  return { status: res.status, data };
}

async function waitFor(what, fn, timeoutMs, everyMs) {
  const until = Date.now() + scaled(timeoutMs);
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error('timed out waiting for ' + what);
    await sleep(everyMs || 100);
  }
}

// Chart data as the page plots it: {chartName: {datasetKey: [[x, y], ...]}}.
function readCharts(page) {
  return page.evaluate(() => {
    const out = {};
    for (const [name, c] of Object.entries(window.__charts || {})) {
      out[name] = {};
      for (const ds of c.data.datasets)
        out[name][ds.key || ds.label] = ds.data.map((p) => [p.x, p.y]);
    }
    return out;
  });
}

// ---- the test ------------------------------------------------------------------

async function main() {
  BASE = await startDaemon();
  console.log('brewslmd at ' + BASE);

  // Assets: types, validators, caching.
  const assets = {
    '/': 'text/html',
    '/index.html': 'text/html',
    '/app.js': 'text/javascript',
    '/style.css': 'text/css',
    '/vendor/chart.js': 'text/javascript',
  };
  for (const [p, type] of Object.entries(assets)) {
    const r = await fetch(BASE + p);
    const body = await r.text();
    const etag = r.headers.get('etag');
    check(
      r.status === 200 && (r.headers.get('content-type') || '').startsWith(type),
      `GET ${p} is 200 ${type} (got ${r.status} ${r.headers.get('content-type')})`,
    );
    check(body.length > 100, `GET ${p} has a body`);
    check(/^"[0-9a-f]{32}"$/.test(etag || ''), `GET ${p} has a strong ETag (${etag})`);
    const cc = r.headers.get('cache-control') || '';
    if (p === '/' || p === '/index.html')
      check(cc === 'no-cache', `${p} is Cache-Control: no-cache (${cc})`);
    else check(cc.length > 0, `${p} has Cache-Control (${cc})`);
    const r304 = await fetch(BASE + p, { headers: { 'If-None-Match': etag } });
    check(r304.status === 304 && (await r304.text()) === '', `GET ${p} with If-None-Match is 304`);
    const rOld = await fetch(BASE + p, { headers: { 'If-None-Match': '"0000"' } });
    check(rOld.status === 200, `GET ${p} with a stale ETag is 200`);
  }
  const chartJs = await (await fetch(BASE + '/vendor/chart.js')).text();
  check(/Chart\.js v\d/.test(chartJs), '/vendor/chart.js is the system Chart.js');
  check((await apiJson('GET', '/v1/jobs')).status === 200, 'the API answers with the token');
  check(
    (await fetch(BASE + '/v1/jobs')).status === 401,
    'the API refuses a call without the token',
  );

  const userDataDir = path.join(tmp, 'chromium-profile'); // fresh: no state between runs
  fs.mkdirSync(userDataDir);
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = browser.pages()[0] || (await browser.newPage());
  page.setDefaultTimeout(20000);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const apiCalls = [];
  page.on('request', (req) => {
    const u = new URL(req.url());
    if (u.pathname.startsWith('/v1/'))
      apiCalls.push({ path: u.pathname, auth: req.headers().authorization || '' });
  });

  // 1. Auth: the first API call answers 401 and the page asks for the token.
  await page.goto(BASE + '/');
  await page.waitForSelector('#token-dialog[open]');
  check(true, 'the token dialog opens on a 401');
  const loginMark = apiCalls.length; // the calls before this one had no token to send
  await page.fill('#token-input', TOKEN);
  await page.click('#token-dialog button[value="save"]');
  await page.waitForSelector('#jobs-summary');
  await waitFor(
    'the job list',
    () =>
      page.evaluate(
        () =>
          /No jobs yet|job/.test(document.getElementById('jobs-summary').textContent) &&
          !/Loading/.test(document.getElementById('jobs-summary').textContent),
      ),
    10000,
  );
  check(
    await page.evaluate((t) => sessionStorage.getItem('brewslm.token') === t, TOKEN),
    'the token is kept in sessionStorage',
  );

  // 2. Submit form, reached with the keyboard: a missing train_file shows its
  // typed blocker.
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  let tabs = 0;
  while (
    tabs < 15 &&
    !(await page.evaluate(() => document.activeElement?.dataset?.nav === 'submit'))
  ) {
    await page.keyboard.press('Tab');
    tabs++;
  }
  check(tabs < 15, `the Submit link is reachable with Tab (${tabs} presses)`);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => window.__dashboard.view === 'submit');
  await page.fill('#recipe-text', blockedRecipe);
  await page.click('#run-preflight');
  await page.waitForSelector('#preflight-report');
  const blocker = page.locator('#preflight-report .blockers li[data-code="dataset_not_found"]');
  check((await blocker.count()) === 1, 'preflight shows the dataset_not_found blocker');
  if (await blocker.count()) {
    const txt = await blocker.innerText();
    check(/train_file/.test(txt), 'the blocker names the field train_file');
    check(
      (await blocker.locator('.hint').count()) === 1 &&
        (await blocker.locator('.hint').innerText()).length > 5,
      'the blocker shows its hint',
    );
  }
  check(
    (await page.getAttribute('#preflight-report', 'data-ok')) === '0',
    'the report says blocked',
  );
  await page.click('#submit-job');
  await waitFor(
    'the submit answer',
    () =>
      page.evaluate(() =>
        /Submission/.test(document.querySelector('#preflight-report h2')?.textContent || ''),
      ),
    10000,
  );
  check(
    (await page
      .locator('#preflight-report .blockers li[data-code="dataset_not_found"]')
      .count()) === 1,
    'submitting the blocked recipe shows the 422 blocker',
  );
  check(
    (await apiJson('GET', '/v1/jobs')).data.data.length === 0,
    'the blocked recipe made no job',
  );

  // 3. Preflight then submit the real DPO recipe through the form.
  await page.fill('#recipe-text', dpoRecipe);
  await page.click('#run-preflight');
  await page.waitForSelector('#preflight-report[data-ok="1"]');
  check((await page.locator('#estimate').count()) === 1, 'preflight shows the estimate');
  const estSteps = await page.locator('#estimate dd').nth(3).innerText();
  check(estSteps === String(DPO_STEPS), `the estimate has ${DPO_STEPS} steps (${estSteps})`);
  await page.click('#submit-job');
  await page.waitForFunction(() => window.__dashboard.view === 'job');
  const jobId = await page.evaluate(() => window.__dashboard.jobId);
  check(/^job_[0-9a-f]{16}$/.test(jobId), 'submitting opens the job page ' + jobId);

  // 4. Live: the charts gain points while the job runs.
  let runningSeen = null;
  const seenCounts = [];
  await waitFor(
    'the job to finish',
    async () => {
      const [charts, job] = await Promise.all([
        readCharts(page),
        apiJson('GET', '/v1/jobs/' + jobId),
      ]);
      const n = ((charts.loss && charts.loss.loss) || []).length;
      if (job.data.status === 'running' && n > 0) {
        seenCounts.push(n);
        if (!runningSeen) runningSeen = { n, step: job.data.progress.step };
      }
      return job.data.status !== 'queued' && job.data.status !== 'running';
    },
    180000,
    50,
  );
  check(
    runningSeen !== null,
    'the loss chart had points while the job was running' +
      (runningSeen ? ` (${runningSeen.n} at step ${runningSeen.step})` : ''),
  );
  check(
    seenCounts.length >= 2 && seenCounts[seenCounts.length - 1] > seenCounts[0],
    `the loss chart grew while running (${seenCounts[0]} -> ${seenCounts[seenCounts.length - 1]})`,
  );
  check(
    await page.evaluate(() => window.__dashboard.eventsSeen > 0),
    'the page received SSE events',
  );

  await page.waitForSelector('#job-status .badge[data-status="succeeded"]', {
    timeout: scaled(15000),
  });
  check(true, 'the job page shows succeeded');
  const sseCalls = apiCalls.filter((c) => c.path.endsWith('/events'));
  check(
    sseCalls.length > 0 && sseCalls.every((c) => c.auth === 'Bearer ' + TOKEN),
    'the SSE request carried the bearer token',
  );
  const afterLogin = apiCalls.slice(loginMark);
  check(
    afterLogin.length > 0 && afterLogin.every((c) => c.auth === 'Bearer ' + TOKEN),
    `every API request after login carried the token (${afterLogin.length})`,
  );

  // The plotted curves are what the API reports, step by step.
  const metrics = (await apiJson('GET', `/v1/jobs/${jobId}/metrics`)).data.data;
  const apiSeries = (key) =>
    metrics.filter((r) => typeof r[key] === 'number').map((r) => [r.step, r[key]]);
  await sleep(300);
  let charts = await readCharts(page);
  const sameCurve = (a, b) =>
    a.length === b.length &&
    a.every(
      (p, i) =>
        p[0] === b[i][0] && Math.abs(p[1] - b[i][1]) <= 1e-12 * Math.max(1, Math.abs(b[i][1])),
    );
  for (const [chart, key] of [
    ['loss', 'loss'],
    ['margins', 'rewards/margins'],
    ['accuracies', 'rewards/accuracies'],
    ['rewards', 'rewards/chosen'],
    ['rewards', 'rewards/rejected'],
    ['logps', 'logps/chosen'],
    ['logps', 'logps/rejected'],
    ['learning_rate', 'learning_rate'],
    ['tokens_per_second', 'tokens_per_second'],
  ]) {
    const want = apiSeries(key);
    const got = (charts[chart] || {})[key] || [];
    check(
      want.length > 0 && sameCurve(got, want),
      `chart ${chart} plots ${key} as the API has it (${got.length} vs ${want.length} points)`,
    );
  }
  check(apiSeries('loss').length === DPO_STEPS, `the job logged ${DPO_STEPS} loss points`);
  const evalWant = apiSeries('eval_loss');
  check(
    evalWant.length >= 1 && sameCurve((charts.loss || {}).eval_loss || [], evalWant),
    `eval_loss is drawn as its own series (${evalWant.length} points)`,
  );
  const evalStyle = await page.evaluate(() => {
    const ds = window.__charts.loss.data.datasets.find((d) => d.key === 'eval_loss');
    return ds && ds.borderDash.length > 0 && ds.pointStyle !== 'line' && ds.pointRadius > 0;
  });
  check(evalStyle, 'eval points are drawn distinctly (dashed, with markers)');
  check(
    (await page.locator('#checkpoints table tbody tr').count()) >= 1,
    'the checkpoints are listed',
  );
  check(/"method": "dpo"/.test(await page.locator('#recipe').innerText()), 'the recipe is shown');

  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-job.png'), fullPage: true });
  console.log('screenshot: ' + path.join(ARTIFACTS, 'dashboard-job.png'));

  // 5. A reload (a late join) rebuilds the whole curve from the metrics history.
  await page.reload();
  await page.waitForSelector('#job-status .badge[data-status="succeeded"]');
  await waitFor(
    'history after reload',
    async () => ((await readCharts(page)).loss?.loss || []).length === DPO_STEPS,
    10000,
  );
  charts = await readCharts(page);
  check(sameCurve(charts.loss.loss, apiSeries('loss')), 'after a reload the loss curve is whole');

  // 6. Before / after: the panel completes each prompt with the base and the
  // tuned model through POST /v1/jobs/{id}/generate; what it shows must equal
  // the API's own greedy answers for the same requests.
  if (await page.locator('#ba-run').count()) {
    check(
      /base vs tuned/i.test(await page.locator('#ba-run').innerText()),
      'the before/after button says what it compares',
    );
    const baPrompts = ['Q: 2+3? A:', 'Q: 7+1? A:'];
    await page.fill('#ba-prompts', baPrompts.join('\n'));
    await page.fill('#ba-max', '8');
    await page.fill('#ba-temp', '0');
    await page.click('#ba-run');
    await waitFor(
      'before/after',
      () =>
        page.evaluate(
          (n) =>
            document.getElementById('ba-unavailable') ||
            [...document.querySelectorAll('#ba-results .pair > div')].filter(
              (c) => c.dataset.state,
            ).length === n,
          baPrompts.length * 2,
        ),
      30000,
    );
    check(
      !(await page.locator('#ba-unavailable').count()),
      'before/after: the server offers generation (no "unavailable" notice)',
    );
    const shown = await page.evaluate(() =>
      [...document.querySelectorAll('#ba-results .sample')].map((s) => ({
        prompt: s.querySelector('h3').textContent,
        cells: [...s.querySelectorAll('.pair > div')].map((c) => ({
          model: c.dataset.model,
          state: c.dataset.state,
          text: c.querySelector('.completion .text')?.textContent ?? null,
        })),
      })),
    );
    check(
      shown.length === baPrompts.length && shown.every((s, i) => s.prompt === baPrompts[i]),
      'before/after: one box per prompt: ' + JSON.stringify(shown.map((s) => s.prompt)),
    );
    let differs = false;
    for (const [i, prompt] of baPrompts.entries()) {
      const cells = (shown[i] && shown[i].cells) || [];
      check(
        cells.length === 2 && cells[0].model === 'base' && cells[1].model === 'final',
        `before/after "${prompt}": a base and a tuned cell`,
      );
      const texts = {};
      for (const cell of cells) {
        const want = await apiJson(
          'POST',
          `/v1/jobs/${jobId}/generate`,
          JSON.stringify({ prompt, max_new_tokens: 8, temperature: 0, model: cell.model }),
        );
        const wantText =
          want.status === 200 && typeof want.data.text === 'string'
            ? want.data.text || '(nothing)'
            : undefined;
        texts[cell.model] = wantText;
        check(
          cell.state === 'done' && wantText !== undefined && cell.text === wantText,
          `before/after "${prompt}" ${cell.model}: the page shows the API's completion ` +
            JSON.stringify([cell.text, wantText]),
        );
      }
      if (texts.base !== texts.final) differs = true;
    }
    check(differs, 'before/after: the tuned model completes differently from the base');
  } else {
    check(false, 'the before/after panel is shown for a succeeded job');
  }

  // 7. Phone width: the job page fits without sideways scrolling.
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(400);
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - window.innerWidth,
  );
  check(overflow <= 0, `the job page fits 390 px (overflow ${overflow} px)`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-job-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // 8. An ORPO job fills the ORPO panel; compare overlays both jobs.
  const orpo = await apiJson('POST', '/v1/jobs', JSON.stringify(orpoRecipe));
  check(orpo.status === 201, 'the ORPO job was accepted (' + orpo.status + ')');
  const orpoId = orpo.data.id;
  await page.click('nav a[data-nav="jobs"]');
  await page.waitForSelector(`tr[data-job-id="${orpoId}"]`);
  const dpoRow = page.locator(`tr[data-job-id="${jobId}"]`);
  check((await dpoRow.count()) === 1, 'the DPO job is in the job list');
  check(
    /succeeded/.test(await dpoRow.innerText()) && /DPO/.test(await dpoRow.innerText()),
    'its row shows status and method',
  );
  await page.selectOption('#status-filter', 'succeeded');
  await waitFor(
    'the filter',
    () =>
      page.evaluate(
        (id) =>
          [...document.querySelectorAll('tr[data-job-id]')].every(
            (tr) => tr.dataset.status === 'succeeded',
          ) && !!document.querySelector(`tr[data-job-id="${id}"]`),
        jobId,
      ),
    10000,
  );
  check(true, 'the status filter keeps the succeeded job and only succeeded jobs');
  await page.selectOption('#status-filter', '');
  await page.waitForSelector(`tr[data-job-id="${orpoId}"][data-status="succeeded"]`, {
    timeout: scaled(120000),
  });
  check(true, 'the job list updates the ORPO job live until succeeded');

  await page.goto(BASE + '/#/jobs/' + orpoId);
  await waitFor(
    'ORPO charts',
    async () => ((await readCharts(page)).orpo?.nll_loss || []).length > 0,
    10000,
  );
  charts = await readCharts(page);
  check(
    charts.orpo.nll_loss.length === 12 && charts.orpo.log_odds_ratio.length === 12,
    'the ORPO panel plots nll_loss and log_odds_ratio',
  );

  // Pick both in the list and press "Compare selected".
  await page.goto(BASE + '/#/jobs');
  await page.check(`tr[data-job-id="${jobId}"] input[type=checkbox]`);
  await page.check(`tr[data-job-id="${orpoId}"] input[type=checkbox]`);
  await page.click('button:has-text("Compare selected")');
  await page.waitForFunction(() => window.__dashboard.view === 'compare');
  await waitFor(
    'compare',
    () =>
      page.evaluate(() => {
        const c = window.__charts.compare;
        return c && c.data.datasets.filter((d) => d.data.length).length >= 2;
      }),
    10000,
  );
  const cmp = await page.evaluate(() =>
    window.__charts.compare.data.datasets.map((d) => ({
      job: d.jobId,
      key: d.key,
      n: d.data.length,
    })),
  );
  check(
    cmp.some((d) => d.job === jobId && d.key === 'loss' && d.n === DPO_STEPS) &&
      cmp.some((d) => d.job === orpoId && d.key === 'loss' && d.n === 12),
    'compare overlays the loss curves of both jobs',
  );

  // 9. The cancel button stops a running job; a job waiting for its model
  // then shows the typed blocker (with its hint) on its page.
  const long = await apiJson('POST', '/v1/jobs', JSON.stringify(longRecipe));
  check(long.status === 201, 'the long job was accepted (' + long.status + ')');
  const dependent = await apiJson(
    'POST',
    '/v1/jobs',
    JSON.stringify({
      method: 'dpo',
      model: 'job:' + long.data.id,
      train_file: 'prefs-ids.jsonl',
      max_steps: 4,
      threads: 1,
    }),
  );
  check(dependent.status === 201, 'the dependent job was accepted (' + dependent.status + ')');
  await page.goto(BASE + '/#/jobs/' + long.data.id);
  await page.waitForSelector('#job-status .badge[data-status="running"]', {
    timeout: scaled(60000),
  });
  await waitFor(
    'live points',
    async () => ((await readCharts(page)).loss?.loss || []).length > 0,
    30000,
  );
  const facts = await page.locator('.facts').innerText();
  check(
    /Step\s+\d+ \/ 100000/.test(facts) && /ETA\s+(estimating…|\d+[smhd])/.test(facts),
    'the running job shows its step, total and ETA',
  );
  await page.click('#cancel-job');
  await page.waitForSelector('#job-status .badge[data-status="cancelled"]', {
    timeout: scaled(60000),
  });
  check(true, 'the cancel button ended the running job as cancelled');
  check(await page.locator('#cancel-job').isHidden(), 'the cancel button is gone once cancelled');
  check(
    /cancelled at step/.test(await page.locator('#job-cancelled').innerText()),
    'the page says where the job was cancelled',
  );
  await page.goto(BASE + '/#/jobs/' + dependent.data.id);
  await page.waitForSelector('#job-status .badge[data-status="blocked"]', {
    timeout: scaled(30000),
  });
  const depBlocker = page.locator('#job-blockers li[data-code="missing_dependency"]');
  check(
    (await depBlocker.count()) === 1 && (await depBlocker.locator('.hint').innerText()).length > 5,
    'the blocked job shows its missing_dependency blocker with a hint',
  );
  check(
    (await page.locator(`.facts a[href="#/jobs/${long.data.id}"]`).count()) === 1,
    'the blocked job links the job it waited for',
  );

  check(
    pageErrors.length === 0,
    'no uncaught errors in the page' + (pageErrors.length ? ': ' + pageErrors.join(' | ') : ''),
  );
}

const watchdog = setTimeout(async () => {
  console.error('FAIL: the test ran past ' + TOTAL_TIMEOUT_MS / 1000 + ' s');
  try {
    if (daemon) daemon.kill('SIGKILL');
  } catch (e) {
    /* gone */
  }
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

let code = 0;
try {
  await main();
} catch (e) {
  failures.push(String((e && e.stack) || e));
  console.error('FAIL: ' + ((e && e.stack) || e));
} finally {
  try {
    if (browser) await browser.close();
  } catch (e) {
    /* already closed */
  }
  await stopDaemon();
  clearTimeout(watchdog);
}
if (failures.length) {
  console.error(`${failures.length} of ${checks} checks failed`);
  if (daemonLog.length)
    console.error('--- brewslmd output (tail) ---\n' + daemonLog.join('').slice(-4000));
  console.error('kept for inspection: ' + tmp);
  code = 1;
} else {
  console.log(`dashboard: all ${checks} checks passed`);
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(code);
