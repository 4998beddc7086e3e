import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Sandbox } from '../test/helpers/sandbox.ts';
import { addGuests, networks, vms, writeStormFiles, VMS_PER_NETWORK } from './lib/topology.ts';
import { buildStorm, storm, rssKb, wrk, softnetDrops, cpuTimes, cpuBusy, processCpuMs } from './lib/measure.ts';
import { startLighttpd, writePeer } from './lib/peer.ts';

const sb = new Sandbox('imdsbench-');
const line = (name: string, r: any) =>
  console.log(
    name.padEnd(22),
    r.wall_ms !== undefined
      ? `wall ${r.wall_ms} p50 ${r.p50_ms} p99 ${r.p99_ms} fail ${r.failures}`
      : `rps ${r.rps} p50 ${r.p50_us} p99 ${r.p99_us}`,
  );
try {
  await sb.setup();
  await buildStorm();
  const K = 4;
  const nets = networks(K);
  const all = vms(K);
  const path = sb.writeConfig(sb.config({ log_level: 'info', networks: nets, vms: all }));
  const nodeArgs = [
    ...(process.env['PROF'] ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] : []),
    ...(process.env['NODEARGS'] ?? '').split(' ').filter(Boolean),
  ];
  const d = await sb.startDaemon(path, nodeArgs.length === 0 ? {} : { nodeArgs });
  const guests = await addGuests(sb, all);
  const f1000 = writeStormFiles(join(sb.dir, 's1000'), guests);
  const wrkGuest = guests[125]!.netns;
  let pids: number[] = [];
  const runAll = async (name: string) => {
    if (process.argv.includes('wrkonly')) {
      for (const p of [
        '/openstack/latest/meta_data.json',
        '/openstack/latest/user_data',
        '/latest/meta-data/instance-id',
        '/openstack/latest/meta_data.json',
        '/openstack/latest/user_data',
      ])
        line(`${name} wrk16 ${p}`, await wrk(wrkGuest, 16, 5, p));
      return;
    }
    if (process.argv.includes('stormonly')) {
      for (let r = 0; r < 3; r++) line(`${name} storm1000`, await storm(f1000.guestsFile, f1000.pathsFile));
      return;
    }
    await storm(f1000.guestsFile, f1000.pathsFile); // warm-up
    for (let r = 0; r < 2; r++) {
      const c0 = cpuTimes();
      const p0 = processCpuMs(pids);
      const res = await storm(f1000.guestsFile, f1000.pathsFile);
      line(`${name} storm1000`, res);
      console.log(
        '   cpu busy %',
        cpuBusy(c0, cpuTimes()),
        'server cpu ms',
        processCpuMs(pids) - p0,
        'µs/req',
        Math.round(((processCpuMs(pids) - p0) * 1000) / res.requests),
      );
    }
    line(`${name} wrk16`, await wrk(wrkGuest, 16, 5, '/openstack/latest/meta_data.json'));
  };
  pids = [d.pid];
  if (process.argv.includes('imds')) await runAll('imds');
  await d.stop();
  const nsList = nets.map((n) => `${sb.nsPrefix}${n.id}`).join(',');
  for (const [mode, w] of [
    ['raw', 1],
    ['raw', 2],
    ['http', 1],
    ['http', 2],
  ] as const) {
    if (!process.argv.includes(`${mode}${w}`)) continue;
    const p = spawn('nsenter', [`--net=/run/netns/${sb.hv}`, '--', process.execPath, '/tmp/exp/raw.mjs', mode, nsList, String(w)], {
      stdio: 'inherit',
    });
    await new Promise((r) => setTimeout(r, 1000));
    pids = [p.pid as number];
    await runAll(`${mode}x${w}`);
    p.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
  }
  if (process.argv.includes('peer')) {
    const procs = nets.map((n, k) =>
      startLighttpd(
        `${sb.nsPrefix}${n.id}`,
        writePeer(join(sb.dir, 'peer', n.id), n, all.slice(k * VMS_PER_NETWORK, (k + 1) * VMS_PER_NETWORK), 8775),
      ),
    );
    await new Promise((r) => setTimeout(r, 1500));
    pids = procs.map((p) => p.pid as number);
    await runAll('peer');
    for (const p of procs) p.kill('SIGKILL');
  }
} finally {
  await sb.cleanup();
}
