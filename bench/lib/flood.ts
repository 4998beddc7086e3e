// A neighbour's latency while another guest floods (`--only flood`): one network under the default
// rate limit (burst 300, 20/s), a flooder and a neighbour on it. The neighbour probes on a new
// connection per request, as cloud-init does, first with the network quiet, then while the flooder
// asks for 2,000 requests a second on 8 keep-alive connections (100x its budget; almost all 429).
// The figures and their ratio live here, not in the tests: on a shared 2-core machine the p99 of a
// few hundred samples moves by 2x from run to run (security.test.ts asserts only what holds
// whatever the timing: the flood is limited, the neighbour is never refused).
import { join } from 'node:path';
import { Streamed } from '../../test/helpers/streamed-process.ts';
import { ROOT, sh, type Sandbox } from '../../test/helpers/sandbox.ts';
import { median } from './measure.ts';

const LOAD = join(ROOT, 'test', 'helpers', 'guest', 'load.mjs');

export interface Probe {
  n: number;
  p50: number;
  p99: number;
  max: number;
  statuses: Record<string, number>;
}

export interface FloodRun {
  unloaded: Probe;
  loaded: Probe;
  flood: { sent: number; statuses: Record<string, number> };
}

export interface FloodResult {
  runs: FloodRun[];
  table: string;
}

async function probe(netns: string, seconds: number): Promise<Probe> {
  const out = await sh(['ip', 'netns', 'exec', netns, process.execPath, LOAD, 'probe', String(seconds), '60'], {
    timeoutMs: (seconds + 60) * 1000,
  });
  return JSON.parse(out.stdout.trim().split('\n').pop() as string) as Probe;
}

/** `runs` pairs of probes (quiet, then during a flood), `seconds` each. */
export async function floodBench(sb: Sandbox, runs: number, seconds: number, log: (s: string) => void): Promise<FloodResult> {
  const net = { id: 'fl', cidr: '203.0.113.0/24', service_ip: '203.0.113.2', gateway: '203.0.113.1' };
  const vms = [
    { id: 'f0000000-0000-4000-8000-000000000010', network: 'fl', ip: '203.0.113.10', mac: '52:54:00:f1:00:10', hostname: 'flooder' },
    { id: 'f0000000-0000-4000-8000-000000000011', network: 'fl', ip: '203.0.113.11', mac: '52:54:00:f1:00:11', hostname: 'neighbour' },
  ];
  // The default rate limit (rate_limit_per_second and rate_limit_burst unset). In a full run this
  // daemon first removes what the earlier sections left under the same prefix: time for that.
  const d = await sb.startDaemon(sb.writeConfig(sb.config({ log_level: 'info', networks: [net], vms }, 'flood'), 'flood.yaml'), {
    readyTimeoutMs: 180_000,
  });
  const on = { bridge: 'imdsb-fl', prefix: 24, metadataVia: '203.0.113.2' };
  const flooder = await sb.addGuest('fl-a', { ...on, ip: '203.0.113.10', mac: '52:54:00:f1:00:10' });
  const neighbour = await sb.addGuest('fl-b', { ...on, ip: '203.0.113.11', mac: '52:54:00:f1:00:11' });
  const out: FloodRun[] = [];
  try {
    for (let r = 0; r < runs; r++) {
      log(`[flood] run ${r + 1}/${runs}: neighbour quiet, ${seconds} s`);
      const unloaded = await probe(neighbour.netns, seconds);
      log(`[flood] run ${r + 1}/${runs}: neighbour during a 2,000 req/s flood, ${seconds} s`);
      // Until told to stop: the flood is running before the probe starts and after it ends.
      const flood = new Streamed(['nsenter', `--net=/run/netns/${flooder.netns}`, '--', process.execPath, LOAD, 'flood', '2000', '0', '8']);
      let loaded: Probe;
      try {
        await flood.waitForStderr('flooding', 30_000);
        loaded = await probe(neighbour.netns, seconds);
      } finally {
        await flood.stop();
      }
      const floodOut = JSON.parse(flood.stdout.trim().split('\n').pop() as string) as FloodRun['flood'];
      out.push({ unloaded, loaded, flood: floodOut });
    }
  } finally {
    await d.stop();
  }
  const m = (k: 'unloaded' | 'loaded', f: 'p50' | 'p99' | 'max') => median(out.map((x) => x[k][f]));
  const fmt = (v: number) => v.toFixed(2);
  const refused = (k: 'unloaded' | 'loaded') =>
    out.reduce(
      (s, x) =>
        s +
        Object.entries(x[k].statuses)
          .filter(([c]) => c !== '200')
          .reduce((a, [, n]) => a + n, 0),
      0,
    );
  const rows = [
    '| neighbour, new connection per request (medians of runs) | p50 ms | p99 ms | max ms | samples | not 200 |',
    '|---|---|---|---|---|---|',
    `| network quiet | ${fmt(m('unloaded', 'p50'))} | ${fmt(m('unloaded', 'p99'))} | ${fmt(m('unloaded', 'max'))} | ` +
      `${out.map((x) => x.unloaded.n).join(', ')} | ${refused('unloaded')} |`,
    `| another guest flooding at 2,000 req/s | ${fmt(m('loaded', 'p50'))} | ${fmt(m('loaded', 'p99'))} | ` +
      `${fmt(m('loaded', 'max'))} | ${out.map((x) => x.loaded.n).join(', ')} | ${refused('loaded')} |`,
    `| ratio (flood / quiet) | ${fmt(m('loaded', 'p50') / m('unloaded', 'p50'))}x | ${fmt(m('loaded', 'p99') / m('unloaded', 'p99'))}x | | | |`,
    '',
    `flood answers per run: ${out.map((x) => JSON.stringify(x.flood.statuses)).join('; ')}`,
  ];
  return { runs: out, table: rows.join('\n') };
}
