// The operator surface end to end, as root: every CLI command against a real daemon in a throwaway
// hypervisor namespace, its --json output and its errors, changes reaching guests at once, `vm get`
// through the namespace, and the admin API out of every guest's reach.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import type { Guest } from '../helpers/sandbox.ts';
import { sh, useSandbox, type Sandbox } from '../helpers/sandbox.ts';

const VM1 = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const VM2 = '2b4e28ba-2fa1-11d2-883f-0016d3cca427';

/** Packets counted by the DNAT rule of `table ip imds`'s `output` chain in a network's namespace (what `vm get` crosses). */
async function outputDnatPackets(sb: Sandbox, network: string): Promise<number> {
  const out = await sh(['nsenter', `--net=/run/netns/${sb.nsPrefix}${network}`, 'nft', '-j', 'list', 'chain', 'ip', 'imds', 'output']);
  const rules = (JSON.parse(out.stdout) as { nftables: { rule?: { expr: Record<string, unknown>[] } }[] }).nftables.flatMap((i) =>
    i.rule ? [i.rule.expr] : [],
  );
  const dnat = rules.filter((expr) => expr.some((e) => 'dnat' in e));
  assert.equal(dnat.length, 1, `one DNAT rule in the output chain of ${network}: ${out.stdout}`);
  const counter = (dnat[0] as Record<string, unknown>[]).find((e) => 'counter' in e)?.['counter'] as { packets: number } | undefined;
  assert.ok(counter !== undefined, `the output DNAT rule of ${network} has a counter: ${out.stdout}`);
  return counter.packets;
}

