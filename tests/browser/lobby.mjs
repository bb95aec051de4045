// The lobby of the bundled page, and devices during the call (Chromium with two fake cameras):
//  - opening `/?room=R` (no name) shows the lobby: the camera's preview plays, the microphone's
//    meter moves, the pickers list the fake devices;
//  - joining from the lobby with the camera off: the others see the camera-off badge and still
//    hear the microphone;
//  - switching the camera mid-call (Devices): the same track goes on from the other camera, and
//    the others keep decoding it;
//  - choosing a speaker mid-call plays the remote tiles on it (setSinkId);
//  - a page whose camera and microphone are blocked, or that has none, says so in the lobby, and
//    joins as a listener that receives.
// With --screenshot, saves docs/screenshot-lobby.png.
//
// Run: node tests/browser/lobby.mjs [--screenshot]

import path from 'node:path';
import { startRelay, launchBrowser, until, inbound, log, repo } from './lib.mjs';

const screenshot = process.argv.includes('--screenshot');
let failed = false;

async function step(name, body) {
  try {
    await body();
    log(`PASS ${name}`);
  } catch (err) {
    failed = true;
    log(`FAIL ${name}:`, err && err.stack ? err.stack : err);
  }
}

async function newPage(browser, name, { blocked = false, noDevices = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  if (blocked) {
    await page.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    });
  }
  if (noDevices) {
    await page.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));
    });
  }
  page.on('console', (m) => { if (m.type() === 'error') log(`[${name} console]`, m.text()); });
  page.on('pageerror', (e) => log(`[${name} pageerror]`, e.message));
  return page;
}

/** Joins from the lobby: the name typed, the boxes ticked, the Join button clicked. */
async function joinFromLobby(page, name, { cameraOff = false } = {}) {
  await page.fill('#name', name);
  if (cameraOff) await page.check('#join-camera-off');
  await page.click('#join-form button');
  await until(`${name} joined`, () => page.evaluate(() => window.ternJoined && window.ternJoined.then(() => true)), 30000);
}

