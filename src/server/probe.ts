// `imds vm get`: fetch a path as a VM would see it, through the real namespace, its nft DNAT, the
// listening socket and the metadata app. The connection is opened inside the network's namespace
// to 169.254.169.254:80 (DNATed by the table's output chain); the app recognises the daemon's own
// probe by its local source address and the VM it names.
import { request } from 'node:http';
import { Socket } from 'node:net';
import { ImdsError } from '../errors.ts';
import { METADATA_IP } from '../model/names.ts';
import { socketInNetns } from '../netns/addon.ts';
import { PROBE_HEADER, probeHeaderValue } from './guest-api.ts';

export interface ProbeResult {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export function probe(netns: string, vmId: string, path: string, method = 'GET', timeoutMs = 5000): Promise<ProbeResult> {
  if (!path.startsWith('/')) path = `/${path}`;
  return new Promise((resolve, reject) => {
    const fd = socketInNetns(netns);
    const socket = new Socket({ fd, readable: true, writable: true });
    const req = request(
      {
        createConnection: () => socket.connect(80, METADATA_IP),
        method,
        path,
        headers: { host: METADATA_IP, [PROBE_HEADER]: probeHeaderValue(vmId), 'user-agent': 'imds-probe', connection: 'close' },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
          resolve({ status: res.statusCode ?? 0, headers, body: Buffer.concat(chunks) });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) =>
      reject(new ImdsError('COMMAND_FAILED', `probe of ${path} in ${netns} failed: ${err.message}`, { cause: err })),
    );
    req.end();
  });
}
