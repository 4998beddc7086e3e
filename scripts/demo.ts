// The demo behind `sudo ./scripts/demo.sh`: a throwaway hypervisor namespace, one imds network with
// three guests on its bridge (the seed's ns0/ns1/ns2), each fetching its own metadata through
// 169.254.169.254, an unregistered guest getting 404, an IMDSv2 token, a piece of the network
// deleted by hand and repaired, then everything removed again.
import { Sandbox, type Guest } from '../test/helpers/sandbox.ts';

const GUESTS = [
  { name: 'ns0', id: 'a0000000-0000-4000-8000-000000000000', ip: '192.0.2.10', mac: '52:54:00:c0:00:10' },
  { name: 'ns1', id: 'a0000000-0000-4000-8000-000000000001', ip: '192.0.2.11', mac: '52:54:00:c0:00:11' },
  { name: 'ns2', id: 'a0000000-0000-4000-8000-000000000002', ip: '192.0.2.12', mac: '52:54:00:c0:00:12' },
];

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = ''): void => void process.stdout.write(`${s}\n`);

async function main(sb: Sandbox): Promise<void> {
  say(bold('imds demo: one network, three guests, 169.254.169.254 through a bridge and an nftables DNAT'));
  say(`hypervisor (throwaway namespace): ${sb.hv}`);
  await sb.setup();
  const config = sb.config({
    log_level: 'info',
    networks: [{ id: 'demo', cidr: '192.0.2.0/24', service_ip: '192.0.2.2', gateway: '192.0.2.1' }],
    vms: GUESTS.map((g) => ({
      id: g.id,
      network: 'demo',
      ip: g.ip,
      mac: g.mac,
      hostname: g.name,
      user_data: `#cloud-config\nhostname: ${g.name}\nfqdn: ${g.name}.demo.example\n`,
      public_keys: { demo: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDEMO ${g.name}@demo` },
      meta: { role: g.name === 'ns0' ? 'db' : 'web' },
    })),
  });
  const path = sb.writeConfig(config);
  say(`configuration: ${path}`);
  const started = performance.now();
  const daemon = await sb.startDaemon(path);
  say(`daemon ready in ${Math.round(performance.now() - started)} ms (imds serve, pid in ${sb.dir}/state/imds.pid)`);
  say();
  say(bold('kernel objects imds built'));
  say((await sb.hvRun(['ip', '-br', 'link', 'show'])).stdout.trimEnd().replace(/^/gm, '  hypervisor: '));
  const ns = `${sb.nsPrefix}demo`;
  say((await sb.hvRun(['ip', '-n', ns, '-br', 'addr', 'show', 'imds0'])).stdout.trimEnd().replace(/^/gm, `  ${ns}: `));
  say(
    (await sb.hvRun(['nsenter', `--net=/run/netns/${ns}`, 'nft', 'list', 'table', 'ip', 'imds'])).stdout
      .trimEnd()
      .replace(/^/gm, '  nft: '),
  );
  say();

  const guests: Guest[] = [];
  for (const g of GUESTS) {
    guests.push(await sb.addGuest(g.name, { bridge: 'imdsb-demo', ip: g.ip, prefix: 24, mac: g.mac, metadataVia: '192.0.2.2' }));
  }
  for (const g of guests) {
    say(bold(`guest ${g.name} (${g.ip}): curl http://169.254.169.254/openstack/latest/meta_data.json`));
    const md = await g.http('/openstack/latest/meta_data.json');
    const doc = JSON.parse(md.body.toString()) as Record<string, unknown>;
    say(`  HTTP ${md.status} ${md.headers['content-type']}`);
    say(
      `  uuid=${String(doc['uuid'])} hostname=${String(doc['hostname'])} meta=${JSON.stringify(doc['meta'])} ` +
        `keys=${Object.keys(doc['public_keys'] as object).join(',')}`,
    );
    const ud = await g.http('/openstack/latest/user_data');
    say(`  user_data (HTTP ${ud.status}): ${JSON.stringify(ud.body.toString())}`);
  }
  const stranger = await sb.addGuest('stranger', {
    bridge: 'imdsb-demo',
    ip: '192.0.2.99',
    prefix: 24,
    mac: '52:54:00:c0:00:99',
    metadataVia: '192.0.2.2',
  });
  const r = await stranger.http('/openstack/latest/meta_data.json');
  say(bold(`unregistered guest 192.0.2.99: HTTP ${r.status}`));
  say();

  const g0 = guests[0] as Guest;
  say(bold(`guest ${g0.name}: IMDSv2 session token (PUT /latest/api/token), then a GET with it`));
  const tok = await g0.http('/latest/api/token', { method: 'PUT', headers: ['X-aws-ec2-metadata-token-ttl-seconds: 300'] });
  say(
    `  PUT: HTTP ${tok.status}, token ${tok.body.toString().slice(0, 12)}… (${tok.body.length} characters, valid 300 s, for ${g0.name} only)`,
  );
  const withTok = await g0.http('/latest/meta-data/instance-id', { headers: [`X-aws-ec2-metadata-token: ${tok.body.toString()}`] });
  say(`  GET /latest/meta-data/instance-id with it: HTTP ${withTok.status} ${withTok.body.toString()}`);
  const stolen = await (guests[1] as Guest).http('/latest/meta-data/instance-id', {
    headers: [`X-aws-ec2-metadata-token: ${tok.body.toString()}`],
  });
  say(`  the same token from ${(guests[1] as Guest).name}: HTTP ${stolen.status}`);
  say();

  say(bold('self-healing: delete the namespace veth by hand (ip link del imdsv-demo)'));
  const mark = daemon.logs.length;
  const t0 = performance.now();
  await sb.hvRun(['ip', 'link', 'del', 'imdsv-demo']);
  const repaired = await daemon.waitFor((l) => l['msg'] === 'repaired kernel drift' && daemon.logs.indexOf(l) >= mark, 10_000);
  say(
    `  daemon log after ${Math.round(performance.now() - t0)} ms: repaired kernel drift — wrong: ` +
      `${JSON.stringify(repaired['wrong'])}, done: ${JSON.stringify(repaired['done'])}`,
  );
  const again = await g0.http('/openstack/latest/meta_data.json');
  say(`  guest ${g0.name} asks again: HTTP ${again.status}`);
  say();
}

const sb = new Sandbox('imdsdemo-');
let cleaning: Promise<void> | undefined;
const cleanup = async (): Promise<void> => {
  cleaning ??= (async () => {
    say(bold('cleaning up: stopping the daemon, `imds down`, removing the guests and the hypervisor namespace'));
    try {
      await sb.cleanupDaemons();
      const down = await sb.cli(['down', '--config', `${sb.dir}/imds.yaml`], { allowFailure: true });
      if (down.stdout.trim()) say(`  imds down: ${down.stdout.trim()}`);
    } finally {
      await sb.cleanup();
    }
    say('done; nothing left behind');
  })();
  return cleaning;
};
process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
process.on('SIGTERM', () => void cleanup().then(() => process.exit(143)));

try {
  await main(sb);
} catch (err) {
  process.exitCode = 1;
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
} finally {
  await cleanup();
}
