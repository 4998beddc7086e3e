// What docs/monitoring ships is usable as is: the Grafana dashboard is a well-formed dashboard whose
// every query names metrics the daemon exports, and the alert rules query nothing else either
// (promtool checks and tests the rules in test/integration/metrics.test.ts).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { LINT_FAILING_DEFAULTS, Metrics } from '../../src/metrics.ts';
import { Stats } from '../../src/stats.ts';

const read = (path: string): string => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

/** Every series name the daemon exports (histograms with their _bucket, _sum and _count). */
async function exported(): Promise<Set<string>> {
  const metrics = new Metrics({
    stats: new Stats(),
    vmCount: () => 0,
    networkStates: () => [],
    dhcpServers: () => [],
    build: { dataPlane: 'native' },
  });
  const names = new Set<string>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    names.add(m.name);
    const type: unknown = m.type; // 'histogram' at run time, whatever prom-client's typings say
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${m.name}${suffix}`);
  }
  return names;
}

const KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

/** The metric names a PromQL expression (with Grafana's $variables) selects. */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""') // strings
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges
    .replace(/\$\{?\w+\}?/g, ' ') // Grafana variables
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // grouping labels
  const names: string[] = [];
  for (const m of bare.matchAll(/(?<![\w:.])[A-Za-z_:][\w:]*/g)) {
    const after = bare.slice((m.index ?? 0) + m[0].length).trimStart();
    if (after.startsWith('(') || KEYWORDS.has(m[0].toLowerCase())) continue; // a function or an operator
    names.push(m[0]);
  }
  return names;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { refId: string; expr: string }[];
}

describe('monitoring files', () => {
  it('reads metric names out of PromQL', () => {
    assert.deepEqual(metricNames('sum by (le) (rate(a_bucket{job=~"$job", x="y{z}"}[$__rate_interval]))'), ['a_bucket']);
    assert.deepEqual(metricNames('time() - process_start_time_seconds offset 5m'), ['process_start_time_seconds']);
    assert.deepEqual(metricNames('topk(10, b_total) / on (network) group_left c'), ['b_total', 'c']);
    assert.deepEqual(metricNames('count(x == 0) or vector(0)'), ['x']);
  });

  it('the Grafana dashboard is well formed and queries only what imds exports', async () => {
    const known = await exported();
    const dashboard = JSON.parse(read('docs/monitoring/grafana-dashboard.json')) as {
      title: string;
      uid: string;
      schemaVersion: number;
      panels: Panel[];
      templating: { list: { name: string; type: string; query: string | { query: string } }[] };
    };
    assert.equal(dashboard.title, 'imds');
    assert.match(dashboard.uid, /^[a-z0-9-]{1,40}$/);
    assert.ok(dashboard.schemaVersion >= 30);
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    const queries: string[] = [];
    for (const p of dashboard.panels) {
      assert.ok(p.gridPos.w >= 1 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: fits the 24-column grid`);
      if (p.type === 'row') continue;
      assert.ok((p.targets ?? []).length > 0, `${p.title}: has queries`);
      for (const t of p.targets ?? []) queries.push(t.expr);
    }
    for (const v of dashboard.templating.list) {
      if (v.type !== 'query') continue;
      const q = typeof v.query === 'string' ? v.query : v.query.query;
      const m = /^label_values\((.+),\s*\w+\)$/.exec(q);
      assert.ok(m !== null, `variable ${v.name}: label_values(selector, label): ${q}`);
      queries.push(m[1] as string);
    }
    const used = new Set(queries.flatMap(metricNames));
    assert.ok(used.size >= 15, `the dashboard shows the daemon: ${[...used].join(', ')}`);
    for (const name of used) assert.ok(known.has(name), `the dashboard queries ${name}, which imds does not export`);
    for (const name of ['imds_network_up', 'imds_dhcp_server_up', 'imds_rejected_requests_total', 'process_cpu_seconds_total'])
      assert.ok(used.has(name), `the dashboard shows ${name}`);
  });

  it('the alert rules query only what imds exports (and `up`), each with a severity and what to do', async () => {
    const known = await exported();
    const doc = parse(read('docs/monitoring/alerts.yml')) as {
      groups: {
        name: string;
        rules: { alert: string; expr: string; labels: { severity: string }; annotations: Record<string, string> }[];
      }[];
    };
    const rules = doc.groups.flatMap((g) => g.rules);
    assert.ok(rules.length >= 10);
    for (const r of rules) {
      assert.match(r.alert, /^Imds[A-Za-z]+$/);
      assert.ok(['critical', 'warning'].includes(r.labels.severity), `${r.alert}: severity`);
      assert.ok(
        (r.annotations['summary'] ?? '') !== '' && (r.annotations['description'] ?? '') !== '',
        `${r.alert}: summary and description`,
      );
      for (const name of metricNames(r.expr))
        assert.ok(known.has(name) || name === 'up', `${r.alert} queries ${name}, which imds does not export`);
    }
    const names = new Set(rules.map((r) => r.alert));
    for (const a of ['ImdsDown', 'ImdsAbsent', 'ImdsNetworkNotUp', 'ImdsDhcpServerDown', 'ImdsDhcpServerRestarting', 'ImdsRepairsFailing'])
      assert.ok(names.has(a), a);
    for (const name of LINT_FAILING_DEFAULTS) assert.ok(!known.has(name), `${name} is not exported (promtool rejects it)`);
  });
});
