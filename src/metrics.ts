// Prometheus metrics, served on the admin socket at /metrics (and over TCP with metrics_listen):
// prom-client's registry (the standard process_* and nodejs_* metrics) plus imds's own, read from
// Stats at scrape time. Loaded after the daemon serves. docs/monitoring/README.md lists them all.
import { collectDefaultMetrics, Gauge, Registry, type Metric } from 'prom-client';
import type { Histogram, Stats } from './stats.ts';
import { VERSION } from './version.ts';

export interface MetricsSources {
  stats: Stats;
  vmCount(): number;
  /** Every declared network's effective state (DHCP included): serving, degraded or pending. */
  networkStates(): { network: string; state: string }[];
  /** Every network's DHCP server: up (serving) and restarts so far. */
  dhcpServers(): { network: string; up: boolean; restarts: number }[];
  /** What `imds_build_info` says besides the versions. */
  build: { dataPlane: string };
  /** With a registry: its state (imds_registry_connected, imds_registry_revision). */
  registry?: () => { connected: boolean; revision: number };
}

type Value = { labels: Record<string, string | number>; value: number; metricName?: string };

/** A metric whose values are computed at scrape time (prom-client's registry calls get()). */
function computed(name: string, help: string, type: 'counter' | 'histogram', values: () => Value[]): Metric {
  return {
    name,
    help,
    type,
    aggregator: 'sum',
    get: () => Promise.resolve({ name, help, type, aggregator: 'sum', values: values() }),
    reset: () => undefined,
  } as unknown as Metric;
}

function histogramValues(name: string, h: Histogram, labels: Record<string, string>): Value[] {
  const out: Value[] = [];
  let cumulative = 0;
  h.bounds.forEach((le, i) => {
    cumulative += h.counts[i] as number;
    out.push({ labels: { ...labels, le }, value: cumulative, metricName: `${name}_bucket` });
  });
  cumulative += h.counts[h.bounds.length] as number;
  out.push({ labels: { ...labels, le: '+Inf' }, value: cumulative, metricName: `${name}_bucket` });
  out.push({ labels, value: h.sum, metricName: `${name}_sum` });
  out.push({ labels, value: h.count, metricName: `${name}_count` });
  return out;
}

/** Counter values of a map keyed by one label. */
function byLabel(counts: ReadonlyMap<string, number>, label: string): Value[] {
  return [...counts].map(([key, value]) => ({ labels: { [label]: key }, value }));
}

/** Counter values of a map of maps keyed by two labels. */
function byLabels(counts: ReadonlyMap<string, ReadonlyMap<string, number>>, outer: string, inner: string): Value[] {
  return [...counts].flatMap(([a, byInner]) => [...byInner].map(([b, value]) => ({ labels: { [outer]: a, [inner]: b }, value })));
}

/** The DHCP servers of declared networks (a deleted network's server may still be stopping). */
function declaredDhcp(sources: MetricsSources): { network: string; up: boolean; restarts: number }[] {
  const declared = new Set(sources.networkStates().map((n) => n.network));
  return sources.dhcpServers().filter((d) => declared.has(d.network));
}

/** imds's counters and histograms, computed from Stats at scrape time. */
function registerCounters(registry: Registry, sources: MetricsSources): void {
  const { stats } = sources;
  const add = (name: string, help: string, type: 'counter' | 'histogram', values: () => Value[]): void => {
    registry.registerMetric(computed(name, help, type, values));
  };
  add('imds_requests_total', 'Guest metadata requests by network and HTTP status', 'counter', () =>
    [...stats.requests].flatMap(([network, s]) => [...s.byStatus].map(([status, value]) => ({ labels: { network, status }, value }))),
  );
  add('imds_request_duration_seconds', 'Time to answer a guest metadata request, from the request to the response', 'histogram', () =>
    [...stats.requests].flatMap(([network, s]) => histogramValues('imds_request_duration_seconds', s.duration, { network })),
  );
  add('imds_rejected_requests_total', 'Guest requests refused before an answer, by network and reason', 'counter', () =>
    byLabels(stats.rejections, 'network', 'reason'),
  );
  add(
    'imds_spoofed_packets_total',
    "Metadata packets dropped in a namespace for carrying a registered VM's address from another MAC",
    'counter',
    () => byLabel(stats.spoofedPackets, 'network'),
  );
  add('imds_metadata_no_token_total', 'Guest requests without an IMDSv2 session token, by network and VM', 'counter', () =>
    byLabels(stats.noTokens, 'network', 'vm'),
  );
  add('imds_repairs_total', 'Kernel drift repaired, by network and kind of damage', 'counter', () =>
    byLabels(stats.repairs, 'network', 'kind'),
  );
  add('imds_repairs_failed_total', 'Repairs of kernel drift that did not leave the network serving, by network', 'counter', () =>
    byLabel(stats.repairFailures, 'network'),
  );
  add('imds_reconcile_errors_total', 'Networks that failed to converge, by network', 'counter', () =>
    byLabel(stats.reconcileErrors, 'network'),
  );
  add('imds_reconcile_duration_seconds', 'Duration of a reconcile run (observe, plan, apply)', 'histogram', () =>
    histogramValues('imds_reconcile_duration_seconds', stats.reconcileDuration, {}),
  );
  add('imds_dhcp_server_restarts_total', "Restarts of a network's DHCP server (dnsmasq) after it died", 'counter', () =>
    declaredDhcp(sources).map((d) => ({ labels: { network: d.network }, value: d.restarts })),
  );
  add(
    'imds_unknown_caller_requests_total',
    'Guest requests from addresses that are no registered VM of the network, by network',
    'counter',
    () => byLabel(stats.unknownCallerRequests, 'network'),
  );
}

