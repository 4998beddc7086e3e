// The CLI's client of the admin API: HTTP over the daemon's Unix socket.
import { request } from 'node:http';
import { ImdsError, type ErrorCode, ERROR_CODES } from '../errors.ts';

export const DEFAULT_ADMIN_SOCKET = '/run/imds/admin.sock';

export function adminSocketOf(flag: string | undefined): string {
  return flag ?? process.env['IMDS_ADMIN_SOCKET'] ?? DEFAULT_ADMIN_SOCKET;
}

/** Seconds the CLI waits for the daemon's answer by default. */
export const DEFAULT_TIMEOUT_S = 30;
/** ... for a call that builds kernel objects or many records (network add/set/rm, vm import, reload, restart). */
export const LONG_TIMEOUT_S = 300;

/**
 * Milliseconds to wait for an answer: `--timeout`, else $IMDS_TIMEOUT, else the default for the kind of
 * call; 0 waits for ever. A value that is not a number of seconds is refused (VALIDATION_FAILED).
 */
export function timeoutOf(flag: string | undefined, long = false): number {
  const given = flag ?? process.env['IMDS_TIMEOUT'];
  if (given === undefined || given === '') return (long ? LONG_TIMEOUT_S : DEFAULT_TIMEOUT_S) * 1000;
  const field = flag === undefined ? 'IMDS_TIMEOUT' : '--timeout';
  if (!/^\d+(\.\d+)?$/.test(given))
    throw new ImdsError('VALIDATION_FAILED', `${field}: "${given}" is not a number of seconds (0: no timeout)`, { field });
  return Math.round(Number(given) * 1000);
}

export class AdminClient {
  readonly socketPath: string;
  /** How long to wait for the whole answer, in ms; 0: for ever. */
  readonly timeoutMs: number;

  constructor(socketPath: string, timeoutMs = DEFAULT_TIMEOUT_S * 1000) {
    this.socketPath = socketPath;
    this.timeoutMs = timeoutMs;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { status, body: raw } = await this.exchange(method, path, body);
    const text = raw.toString('utf8');
    const parsed: unknown = text === '' ? undefined : JSON.parse(text);
    if (status >= 400) throw errorOf(status, parsed);
    return parsed as T;
  }

  /** A binary answer (config drive images): the body as bytes; errors as `call` reports them. */
  async download(path: string): Promise<Buffer> {
    const { status, body } = await this.exchange('GET', path, undefined);
    if (status >= 400) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        parsed = undefined;
      }
      throw errorOf(status, parsed);
    }
    return body;
  }

  private async exchange(method: string, path: string, body: unknown): Promise<{ status: number; body: Buffer }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': payload.length },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) });
          });
        },
      );
      // The whole exchange, body included, within the timeout; unref'd: a finished call never waits for it.
      const timer =
        this.timeoutMs > 0
          ? setTimeout(() => {
              req.destroy(this.timeoutError(method, path));
            }, this.timeoutMs).unref()
          : undefined;
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (err instanceof ImdsError) {
          reject(err);
          return;
        }
        const why =
          err.code === 'ENOENT'
            ? 'no such socket'
            : err.code === 'ECONNREFUSED'
              ? 'connection refused'
              : err.code === 'EACCES'
                ? 'permission denied (are you root or in admin_group?)'
                : err.message;
        reject(
          new ImdsError(
            'DAEMON_UNREACHABLE',
            `cannot reach the daemon at ${this.socketPath}: ${why}; is it running (imds serve, systemctl status imds)? Use ` +
              `--admin-socket or IMDS_ADMIN_SOCKET for another socket`,
            {
              cause: err,
            },
          ),
        );
      });
      req.end(payload);
    });
  }

  private timeoutError(method: string, path: string): ImdsError {
    const seconds = this.timeoutMs / 1000;
    const change = method === 'GET' ? '' : '; the daemon may still complete the change: check before retrying';
    return new ImdsError(
      'DAEMON_TIMEOUT',
      `the daemon at ${this.socketPath} did not answer ${method} ${path} within ${seconds} s${change}; ` +
        'is it wedged (systemctl status imds, its journal)? Use --timeout SECONDS or IMDS_TIMEOUT to wait longer',
      { details: { socket: this.socketPath, timeout_s: seconds, method, path } },
    );
  }
}

function errorOf(status: number, parsed: unknown): ImdsError {
  const e = (parsed ?? {}) as { code?: string; message?: string; field?: string; details?: Record<string, unknown> };
  const code = (e.code !== undefined && e.code in ERROR_CODES ? e.code : 'INTERNAL') as ErrorCode;
  return new ImdsError(code, e.message ?? `HTTP ${status}`, {
    ...(e.field === undefined ? {} : { field: e.field }),
    ...(e.details === undefined ? {} : { details: e.details }),
  });
}

/** The admin client for a command: `--admin-socket` and `--timeout` (global options); `long` for calls that do kernel work. */
export function clientOf(cmd: { optsWithGlobals(): Record<string, unknown> }, long = false): AdminClient {
  const globals = cmd.optsWithGlobals();
  return new AdminClient(
    adminSocketOf(globals['adminSocket'] as string | undefined),
    timeoutOf(globals['timeout'] as string | undefined, long),
  );
}
