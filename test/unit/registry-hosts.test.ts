// This host's registration in the registry (src/registry/host-registrar.ts) against the in-memory
// FakeEtcd, with leases added here: hosts/<id> kept, alive/<id> on a lease renewed until the
// registrar closes (revoked then), registered again when the lease expired; the layout marker
// written when absent and never over another version.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { pino } from 'pino';
import type { Compare, Op, TxnResult } from '../../src/registry/etcd-api.ts';
import { HostRegistrar } from '../../src/registry/host-registrar.ts';
import { decodeHost, registryKeys } from '../../src/registry/layout.ts';
import { FakeEtcd, settle } from '../helpers/fake-etcd.ts';

const keys = registryKeys('/imds/');

/** FakeEtcd with leases: a key put with a lease goes when the lease is revoked. */
class LeasingEtcd extends FakeEtcd {
  readonly leases = new Map<string, string[]>();
  private next = 100;
  renewals = 0;
  /** Renewals answer 0 (the lease expired). */
  expired = false;
  readonly revoked: string[] = [];

  grantLease(): Promise<string> {
    const id = String(this.next++);
    this.leases.set(id, []);
    return Promise.resolve(id);
  }

  keepAliveLease(id: string): Promise<number> {
    this.renewals++;
    return Promise.resolve(this.expired || !this.leases.has(id) ? 0 : 10);
  }

  async revokeLease(id: string): Promise<void> {
    this.revoked.push(id);
    for (const key of this.leases.get(id) ?? []) await this.delete(key);
    this.leases.delete(id);
  }

  override txn(compares: readonly Compare[], ops: readonly Op[]): Promise<TxnResult> {
    for (const op of ops) if ('put' in op && op.lease !== undefined) this.leases.get(op.lease)?.push(op.put);
    return super.txn(compares, ops);
  }
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

function registrar(etcd: FakeEtcd, ttlSeconds = 0.03): HostRegistrar {
  const r = new HostRegistrar({
    etcd: () => Promise.resolve(etcd),
    keys,
    hostId: 'hv1',
    version: '9.9.9',
    log: pino({ level: 'silent' }),
    ttlSeconds,
    now: () => new Date('2026-01-01T00:00:00.000Z'),
  });
  closers.push(() => r.close());
  return r;
}

async function until(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`timed out: ${what}`);
}

describe('host registrar', () => {
  it('registers the host (kept) and its liveness (leased, renewed), writes the layout, revokes the lease on close', async () => {
    const etcd = new LeasingEtcd();
    const r = registrar(etcd);
    r.start();
    await until('registered', () => r.registrations === 1);
    const host = await etcd.get(keys.host('hv1'));
    assert.deepEqual(decodeHost('hv1', host?.value ?? ''), {
      ok: true,
      value: { host_id: 'hv1', version: '9.9.9', started_at: '2026-01-01T00:00:00.000Z' },
    });
    assert.ok(await etcd.get(keys.alive('hv1')));
    assert.deepEqual(JSON.parse((await etcd.get(keys.layout))?.value ?? ''), { version: 1 });
    assert.deepEqual([...etcd.leases.values()], [[keys.alive('hv1')]], 'only the alive key is on the lease');
    await until('renewed', () => etcd.renewals >= 2);
    assert.equal(r.registrations, 1, 'renewals do not register again');
    await r.close();
    assert.deepEqual(etcd.revoked, ['100']);
    assert.equal(await etcd.get(keys.alive('hv1')), undefined, 'not live once closed');
    assert.ok(await etcd.get(keys.host('hv1')), 'still registered');
  });

  it('registers again when its lease expired; never writes over a layout that is there', async () => {
    const etcd = new LeasingEtcd();
    await etcd.put(keys.layout, JSON.stringify({ version: 2 }));
    const r = registrar(etcd);
    r.start();
    await until('registered', () => r.registrations === 1);
    etcd.expired = true;
    await etcd.delete(keys.alive('hv1'));
    await until('registered again', () => r.registrations === 2);
    etcd.expired = false;
    assert.ok(await etcd.get(keys.alive('hv1')));
    assert.deepEqual(JSON.parse((await etcd.get(keys.layout))?.value ?? ''), { version: 2 });
  });

  it('retries while etcd is unreachable; without lease support the alive key is plain', async () => {
    const etcd = new FakeEtcd();
    etcd.setUnavailable(true);
    const r = registrar(etcd);
    r.start();
    await settle();
    await new Promise((res) => setTimeout(res, 50));
    assert.equal(r.registrations, 0);
    etcd.setUnavailable(false);
    await until('registered once etcd is back', () => r.registrations === 1);
    assert.ok(await etcd.get(keys.alive('hv1')));
  });
});
