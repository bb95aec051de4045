// Test hosts in network namespaces: a bridge in the current namespace (the relay's side) and one
// namespace per browser, joined by veth pairs, with optional random loss from nftables (this
// kernel has no netem). Needs root (CI runs as root inside `unshare -n`).

import { execFileSync, spawn } from 'node:child_process';
import readline from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';

const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const ip = (...args) => sh('ip', args);
const nft = (ns, ...args) => (ns ? sh('ip', ['netns', 'exec', ns, 'nft', ...args]) : sh('nft', args));

export const RELAY_IP = '10.77.0.1';

/** Creates the bridge and `count` client namespaces; returns { clients, cleanup }. */
export function createHosts(count) {
  const tag = `${process.pid % 10000}`;
  const bridge = `tbr${tag}`;
  const clients = [];
  const cleanup = () => {
    for (const c of clients) {
      try { ip('netns', 'del', c.ns); } catch {}
    }
    try { ip('link', 'del', bridge); } catch {}
    try { nft(null, 'delete', 'table', 'inet', `tern${tag}`); } catch {}
  };
  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    ip('addr', 'add', `${RELAY_IP}/24`, 'dev', bridge);
    ip('link', 'set', bridge, 'up');
    for (let i = 0; i < count; i++) {
      const ns = `tern${tag}c${i}`;
      const veth = `tv${tag}c${i}`;
      const address = `10.77.0.${11 + i}`;
      ip('netns', 'add', ns);
      clients.push({ ns, veth, address, wrapper: chromiumWrapper(ns) });
      ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      ip('link', 'set', veth, 'master', bridge);
      ip('link', 'set', veth, 'up');
      ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${address}/24`, 'dev', 'eth0');
      ip('netns', 'exec', ns, 'ip', 'link', 'set', 'eth0', 'up');
      ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    }
  } catch (err) {
    cleanup();
    throw err;
  }
  return { clients, cleanup, tag };
}

/**
 * One client namespace with several addresses, as a laptop with Wi-Fi, Ethernet and a VPN has:
 * IPv4 addresses in `v4Subnets` different /24s (each its own network for the browser) and one
 * IPv6 address, all reachable from the relay's side. The relay's side gets 10.77.0.1 and
 * fd00:77::1. Returns { client: { ns, wrapper, v4, v6 }, cleanup }.
 */
export function createMultihomedHost(v4Subnets = 3) {
  const tag = `${process.pid % 10000}`;
  const bridge = `tmb${tag}`;
  const ns = `tern${tag}m`;
  const veth = `tm${tag}`;
  const cleanup = () => {
    try { ip('netns', 'del', ns); } catch {}
    try { ip('link', 'del', bridge); } catch {}
  };
  const client = { ns, veth, v4: [], v6: 'fd00:77::11', wrapper: chromiumWrapper(ns) };
  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    ip('link', 'set', bridge, 'up');
    ip('-6', 'addr', 'add', 'fd00:77::1/64', 'dev', bridge, 'nodad');
    ip('netns', 'add', ns);
    ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('link', 'set', veth, 'master', bridge);
    ip('link', 'set', veth, 'up');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    for (let i = 0; i < v4Subnets; i++) {
      ip('addr', 'add', `10.${77 + i}.0.1/24`, 'dev', bridge);
      const address = `10.${77 + i}.0.11`;
      ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${address}/24`, 'dev', 'eth0');
      client.v4.push(address);
    }
    ip('netns', 'exec', ns, 'ip', '-6', 'addr', 'add', `${client.v6}/64`, 'dev', 'eth0', 'nodad');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'eth0', 'up');
  } catch (err) {
    cleanup();
    throw err;
  }
  return { client, cleanup };
}

