import { join } from 'node:path';
import { Sandbox } from '../test/helpers/sandbox.ts';
import { addGuests, networks, vms, writeStormFiles, VMS_PER_NETWORK } from './lib/topology.ts';
import { buildStorm, storm, rssKb, wrk, softnetDrops } from './lib/measure.ts';
import { startLighttpd, writePeer } from './lib/peer.ts';

const sb = new Sandbox('imdsbench-');
try {
  await sb.setup();
  await buildStorm();
  const K = 4;
  const nets = networks(K);
  const all = vms(K);
  const path = sb.writeConfig(sb.config({ log_level: 'info', networks: nets, vms: all }));
  let t = performance.now();
  const d = await sb.startDaemon(path);
  console.log('imds up', Math.round(performance.now() - t), 'ms, rss', rssKb([d.pid]));
  t = performance.now();
  const guests = await addGuests(sb, all);
  console.log('guests', guests.length, Math.round(performance.now() - t), 'ms');
  const f100 = writeStormFiles(join(sb.dir, 's100'), guests.slice(0, 100));
  const f1000 = writeStormFiles(join(sb.dir, 's1000'), guests);
  const mode = process.argv[2] ?? 'both';
  if (mode !== 'peer') {
    for (let r = 0; r < 2; r++) console.log('imds storm100', JSON.stringify(await storm(f100.guestsFile, f100.pathsFile)));
    for (let r = 0; r < 2; r++) { const d0 = softnetDrops(); console.log('imds storm1000', JSON.stringify(await storm(f1000.guestsFile, f1000.pathsFile)), 'drops', softnetDrops() - d0); }
    console.log('imds wrk16', JSON.stringify(await wrk(guests[0]!.netns, 16, 5, '/openstack/latest/meta_data.json')));
    console.log('imds rss', rssKb([d.pid]));
  }
  await d.stop();
  if (mode !== 'imds') {
    const procs = nets.map((n, k) => {
      const conf = writePeer(join(sb.dir, 'peer', n.id), n, all.slice(k * VMS_PER_NETWORK, (k + 1) * VMS_PER_NETWORK), 8775);
      return startLighttpd(`${sb.nsPrefix}${n.id}`, conf);
    });
    await new Promise((r) => setTimeout(r, 1500));
    for (let r = 0; r < 2; r++) console.log('peer storm100', JSON.stringify(await storm(f100.guestsFile, f100.pathsFile)));
    for (let r = 0; r < 2; r++) { const d0 = softnetDrops(); console.log('peer storm1000', JSON.stringify(await storm(f1000.guestsFile, f1000.pathsFile)), 'drops', softnetDrops() - d0); }
    console.log('peer wrk16', JSON.stringify(await wrk(guests[0]!.netns, 16, 5, '/openstack/latest/meta_data.json')));
    console.log('peer rss', rssKb(procs.map((p) => p.pid!)));
    for (const p of procs) p.kill('SIGKILL');
  }
} finally {
  await sb.cleanup();
}