describe('operator surface: CLI and admin API', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let cfgPath: string;
  let guest: Guest;
  const imds = (args: string[], options: { allowFailure?: boolean; stdin?: string } = {}) =>
    sh([process.execPath, join(process.cwd(), 'dist', 'main.js'), '--admin-socket', sb.adminSocket(), ...args], options);
  const json = async <T>(args: string[]): Promise<T> => JSON.parse((await imds([...args, '--json'])).stdout) as T;

  before(async () => {
    sb = current();
    cfgPath = sb.writeConfig(sb.config({ log_level: 'info' }));
    await sb.startDaemon(cfgPath);
  });

  it('adds, lists, shows and changes networks', async () => {
    const added = await json<{ id: string; state: string; bridge: string }>([
      'network',
      'add',
      'net1',
      '--cidr',
      '198.51.100.0/24',
      '--service-ip',
      '198.51.100.2',
      '--gateway',
      '198.51.100.1',
    ]);
    assert.deepEqual([added.id, added.state, added.bridge], ['net1', 'serving', 'imdsb-net1']);
    const human = await imds(['network', 'add', 'net2', '--cidr', '198.51.100.0/24', '--service-ip', '198.51.100.2', '--mtu', '1400']);
    assert.match(human.stdout, /^network net2 created: serving \(bridge imdsb-net2\)/);
    assert.ok((await sb.namespaces()).includes(`${sb.nsPrefix}net2`), 'the namespace exists when `network add` returns');

    const list = await json<{ id: string; vms: number; state: string }[]>(['network', 'list']);
    assert.deepEqual(
      list.map((n) => [n.id, n.state]),
      [
        ['net1', 'serving'],
        ['net2', 'serving'],
      ],
    );
    const table = (await imds(['network', 'list'])).stdout.split('\n');
    assert.match(table[0] as string, /^ID\s+CIDR\s+SERVICE_IP\s+GATEWAY\s+BRIDGE\s+MTU\s+VMS\s+STATE/);
    const shown = await json<{ mtu: number }>(['network', 'show', 'net2']);
    assert.equal(shown.mtu, 1400);

    const set = await json<{ mtu?: number }>(['network', 'set', 'net2', '--mtu', '1450']);
    assert.equal(set.mtu, 1450);
    assert.equal((await sb.hvLinks())['imdsv-net2']?.mtu, 1450, 'the kernel follows `network set`');
    const cleared = await json<{ mtu?: number }>(['network', 'set', 'net2', '--clear', 'mtu']);
    assert.equal(cleared.mtu, undefined);
  });

  it('plans nothing to change for networks made through the CLI (plan reads the store), with the packaged default --config', async () => {
    const plan = await sb.cli(['plan', '--config', cfgPath]);
    assert.equal(plan.stdout, 'nothing to change\n', 'net1 and net2 live in the store, not in the file: plan must not remove them');
    const asJson = JSON.parse((await sb.cli(['plan', '--config', cfgPath, '-o', 'json'])).stdout) as {
      removals: unknown[];
      networks: { network: string; steps: unknown[] }[];
    };
    assert.deepEqual(asJson.removals, [], 'no network is to be removed');
    assert.deepEqual(
      asJson.networks.map((n) => [n.network, n.steps.length]).sort(),
      [
        ['net1', 0],
        ['net2', 0],
      ],
      'both store networks are planned, with nothing to do',
    );
    // Without --config: the packaged file, whatever this host has at /etc/imds. The CLI runs in a
    // mount namespace of its own where /etc is an overlay whose top layer is in the sandbox: once with
    // a file of ours there (read: it names the file and counts its network), once with /etc/imds
    // hidden (a whiteout: named in the error).
    const present = join(sb.dir, 'etc-present');
    mkdirSync(join(present, 'imds'), { recursive: true });
    writeFileSync(
      join(present, 'imds', 'imds.yaml'),
      stringify(sb.config({ networks: [{ id: 'etcnet', cidr: '192.0.2.0/24', service_ip: '192.0.2.2' }] }, 'etc')),
    );
    const absent = join(sb.dir, 'etc-absent');
    mkdirSync(absent);
    await sh(['mknod', join(absent, 'imds'), 'c', '0', '0']);
    const withEtc = (layer: string, args: string[]) =>
      sh(
        [
          'unshare',
          '--mount',
          '--propagation',
          'private',
          '--',
          'sh',
          '-c',
          'mount -t overlay overlay -o "lowerdir=$1:/etc" /etc && shift && exec "$@"',
          'sh',
          layer,
          process.execPath,
          join(process.cwd(), 'dist', 'main.js'),
          ...args,
        ],
        { allowFailure: true },
      );
    const read = await withEtc(present, ['check', '-o', 'json']);
    assert.equal(read.code, 0, read.stderr);
    assert.deepEqual(JSON.parse(read.stdout), { ok: true, file: '/etc/imds/imds.yaml', networks: 1, vms: 0 });
    const missing = await withEtc(absent, ['check', '-o', 'json']);
    assert.equal(missing.code, 2, `${missing.stdout}${missing.stderr}`);
    assert.match(missing.stderr, /"message":"\/etc\/imds\/imds\.yaml: /);
  });

  it('prints every result as -o json, yaml, table or wide, and errors as JSON under -o json', async () => {
    const yamlList = parse((await imds(['network', 'list', '-o', 'yaml'])).stdout) as { id: string }[];
    assert.deepEqual(
      yamlList.map((n) => n.id),
      ['net1', 'net2'],
    );
    const wide = (await imds(['network', 'list', '-o', 'wide'])).stdout.split('\n');
    assert.match(
      wide[0] as string,
      /^ID\s+CIDR\s+SERVICE_IP\s+GATEWAY\s+BRIDGE\s+MTU\s+VMS\s+STATE\s+UPLINK\s+DHCP\s+DHCP_SERVER\s+DOMAIN\s+ORIGIN$/,
    );
    assert.match(wide[1] as string, /\sapi$/);
    assert.deepEqual(JSON.parse((await imds(['network', 'show', 'net1', '-o', 'json'])).stdout), await json(['network', 'show', 'net1']));
    const missing = await imds(['network', 'show', 'nope', '-o', 'json'], { allowFailure: true });
    assert.equal(missing.code, 4);
    assert.equal(missing.stdout, '');
    assert.deepEqual(JSON.parse(missing.stderr), {
      error: { code: 'NOT_FOUND', message: 'no network "nope"', field: 'id', reason: 'no network "nope"', exit: 4 },
    });
    const usage = await imds(['network', 'add', 'net3', '--json'], { allowFailure: true });
    assert.equal(usage.code, 2);
    const doc = JSON.parse(usage.stderr) as { error: { code: string; field: string } };
    assert.deepEqual([doc.error.code, doc.error.field], ['VALIDATION_FAILED', '--cidr']);
    const badFormat = await imds(['status', '-o', 'xml'], { allowFailure: true });
    assert.equal(badFormat.code, 2);
    assert.match(badFormat.stderr, /^imds: VALIDATION_FAILED: option '-o, --output <format>' argument 'xml' is invalid/);
  });

  it('reports bad network input with the field and exit status, changing nothing', async () => {
    const dup = await imds(['network', 'add', 'net1', '--cidr', '203.0.113.0/24', '--service-ip', '203.0.113.2'], { allowFailure: true });
    assert.equal(dup.code, 5);
    assert.match(dup.stderr, /^imds: ALREADY_EXISTS: network "net1" already exists/);
    const outside = await imds(['network', 'add', 'net3', '--cidr', '198.51.100.0/24', '--service-ip', '203.0.113.2'], {
      allowFailure: true,
    });
    assert.equal(outside.code, 2);
    assert.match(outside.stderr, /VALIDATION_FAILED: service_ip: service_ip is outside 198\.51\.100\.0\/24/);
    const hostBits = await imds(['network', 'add', 'net3', '--cidr', '198.51.100.7/24', '--service-ip', '198.51.100.2'], {
      allowFailure: true,
    });
    assert.equal(hostBits.code, 2);
    assert.match(hostBits.stderr, /cidr: invalid CIDR "198\.51\.100\.7\/24": host bits are set/);
    const mtu = await imds(['network', 'add', 'net3', '--cidr', '192.0.2.0/24', '--service-ip', '192.0.2.2', '--mtu', 'big'], {
      allowFailure: true,
    });
    assert.equal(mtu.code, 2);
    assert.match(mtu.stderr, /--mtu: "big" is not a whole number/);
    const usage = await imds(['network', 'add', 'net3', '--cidr', '192.0.2.0/24'], { allowFailure: true });
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /required option '--service-ip <ip>' not specified/);
    const conflict = await imds(
      ['network', 'add', 'net3', '--cidr', '192.0.2.0/24', '--service-ip', '192.0.2.2', '--bridge', 'imdsb-net1'],
      { allowFailure: true },
    );
    assert.equal(conflict.code, 2);
    assert.match(conflict.stderr, /bridge: bridge "imdsb-net1" is already used by network "net1"/);
    assert.equal((await json<unknown[]>(['network', 'list'])).length, 2);
    assert.ok(!(await sb.namespaces()).includes(`${sb.nsPrefix}net3`));
  });

  it('registers a VM that its guest gets at once, with user data from a file, keys and metadata', async () => {
    guest = await sb.addGuest('one', {
      bridge: 'imdsb-net1',
      ip: '198.51.100.10',
      prefix: 24,
      mac: '52:54:00:12:34:56',
      metadataVia: '198.51.100.2',
    });
    assert.equal((await guest.http('/openstack/latest/meta_data.json')).status, 404, 'unregistered yet');
    const userData = join(sb.dir, 'user-data');
    writeFileSync(userData, '#cloud-config\nhostname: one\n');
    const key = join(sb.dir, 'key.pub');
    writeFileSync(key, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne one@example\n');

    const added = await imds([
      'vm',
      'add',
      VM1,
      '--network',
      'net1',
      '--ip',
      '198.51.100.10',
      '--mac',
      '52:54:00:12:34:56',
      '--hostname',
      'one',
      '--user-data',
      `@${userData}`,
      '--ssh-key',
      `deploy=@${key}`,
      '--meta',
      'role=web',
      '--meta',
      'tier=1',
      '--az',
      'az1',
    ]);
    assert.match(added.stdout, /^vm 1b4e28ba-2fa1-11d2-883f-0016d3cca427 added: one 198\.51\.100\.10 on net1/);
    // Served as soon as the CLI returns: the very first request after it gets the document (no
    // polling, no retry). How fast that is belongs to the bench (VM change -> served).
    const first = await guest.http('/openstack/latest/meta_data.json');
    assert.equal(first.status, 200, 'the first request after `vm add` returned is served');
    const md = JSON.parse(first.body.toString()) as Record<string, unknown>;
    assert.equal(md['uuid'], VM1);
    assert.deepEqual(md['public_keys'], { deploy: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne one@example' });
    assert.deepEqual(md['meta'], { role: 'web', tier: '1' });
    assert.equal(md['availability_zone'], 'az1');
    assert.equal((await guest.http('/openstack/latest/user_data')).body.toString(), '#cloud-config\nhostname: one\n');
  });

  it('serves new user data at once after `vm set`, and reads user data from stdin', async () => {
    assert.equal(
      (await guest.http('/openstack/latest/user_data')).body.toString(),
      '#cloud-config\nhostname: one\n',
      'the old user data before `vm set`',
    );
    await imds(['vm', 'set', VM1, '--user-data', '-'], { stdin: '#cloud-config\n# version two\n' });
    // The very first request after the CLI returned gets the new user data.
    const first = await guest.http('/openstack/latest/user_data');
    assert.deepEqual(
      [first.status, first.body.toString()],
      [200, '#cloud-config\n# version two\n'],
      'the first request after `vm set` returned',
    );
    const cleared = await json<{ user_data_bytes: number; meta?: unknown }>(['vm', 'set', VM1, '--clear', 'user-data', '--clear', 'meta']);
    assert.deepEqual([cleared.user_data_bytes, cleared.meta], [0, undefined]);
    assert.equal((await guest.http('/openstack/latest/user_data')).status, 404);
  });

  it('lists and shows VMs, and rejects bad VM input', async () => {
    const rows = await json<{ id: string; ip: string; password_set: boolean }[]>(['vm', 'list', '--network', 'net1']);
    assert.deepEqual(
      rows.map((r) => [r.id, r.ip, r.password_set]),
      [[VM1, '198.51.100.10', false]],
    );
    assert.match(
      (await imds(['vm', 'list'])).stdout,
      /^ID\s+NETWORK\s+IP\s+MAC\s+HOSTNAME\s+USER_DATA\s+PASSWORD\s+LAST_SEEN\s+LAST_STATUS\s+REQUESTS\n1b4e28ba/,
    );
    const shown = await json<{ hostname: string; public_keys: Record<string, string> }>(['vm', 'show', VM1]);
    assert.equal(shown.hostname, 'one');
    assert.ok(shown.public_keys['deploy']);

    const cases: [string[], number, RegExp][] = [
      [
        ['vm', 'add', VM2, '--network', 'net1', '--ip', '198.51.100.10', '--mac', '52:54:00:12:34:57', '--hostname', 'two'],
        2,
        /ip: 198\.51\.100\.10 is already used in network "net1" by VM 1b4e28ba/,
      ],
      [
        ['vm', 'add', VM2, '--network', 'net1', '--ip', '198.51.100.11', '--mac', '52:54:00:12:34:56', '--hostname', 'two'],
        2,
        /mac: 52:54:00:12:34:56 is already used/,
      ],
      [
        ['vm', 'add', VM2, '--network', 'net1', '--ip', '198.51.100.11', '--mac', '52:54:00:12:34:57', '--hostname', 'two_bad'],
        2,
        /hostname: must be an RFC 1123 host name/,
      ],
      [
        ['vm', 'add', VM2, '--network', 'nope', '--ip', '198.51.100.11', '--mac', '52:54:00:12:34:57', '--hostname', 'two'],
        2,
        /network: unknown network "nope"/,
      ],
      [
        [
          'vm',
          'add',
          VM2,
          '--network',
          'net1',
          '--ip',
          '198.51.100.11',
          '--mac',
          '52:54:00:12:34:57',
          '--hostname',
          'two',
          '--user-data',
          'x'.repeat(49150),
        ],
        2,
        /user_data: is 49150 bytes, 65536 once base64-encoded/,
      ],
      [
        [
          'vm',
          'add',
          VM2,
          '--network',
          'net1',
          '--ip',
          '198.51.100.11',
          '--mac',
          '52:54:00:12:34:57',
          '--hostname',
          'two',
          '--meta',
          'novalue',
        ],
        2,
        /--meta: "novalue" is not KEY=VALUE/,
      ],
      [
        ['vm', 'add', 'not-a-uuid', '--network', 'net1', '--ip', '198.51.100.11', '--mac', '52:54:00:12:34:57', '--hostname', 'two'],
        2,
        /id: must be a UUID/,
      ],
      [['vm', 'show', VM2], 4, /NOT_FOUND: no VM 2b4e28ba/],
      [['vm', 'set', VM1, '--clear', 'colour'], 2, /--clear: "colour" is not one of/],
    ];
    for (const [args, code, message] of cases) {
      const r = await imds(args, { allowFailure: true });
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    assert.equal((await json<unknown[]>(['vm', 'list'])).length, 1, 'no rejected VM was stored');
  });

  it('imports a file all or nothing', async () => {
    const vms = Array.from({ length: 50 }, (_, i) => ({
      id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      network: 'net2',
      ip: `198.51.100.${20 + i}`,
      mac: `52:54:00:00:02:${i.toString(16).padStart(2, '0')}`,
      hostname: `bulk${i}`,
      ...(i === 0 ? { user_data: Buffer.from([0x1f, 0x8b, 8, 0, 1, 2, 3]) } : {}),
    }));
    const bad = join(sb.dir, 'bad.yaml');
    writeFileSync(bad, stringify({ vms: [...vms.slice(0, 49), { ...vms[49], ip: '203.0.113.9' }] }, { customTags: ['binary'] }));
    const refused = await imds(['vm', 'import', bad], { allowFailure: true });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /batch rejected, nothing was changed: vms\[49\]\.ip: 203\.0\.113\.9 is outside network "net2"/);
    assert.equal((await json<unknown[]>(['vm', 'list', '--network', 'net2'])).length, 0);
    const good = join(sb.dir, 'good.yaml');
    writeFileSync(good, stringify({ vms }, { customTags: ['binary'] }));
    const r = await json<{ vms: { created: string[] } }>(['vm', 'import', good]);
    assert.equal(r.vms.created.length, 50);
    const again = await imds(['vm', 'import', good]);
    assert.match(again.stdout, /VMs 0 created, 0 updated, 50 unchanged, 0 deleted/);
    const shown = await json<{ user_data_b64: string }>(['vm', 'show', vms[0]?.id as string]);
    assert.deepEqual([...Buffer.from(shown.user_data_b64, 'base64')], [0x1f, 0x8b, 8, 0, 1, 2, 3]);
  });

  it('shows import progress on a terminal only, on stderr, and clears it', async () => {
    const good = join(sb.dir, 'good.yaml');
    const piped = await imds(['vm', 'import', good]);
    assert.equal(piped.stderr, '', 'no progress when stderr is not a terminal');
    // Under script(1), stderr is a terminal; stdout goes to a file, so the terminal shows stderr only.
    const out = join(sb.dir, 'import.out');
    const command = [process.execPath, join(process.cwd(), 'dist', 'main.js'), '--admin-socket', sb.adminSocket(), 'vm', 'import', good]
      .map((a) => `'${a}'`)
      .join(' ');
    const tty = await sh(['script', '-qec', `${command} > '${out}'`, '/dev/null']);
    const clear = '\r\u001b[K'; // back to the line's start, erase it
    assert.ok(tty.stdout.includes(`${clear}reading ${good}`), JSON.stringify(tty.stdout));
    assert.ok(tty.stdout.includes(`${clear}importing 0 networks and 50 VMs (`), JSON.stringify(tty.stdout));
    assert.ok(tty.stdout.endsWith(clear), `the status line is cleared at the end: ${JSON.stringify(tty.stdout)}`);
    assert.equal(
      readFileSync(out, 'utf8'),
      'imported: networks 0 created, 0 updated, 0 unchanged, 0 deleted; VMs 0 created, 0 updated, 50 unchanged, 0 deleted\n',
      'the result alone on stdout',
    );
  });

  it('fetches a path as the VM sees it, through its namespace (`vm get`)', async () => {
    const [net1Before, net2Before] = [await outputDnatPackets(sb, 'net1'), await outputDnatPackets(sb, 'net2')];
    const r = await imds(['vm', 'get', VM1, '/openstack/latest/meta_data.json']);
    assert.equal((JSON.parse(r.stdout) as { uuid: string }).uuid, VM1);
    const inc = await imds(['vm', 'get', VM1, '/openstack/latest/meta_data.json', '--include']);
    assert.match(inc.stdout, /^HTTP 200\ncontent-type: application\/json\n/);
    const missing = await imds(['vm', 'get', VM1, '/openstack/latest/user_data'], { allowFailure: true });
    assert.equal(missing.code, 4, 'a 404 exits 4');
    const other = await imds(['vm', 'get', '00000000-0000-4000-8000-000000000003', '/openstack/latest/meta_data.json', '--json']);
    assert.equal(
      (JSON.parse(Buffer.from((JSON.parse(other.stdout) as { body_b64: string }).body_b64, 'base64').toString()) as { hostname: string })
        .hostname,
      'bulk3.novalocal',
    );
    // Each probe really crossed its network's namespace and the DNAT of its output chain: one
    // connection (the first packet: NAT chains see nothing else of it) per `vm get`, nothing else.
    assert.equal((await outputDnatPackets(sb, 'net1')) - net1Before, 3, "three `vm get` of VM1 crossed net1's output DNAT");
    assert.equal((await outputDnatPackets(sb, 'net2')) - net2Before, 1, "one `vm get` of a net2 VM crossed net2's output DNAT");
  });

  it('sets the EC2 and network_data fields from flags', async () => {
    await imds([
      'vm',
      'set',
      VM1,
      '--public-ip',
      '203.0.113.9',
      '--instance-type',
      'm1.tiny',
      '--security-group',
      'web',
      '--vendor-data',
      '{"owner":"ops"}',
    ]);
    await imds(['network', 'set', 'net1', '--dns', '192.0.2.53', '--vendor-data', '{"site":"east"}']);
    assert.equal((await imds(['vm', 'get', VM1, '/latest/meta-data/public-ipv4'])).stdout, '203.0.113.9');
    assert.equal((await imds(['vm', 'get', VM1, '/2009-04-04/meta-data/instance-type'])).stdout, 'm1.tiny');
    assert.equal((await imds(['vm', 'get', VM1, '/latest/meta-data/security-groups'])).stdout, 'web');
    assert.deepEqual(JSON.parse((await imds(['vm', 'get', VM1, '/openstack/latest/vendor_data.json'])).stdout), {
      site: 'east',
      owner: 'ops',
    });
    const nd = JSON.parse((await imds(['vm', 'get', VM1, '/openstack/latest/network_data.json'])).stdout) as { services: unknown[] };
    assert.deepEqual(nd.services, [{ type: 'dns', address: '192.0.2.53' }]);
    const bad = await imds(['vm', 'set', VM1, '--vendor-data', '[1]'], { allowFailure: true });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--vendor-data: must be a JSON object/);
    await imds(['vm', 'set', VM1, '--clear', 'public-ip']);
    // Without a floating IP it is still listed and answers 200 with an empty body, as Nova does.
    const cleared = await imds(['vm', 'get', VM1, '/latest/meta-data/public-ipv4', '-i']);
    assert.match(cleared.stdout, /^HTTP 200\n/);
    assert.match(cleared.stdout, /^content-length: 0$/m);
    assert.match(cleared.stdout, /\n\n$/, 'an empty body');
    assert.match((await imds(['vm', 'get', VM1, '/latest/meta-data/'])).stdout, /^public-ipv4$/m);
  });

  it('shows and clears the password', async () => {
    assert.equal((await imds(['vm', 'password', VM1])).stdout, '\n');
    assert.deepEqual(await json(['vm', 'password', VM1]), { password: '' });
    assert.match((await imds(['vm', 'password', VM1, '--clear'])).stdout, /password cleared/);
  });

  it('finds a VM by host name, address, MAC or NET/address, and refuses an ambiguous address listing both', async () => {
    await imds(['vm', 'add', VM2, '--network', 'net2', '--ip', '198.51.100.10', '--mac', '52:54:00:12:34:57', '--hostname', 'two']);
    assert.equal((await json<{ id: string }>(['vm', 'show', 'one'])).id, VM1);
    assert.equal((await json<{ id: string }>(['vm', 'show', '52:54:00:12:34:57'])).id, VM2);
    assert.equal((await json<{ id: string }>(['vm', 'show', 'net2/198.51.100.10'])).id, VM2);
    const ambiguous = await imds(['vm', 'show', '198.51.100.10'], { allowFailure: true });
    assert.equal(ambiguous.code, 2);
    assert.match(ambiguous.stderr, /^imds: AMBIGUOUS: "198\.51\.100\.10" names 2 VMs: /);
    assert.ok(ambiguous.stderr.includes(VM1) && ambiguous.stderr.includes(VM2), ambiguous.stderr);
    assert.equal((JSON.parse((await imds(['vm', 'get', 'one', '/openstack/latest/meta_data.json'])).stdout) as { uuid: string }).uuid, VM1);
    assert.match((await imds(['vm', 'rm', 'two'])).stdout, new RegExp(`^vm ${VM2} deleted`));
    const gone = await imds(['vm', 'show', 'two'], { allowFailure: true });
    assert.equal(gone.code, 4);
  });

  it('reports status and metrics', async () => {
    const s = await json<{ daemon: { pid: number; listen_port: number }; networks: { id: string; state: string }[]; vms: number }>([
      'status',
    ]);
    assert.equal(s.daemon.listen_port, 8775);
    assert.equal(s.vms, 51);
    assert.ok(s.networks.every((n) => n.state === 'serving'));
    assert.match((await imds(['status'])).stdout, /^version:\s+0\.1\.0/m);
    const metrics = await sh(['curl', '-s', '--unix-socket', sb.adminSocket(), 'http://imds/metrics']);
    assert.match(metrics.stdout, /imds_requests_total\{network="net1",status="200"\} \d+/);
    assert.match(metrics.stdout, /imds_requests_total\{network="net1",status="404"\} \d+/);
    assert.match(metrics.stdout, /imds_vms 51/);
  });

  it('keeps the admin API out of every guest network', async () => {
    // Not served by the metadata listener…
    assert.equal((await guest.http('/v1/networks')).status, 404);
    assert.equal((await guest.http('/metrics')).status, 404);
    // …no TCP listener anywhere a guest could reach but the DNATed metadata port…
    const inNs = await sh(['ip', 'netns', 'exec', `${sb.nsPrefix}net1`, 'ss', '-Hltn']);
    assert.deepEqual(
      inNs.stdout
        .trim()
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[3]),
      ['0.0.0.0:8775'],
    );
    const inHv = await sb.hvRun(['ss', '-Hltn']);
    assert.equal(inHv.stdout.trim(), '', 'nothing listens in the hypervisor namespace');
    const direct = await guest.exec(['curl', '-s', '--max-time', '2', 'http://198.51.100.2:8775/'], { allowFailure: true });
    assert.notEqual(direct.code, 0);
    // …and the admin socket is a filesystem socket (not an abstract one a namespace could reach), 0660 root.
    const st = await sh(['stat', '-c', '%F %a %U', sb.adminSocket()]);
    assert.equal(st.stdout.trim(), 'socket 660 root');
    // Unix sockets are listed per network namespace: look in the daemon's own (the hypervisor
    // namespace), where its admin socket must show (else this check could see nothing).
    const unix = (await sb.hvRun(['ss', '-Hxap'])).stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => l.trim().split(/\s+/));
    const local = unix.map((f) => f[4] as string);
    assert.ok(
      local.includes(sb.adminSocket()),
      `the daemon's admin socket is listed in its namespace:\n${unix.map((f) => f.join(' ')).join('\n')}`,
    );
    const abstract = unix.filter((f) => (f[4] as string).startsWith('@'));
    assert.deepEqual(
      abstract.map((f) => f.join(' ')),
      [],
      "no abstract unix socket in the daemon's namespace",
    );
  });

  it('removes VMs and networks', async () => {
    assert.match((await imds(['vm', 'rm', VM1])).stdout, /^vm 1b4e28ba-2fa1-11d2-883f-0016d3cca427 deleted/);
    assert.equal((await guest.http('/openstack/latest/meta_data.json')).status, 404, 'gone at once');
    const refused = await imds(['network', 'rm', 'net2'], { allowFailure: true });
    assert.equal(refused.code, 5);
    assert.match(refused.stderr, /NETWORK_NOT_EMPTY: network "net2" still has 50 VMs; remove them first or use --force/);
    const forced = await json<{ vms_deleted: number }>(['network', 'rm', 'net2', '--force']);
    assert.equal(forced.vms_deleted, 50);
    assert.ok(!(await sb.namespaces()).includes(`${sb.nsPrefix}net2`), 'namespace removed');
    assert.equal((await sb.hvLinks())['imdsb-net2'], undefined, 'bridge removed');
    assert.match((await imds(['network', 'rm', 'net1'])).stdout, /network net1 deleted/);
  });

  it('exits 3 when the daemon cannot be reached, naming the socket (flag, then IMDS_ADMIN_SOCKET)', async () => {
    const main = join(process.cwd(), 'dist', 'main.js');
    const nowhere = join(sb.dir, 'nowhere', 'admin.sock');
    const elsewhere = join(sb.dir, 'elsewhere.sock');
    const named = (path: string) =>
      new RegExp(`^imds: DAEMON_UNREACHABLE: cannot reach the daemon at ${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `);
    const flag = await sh(['env', `IMDS_ADMIN_SOCKET=${sb.adminSocket()}`, process.execPath, main, '--admin-socket', nowhere, 'status'], {
      allowFailure: true,
    });
    assert.equal(flag.code, 3, flag.stderr);
    assert.match(flag.stderr, named(nowhere), '--admin-socket wins over IMDS_ADMIN_SOCKET');
    const env = await sh(['env', `IMDS_ADMIN_SOCKET=${elsewhere}`, process.execPath, main, 'status'], { allowFailure: true });
    assert.equal(env.code, 3, env.stderr);
    assert.match(env.stderr, named(elsewhere));
    const reached = await sh(['env', `IMDS_ADMIN_SOCKET=${sb.adminSocket()}`, process.execPath, main, 'network', 'list', '--json']);
    assert.deepEqual(JSON.parse(reached.stdout), []);
  });
});
