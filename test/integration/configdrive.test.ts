// Config drives through the real daemon and CLI: each image is extracted without mounting
// (xorriso for ISO, mtools for vfat), labelled config-2 (blkid), compared file by file with what the
// HTTP tree serves the VM's guest, and read by cloud-init's own ConfigDriveReader.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  existsSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { Guest } from '../helpers/sandbox.ts';
import { useSandbox, type DaemonProcess, type Sandbox } from '../helpers/sandbox.ts';

const VM = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const USER_DATA = gzipSync(Buffer.from('#cloud-config\nruncmd:\n  - [echo, "config drive ☃"]\n'));
const SEED = /"random_seed": "[^"]*"/;

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

function extract(image: string, format: 'iso' | 'vfat', into: string): void {
  mkdirSync(into, { recursive: true });
  if (format === 'iso') execFileSync('xorriso', ['-osirrox', 'on', '-indev', image, '-extract', '/', into], { stdio: 'pipe' });
  else execFileSync('mcopy', ['-s', '-n', '-i', image, '::/openstack', '::/ec2', into], { stdio: 'pipe' });
}

describe('config drive', () => {
  const current = useSandbox({ before, after, afterEach });
  let sb: Sandbox;
  let daemon: DaemonProcess;
  let guest: Guest;
  let work: string;
  /** The daemon's TMPDIR (where it builds images): inside the sandbox, never the host's /tmp. */
  let tmp: string;
  const cli = (args: string[], allowFailure = false) => sb.cli(['--admin-socket', sb.adminSocket(), ...args], { allowFailure });

  before(async () => {
    sb = current();
    work = mkdtempSync(join(sb.dir, 'cd-'));
    tmp = join(sb.dir, 'daemon-tmp');
    mkdirSync(tmp);
    // Dated in the past: any entry made in it and removed again shows as a newer modification time.
    utimesSync(tmp, new Date(2000, 0, 1), new Date(2000, 0, 1));
    daemon = await sb.startDaemon(
      sb.writeConfig(
        sb.config({
          log_level: 'info',
          networks: [
            {
              id: 'net1',
              cidr: '198.51.100.0/24',
              service_ip: '198.51.100.2',
              gateway: '198.51.100.1',
              dns: ['192.0.2.53'],
              vendor_data: { site: 'east' },
            },
          ],
          vms: [
            {
              id: VM,
              network: 'net1',
              ip: '198.51.100.10',
              mac: '52:54:00:00:00:0a',
              hostname: 'drive',
              user_data: USER_DATA,
              public_keys: { deploy: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA deploy@build' },
              meta: { role: 'db' },
              vendor_data: { cloud: 'imds' },
              public_ipv4: '203.0.113.10',
            },
          ],
        }),
      ),
      { env: { TMPDIR: tmp } },
    );
    guest = await sb.addGuest('a', {
      bridge: 'imdsb-net1',
      prefix: 24,
      ip: '198.51.100.10',
      mac: '52:54:00:00:00:0a',
      metadataVia: '198.51.100.2',
    });
  });

  for (const format of ['iso', 'vfat'] as const) {
    it(`${format}: labelled config-2, every file as the HTTP tree serves it, read by cloud-init's ConfigDriveReader`, async () => {
      const image = join(work, `drive.${format}`);
      const r = await cli(['vm', 'configdrive', VM, '-o', image, '--format', format]);
      assert.match(r.stderr, new RegExp(`wrote .*drive\\.${format} \\(${format}, \\d+ bytes, label config-2\\)`));
      const blkid = execFileSync('blkid', ['-o', 'export', image]).toString();
      assert.match(blkid, /^LABEL=config-2$/m);
      assert.match(blkid, format === 'iso' ? /^TYPE=iso9660$/m : /^TYPE=vfat$/m);
      if (format === 'vfat') assert.equal(statSync(image).size, 64 * 1024 * 1024);
      else {
        const info = execFileSync('isoinfo', ['-d', '-i', image]).toString();
        assert.match(info, /Rock Ridge signatures version \d+ found/);
        assert.match(info, /Joliet with UCS level \d+ found/);
        assert.match(info, /Volume id: config-2/);
      }

      const dir = join(work, `x-${format}`);
      extract(image, format, dir);
      const files = walk(dir)
        .map((p) => relative(dir, p))
        .sort();
      assert.ok(files.length >= 40, files.join('\n'));
      assert.ok(!files.some((f) => f.includes('password')), 'no password file');
      for (const f of files) {
        const onDrive = readFileSync(join(dir, f));
        if (f.startsWith('openstack/')) {
          const http = await guest.http(`/${f}`);
          assert.equal(http.status, 200, f);
          if (f.endsWith('meta_data.json')) assert.equal(onDrive.toString().replace(SEED, ''), http.body.toString().replace(SEED, ''), f);
          else assert.ok(onDrive.equals(http.body), f);
        } else if (f.endsWith('user-data')) {
          assert.ok(onDrive.equals(USER_DATA), f);
          assert.ok((await guest.http(`/${f.slice('ec2/'.length)}`)).body.equals(USER_DATA));
        } else {
          assert.match(f, /^ec2\/(2009-04-04|latest)\/meta-data\.json$/);
          const md = JSON.parse(onDrive.toString()) as Record<string, unknown>;
          // Every leaf is what the EC2 tree answers at that path.
          const leaves: [string, string][] = [];
          const visit = (node: unknown, path: string): void => {
            if (typeof node === 'string') leaves.push([path, node]);
            else if (Array.isArray(node)) leaves.push([path, node.join('\n')]);
            else for (const [k, v] of Object.entries(node as Record<string, unknown>)) if (k !== '_name') visit(v, `${path}/${k}`);
          };
          visit(md, '');
          assert.ok(leaves.length >= 15, String(leaves.length));
          for (const [path, value] of leaves) {
            const http = await guest.http(`/2009-04-04/meta-data${path}`);
            assert.equal(http.status, 200, path);
            assert.equal(http.body.toString(), value, path);
          }
        }
      }
      const versions = new Set(files.filter((f) => f.startsWith('openstack/')).map((f) => f.split('/')[1]));
      assert.equal(versions.size, 11, [...versions].join(' '));

      const read = await guest.python<Record<string, unknown>>([
        'import json',
        'from cloudinit.sources.helpers import openstack',
        `res = openstack.ConfigDriveReader(${JSON.stringify(dir)}).read_v2()`,
        "md = res['metadata']",
        "print(json.dumps({'uuid': md['uuid'], 'hostname': md['hostname'], 'keys': md.get('public_keys'), 'ud_len': " +
          "len(res['userdata']), 'ud_head': list(res['userdata'][:2]), 'vendor': res['vendordata'], 'net': res['networkdata'], " +
          "'ec2': res['ec2-metadata'].get('local-ipv4'), 'version': res['version']}))",
      ]);
      assert.equal(read['uuid'], VM);
      assert.equal(read['hostname'], 'drive.novalocal');
      assert.deepEqual(read['keys'], { deploy: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA deploy@build' });
      assert.equal(read['ud_len'], USER_DATA.length);
      assert.deepEqual(read['ud_head'], [0x1f, 0x8b]);
      assert.deepEqual(read['vendor'], { site: 'east', cloud: 'imds' });
      const netData = read['net'] as { links: { ethernet_mac_address: string }[]; networks: { ip_address: string; type: string }[] };
      assert.equal(netData.links[0]?.ethernet_mac_address, '52:54:00:00:00:0a');
      assert.equal(netData.networks[0]?.ip_address, '198.51.100.10');
      assert.equal(read['ec2'], '198.51.100.10');
      assert.equal(read['version'], 2);
    });
  }

  it('-o - writes the image to stdout; a second write replaces the file whole', async () => {
    const image = join(work, 'again.iso');
    writeFileSync(image, 'old content');
    await cli(['vm', 'configdrive', VM, '-o', image]);
    assert.match(execFileSync('blkid', ['-o', 'export', image]).toString(), /^LABEL=config-2$/m);
    assert.deepEqual(
      readdirSync(work).filter((n) => n.includes('.tmp-')),
      [],
      'no temporary file left',
    );
    const out = execFileSync(
      'nsenter',
      [
        `--net=/run/netns/${sb.hv}`,
        '--',
        process.execPath,
        join(process.cwd(), 'dist', 'main.js'),
        '--admin-socket',
        sb.adminSocket(),
        'vm',
        'configdrive',
        VM,
        '-o',
        '-',
      ],
      { maxBuffer: 16 << 20 },
    );
    assert.equal(out.subarray(0x8001, 0x8006).toString(), 'CD001', 'an ISO 9660 volume descriptor');
  });

  it('names the problem: unknown VM, bad format, unwritable output; nothing is written', async () => {
    const unknown = await cli(['vm', 'configdrive', '2c5f39cb-3fb2-42e3-994f-1127e4ddb538', '-o', join(work, 'none.iso')], true);
    assert.equal(unknown.code, 4);
    assert.match(unknown.stderr, /NOT_FOUND/);
    assert.ok(!existsSync(join(work, 'none.iso')));
    const fmt = await cli(['vm', 'configdrive', VM, '-o', join(work, 'x.img'), '--format', 'qcow2'], true);
    assert.equal(fmt.code, 2);
    assert.match(fmt.stderr, /--format: "qcow2" is not iso or vfat/);
    const noDir = await cli(['vm', 'configdrive', VM, '-o', join(work, 'missing', 'x.iso')], true);
    assert.equal(noDir.code, 2);
    assert.match(noDir.stderr, /--output: cannot write .*: directory .*missing does not exist/);
    const isDir = await cli(['vm', 'configdrive', VM, '-o', work], true);
    assert.equal(isDir.code, 2);
    assert.match(isDir.stderr, /--output: cannot write .*: is a directory/);
  });

  it('names the Debian package of a missing tool', async () => {
    // A second daemon whose PATH has everything in /usr/sbin except mkfs.vfat.
    const bin = join(work, 'sbin');
    mkdirSync(bin);
    for (const name of readdirSync('/usr/sbin'))
      if (!name.startsWith('mkfs.vfat') && !name.startsWith('mkfs.fat')) symlinkSync(join('/usr/sbin', name), join(bin, name));
    await daemon.stop();
    const cfg = join(sb.dir, 'imds.yaml');
    daemon = await sb.startDaemon(cfg, { env: { PATH: `${bin}:/usr/bin`, TMPDIR: tmp } });
    // The earlier builds worked in the daemon's TMPDIR and left nothing there; date it again.
    assert.ok(statSync(tmp).mtimeMs > new Date(2001, 0, 1).getTime(), "the earlier builds worked in the daemon's TMPDIR");
    assert.deepEqual(readdirSync(tmp), [], "nothing left in the daemon's TMPDIR by the earlier builds");
    utimesSync(tmp, new Date(2000, 0, 1), new Date(2000, 0, 1));
    const r = await cli(['vm', 'configdrive', VM, '-o', join(work, 'nofat.img'), '--format', 'vfat'], true);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /COMMAND_NOT_FOUND: mkfs\.vfat is not installed: install the Debian package dosfstools/);
    assert.ok(!existsSync(join(work, 'nofat.img')));
    assert.ok(statSync(tmp).mtimeMs > new Date(2001, 0, 1).getTime(), "the failed build worked in the daemon's TMPDIR");
    assert.deepEqual(readdirSync(tmp), [], 'the work directory was removed');
    rmSync(bin, { recursive: true, force: true });
  });
});
