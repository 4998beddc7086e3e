import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dhcpPaths, dnsmasqArgv, renderHosts, renderOptions } from '../../src/dhcp/dnsmasq-config.ts';
import { networkSchema, type NetworkInput } from '../../src/model/schema.ts';

const net = (extra: Partial<NetworkInput> = {}) =>
  networkSchema.parse({ id: 'n1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2', ...extra });

describe('dnsmasq config', () => {
  it('writes one MAC,address,short-name line per VM, sorted, MACs lower-cased', () => {
    const text = renderHosts([
      { mac: '52:54:00:AA:00:02', ip: '198.51.100.12', hostname: 'web2.example.org' },
      { mac: '52:54:00:aa:00:01', ip: '198.51.100.11', hostname: 'web1' },
    ]);
    assert.equal(text, '52:54:00:aa:00:01,198.51.100.11,web1\n52:54:00:aa:00:02,198.51.100.12,web2\n');
    assert.equal(renderHosts([]), '');
  });

  it('hands out router, DNS, domain, MTU, NTP and the metadata route plus the default route (RFC 3442)', () => {
    const text = renderOptions(
      net({ gateway: '198.51.100.1', dns: ['192.0.2.53', '192.0.2.54'], mtu: 1450, ntp: ['192.0.2.123'] }),
      'example.org',
    );
    assert.deepEqual(text.trimEnd().split('\n'), [
      'option:router,198.51.100.1',
      'option:dns-server,192.0.2.53,192.0.2.54',
      'option:domain-name,example.org',
      'option:mtu,1450',
      'option:ntp-server,192.0.2.123',
      'option:classless-static-route,169.254.169.254/32,198.51.100.2,0.0.0.0/0,198.51.100.1',
      '249,169.254.169.254/32,198.51.100.2,0.0.0.0/0,198.51.100.1',
    ]);
  });

  it('sends router and DNS empty when undeclared, so dnsmasq does not announce itself, and omits the default route', () => {
    const lines = renderOptions(net(), '').trimEnd().split('\n');
    assert.deepEqual(lines, [
      'option:router',
      'option:dns-server',
      'option:classless-static-route,169.254.169.254/32,198.51.100.2',
      '249,169.254.169.254/32,198.51.100.2',
    ]);
  });

  it('runs DHCP only, static leases, bound to imds0, with the lease time and files of the network', () => {
    const paths = dhcpPaths('/run/imds/dhcp', 'n1');
    assert.equal(paths.pid, '/run/imds/dhcp/n1/dnsmasq.pid');
    const argv = dnsmasqArgv(net({ dhcp_lease_time: 3600 }), paths);
    assert.equal(argv[0], 'dnsmasq');
    for (const a of [
      '--port=0',
      '--interface=imds0',
      '--bind-interfaces',
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--dhcp-range=198.51.100.0,static,255.255.255.0,3600',
      '--dhcp-hostsfile=/run/imds/dhcp/n1/hosts',
      '--dhcp-optsfile=/run/imds/dhcp/n1/options',
      '--dhcp-leasefile=/run/imds/dhcp/n1/leases',
      '--pid-file=/run/imds/dhcp/n1/dnsmasq.pid',
      '--no-ping', // no CAP_NET_RAW in the unit: dnsmasq refuses to start without it otherwise
    ]) {
      assert.ok(argv.includes(a), `${a} in ${argv.join(' ')}`);
    }
    assert.ok(dnsmasqArgv(net(), paths).includes('--dhcp-range=198.51.100.0,static,255.255.255.0,86400'));
  });
});
