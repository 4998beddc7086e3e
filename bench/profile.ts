// `npm run bench:profile [-- --data-plane native|node]` (root): where imds's CPU goes in a boot storm.
//
// data_plane: native (the default): the daemon runs as configured while perf(1) samples it through
// eight storms of 1,000 guests (4 networks × 250) running cloud-init's sequence; printed: the
// daemon's CPU per request split by thread and into user and system time (from /proc), and perf's
// samples by where the code lives (the kernel, the addon's loop, libc, node) and by symbol.
//
// data_plane: node: the daemon runs with V8's
// sampling profiler (--cpu-prof) while 1,000 guests (4 networks × 250) run cloud-init's sequence
// eight times (the daemon's start and the guests' set-up are in the profile too, but the storms are
// over nine tenths of its busy time: the storms' CPU is printed beside it); the profile's self time
// is then summed by where the code lives (node:http, the fast path, the resolver, pino, V8's GC,
// the rest of Node's net and stream code, …) and the top
// functions are listed. Kernel time (the TCP stack, the DNAT) is not in it: the storm's wall time
// and `processCpuMs` say how much of the server's CPU it is.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
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

const { values: args } = parseArgs({ options: { 'data-plane': { type: 'string', default: 'native' } } });
const PLANE = args['data-plane'];
if (PLANE !== 'native' && PLANE !== 'node') throw new Error('--data-plane must be native or node');

/** CPU ticks (user, system) of each thread of pid, by thread name. */
function threadTicks(pid: number): Map<string, { user: number; system: number }> {
  const out = new Map<string, { user: number; system: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const t = out.get(name) ?? { user: 0, system: 0 };
    t.user += Number(fields[11]);
    t.system += Number(fields[12]);
    out.set(name, t);
  }
  return out;
}

/** perf's samples, summed by `sort` keys (perf report --stdio), the lines over `limit` %. */
function perfReport(data: string, sort: string, limit: number): string[] {
  const text = execFileSync('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', sort, '--percent-limit', String(limit)], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return text
    .split('\n')
    .filter((l) => /^\s+[\d.]+%/.test(l))
    .map((l) => {
      const [pct, ...rest] = l.trim().split(/\s+/);
      return `| ${rest.join(' ')} | ${pct} |`;
    });
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
    const cfg = sb.writeConfig(sb.config({ log_level: 'info', rate_limit_per_second: 0, data_plane: PLANE, networks: nets, vms: all }));
    const d = await sb.startDaemon(
      cfg,
      PLANE === 'node'
        ? { nodeArgs: ['--max-semi-space-size=2', '--no-concurrent-recompilation', '--cpu-prof', `--cpu-prof-dir=${dir}`] }
        : {},
    );
    process.stderr.write(`creating ${all.length} guest namespaces\n`);
    const guests = await addGuests(sb, all);
    const files = writeStormFiles(join(sb.dir, 'storm'), guests);
    await storm(files.guestsFile, files.pathsFile); // warm-up
    const perfData = join(dir, 'perf.data');
    const perf =
      PLANE === 'native' ? spawn('perf', ['record', '-F', '2999', '-p', String(d.pid), '-o', perfData], { stdio: 'ignore' }) : undefined;
    if (perf !== undefined) await new Promise((resolve) => setTimeout(resolve, 1000));
    const ticks0 = threadTicks(d.pid);
    let requests = 0;
    for (let r = 0; r < 8; r++) {
      const cpu0 = processCpuMs([d.pid]);
      const s = await storm(files.guestsFile, files.pathsFile);
      const cpu = processCpuMs([d.pid]) - cpu0;
      requests += s.requests;
      out.push(
        `storm ${r + 1}: ${s.requests} requests in ${s.wall_ms.toFixed(0)} ms, ${s.failures} failures; daemon CPU ${cpu} ms = ` +
          `${((cpu * 1000) / s.requests).toFixed(0)} µs/request`,
      );
    }
    const ticks1 = threadTicks(d.pid);
    out.push('', '| thread | user µs/request | system µs/request |', '| --- | --- | --- |');
    const usPerTick = 1e6 / 100; // USER_HZ
    for (const [name, t] of ticks1) {
      const before = ticks0.get(name) ?? { user: 0, system: 0 };
      const user = ((t.user - before.user) * usPerTick) / requests;
      const system = ((t.system - before.system) * usPerTick) / requests;
      if (user + system >= 0.5) out.push(`| ${name} | ${user.toFixed(1)} | ${system.toFixed(1)} |`);
    }
    if (perf !== undefined) {
      perf.kill('SIGINT');
      await new Promise((resolve) => perf.once('exit', resolve));
    }
    await d.stop(); // the V8 profile is written on exit
    if (PLANE === 'native') {
      out.push('', '| where (perf samples) | share |', '| --- | --- |', ...perfReport(perfData, 'dso', 0.5));
      out.push('', '| symbol (perf samples) | share |', '| --- | --- |', ...perfReport(perfData, 'dso,symbol', 0.8));
    } else {
      const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
      if (file === undefined) throw new Error(`no .cpuprofile in ${dir}`);
      out.push('', summarise(JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile));
    }
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await cleanup();
  }
}

await main();
