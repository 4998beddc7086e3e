// The registry bench's table (bench/registry.ts): one column per host and one for all of them.
import type { SyncCost } from './registry-cost.ts';
import type { EventCpu, Memory, RestartFigure, StartFigure } from './registry-phases.ts';
import type { MigrationSample, Seen, WriteSample } from './registry-samples.ts';

export interface Results {
  machine: Record<string, unknown>;
  settings: Record<string, unknown>;
  seed: { ms: number; txns: number; keys: number; bytes: number; revision: number };
  first_start: StartFigure[];
  memory_first_start: Record<string, Memory>;
  writes: WriteSample[];
  migrations: MigrationSample[];
  event_cpu: EventCpu;
  memory_after_samples: Record<string, Memory>;
  memory_after_gc: Record<string, Memory>;
  restarts: Record<'one' | 'all', RestartFigure[][]>;
  memory_after_restart: Record<string, Memory>;
  baseline?: { vms: number; networks: number; first_start: Memory; restart: Memory; first_ready_ms: number; restart_serving_ms: number };
  sync_cost: SyncCost;
  /** Per host, over the first start and the samples: gRPC's complaints on stderr, the registry's warnings. */
  daemon_notes: Record<string, { excess_pings: number; registry_warnings: number; unreachable: number }>;
}

/** Nearest-rank percentile. */
export function pct(values: number[], q: number): number {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))] as number;
}

export function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a';
}

const mb = (kb: number): string => fmt(kb / 1024, 1);
const spread = (v: number[], d = 1): string => `${fmt(pct(v, 0.5), d)} / ${fmt(pct(v, 0.99), d)} / ${fmt(Math.max(...v), d)}`;

function seenRows(label: string, rows: { host: string; seen: Seen }[], hosts: string[]): string[][] {
  const of = (h?: string): number[] => rows.filter((r) => h === undefined || r.host === h).map((r) => r.seen.ms);
  return [[label, ...hosts.map((h) => (of(h).length === 0 ? '' : spread(of(h)))), `${spread(of())} (n=${of().length})`]];
}

/** Median over rounds of each host's figure, and of the slowest host's. */
function restartCells(rounds: RestartFigure[][], hosts: string[], k: keyof RestartFigure): string[] {
  const of = (h: string): number[] => rounds.map((round) => Number(round.find((x) => x.host === h)?.[k]));
  return [
    ...hosts.map((h) => fmt(pct(of(h), 0.5))),
    fmt(
      pct(
        rounds.map((round) => Math.max(...round.map((x) => Number(x[k])))),
        0.5,
      ),
    ),
  ];
}

function restartRows(r: Results, hosts: string[]): string[][] {
  const rows: string[][] = [];
  for (const mode of ['one', 'all'] as const) {
    const rounds = r.restarts[mode];
    if (rounds.length === 0) continue;
    const how = mode === 'one' ? 'each alone' : `all ${hosts.length} at once`;
    rows.push(
      [
        `restart, ${how}, store kept (median of ${rounds.length}): -> serving (sockets of its networks open), ms`,
        ...restartCells(rounds, hosts, 'serving_local_ms'),
      ],
      ['  -> `registry placement applied`, ms', ...restartCells(rounds, hosts, 'placement_applied_ms')],
      ['  -> the VM written while it was down served, ms', ...restartCells(rounds, hosts, 'caught_up_ms')],
      ['  -> ready, ms', ...restartCells(rounds, hosts, 'ready_ms')],
    );
  }
  const b = r.baseline;
  if (b !== undefined)
    rows.push([`  no registry (the baseline below), restarted alone: -> serving, ms`, ...hosts.map(() => ''), fmt(b.restart_serving_ms)]);
  return rows;
}

function startRows(r: Results, hosts: string[]): string[][] {
  const by = (k: keyof StartFigure): string[] => hosts.map((h) => fmt(Number(r.first_start.find((s) => s.host === h)?.[k]), 0));
  const max = (k: keyof StartFigure): string => fmt(Math.max(...r.first_start.map((s) => Number(s[k]))));
  const together = r.settings['start'] === 'all' ? 'all at once' : 'one after another';
  return [
    [`first start (empty store, fleet in etcd, ${together}): process start -> ready, ms`, ...by('ready_ms'), `${max('ready_ms')} (last)`],
    [
      '  -> `registry placement applied` (read, decode, placement, store batch), ms',
      ...by('placement_applied_ms'),
      max('placement_applied_ms'),
    ],
    ['  first converge (networks built), ms (its `ready` line)', ...by('converge_ms'), max('converge_ms')],
    ['  networks / VMs it serves', ...hosts.map((h) => `${by('networks')[hosts.indexOf(h)]} / ${by('vms')[hosts.indexOf(h)]}`), ''],
    ...restartRows(r, hosts),
  ];
}

