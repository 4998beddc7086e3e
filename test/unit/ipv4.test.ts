import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cidrContains, cidrsOverlap, formatIpv4, isReservedInCidr, netmaskText, parseCidr, parseIpv4 } from '../../src/model/ipv4.ts';

describe('ipv4', () => {
  it('parses and formats addresses', () => {
    assert.equal(parseIpv4('198.51.100.10'), 0xc633640a);
    assert.equal(formatIpv4(0xc633640a), '198.51.100.10');
    assert.equal(parseIpv4('198.51.100.256'), undefined);
    assert.equal(parseIpv4('01.2.3.4'), undefined);
  });
  it('parses CIDRs and refuses host bits', () => {
    const r = parseCidr('198.51.100.0/24');
    assert.ok(r.ok);
    assert.equal(r.cidr.text, '198.51.100.0/24');
    assert.deepEqual(parseCidr('198.51.100.1/24'), { ok: false, reason: 'host bits are set; did you mean 198.51.100.0/24?' });
    assert.equal(parseCidr('198.51.100.0/33').ok, false);
    assert.equal(parseCidr('0.0.0.0/0').ok, true);
  });
  it('answers containment, reserved addresses, overlap and masks', () => {
    const r = parseCidr('192.0.2.0/24');
    assert.ok(r.ok);
    assert.ok(cidrContains(r.cidr, parseIpv4('192.0.2.77') as number));
    assert.ok(!cidrContains(r.cidr, parseIpv4('192.0.3.1') as number));
    assert.ok(isReservedInCidr(r.cidr, parseIpv4('192.0.2.0') as number));
    assert.ok(isReservedInCidr(r.cidr, parseIpv4('192.0.2.255') as number));
    const p31 = parseCidr('192.0.2.0/31');
    assert.ok(p31.ok && !isReservedInCidr(p31.cidr, parseIpv4('192.0.2.0') as number));
    const wide = parseCidr('192.0.0.0/16');
    assert.ok(wide.ok && cidrsOverlap(wide.cidr, r.cidr));
    assert.equal(netmaskText(24), '255.255.255.0');
    assert.equal(netmaskText(0), '0.0.0.0');
    assert.equal(netmaskText(32), '255.255.255.255');
  });
});