/** imds's gauges, set at scrape time. */
function registerGauges(registry: Registry, sources: MetricsSources): void {
  const registers = [registry];
  new Gauge({
    name: 'imds_build_info',
    help: 'Always 1: the version of imds, of Node.js and the data plane, as labels',
    labelNames: ['version', 'node_version', 'data_plane'],
    registers,
  }).set({ version: VERSION, node_version: process.versions.node, data_plane: sources.build.dataPlane }, 1);
  new Gauge({
    name: 'imds_network_up',
    help: 'Whether a declared network serves guests: 1 serving, 0 degraded (kernel side or DHCP server) or not built yet',
    labelNames: ['network'],
    registers,
    collect() {
      this.reset();
      for (const n of sources.networkStates()) this.set({ network: n.network }, n.state === 'serving' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'imds_dhcp_server_up',
    help: "Whether a network's DHCP server (dnsmasq) serves: 1 running, 0 dead or restarting",
    labelNames: ['network'],
    registers,
    collect() {
      this.reset();
      for (const d of declaredDhcp(sources)) this.set({ network: d.network }, d.up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'imds_vms',
    help: 'VMs registered',
    registers,
    collect() {
      this.set(sources.vmCount());
    },
  });
  new Gauge({
    name: 'imds_networks',
    help: 'Networks by state (serving, degraded: its kernel side or its DHCP server does not serve)',
    labelNames: ['state'],
    registers,
    collect() {
      this.reset();
      for (const state of ['serving', 'degraded']) this.set({ state }, 0);
      for (const n of sources.networkStates()) this.inc({ state: n.state });
    },
  });
}

function registerRegistryGauges(registry: Registry, status: () => { connected: boolean; revision: number }): void {
  new Gauge({
    name: 'imds_registry_connected',
    help: 'Whether the etcd registry is reachable: 1 connected, 0 degraded (serving the local copy, writes refused)',
    registers: [registry],
    collect() {
      this.set(status().connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'imds_registry_revision',
    help: 'The last etcd revision this host applied',
    registers: [registry],
    collect() {
      this.set(status().revision);
    },
  });
}

/** prom-client's default gauges with a `_total` suffix (a counter's); their per-type gauges stay. */
export const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export class Metrics {
  readonly registry = new Registry();
  private readonly stats: Stats;
  private readonly sources: MetricsSources;

  constructor(sources: MetricsSources) {
    this.stats = sources.stats;
    this.sources = sources;
    // The standard names (process_cpu_seconds_total, nodejs_eventloop_lag_seconds, …): stock dashboards and alerts use them.
    collectDefaultMetrics({ register: this.registry });
    // Less three gauges named like counters, which `promtool check metrics` rejects (prom-client's own
    // open issue, prometheus/client_js#283): sum without(type) (nodejs_active_handles) is the same number.
    for (const name of LINT_FAILING_DEFAULTS) this.registry.removeSingleMetric(name);
    registerCounters(this.registry, sources);
    registerGauges(this.registry, sources);
    if (sources.registry !== undefined) registerRegistryGauges(this.registry, sources.registry);
  }

  /**
   * The Prometheus text, with every counter brought up to date first (the native loop's drained) and
   * the series of networks no longer declared dropped.
   */
  async render(): Promise<string> {
    this.stats.collect();
    const declared = new Set(this.sources.networkStates().map((n) => n.network));
    this.stats.forgetNetworks((network) => declared.has(network));
    return this.registry.metrics();
  }
}
