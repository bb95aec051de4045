// An operator mutes a participant through the admin API, and the bundled page shows it:
//  - the publisher's own microphone button turns to "Mic off (operator)" and is disabled, a
//    notice says so, and the page stops sending the track;
//  - the others see the microphone off on the publisher's tile;
//  - when the operator unmutes, the button and the track come back and audio reaches the others
//    again;
//  - a microphone the user muted stays off when an operator mutes and unmutes it.
//
// Run: node tests/browser/operator.mjs

import { startRelay, launchBrowser, openParticipant, until, inbound, log } from './lib.mjs';
import { mintToken } from './netns.mjs';

const secret = 'operator-test-secret-0123456789abcdef';
const kid = 'ops';
const roomName = 'townhall';

let relay;
let browser;
let failed = false;
try {
  relay = await startRelay(['--api-key', kid, '--api-secret', secret]);
  browser = await launchBrowser();
  const page = {};
  for (const name of ['alice', 'bob']) {
    const token = mintToken({ kid, secret, room: roomName, identity: name });
    page[name] = await openParticipant(browser, `${relay.base}/?room=${roomName}&name=${name}&token=${token}`, name);
  }
  const adminToken = mintToken({ kid, secret, room: roomName, identity: 'operator', admin: true });
  const aliceId = await page.alice.evaluate(() => window.tern.participant.id);
  const micTrack = await until('alice has published her microphone', () => page.alice.evaluate(() => {
    for (const [id, local] of window.tern.localTracks) if (local.source === 'microphone') return id;
    return null;
  }));
  await until('bob receives alice\'s audio', async () => (await inbound(page.bob)).audioPackets > 0);

  async function operatorMute(muted) {
    const response = await fetch(`${relay.base}/api/rooms/${roomName}/participants/alice/mute`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ track_id: micTrack, muted }),
    });
    if (response.status !== 204) throw new Error(`mute API: ${response.status} ${await response.text()}`);
  }
  const ownControls = () => page.alice.evaluate((id) => ({
    text: document.getElementById('mic').textContent,
    disabled: document.getElementById('mic').disabled,
    banner: document.getElementById('banner').textContent,
    enabled: window.tern.localTracks.get(id).track.enabled,
  }), micTrack);
  const bobsBadge = () => page.bob.evaluate((id) => {
    const tile = document.querySelector(`.tile.media[data-participant="${id}"]`);
    return tile && tile.querySelector('.mic-badge').textContent;
  }, aliceId);

  await operatorMute(true);
  const muted = await until('alice\'s page shows the operator\'s mute', async () => {
    const c = await ownControls();
    return c.text === 'Mic off (operator)' && c.disabled && !c.enabled && c.banner.includes('An operator muted your microphone') && c;
  }, 10000);
  log(`alice while muted by the operator: ${JSON.stringify(muted)}`);
  await until('bob sees alice\'s microphone off', async () => (await bobsBadge()) === 'mic off', 10000);
  log('PASS an operator\'s mute shows on the publisher\'s own controls and on the others\' tiles');

  const before = (await inbound(page.bob)).audioPackets;
  await operatorMute(false);
  const unmuted = await until('alice\'s page shows the operator\'s unmute', async () => {
    const c = await ownControls();
    return c.text === 'Mic on' && !c.disabled && c.enabled && c.banner.includes('An operator unmuted your microphone') && c;
  }, 10000);
  log(`alice after the operator's unmute: ${JSON.stringify(unmuted)}`);
  await until('bob sees alice\'s microphone on', async () => (await bobsBadge()) === '', 10000);
  await until('alice\'s audio reaches bob again', async () => (await inbound(page.bob)).audioPackets >= before + 50, 20000);
  log('PASS an operator\'s unmute gives the publisher its microphone back');

  await page.alice.click('#mic');
  await until('bob sees alice mute herself', async () => (await bobsBadge()) === 'mic off', 10000);
  await operatorMute(true);
  await until('alice\'s page shows the operator\'s mute again', async () => (await ownControls()).text === 'Mic off (operator)', 10000);
  await operatorMute(false);
  const stillOff = await until('alice\'s page shows the operator\'s second unmute', async () => {
    const c = await ownControls();
    return c.banner.includes('An operator unmuted your microphone') && !c.disabled && c;
  }, 10000);
  log(`alice, muted by herself, after the operator's mute and unmute: ${JSON.stringify(stillOff)}`);
  if (stillOff.text !== 'Mic off' || stillOff.enabled) throw new Error('the operator\'s unmute turned on a microphone alice had muted');
  if ((await bobsBadge()) !== 'mic off') throw new Error('bob sees alice\'s microphone on although she muted it');
  log('PASS an operator\'s unmute leaves a microphone the user muted off');
} catch (err) {
  failed = true;
  log('FAIL operator mute:', err && err.stack ? err.stack : err);
  if (relay) log('relay output:\n' + relay.output().slice(-4000));
} finally {
  if (browser) await browser.close();
  if (relay) await relay.stop();
}
process.exit(failed ? 1 : 0);