function writeRows(r: Results, hosts: string[]): string[][] {
  const w = r.writes;
  const m = r.migrations;
  const blank = hosts.map(() => '');
  const two = (v: number[], q: number, d = 1): string => `${fmt(pct(v, 0.5), d)} / ${fmt(q === 1 ? Math.max(...v) : pct(v, q), d)}`;
  const txn = w.map((s) => s.txn_ms);
  const lower = w.map((s) => s.served.ms - s.served.resolution_ms);
  const resolution = w.map((s) => s.served.resolution_ms);
  const probe = w.map((s) => s.served.interval_ms);
  return [
    ...seenRows(
      'etcd write -> served on the owning host, ms p50 / p99 / max',
      w.map((s) => ({ host: s.host, seen: s.served })),
      hosts,
    ),
    ['  the write (create-only txn) until etcd answered, ms p50 / p99', ...blank, two(txn, 0.99)],
    ['  lower bound (to the last 404 request sent), ms p50 / p99', ...blank, two(lower, 0.99)],
    ['  poller resolution (first 200 arrived minus last 404 sent), ms p50 / max', ...blank, two(resolution, 1, 2)],
    ['  poller: one request every ~ms (p50 / max of samples)', ...blank, two(probe, 1, 2)],
    ...seenRows(
      'etcd delete -> 404 on the owning host, ms p50 / p99 / max',
      w.map((s) => ({ host: s.host, seen: s.gone })),
      hosts,
    ),
    ...seenRows(
      'migration (host rewritten, mod-revision txn) -> destination serves, ms',
      m.map((s) => ({ host: s.to, seen: s.served })),
      hosts,
    ),
    ...seenRows(
      '  -> source answers 404, ms',
      m.map((s) => ({ host: s.from, seen: s.gone })),
      hosts,
    ),
  ];
}

function costRows(r: Results, hosts: string[]): string[][] {
  const c = r.sync_cost;
  const e = r.event_cpu;
  const blank = hosts.map(() => '');
  const notes = (h: string): string => {
    const n = r.daemon_notes[h];
    return n === undefined ? '' : `${n.excess_pings} / ${n.registry_warnings}`;
  };
  return [
    ['gRPC "excess pings" (etcd GOAWAY) on stderr / registry warnings, first start + samples', ...hosts.map(notes), ''],
    [
      `daemon CPU per watch event (/proc, ${e.events} events): host of the VM / other hosts, ms`,
      ...blank,
      `${fmt(e.owner_ms, 1)} / ${fmt(e.others_ms, 1)}`,
    ],
    [
      `in-process RegistrySync, ${fmt(c.keys)} keys, ${fmt(c.placed_vms)} VMs placed: event for another host / own host, ms`,
      ...blank,
      `${fmt(c.event_other_ms, 1)} / ${fmt(c.event_owner_ms, 1)}`,
    ],
    [
      '  placementOf (whole registry) / isDeepStrictEqual (equal placements) / Inventory.applyBatch (one VM more or less), ms',
      ...blank,
      `${fmt(c.placement_of_ms, 1)} / ${fmt(c.deep_equal_ms, 1)} / ${fmt(c.apply_batch_ms, 1)}`,
    ],
    [
      '    of applyBatch: planBatch (the whole VM set validated) / MetadataIndex.build (unchanged entries kept), ms',
      ...blank,
      `${fmt(c.plan_batch_ms, 1)} / ${fmt(c.index_build_ms, 1)}`,
    ],
    [
      '  full read: decoding every document / first placement applied to an empty store, ms',
      ...blank,
      `${fmt(c.full_read_decode_ms)} / ${fmt(c.first_apply_ms)}`,
    ],
  ];
}

function memoryRows(r: Results, hosts: string[]): string[][] {
  const row = (label: string, m: Record<string, Memory>, k: keyof Memory): string[] => [
    label,
    ...hosts.map((h) => mb(m[h]?.[k] ?? Number.NaN)),
    '',
  ];
  const b = r.baseline;
  return [
    row('RSS after the first start, MB', r.memory_first_start, 'rss_kb'),
    row('  V8 heap used, MB', r.memory_first_start, 'heap_used_kb'),
    row('RSS after the samples (no GC forced), MB', r.memory_after_samples, 'rss_kb'),
    row('  V8 heap used, MB', r.memory_after_samples, 'heap_used_kb'),
    row('RSS after a reload (a full GC), MB', r.memory_after_gc, 'rss_kb'),
    row('  V8 heap used, MB', r.memory_after_gc, 'heap_used_kb'),
    row('RSS after the restarts, MB', r.memory_after_restart, 'rss_kb'),
    row('  V8 heap used, MB', r.memory_after_restart, 'heap_used_kb'),
    ...(b === undefined
      ? []
      : [
          [
            `no registry, the same ${fmt(b.vms)} VMs on ${b.networks} networks from the file: RSS first start / restarted, MB`,
            ...hosts.map(() => ''),
            `${mb(b.first_start.rss_kb)} / ${mb(b.restart.rss_kb)} (heap ${mb(b.first_start.heap_used_kb)} / ${mb(b.restart.heap_used_kb)})`,
          ],
          [`  its first start (seeded from the file) -> ready, ms`, ...hosts.map(() => ''), fmt(b.first_ready_ms)],
        ]),
  ];
}

export function report(r: Results): string {
  const hosts = r.first_start.map((s) => s.host);
  const rows: string[][] = [
    ['measure', ...hosts, 'all'],
    [
      `etcd seeded: ${fmt(r.seed.keys)} keys (${mb(r.seed.bytes / 1024)} MB) in ${r.seed.txns} create-only txns, ms`,
      ...hosts.map(() => ''),
      fmt(r.seed.ms),
    ],
    ...startRows(r, hosts),
    ...writeRows(r, hosts),
    ...costRows(r, hosts),
    ...memoryRows(r, hosts),
  ];
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  const line = (row: string[]): string => `| ${row.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  return [line(rows[0] as string[]), line(widths.map((w) => '-'.repeat(w))), ...rows.slice(1).map(line)].join('\n');
}
