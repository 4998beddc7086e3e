import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config.ts';
import { isImdsError } from '../../src/errors.ts';

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

describe('configuration: host_id and registry', () => {
  it('has no registry by default: nothing changes for a single host', () => {
    const cfg = parseConfig('{}', 'imds.yaml');
    assert.equal(cfg.registry, undefined);
    assert.equal(cfg.host_id, undefined);
  });

  it('parses a registry with defaults', () => {
    const cfg = parseConfig('host_id: hv1\nregistry:\n  etcd:\n    endpoints: [127.0.0.1:2379, "http://127.0.0.2:2379"]\n', 'imds.yaml');
    assert.equal(cfg.host_id, 'hv1');
    assert.deepEqual(cfg.registry, {
      etcd: { endpoints: ['127.0.0.1:2379', 'http://127.0.0.2:2379'], prefix: '/imds/', max_txn_ops: 128 },
    });
  });

  it('refuses a max_txn_ops etcd cannot take, naming the field', () => {
    assert.throws(
      () => parseConfig('host_id: hv1\nregistry:\n  etcd:\n    endpoints: [e:2379]\n    max_txn_ops: 2\n', 'imds.yaml'),
      /registry\.etcd\.max_txn_ops: must be at least 4/,
    );
  });

  it('takes a prefix and TLS files', () => {
    const cfg = parseConfig(
      [
        'host_id: hv-2.example.com',
        'registry:',
        '  etcd:',
        '    endpoints: ["https://etcd1:2379"]',
        '    prefix: /cloud/imds/',
        '    tls: { ca: /etc/imds/ca.pem, cert: /etc/imds/c.pem, key: /etc/imds/c.key }',
      ].join('\n'),
      'imds.yaml',
    );
    assert.equal(cfg.registry?.etcd.prefix, '/cloud/imds/');
    assert.deepEqual(cfg.registry?.etcd.tls, { ca: '/etc/imds/ca.pem', cert: '/etc/imds/c.pem', key: '/etc/imds/c.key' });
  });

  it('requires host_id with a registry', () => {
    assert.deepEqual(problemsOf('registry:\n  etcd:\n    endpoints: [127.0.0.1:2379]\n'), [
      "1 host_id: is required with registry: the name VM documents' host field gives this hypervisor",
    ]);
  });

  it('names the field of each bad value', () => {
    const problems = problemsOf(
      [
        'host_id: "bad host"',
        'registry:',
        '  etcd:',
        '    endpoints: [127.0.0.1, "ftp://x:1", "h:70000"]',
        '    prefix: imds',
        '    tls: { ca: ca.pem, cert: /c.pem }',
        '    extra: 1',
      ].join('\n'),
    );
    const fields = problems.map((p) => p.split(':')[0]);
    assert.deepEqual(
      [...new Set(fields)].sort(),
      [
        '1 host_id',
        '4 registry.etcd.endpoints[0]',
        '4 registry.etcd.endpoints[1]',
        '4 registry.etcd.endpoints[2]',
        '5 registry.etcd.prefix',
        '6 registry.etcd.tls',
        '6 registry.etcd.tls.ca',
        '7 registry.etcd.extra',
      ].sort(),
    );
    assert.ok(problems.some((p) => p.includes('registry.etcd.prefix: must start and end with "/"')));
    assert.ok(problems.some((p) => p.includes('registry.etcd.tls: cert and key go together')));
  });

  it('refuses an empty endpoint list and mixed schemes', () => {
    assert.deepEqual(problemsOf('host_id: hv1\nregistry:\n  etcd:\n    endpoints: []\n'), [
      '4 registry.etcd.endpoints: must list at least one endpoint',
    ]);
    assert.deepEqual(problemsOf('host_id: hv1\nregistry:\n  etcd:\n    endpoints: ["https://a:1", "b:2"]\n'), [
      '4 registry.etcd.endpoints: mixes https:// and plain endpoints: use one scheme for all',
    ]);
  });

  it('accepts the prefix "/" alone', () => {
    const cfg = parseConfig('host_id: hv1\nregistry:\n  etcd:\n    endpoints: ["[::1]:2379"]\n    prefix: /\n', 'imds.yaml');
    assert.equal(cfg.registry?.etcd.prefix, '/');
  });
});
