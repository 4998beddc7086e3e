// This host in the registry (docs/registry.md, "Hosts"): at start, and again whenever its lease is
// lost, the daemon writes `hosts/<host_id>` (its registration, kept: what writes check a VM's `host`
// against) and `alive/<host_id>` attached to a lease of `ttlSeconds`, renewed every third of it. A
// daemon that stops cleanly revokes the lease (its alive key goes at once); one that dies or loses
// etcd lets it expire. It also writes the layout marker when the registry has none (create-only).
// Never throws: a failure is logged and tried again (250 ms doubling up to 5 s).
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { EtcdApi, Op } from './etcd-api.ts';
import { encodeHost, encodeLayout, type HostRecord, type RegistryKeys } from './layout.ts';

export interface HostRegistrarOptions {
  etcd: () => Promise<EtcdApi>;
  keys: RegistryKeys;
  hostId: string;
  version: string;
  log: Logger;
  /** The lease's TTL. Default 10 s (renewed every ~3.3 s). */
  ttlSeconds?: number;
  now?: () => Date;
}

export class HostRegistrar {
  private readonly o: HostRegistrarOptions;
  private readonly record: HostRecord;
  private lease: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryMs = 250;
  private closed = false;
  /** The registration in flight (close waits for it before revoking). */
  private running: Promise<void> = Promise.resolve();
  /** Registrations written (tests). */
  registrations = 0;

  constructor(options: HostRegistrarOptions) {
    this.o = options;
    this.record = { host_id: options.hostId, version: options.version, started_at: (options.now?.() ?? new Date()).toISOString() };
  }

  private get ttl(): number {
    return this.o.ttlSeconds ?? 10;
  }

  start(): void {
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.running = this.tick();
    }, ms);
    this.timer.unref();
  }

  /** Registers when there is no lease, renews it otherwise; schedules the next tick. */
  private async tick(): Promise<void> {
    try {
      const api = await this.o.etcd();
      if (this.closed) return;
      if (this.registrations > 0 && api.grantLease === undefined) {
        this.schedule((this.ttl * 1000) / 3); // no leases (a test's fake): registered once, nothing to renew
        return;
      }
      if (this.lease !== undefined && api.keepAliveLease !== undefined) {
        const left = await api.keepAliveLease(this.lease);
        if (left > 0) {
          this.retryMs = 250;
          this.schedule((this.ttl * 1000) / 3);
          return;
        }
        this.o.log.warn({ host_id: this.o.hostId }, "this host's registry lease expired: registering again");
        this.lease = undefined;
      }
      await this.register(api);
      this.retryMs = 250;
      this.schedule((this.ttl * 1000) / 3);
    } catch (err) {
      if (this.closed) return;
      const delay = this.retryMs;
      this.retryMs = Math.min(delay * 2, 5000);
      this.o.log.debug({ err: messageOf(err), retryMs: delay }, 'registering this host in the registry failed; retrying');
      this.schedule(delay);
    }
  }

  private async register(api: EtcdApi): Promise<void> {
    const { keys, hostId } = this.o;
    // A lease is needed before the keys (its id goes in the put); without lease support (a test's fake) the key is plain.
    const lease = api.grantLease === undefined ? undefined : await api.grantLease(this.ttl);
    const value = encodeHost(this.record);
    const alive: Op = { put: keys.alive(hostId), value, ...(lease === undefined ? {} : { lease }) };
    const result = await api.txn([], [{ put: keys.host(hostId), value }, alive]);
    if (!result.succeeded) throw new Error('the registration transaction was not applied');
    await api.txn([{ key: keys.layout, absent: true }], [{ put: keys.layout, value: encodeLayout() }]);
    if (this.closed) {
      if (lease !== undefined) await api.revokeLease?.(lease);
      return;
    }
    this.lease = lease;
    this.registrations++;
    this.o.log.info({ host_id: hostId, version: this.o.version, ttl_s: this.ttl }, 'this host is registered in the registry');
  }

  /** Stops renewing and revokes the lease (at most `timeoutMs`): other hosts see this one as not live at once. */
  async close(timeoutMs = 1000): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const lease = this.lease;
    this.lease = undefined;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    const revoke = async (): Promise<void> => {
      await this.running.catch(() => undefined);
      if (lease === undefined) return;
      const api = await this.o.etcd();
      await api.revokeLease?.(lease);
    };
    await Promise.race([revoke().catch(() => undefined), deadline]);
    clearTimeout(timer);
  }
}
