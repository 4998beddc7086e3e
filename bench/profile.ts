// `npm run bench:profile` (root): where imds's CPU goes in a boot storm. The daemon runs with V8's
// sampling profiler (--cpu-prof) while 1,000 guests (4 networks × 250) run cloud-init's sequence
// eight times (the daemon's start and the guests' set-up are in the profile too, but the storms are
// over nine tenths of its busy time: the storms' CPU is printed beside it); the profile's self time is then summed by where the code lives (node:http, the fast
// path, the resolver, pino, V8's GC, the rest of Node's net and stream code, …) and the top
// functions are listed. Kernel time (the TCP stack, the DNAT) is not in it: the storm's wall time
// and `processCpuMs` say how much of the server's CPU it is.
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Sandbox } from '../test/helpers/sandbox.ts';
import { buildStorm, processCpuMs, storm } from './lib/measure.ts';
import { addGuests, networks, vms, writeStormFiles } from './lib/topology.ts';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Where a frame's code lives, for the summary. */
function areaOf(url: string, fn: string): string {
  // The daemon runs the build (dist/), laid out as src/.
  url = url.replace('/dist/', '/src/');
  if (url === '') return fn === '(garbage collector)' ? 'V8: garbage collection' : `native (system calls and their kernel work): ${fn}`;
  if (url.includes('/src/server/fast-path')) return 'imds: fast path (head parsing, answer)';
  if (url.includes('/src/server/guest-api') || url.includes('/src/store/') || url.includes('/src/documents/'))
    return 'imds: resolver and documents';
  if (url.includes('/src/server/guest-guard') || url.includes('/src/security/')) return 'imds: guards';
  if (url.includes('/src/stats') || url.includes('/src/metrics')) return 'imds: counters';
  if (url.includes('/src/')) return 'imds: other';
  if (url.includes('node_modules/pino') || url.includes('node_modules/sonic-boom')) return 'pino';
  if (url.includes('node_modules/')) return `module: ${url.split('node_modules/')[1]?.split('/')[0] ?? '?'}`;
  if (url.startsWith('node:internal/http') || url.startsWith('node:_http') || url.startsWith('node:http')) return 'node: http';
  if (url.startsWith('node:net') || url.startsWith('node:internal/stream_base') || url.startsWith('node:internal/net'))
    return 'node: net (sockets)';
  if (url.startsWith('node:internal/streams') || url.startsWith('node:stream')) return 'node: streams';
  if (url.startsWith('node:internal/timers') || url.startsWith('node:timers')) return 'node: timers';
  if (url.startsWith('node:')) return `node: ${url.slice(5).split('/').slice(0, 2).join('/')}`;
  return 'other';
}

function summarise(profile: Profile): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const areas = new Map<string, number>();
  const fns = new Map<string, number>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined || frame.functionName === '(idle)' || frame.functionName === '(program)') continue;
    total += us;
    const area = areaOf(frame.url, frame.functionName);
    areas.set(area, (areas.get(area) ?? 0) + us);
    const fn = `${frame.functionName || '(anonymous)'} ${frame.url.replace(/^.*\/(src|dist|node_modules)\//, '$1/')}:${frame.lineNumber + 1}`;
    fns.set(fn, (fns.get(fn) ?? 0) + us);
  }
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1)} %`;
  const top = (m: Map<string, number>, n: number): string[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, us]) => `| ${k} | ${pct(us)} |`);
  return [
    `busy time sampled: ${(total / 1000).toFixed(0)} ms (idle and "(program)" left out)`,
    '',
    '| where | share of busy time |',
    '| --- | --- |',
    ...top(areas, 14),
    '',
    '| function | self time |',
    '| --- | --- |',
    ...top(fns, 20),
  ].join('\n');
}

async function main(): Promise<void> {
  const sb = new Sandbox('imdsbench-');
  const out: string[] = [];
  const cleanup = (): Promise<void> => sb.cleanup();
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    await buildStorm();
    await sb.setup();
    const nets = networks(4);
    const all = vms(4);
    const dir = join(sb.dir, 'cpu-prof');
    mkdirSync(dir, { recursive: true });
    const cfg = sb.writeConfig(sb.config({ log_level: 'info', rate_limit_per_second: 0, networks: nets, vms: all }));
    const d = await sb.startDaemon(cfg, { nodeArgs: ['--max-semi-space-size=2', '--cpu-prof', `--cpu-prof-dir=${dir}`] });
    process.stderr.write(`creating ${all.length} guest namespaces\n`);
    const guests = await addGuests(sb, all);
    const files = writeStormFiles(join(sb.dir, 'storm'), guests);
    await storm(files.guestsFile, files.pathsFile); // warm-up
    for (let r = 0; r < 8; r++) {
      const cpu0 = processCpuMs([d.pid]);
      const s = await storm(files.guestsFile, files.pathsFile);
      const cpu = processCpuMs([d.pid]) - cpu0;
      out.push(
        `storm ${r + 1}: ${s.requests} requests in ${s.wall_ms.toFixed(0)} ms, ${s.failures} failures; daemon CPU ${cpu} ms = ${((cpu * 1000) / s.requests).toFixed(0)} µs/request`,
      );
    }
    await d.stop(); // the profile is written on exit
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) throw new Error(`no .cpuprofile in ${dir}`);
    out.push('', summarise(JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile));
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await cleanup();
  }
}

await main();
