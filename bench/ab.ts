// A/B of the request path between this tree and another checkout (built, with `npm ci`): the
// 1,000-guest boot storm (3 runs after a warm-up, server CPU per request) and steady c=16 (wrk,
// 5 s), for one side per invocation; alternate the sides to see past the machine's drift.
//   sudo node --import tsx bench/ab.ts this            # this tree
//   sudo node --import tsx bench/ab.ts /path/to/other  # e.g. a `git worktree` of an older commit
//   IMDS_AB_DATA_PLANE=node sudo node --import tsx bench/ab.ts this   # one data plane on both sides
import { networks, vms, addGuests, writeStormFiles, VMS_PER_NETWORK, type GuestRef } from './lib/topology.ts';
import { wrk, storm, buildStorm, processCpuMs, median } from './lib/measure.ts';
import type { Sandbox } from '../test/helpers/sandbox.ts';

const side = process.argv[2] ?? 'this';
const helper = side === 'this' ? '../test/helpers/sandbox.ts' : `${side.replace(/\/$/, '')}/test/helpers/sandbox.ts`;
const { Sandbox: SandboxOf } = (await import(helper)) as { Sandbox: new (prefix?: string) => Sandbox };
const sb = new SandboxOf('imdsbench-');
await sb.setup();
try {
  await buildStorm();
  // No per-guest rate limit (the steady load comes from one guest); a tree older than the key
  // (issue 7) is told with IMDS_AB_NO_RATE_KEY=1.
  const cfg: Record<string, unknown> = {
    log_level: 'info',
    networks: networks(4),
    vms: vms(4),
    ...(process.env['IMDS_AB_NO_RATE_KEY'] === '1' && side !== 'this' ? {} : { rate_limit_per_second: 0 }),
    // IMDS_AB_DATA_PLANE=node|native: the data plane of both sides (the daemon's default otherwise).
    ...(process.env['IMDS_AB_DATA_PLANE'] === undefined ? {} : { data_plane: process.env['IMDS_AB_DATA_PLANE'] }),
  };
  const d = await sb.startDaemon(sb.writeConfig(sb.config(cfg)), { readyTimeoutMs: 120_000 });
  const guests = await addGuests(sb, vms(4));
  const files = writeStormFiles(`${sb.dir}/s1000`, guests);
  const load = guests[Math.floor(VMS_PER_NETWORK / 2)] as GuestRef;
  const rps: number[] = [];
  const walls: number[] = [];
  const cpu: number[] = [];
  await storm(files.guestsFile, files.pathsFile); // warm-up
  for (let r = 0; r < 3; r++) {
    const c0 = processCpuMs([d.pid]);
    const s = await storm(files.guestsFile, files.pathsFile);
    cpu.push(((processCpuMs([d.pid]) - c0) * 1000) / (guests.length * 27));
    walls.push(s.wall_ms);
    rps.push((await wrk(load.netns, 16, 5, '/openstack/latest/meta_data.json')).rps);
  }
  const summary = {
    side,
    storm_wall_ms: walls.map(Math.round),
    server_cpu_us_per_req: cpu.map(Math.round),
    c16_rps: rps.map(Math.round),
    median_storm_ms: Math.round(median(walls)),
    median_c16_rps: Math.round(median(rps)),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  await d.stop();
} finally {
  await sb.cleanup();
}
