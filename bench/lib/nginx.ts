// Two more peers on the same path (issue 16): nginx, one per network namespace as lighttpd is, on
// the same port behind the same DNAT.
//   - nginx-map: what an operator might pick instead of imds. `map $remote_addr $vm` picks the
//     caller's directory (the same files as lighttpd's, written by writeVmFiles), and a few regex
//     locations map the OpenStack and EC2 paths onto them, as lighttpd's rewrite chain does.
//   - nginx-const: every request answered with one constant body of meta_data.json's size: the
//     cost of the path itself (accept, parse, write, close), the ceiling for any server here.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeVmFiles } from './peer.ts';
import type { BenchVm } from './topology.ts';

export type NginxKind = 'map' | 'const';

function common(dir: string, port: number, body: string): string {
  return [
    'daemon off;',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'worker_rlimit_nofile 32768;',
    'events { worker_connections 16384; multi_accept on; }',
    'http {',
    '  access_log off;',
    '  server_tokens off;',
    `  client_body_temp_path ${dir}/tmp;`,
    '  types { application/json json; }',
    '  default_type "text/plain; charset=UTF-8";',
    '  keepalive_timeout 5s;',
    body,
    `  server {\n    listen ${port} backlog=4096;\n    root ${dir}/docroot;\n    include ${dir}/locations.conf;\n  }`,
    '}',
    '',
  ].join('\n');
}

/** The locations of nginx-map: each path class onto the caller's file (404 for strangers). */
const MAP_LOCATIONS = [
  'if ($vm = "") { return 404; }',
  'location ~ ^/openstack/?$ { try_files /$vm/openstack =404; }',
  'location ~ /meta_data\\.json$ { default_type application/json; try_files /$vm/meta_data.json =404; }',
  'location ~ /user_data$ { try_files /$vm/user_data =404; }',
  'location ~ /vendor_data\\.json$ { default_type application/json; try_files /$vm/vendor_data.json =404; }',
  'location ~ /vendor_data2\\.json$ { default_type application/json; try_files /$vm/vendor_data2.json =404; }',
  'location ~ /network_data\\.json$ { default_type application/json; try_files /$vm/network_data.json =404; }',
  'location ~ ^/[^/]+/meta-data/?$ { try_files /$vm/meta-data/index =404; }',
  'location ~ ^/[^/]+/meta-data/(.+?)/?$ { try_files /$vm/meta-data/$1 /$vm/meta-data/$1/index =404; }',
  'location ~ ^/[^/]+/user-data$ { try_files /$vm/user-data =404; }',
  'location / { return 404; }',
];

/** Writes one network's nginx (its documents for nginx-map); returns the configuration file. */
export function writeNginx(
  kind: NginxKind,
  dir: string,
  net: { id: string; cidr: string; service_ip: string; gateway: string },
  vms: BenchVm[],
  port: number,
  constBody: string,
): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  mkdirSync(join(dir, 'docroot'), { recursive: true });
  let body = '';
  if (kind === 'map') {
    for (const vm of vms) writeVmFiles(join(dir, 'docroot'), net, vm);
    body = `  map $remote_addr $vm {\n    default "";\n${vms.map((v) => `    ${v.ip} ${v.ip};`).join('\n')}\n  }`;
    writeFileSync(join(dir, 'locations.conf'), `${MAP_LOCATIONS.join('\n')}\n`);
  } else {
    // The body as a quoted nginx string: no quotes or backslashes in it.
    writeFileSync(
      join(dir, 'locations.conf'),
      `location / { default_type application/json; return 200 "${constBody.replace(/["\\$]/g, 'x')}"; }\n`,
    );
  }
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, common(dir, port, body));
  return conf;
}

/** Starts nginx in the foreground inside the namespace (network only); its master's pid is the child's. */
export function startNginx(netns: string, conf: string): ChildProcess {
  return spawn('nsenter', [`--net=/run/netns/${netns}`, '--', 'nginx', '-c', conf, '-e', `${conf}.err`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/** The pids to charge CPU and memory to: each master and its workers. */
export function withChildren(pids: number[]): number[] {
  const out: number[] = [];
  for (const pid of pids) {
    out.push(pid);
    try {
      const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
      if (children !== '') out.push(...children.split(' ').map(Number));
    } catch {
      // gone
    }
  }
  return out;
}

/** One nginx of `kind` per network, started; stop() kills masters and workers. */
export function startNginxPeers(
  kind: NginxKind,
  dir: string,
  nsPrefix: string,
  nets: { id: string; cidr: string; service_ip: string; gateway: string }[],
  vmsOf: (k: number) => BenchVm[],
  constBody: string,
): { pids: () => number[]; stop: () => void } {
  const procs = nets.map((n, k) => startNginx(`${nsPrefix}${n.id}`, writeNginx(kind, join(dir, n.id), n, vmsOf(k), 8775, constBody)));
  const pids = (): number[] => withChildren(procs.map((p) => p.pid as number));
  return {
    pids,
    stop: () => {
      for (const pid of pids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    },
  };
}

interface Row {
  storm1000: { wall_ms: number; server_cpu_us_per_req: number; failures: number; status: Record<string, number> }[];
  steady: Record<string, { rps: number; p99_us: number }[]>;
}

/** The data path's peers side by side: imds, lighttpd, nginx-map, nginx-const (issue 16's targets). */
export function peersTable(results: Record<string, unknown>, median: (v: number[]) => number): string {
  const servers: [string, string][] = [
    ['imds', 'imds (data_plane: native)'],
    ['imds_node', 'imds (data_plane: node)'],
    ['peer', 'lighttpd (zstack)'],
    ['nginx_map', 'nginx map $remote_addr'],
    ['nginx_const', 'nginx constant body'],
  ];
  const rows = servers
    .filter(([key]) => results[key] !== undefined && (results[key] as Partial<Row>).storm1000 !== undefined)
    .map(([key, name]) => {
      const r = results[key] as Row;
      const c16 = r.steady['c16'] ?? [];
      const statuses = JSON.stringify(r.storm1000[0]?.status ?? {});
      return (
        `| ${name} | ${Math.round(median(r.storm1000.map((s) => s.wall_ms)))} | ` +
        `${median(r.storm1000.map((s) => s.server_cpu_us_per_req))} | ${r.storm1000.reduce((n, s) => n + s.failures, 0)} | ` +
        `${statuses} | ${Math.round(median(c16.map((w) => w.rps)))} | ${Math.round(median(c16.map((w) => w.p99_us)))} |`
      );
    });
  return (
    `\n| server (1,000 VMs) | storm 1,000 wall ms | server CPU µs/req | failures | answers (one storm) | c=16 req/s | c=16 ` +
    `p99 µs |\n|---|---|---|---|---|---|---|\n${rows.join('\n')}\n`
  );
}