/** Drops all UDP to and from `address` inside a client's namespace (that path went away). */
export function blockAddress(client, address) {
  const family = address.includes(':') ? 'ip6' : 'ip';
  nft(client.ns, 'add', 'table', 'inet', 'gone');
  nft(client.ns, 'add', 'chain', 'inet', 'gone', 'inp', '{ type filter hook input priority 0; }');
  nft(client.ns, 'add', 'chain', 'inet', 'gone', 'out', '{ type filter hook output priority 0; }');
  nft(client.ns, 'add', 'rule', 'inet', 'gone', 'inp', family, 'daddr', address, 'meta', 'l4proto', 'udp', 'drop');
  nft(client.ns, 'add', 'rule', 'inet', 'gone', 'out', family, 'saddr', address, 'meta', 'l4proto', 'udp', 'drop');
}

/** Drops `percent` % of the UDP each client receives, and of the UDP the relay receives from it. */
export function addLoss(hosts, percent) {
  const table = `tern${hosts.tag}`;
  nft(null, 'add', 'table', 'inet', table);
  nft(null, 'add', 'chain', 'inet', table, 'inp', '{ type filter hook input priority 0; }');
  for (const c of hosts.clients) {
    nft(c.ns, 'add', 'table', 'inet', 'loss');
    nft(c.ns, 'add', 'chain', 'inet', 'loss', 'inp', '{ type filter hook input priority 0; }');
    nft(c.ns, 'add', 'rule', 'inet', 'loss', 'inp', 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '100', '<', String(percent), 'drop');
    nft(null, 'add', 'rule', 'inet', table, 'inp', 'ip', 'saddr', c.address, 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '100', '<', String(percent), 'drop');
  }
}

/** Drops every UDP packet into and out of a client's namespace (TCP still works). */
export function blockUdp(client) {
  nft(client.ns, 'add', 'table', 'inet', 'noudp');
  nft(client.ns, 'add', 'chain', 'inet', 'noudp', 'inp', '{ type filter hook input priority 0; }');
  nft(client.ns, 'add', 'chain', 'inet', 'noudp', 'out', '{ type filter hook output priority 0; }');
  nft(client.ns, 'add', 'rule', 'inet', 'noudp', 'inp', 'meta', 'l4proto', 'udp', 'drop');
  nft(client.ns, 'add', 'rule', 'inet', 'noudp', 'out', 'meta', 'l4proto', 'udp', 'drop');
}

/** A script that starts chromium inside `ns`, for playwright's executablePath. */
function chromiumWrapper(ns) {
  const file = path.join(os.tmpdir(), `chromium-${ns}.sh`);
  fs.writeFileSync(file, `#!/bin/sh\nexec ip netns exec ${ns} ${process.env.CHROMIUM || '/usr/bin/chromium'} "$@"\n`, { mode: 0o755 });
  return file;
}

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 join token, as `tern token` would mint it. */
export function mintToken({ kid, secret, room, identity, ttlSeconds = 3600, admin = false }) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid }));
  const claims = b64url(JSON.stringify({
    sub: identity, name: identity, room, exp: now + ttlSeconds, nbf: now,
    grants: { publish: true, subscribe: true, publish_data: true, admin },
  }));
  const signature = crypto.createHmac('sha256', secret).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

/**
 * A child process in network namespace `ns` whose output lines are kept (`lines`, and the last
 * 200 of `stderr`); `dump()` logs the tail of both. The caller kills it when done (`proc`).
 */
export function spawnInNetns(name, ns, command, args) {
  const proc = spawn('ip', ['netns', 'exec', ns, command, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const c = { proc, lines: [], stderr: [] };
  readline.createInterface({ input: proc.stdout }).on('line', (l) => { c.lines.push(l); });
  readline.createInterface({ input: proc.stderr }).on('line', (l) => { c.stderr.push(l); if (c.stderr.length > 200) c.stderr.shift(); });
  c.dump = (lines = 30) => console.log(`[${name}] stdout:\n${c.lines.slice(-lines).join('\n')}\n[${name}] stderr:\n${c.stderr.slice(-40).join('\n')}`);
  c.kill = () => { if (proc.exitCode === null) proc.kill('SIGKILL'); };
  return c;
}
