import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config.ts';
import { isImdsError } from '../../src/errors.ts';

const VALID = `
networks:
  - id: net1
    cidr: 198.51.100.0/24
    service_ip: 198.51.100.2
    gateway: 198.51.100.1
vms:
  - id: 1B4E28BA-2FA1-11D2-883F-0016D3CCA427
    network: net1
    ip: 198.51.100.10
    mac: 52:54:00:12:34:AB
    hostname: vm1
    user_data: "#cloud-config\\n"
`;

function problemsOf(text: string): string[] {
  try {
    parseConfig(text, 'imds.yaml');
  } catch (err) {
    assert.ok(isImdsError(err, 'CONFIG_INVALID'), String(err));
    return (err.details?.['problems'] as { line?: number; field: string; message: string }[]).map(
      (p) => `${p.line ?? '-'} ${p.field}: ${p.message}`,
    );
  }
  assert.fail('expected the configuration to be rejected');
}

function withVm(extra: string): string {
  return `${VALID}    ${extra}\n`;
}

describe('configuration', () => {
  it('parses a valid file with defaults and normalises ids and MACs', () => {
    const cfg = parseConfig(VALID, 'imds.yaml');
    assert.equal(cfg.state_dir, '/var/lib/imds');
    assert.equal(cfg.admin_socket, '/run/imds/admin.sock');
    assert.equal(cfg.listen_port, 8775);
    assert.equal(cfg.namespace_prefix, 'imds-');
    assert.equal(cfg.dhcp_dir, '/run/imds/dhcp');
    assert.equal(cfg.vms[0]?.id, '1b4e28ba-2fa1-11d2-883f-0016d3cca427');
    assert.equal(cfg.vms[0]?.mac, '52:54:00:12:34:ab');
    assert.ok(Buffer.isBuffer(cfg.vms[0]?.user_data));
    assert.equal(cfg.vms[0]?.user_data?.toString(), '#cloud-config\n');
    assert.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.networks[0]));
  });

  it('takes binary user data from !!binary', () => {
    const cfg = parseConfig(
      withVm('user_data_unused: 1')
        .replace('    user_data_unused: 1\n', '')
        .replace('user_data: "#cloud-config\\n"', 'user_data: !!binary H4sIAAAAAAAAAw=='),
      'imds.yaml',
    );
    assert.deepEqual([...(cfg.vms[0]?.user_data ?? [])], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
  });

  it('names the file, line, field and reason of YAML syntax errors', () => {
    const problems = problemsOf('networks: [\n');
    assert.equal(problems.length > 0, true);
    assert.match(problems[0] as string, /\(yaml\)/);
  });

  it('rejects unknown keys (typos) with the key named', () => {
    assert.deepEqual(problemsOf(`${VALID}lisen_port: 80\n`), ['14 lisen_port: unknown key "lisen_port"']);
  });

  it('rejects malformed fields with their path and line', () => {
    const text = VALID.replace('cidr: 198.51.100.0/24', 'cidr: 198.51.100.5/24')
      .replace('mac: 52:54:00:12:34:AB', 'mac: 53:54:00:12:34:ab')
      .replace('hostname: vm1', 'hostname: -vm1');
    const problems = problemsOf(text);
    assert.ok(
      problems.includes('4 networks[0].cidr: invalid CIDR "198.51.100.5/24": host bits are set; did you mean 198.51.100.0/24?'),
      problems.join('\n'),
    );
    assert.ok(
      problems.some((p) => p.startsWith('11 vms[0].mac: must be a unicast MAC')),
      problems.join('\n'),
    );
    assert.ok(
      problems.some((p) => p.startsWith('12 vms[0].hostname: must be an RFC 1123 host name')),
      problems.join('\n'),
    );
  });

  it('rejects a malformed uuid and a network id too long for kernel names', () => {
    const problems = problemsOf(
      VALID.replace('id: 1B4E28BA-2FA1-11D2-883F-0016D3CCA427', 'id: not-a-uuid').replace(/net1/g, 'averylongid'),
    );
    assert.ok(problems.some((p) => p.includes('networks[0].id: must be a slug')));
    assert.ok(problems.some((p) => p.includes('vms[0].id: must be a UUID')));
  });

  it('rejects duplicate network ids and two networks on one bridge', () => {
    const net2 =
      '  - { id: net2, cidr: 192.0.2.0/24, service_ip: 192.0.2.2, bridge: imdsb-net1 }\n  - { id: net1, cidr: 203.0.113.0/24, service_ip: 203.0.113.2 }\n';
    const problems = problemsOf(VALID.replace('vms:', `${net2}vms:`));
    assert.ok(
      problems.some((p) => /networks\[1\]\.bridge: bridge "imdsb-net1" is already used by networks\[0\]/.test(p)),
      problems.join('\n'),
    );
    assert.ok(
      problems.some((p) => /networks\[2\]\.id: duplicate network id "net1"/.test(p)),
      problems.join('\n'),
    );
  });

  it('rejects service_ip or gateway outside the CIDR and a CIDR holding the metadata address', () => {
    const problems = problemsOf(
      VALID.replace('service_ip: 198.51.100.2', 'service_ip: 192.0.2.2').replace('gateway: 198.51.100.1', 'gateway: 198.51.100.255'),
    );
    assert.ok(problems.some((p) => p.includes('networks[0].service_ip: service_ip is outside 198.51.100.0/24')));
    assert.ok(problems.some((p) => p.includes('networks[0].gateway: gateway is the network or broadcast address')));
    const linkLocal = problemsOf(
      VALID.replace('cidr: 198.51.100.0/24', 'cidr: 169.254.0.0/16')
        .replace('service_ip: 198.51.100.2', 'service_ip: 169.254.0.2')
        .replace('gateway: 198.51.100.1', 'gateway: 169.254.0.1')
        .replace('ip: 198.51.100.10', 'ip: 169.254.0.10'),
    );
    assert.ok(linkLocal.some((p) => p.includes('contains the metadata address')));
  });

  it('rejects VM addresses outside the network, equal to the service IP or gateway, or duplicated', () => {
    const vm = (ip: string, mac: string, id: string) => `  - { id: ${id}, network: net1, ip: ${ip}, mac: "${mac}", hostname: x }\n`;
    const text =
      VALID +
      vm('198.51.100.2', '52:54:00:00:00:01', '00000000-0000-4000-8000-000000000001') +
      vm('198.51.100.1', '52:54:00:00:00:02', '00000000-0000-4000-8000-000000000002') +
      vm('203.0.113.9', '52:54:00:00:00:03', '00000000-0000-4000-8000-000000000003') +
      vm('198.51.100.10', '52:54:00:12:34:ab', '00000000-0000-4000-8000-000000000004') +
      vm('198.51.100.20', '52:54:00:00:00:05', '1b4e28ba-2fa1-11d2-883f-0016d3cca427') +
      '  - { id: 00000000-0000-4000-8000-000000000006, network: nope, ip: 198.51.100.30, mac: "52:54:00:00:00:06", hostname: x }\n';
    const problems = problemsOf(text);
    const expect = [
      /vms\[1\]\.ip: 198\.51\.100\.2 is the service_ip of network "net1"/,
      /vms\[2\]\.ip: 198\.51\.100\.1 is the gateway of network "net1"/,
      /vms\[3\]\.ip: 203\.0\.113\.9 is outside network "net1"/,
      /vms\[4\]\.ip: 198\.51\.100\.10 is already used in network "net1" by vms\[0\]/,
      /vms\[4\]\.mac: 52:54:00:12:34:ab is already used in network "net1" by vms\[0\]/,
      /vms\[5\]\.id: duplicate VM id/,
      /vms\[6\]\.network: unknown network "nope"/,
    ];
    for (const re of expect)
      assert.ok(
        problems.some((p) => re.test(p)),
        `${re} in\n${problems.join('\n')}`,
      );
  });

  it("rejects user data over Nova's base64 limit", () => {
    const big = 'x'.repeat(49150);
    const problems = problemsOf(VALID.replace('user_data: "#cloud-config\\n"', `user_data: "${big}"`));
    assert.ok(
      problems.some((p) => p.includes("vms[0].user_data: is 49150 bytes, 65536 once base64-encoded; Nova's limit is 65535")),
      problems.join('\n'),
    );
    assert.doesNotThrow(() =>
      parseConfig(VALID.replace('user_data: "#cloud-config\\n"', `user_data: "${'x'.repeat(49149)}"`), 'imds.yaml'),
    );
  });

  it('rejects listen_port 80 and relative paths', () => {
    const problems = problemsOf(`listen_port: 80\nstate_dir: var/lib\n${VALID}`);
    assert.ok(problems.some((p) => p.includes('listen_port: must not be 80')));
    assert.ok(problems.some((p) => p.includes('state_dir: must be an absolute path')));
  });

  it('takes the DHCP fields of a network and names bad ones', () => {
    const dhcp = VALID.replace(
      '    gateway: 198.51.100.1\n',
      '    gateway: 198.51.100.1\n    dhcp: true\n    ntp: [192.0.2.123]\n    dhcp_lease_time: 3600\n',
    );
    const cfg = parseConfig(`dhcp_dir: /run/x/dhcp\n${dhcp}`, 'imds.yaml');
    assert.equal(cfg.dhcp_dir, '/run/x/dhcp');
    assert.equal(cfg.networks[0]?.dhcp, true);
    assert.deepEqual(cfg.networks[0]?.ntp, ['192.0.2.123']);
    assert.equal(cfg.networks[0]?.dhcp_lease_time, 3600);
    const problems = problemsOf(
      `dhcp_dir: run/dhcp\n${dhcp.replace('dhcp_lease_time: 3600', 'dhcp_lease_time: 10').replace('[192.0.2.123]', '[ntp.example.org]')}`,
    );
    assert.ok(
      problems.some((p) => p.includes('dhcp_dir: must be an absolute path')),
      problems.join('\n'),
    );
    assert.ok(
      problems.some((p) => p.includes('networks[0].dhcp_lease_time:')),
      problems.join('\n'),
    );
    assert.ok(
      problems.some((p) => p.includes('networks[0].ntp[0]:')),
      problems.join('\n'),
    );
  });

  it('takes the guard settings and names bad ones', () => {
    const cfg = parseConfig(VALID, 'imds.yaml');
    assert.equal(cfg.rate_limit_per_second, 20);
    assert.equal(cfg.rate_limit_burst, 300);
    assert.equal(cfg.spoof_check_interval_s, 30);
    const problems = problemsOf(
      `rate_limit_per_second: -1\nrate_limit_burst: 0\n${VALID.replace('hostname: vm1', 'hostname: vm1\n    http_tokens: always\n    http_hop_limit: 65')}`,
    );
    for (const field of ['rate_limit_per_second', 'rate_limit_burst', 'vms[0].http_tokens', 'vms[0].http_hop_limit']) {
      assert.ok(
        problems.some((p) => p.includes(`${field}:`)),
        `${field} in ${problems.join('\n')}`,
      );
    }
  });

  it('takes access_log off, journal or an absolute path, and names anything else', () => {
    const cfg = parseConfig(VALID, 'imds.yaml');
    assert.deepEqual([cfg.access_log, cfg.access_log_lines_per_second], ['off', 1000]);
    assert.equal(parseConfig(`access_log: journal\n${VALID}`, 'imds.yaml').access_log, 'journal');
    assert.equal(parseConfig(`access_log: /var/log/imds/access.log\n${VALID}`, 'imds.yaml').access_log, '/var/log/imds/access.log');
    for (const bad of ['access.log', 'on', '42']) {
      assert.ok(
        problemsOf(`access_log: ${bad}\n${VALID}`).some((p) => p.includes('access_log: must be off, journal or an absolute file path')),
        bad,
      );
    }
    assert.ok(problemsOf(`access_log_lines_per_second: -1\n${VALID}`).some((p) => p.includes('access_log_lines_per_second: must be 0')));
  });
});
