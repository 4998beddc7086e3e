// VM references (src/server/admin/vm-ref.ts): a VM is found by id, host name, display name, address
// or MAC; NET/REF looks in one network; several matches are AMBIGUOUS with the candidates listed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolveVmRef, withFallback, type VmRefLookups } from '../../src/server/admin/vm-ref.ts';
import { vmSchema, type Vm } from '../../src/model/schema.ts';
import { isImdsError } from '../../src/errors.ts';

const A = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const B = '2b4e28ba-2fa1-11d2-883f-0016d3cca427';
const C = '3b4e28ba-2fa1-11d2-883f-0016d3cca427';
const vms: Vm[] = [
  vmSchema.parse({ id: A, network: 'net1', ip: '198.51.100.10', mac: '52:54:00:00:00:0a', hostname: 'web1', name: 'Web One' }),
  vmSchema.parse({ id: B, network: 'net2', ip: '198.51.100.10', mac: '52:54:00:00:00:0b', hostname: 'web2' }),
  vmSchema.parse({ id: C, network: 'net2', ip: '198.51.100.12', mac: '52:54:00:00:00:0c', hostname: 'db' }),
];
const lookups: VmRefLookups = { byId: (id) => vms.find((v) => v.id === id), all: () => vms };

describe('resolveVmRef', () => {
  it('finds a VM by id (any case), host name, display name, address or MAC', () => {
    assert.equal(resolveVmRef(A.toUpperCase(), lookups), A);
    assert.equal(resolveVmRef('web2', lookups), B);
    assert.equal(resolveVmRef('WEB2', lookups), B, 'host names compare without case');
    assert.equal(resolveVmRef('Web One', lookups), A);
    assert.equal(resolveVmRef('198.51.100.12', lookups), C);
    assert.equal(resolveVmRef('52:54:00:00:00:0C', lookups), C);
    assert.equal(resolveVmRef('52-54-00-00-00-0c', lookups), C);
  });

  it('refuses an address on two networks as AMBIGUOUS, listing both, and takes NET/ADDRESS', () => {
    assert.throws(
      () => resolveVmRef('198.51.100.10', lookups),
      (err: unknown) => {
        assert.ok(isImdsError(err, 'AMBIGUOUS'));
        assert.match(
          err.message,
          /"198\.51\.100\.10" names 2 VMs: 1b4e28ba-\S+ \(net1 198\.51\.100\.10 52:54:00:00:00:0a web1\), 2b4e28ba-\S+ \(net2 /,
        );
        assert.match(err.message, /name one by its id or as NETWORK\/REF/);
        assert.deepEqual(
          (err.details?.['candidates'] as { id: string }[]).map((c) => c.id),
          [A, B],
        );
        return true;
      },
    );
    assert.equal(resolveVmRef('net2/198.51.100.10', lookups), B);
    assert.equal(resolveVmRef('net1/198.51.100.10', lookups), A);
  });

  it('says how VMs are named when nothing matches (NOT_FOUND), also within a network', () => {
    assert.throws(
      () => resolveVmRef('web9', lookups),
      (err: unknown) => isImdsError(err, 'NOT_FOUND') && /no VM web9 \(a VM is named by its id/.test(err.message),
    );
    assert.throws(
      () => resolveVmRef('net1/db', lookups),
      (err: unknown) => isImdsError(err, 'NOT_FOUND'),
    );
  });
});

describe('withFallback (a registry daemon started while etcd is down)', () => {
  const registry: VmRefLookups = { byId: (id) => (id === A ? vms[0] : undefined), all: () => [vms[0] as Vm] };
  const local: VmRefLookups = { byId: (id) => vms.slice(0, 2).find((v) => v.id === id), all: () => vms.slice(0, 2) };
  const both = withFallback(registry, local);

  it("finds the local store's VMs the registry does not know, each once", () => {
    assert.equal(resolveVmRef(B, both), B);
    assert.equal(resolveVmRef('web2', both), B);
    assert.equal(resolveVmRef('web1', both), A, 'in both: found once, not AMBIGUOUS');
    assert.deepEqual(
      [...both.all()].map((v) => v.id),
      [A, B],
    );
    assert.throws(
      () => resolveVmRef(C, both),
      (e: unknown) => isImdsError(e) && e.code === 'NOT_FOUND',
    );
  });
});
