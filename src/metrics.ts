// Prometheus metrics, served on the admin socket at /metrics. Guest requests are counted with
// pre-bound label children so the request path does no label hashing.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface MetricsSources {
  vmCount(): number;
  networkStates(): { state: string }[];
}

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'network' | 'status'>;
  private readonly duration: Histogram<'network'>;
  readonly reconcileErrors: Counter<'network'>;
  readonly reconcileDuration: Histogram;
  private readonly requestChildren = new Map<string, Map<number, Counter.Internal>>();
  private readonly durationChildren = new Map<string, Histogram.Internal<"network">>();

  constructor(sources: MetricsSources) {
    collectDefaultMetrics({ register: this.registry, prefix: 'imds_' });
    this.requests = new Counter({
      name: 'imds_requests_total',
      help: 'Guest metadata requests by network and HTTP status',
      labelNames: ['network', 'status'],
      registers: [this.registry],
    });
    this.duration = new Histogram({
      name: 'imds_request_duration_seconds',
      help: 'Time to answer a guest metadata request, from the request line to the response',
      labelNames: ['network'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1],
      registers: [this.registry],
    });
    this.reconcileErrors = new Counter({
      name: 'imds_reconcile_errors_total',
      help: 'Networks that failed to converge, by network',
      labelNames: ['network'],
      registers: [this.registry],
    });
    this.reconcileDuration = new Histogram({
      name: 'imds_reconcile_duration_seconds',
      help: 'Duration of a reconcile run (observe, plan, apply)',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [this.registry],
    });
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

  /** Counts one guest request; `seconds` is its duration. */
  observeRequest(network: string, status: number, seconds: number): void {
    let byStatus = this.requestChildren.get(network);
    if (byStatus === undefined) this.requestChildren.set(network, (byStatus = new Map()));
    let counter = byStatus.get(status);
    if (counter === undefined) byStatus.set(status, (counter = this.requests.labels(network, String(status))));
    counter.inc();
    let hist = this.durationChildren.get(network);
    if (hist === undefined) this.durationChildren.set(network, (hist = this.duration.labels(network)));
    hist.observe(seconds);
  }
}