let relay;
let browser;
try {
  relay = await startRelay();
  // Three fake cameras, so that there is another one to switch to. (Chromium's second fake
  // camera is a 16-bit depth camera, whose frames its encoder does not take: the test switches
  // to the third.)
  browser = await launchBrowser(undefined, ['--use-fake-device-for-media-stream=fps=30,device-count=3']);
  const room = `${relay.base}/?room=lobby`;
  const alice = await newPage(browser, 'alice');
  await alice.goto(`${room}&name=alice`);
  await until('alice joined', () => alice.evaluate(() => window.ternJoined.then(() => true)), 30000);
  const aliceId = await alice.evaluate(() => window.tern.participant.id);

  const dave = await newPage(browser, 'dave');
  await dave.goto(room);
  await step('the lobby: the preview plays, the meter moves, the pickers list the fake devices', async () => {
    if (await dave.evaluate(() => document.getElementById('lobby').classList.contains('hidden'))) throw new Error('no lobby');
    await until('the preview plays', () => dave.evaluate(() => document.getElementById('preview').videoWidth > 0), 15000);
    const level = await until('the meter moves', () => dave.evaluate(() => {
      const v = document.getElementById('mic-level').value;
      return v > 0.005 && v;
    }), 15000, 50);
    const pickers = await dave.evaluate(() => Object.fromEntries(['camera-select', 'mic-select', 'speaker-select']
      .map((id) => [id, [...document.getElementById(id).options].map((o) => o.textContent)])));
    log(`dave's lobby: meter ${level.toFixed(3)}; ${JSON.stringify(pickers)}`);
    if (pickers['camera-select'].length < 2) throw new Error(`cameras: ${pickers['camera-select']}`);
    if (!pickers['camera-select'].every((label) => /fake/i.test(label))) throw new Error(`camera labels: ${pickers['camera-select']}`);
    if (pickers['mic-select'].length < 1 || !pickers['mic-select'][0]) throw new Error(`microphones: ${pickers['mic-select']}`);
    if (screenshot) {
      const file = path.join(repo, 'docs', 'screenshot-lobby.png');
      await dave.screenshot({ path: file });
      log(`screenshot saved to ${file}`);
    }
  });

  let daveId;
  await step('joining with the camera off: the others see it off and hear the microphone', async () => {
    await joinFromLobby(dave, 'dave', { cameraOff: true });
    daveId = await dave.evaluate(() => window.tern.participant.id);
    await until('alice sees dave\'s camera off', () => alice.evaluate((id) => {
      const tile = document.querySelector(`.tile.media[data-participant="${id}"]`);
      return tile && tile.querySelector('.cam-badge').textContent === 'camera off' && tile.querySelector('.mic-badge').textContent === '';
    }, daveId), 15000);
    const before = (await inbound(alice)).audioPackets;
    await until('alice receives dave\'s audio', async () => (await inbound(alice)).audioPackets > before + 50, 15000);
    const button = await dave.evaluate(() => document.getElementById('camera').textContent);
    if (button !== 'Camera off') throw new Error(`dave's camera button says ${button}`);
  });

  await step('switching the camera mid-call: the same track goes on from the other camera', async () => {
    const before = await alice.evaluate(() => {
      const id = [...window.tern.localTracks].find(([, t]) => t.source === 'camera')[0];
      return { id, device: window.tern.localTracks.get(id).track.getSettings().deviceId };
    });
    await alice.click('#devices-button');
    const other = await until('another camera in the picker', () => alice.evaluate((current) =>
      [...document.getElementById('camera-select').options].filter((o) => o.textContent === 'fake_device_2').map((o) => o.value).find((v) => v !== current), before.device), 10000);
    const decoded = (await inbound(dave)).framesDecoded;
    await alice.selectOption('#camera-select', other);
    await until('alice sends from the other camera', () => alice.evaluate(({ id, other }) => {
      const local = window.tern.localTracks.get(id);
      return local && local.track.getSettings().deviceId === other && local.track.readyState === 'live';
    }, { id: before.id, other }), 15000);
    await until('dave keeps decoding alice', async () => (await inbound(dave)).framesDecoded > decoded + 60, 20000);
    const tracks = await alice.evaluate(() => window.tern.localTracks.size);
    if (tracks !== 2) throw new Error(`alice publishes ${tracks} tracks after the switch`);
    log(`alice switched camera; dave decoded +${(await inbound(dave)).framesDecoded - decoded} frames`);
  });

  await step('choosing a speaker mid-call plays every remote tile on it', async () => {
    const chosen = await until('a second speaker in the picker', () => alice.evaluate(() => {
      const options = [...document.getElementById('speaker-select').options];
      return options.length >= 2 && options[1].value;
    }), 10000);
    await alice.selectOption('#speaker-select', chosen);
    await until('the remote tiles play on it', () => alice.evaluate((sink) => {
      const videos = [...document.querySelectorAll('.tile:not(#self) video')];
      return videos.length > 0 && videos.every((v) => v.sinkId === sink);
    }, chosen), 10000);
  });

  await step('a blocked camera and microphone: the lobby says so, and the page joins as a listener', async () => {
    const eve = await newPage(browser, 'eve', { blocked: true });
    await eve.goto(room);
    const note = await until('the lobby explains', () => eve.evaluate(() => document.getElementById('preview-note').textContent), 10000);
    if (!/blocked/i.test(note)) throw new Error(`eve's lobby says: ${note}`);
    await joinFromLobby(eve, 'eve');
    const banner = await eve.evaluate(() => document.getElementById('banner').textContent);
    if (!/listener/.test(banner)) throw new Error(`eve's banner: ${banner}`);
    await until('eve decodes alice', async () => (await inbound(eve)).framesDecoded > 20, 20000);
    if (!(await eve.evaluate(() => window.tern.localTracks.size === 0))) throw new Error('eve publishes');
  });
  await step('no camera or microphone at all: the lobby says so, and the page joins as a listener', async () => {
    const fay = await newPage(browser, 'fay', { noDevices: true });
    await fay.goto(room);
    const note = await until('the lobby explains', () => fay.evaluate(() => document.getElementById('preview-note').textContent), 10000);
    if (!/no camera or microphone was found/i.test(note)) throw new Error(`fay's lobby says: ${note}`);
    await joinFromLobby(fay, 'fay');
    await until('fay decodes alice', async () => (await inbound(fay)).framesDecoded > 20, 20000);
  });
  log(`alice ${aliceId}, dave ${daveId}`);
} catch (err) {
  failed = true;
  log('FAIL', err && err.stack ? err.stack : err);
  if (relay) log(relay.output().slice(-3000));
} finally {
  if (browser) await browser.close();
  if (relay) await relay.stop();
}
process.exit(failed ? 1 : 0);
