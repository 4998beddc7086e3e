// Prometheus metrics, served on the admin socket at /metrics: prom-client's registry (process and
// runtime metrics) plus imds's own, read from Stats at scrape time. Loaded after the daemon serves.
import { collectDefaultMetrics, Gauge, Registry, type Metric } from 'prom-client';
import type { Histogram, Stats } from './stats.ts';

export interface MetricsSources {
  stats: Stats;
  vmCount(): number;
  networkStates(): { state: string }[];
}

type Value = { labels: Record<string, string | number>; value: number; metricName?: string };

/** A metric whose values are computed at scrape time (prom-client's registry calls get()). */
function computed(name: string, help: string, type: 'counter' | 'histogram', values: () => Value[]): Metric {
  return {
    name,
    help,
    type,
    aggregator: 'sum',
    get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
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

/** Labels from a `first|second` counter key. */
function pairLabels(key: string, first: string, second: string): Record<string, string> {
  const at = key.indexOf('|');
  return { [first]: key.slice(0, at), [second]: key.slice(at + 1) };
}

export class Metrics {
  readonly registry = new Registry();

  constructor(sources: MetricsSources) {
    const { stats } = sources;
    collectDefaultMetrics({ register: this.registry, prefix: 'imds_' });
    this.registry.registerMetric(
      computed('imds_requests_total', 'Guest metadata requests by network and HTTP status', 'counter', () =>
        [...stats.requests].flatMap(([network, s]) => [...s.byStatus].map(([status, value]) => ({ labels: { network, status }, value }))),
      ),
    );
    this.registry.registerMetric(
      computed('imds_request_duration_seconds', 'Time to answer a guest metadata request, from the request to the response', 'histogram', () =>
        [...stats.requests].flatMap(([network, s]) => histogramValues('imds_request_duration_seconds', s.duration, { network })),
      ),
    );
    this.registry.registerMetric(
      computed('imds_rejected_requests_total', 'Guest requests refused before an answer, by reason', 'counter', () =>
        [...stats.rejections].map(([reason, value]) => ({ labels: { reason }, value })),
      ),
    );
    this.registry.registerMetric(
      computed('imds_spoofed_packets_total', "Metadata packets dropped in a namespace for carrying a registered VM's address from another MAC", 'counter', () =>
        [...stats.spoofedPackets].map(([network, value]) => ({ labels: { network }, value })),
      ),
    );
    this.registry.registerMetric(
      computed('imds_metadata_no_token_total', 'Guest requests without an IMDSv2 session token, by network and VM', 'counter', () =>
        [...stats.noTokens].map(([key, value]) => ({ labels: pairLabels(key, 'network', 'vm'), value })),
      ),
    );
    this.registry.registerMetric(
      computed('imds_repairs_total', 'Kernel drift repaired, by network and kind of damage', 'counter', () =>
        [...stats.repairs].map(([key, value]) => ({ labels: pairLabels(key, 'network', 'kind'), value })),
      ),
    );
    this.registry.registerMetric(
      computed('imds_repairs_failed_total', 'Repairs of kernel drift that did not leave the network serving, by network', 'counter', () =>
        [...stats.repairFailures].map(([network, value]) => ({ labels: { network }, value })),
      ),
    );
    this.registry.registerMetric(
      computed('imds_reconcile_errors_total', 'Networks that failed to converge, by network', 'counter', () =>
        [...stats.reconcileErrors].map(([network, value]) => ({ labels: { network }, value })),
      ),
    );
    this.registry.registerMetric(
      computed('imds_reconcile_duration_seconds', 'Duration of a reconcile run (observe, plan, apply)', 'histogram', () =>
        histogramValues('imds_reconcile_duration_seconds', stats.reconcileDuration, {}),
      ),
    );
    new Gauge({
      name: 'imds_vms',
      help: 'VMs registered',
      registers: [this.registry],
      collect() {
        this.set(sources.vmCount());
      },
    });
    new Gauge({
      name: 'imds_networks',
      help: 'Networks by state (serving, degraded)',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const state of ['serving', 'degraded']) this.set({ state }, 0);
        for (const n of sources.networkStates()) this.inc({ state: n.state });
      },
    });
  }
}
