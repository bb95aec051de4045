// A media worker over its load limit (media.max_worker_load_percent) refuses a new participant
// with `unavailable`; the bundled page says the relay is busy and tries again (tern.js: after
// 1, 2, 4 and 8 s), and once the load is gone the same join goes through, without the user
// doing anything.
//
// The load is `tern loadtest` (one publisher at 4 Mbit/s, six counting subscribers) against the
// relay's only worker, whose limit is set to 5 % of its time: the debug relay forwarding that
// is busy well over it, and idle well under.
//
// Run: node tests/browser/busy.mjs

import { spawn } from 'node:child_process';
import path from 'node:path';
import { startRelay, launchBrowser, until, metric, log, repo } from './lib.mjs';

const LIMIT_PERCENT = 5;
const load = (relay) => metric(relay.base, 'tern_media_worker_load{worker="0"}');

let failed = false;
let relay;
let browser;
let loadtest;
try {
  relay = await startRelay(['--media-workers', '1', '--media-max-worker-load-percent', String(LIMIT_PERCENT)]);
  const bin = process.env.TERN_TEST_BIN || path.join(repo, 'target', 'debug', 'tern');
  loadtest = spawn(bin, ['loadtest', '--url', relay.base, '--rooms', '1', '--publishers', '1', '--subscribers', '6',
    '--video-kbps', '4000', '--count-only', '--ramp-per-s', '50', '--duration', '300s'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const loadtestErr = [];
  loadtest.stderr.on('data', (d) => loadtestErr.push(d.toString()));
  const busy = await until(`the worker busy over ${LIMIT_PERCENT} % of the time`, async () => {
    if (loadtest.exitCode !== null) throw new Error(`the loadtest ended: ${loadtestErr.join('').slice(-2000)}`);
    const l = await load(relay);
    return l > LIMIT_PERCENT / 100 && l;
  }, 60000, 250);
  log(`loadtest running: worker load ${(busy * 100).toFixed(1)} %`);

  browser = await launchBrowser();
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 720 } })).newPage();
  page.on('pageerror', (e) => log('[carol pageerror]', e.message));
  const openedAt = Date.now();
  await page.goto(`${relay.base}/?room=busy&name=carol`);
  const first = await until('carol\'s page is refused and says it tries again', () => page.evaluate(() => {
    const retry = (window.ternLog || []).find((e) => e.type === 'retrying');
    return retry && { ...retry, banner: document.getElementById('banner').textContent };
  }), 20000);
  log(`carol refused after ${first.at - openedAt} ms: "${first.message}"; the page shows "${first.banner}"`);
  if (!/busy/.test(first.banner)) throw new Error(`the page does not say the relay is busy: "${first.banner}"`);
  if (!/load limit/.test(first.message)) throw new Error(`unexpected refusal: ${first.message}`);
  const breaches = await metric(relay.base, 'tern_limit_breaches_total{limit="worker_load"}');
  if (!(breaches >= 1)) throw new Error(`tern_limit_breaches_total{limit="worker_load"} is ${breaches}`);

  // The load goes away: the same join goes through on a later try.
  const stoppedAt = Date.now();
  loadtest.kill('SIGKILL');
  const joined = await until('carol joins on a later try', () => page.evaluate(async () => {
    if (!window.tern || window.tern.state !== 'connected') return false;
    const tries = window.ternLog.filter((e) => e.type === 'retrying').length;
    return { id: window.tern.participant.id, tries, banner: document.getElementById('banner').textContent };
  }), 30000);
  log(`carol joined as ${joined.id} ${Date.now() - stoppedAt} ms after the load stopped, after ${joined.tries} refusals (worker load now ${((await load(relay)) * 100).toFixed(1)} %; ${await metric(relay.base, 'tern_limit_breaches_total{limit="worker_load"}')} refused in all)`);
  if (joined.tries < 1) throw new Error('carol was never refused');
  const publishing = await until('carol publishes her camera', () => page.evaluate(() => window.tern.localTracks.size), 20000);
  log(`carol publishes ${publishing} tracks`);
  log('PASS a busy worker refuses a join, and the page tries again until it is taken');
} catch (err) {
  failed = true;
  log('FAIL busy:', err && err.stack ? err.stack : err);
  if (relay) log('relay output:\n' + relay.output().split('\n').filter((l) => !l.includes('Unsupported Extension')).join('\n').slice(-3000));
} finally {
  if (loadtest && loadtest.exitCode === null) loadtest.kill('SIGKILL');
  if (browser) await browser.close().catch(() => {});
  if (relay) await relay.stop();
}
process.exit(failed ? 1 : 0);
