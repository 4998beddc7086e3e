// The access log (`access_log: off | journal | <file>`): one line per guest request, whichever side
// answered it (the native loop's records, the JS fast path, the Fastify app), in the documented
// format (docs/configuration.md#access-log). Never a body, a header or a query's meaning: the path as
// the guest sent it, the status and the size of the answer. Rate-limited overall: past
// `access_log_lines_per_second` in one second, lines are counted, not written, and one summary line
// says how many. A file is appended to and reopened on reload (logrotate moves it, then reloads).
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';
import { ImdsError } from '../errors.ts';
import type { Logger } from '../log.ts';

/** One answered guest request. */
export interface RequestRecord {
  /** Wall clock, ms since the epoch, when it was answered. */
  at: number;
  network: string;
  /** The VM's id; undefined for a caller that is no VM of the network. */
  vm: string | undefined;
  src: string;
  method: string;
  /** The request target as received (truncated to PATH_MAX characters). */
  path: string;
  status: number;
  /** The body's bytes as written (0 for HEAD), as nginx's body_bytes_sent. */
  bytes: number;
  /** Milliseconds from the head's arrival to the answer's write. */
  ms: number;
}

export type AccessLogTarget = 'off' | 'journal' | (string & {});

/** Longer targets are cut (the native loop keeps 240 bytes). */
export const PATH_MAX = 1024;

/** The fields of a line, in their documented order. */
export function accessFields(r: RequestRecord): Record<string, string | number | null> {
  return {
    time: new Date(r.at).toISOString(),
    network: r.network,
    vm: r.vm ?? null,
    src: r.src,
    method: r.method,
    path: r.path.length > PATH_MAX ? r.path.slice(0, PATH_MAX) : r.path,
    status: r.status,
    bytes: r.bytes,
    ms: Math.round(r.ms * 100) / 100,
  };
}

/** One line of the file: a JSON object (control characters escaped, so a path cannot break the line). */
export function accessLine(r: RequestRecord): string {
  return `${JSON.stringify(accessFields(r))}\n`;
}

/** The summary written when lines were suppressed. */
export function suppressedLine(at: number, suppressed: number, perSecond: number): string {
  return `${JSON.stringify({ time: new Date(at).toISOString(), suppressed, limit_per_second: perSecond })}\n`;
}

/** At most `perSecond` lines in each wall-clock second (0: no limit); the rest are counted. */
export class LineBudget {
  private second = -1;
  private used = 0;
  private suppressed = 0;
  /** The second of the last suppressed line: its count is reported once that second is over. */
  private suppressedIn = -1;
  readonly perSecond: number;

  constructor(perSecond: number) {
    this.perSecond = perSecond;
  }

  /** True when a line may be written at `now` (ms); false when it is suppressed (and counted). */
  take(now: number): boolean {
    if (this.perSecond <= 0) return true;
    const second = Math.floor(now / 1000);
    if (second !== this.second) {
      this.second = second;
      this.used = 0;
    }
    if (this.used < this.perSecond) {
      this.used++;
      return true;
    }
    this.suppressed++;
    this.suppressedIn = second;
    return false;
  }

  /** Lines lost elsewhere (the native loop's ring overflowed): reported with the suppressed ones. */
  lost(n: number): void {
    this.suppressed += n;
  }

  /** The lines suppressed since the last call, once their second is over (else 0, still counting). */
  takeSuppressed(now: number, force = false): number {
    if (this.suppressed === 0 || (!force && Math.floor(now / 1000) <= this.suppressedIn)) return 0;
    const n = this.suppressed;
    this.suppressed = 0;
    return n;
  }
}

interface Sink {
  write(r: RequestRecord): void;
  summary(at: number, suppressed: number, perSecond: number): void;
  reopen(): void;
  close(): void;
}

/** `journal`: pino lines at info on the daemon's output (the journal under systemd), whatever log_level is. */
function journalSink(log: Logger): Sink {
  const out = log.child({ component: 'access' }, { level: 'info' });
  // A reload's setLogLevel sets every child's level, this one's too: it is put back before each line.
  const info = (): Logger => {
    if (out.levelVal !== 30) out.level = 'info';
    return out;
  };
  return {
    write: (r) => info().info(accessFields(r), 'access'),
    summary: (_at, suppressed, perSecond) => info().info({ suppressed, limit_per_second: perSecond }, 'access log: lines suppressed'),
    reopen: () => undefined,
    close: () => undefined,
  };
}

/** A file, appended to; lines of one event-loop turn go out in one write. */
class FileSink implements Sink {
  private fd: number;
  private pending: string[] = [];
  private scheduled = false;
  private readonly path: string;
  private readonly log: Logger;

  constructor(path: string, log: Logger) {
    this.path = path;
    this.log = log;
    this.fd = FileSink.open(path);
  }

  static open(path: string): number {
    try {
      const fd = openSync(path, 'a', 0o640);
      if (!fstatSync(fd).isFile()) {
        closeSync(fd);
        throw new Error('not a regular file');
      }
      return fd;
    } catch (err) {
      throw new ImdsError('CONFIG_INVALID', `access_log: cannot open ${path} for appending: ${(err as Error).message}`, {
        field: 'access_log',
        cause: err,
      });
    }
  }

  write(r: RequestRecord): void {
    this.queue(accessLine(r));
  }

  summary(at: number, suppressed: number, perSecond: number): void {
    this.queue(suppressedLine(at, suppressed, perSecond));
  }

  private queue(line: string): void {
    this.pending.push(line);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const text = this.pending.join('');
    this.pending = [];
    try {
      writeSync(this.fd, text);
    } catch (err) {
      this.log.error({ err: (err as Error).message, file: this.path }, 'access log: write failed');
    }
  }

  /** What was written goes to the old file; a new one is opened at the path (after logrotate's rename). */
  reopen(): void {
    this.flush();
    let fd: number;
    try {
      fd = FileSink.open(this.path);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'access log: cannot reopen; writing on to the old file');
      return;
    }
    closeSync(this.fd);
    this.fd = fd;
  }

  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}

export class AccessLog {
  private sink: Sink | undefined;
  private target: AccessLogTarget = 'off';
  private budget = new LineBudget(0);
  private timer: NodeJS.Timeout | undefined;
  private readonly log: Logger;

  constructor(log: Logger) {
    this.log = log;
  }

  /** On when lines are written (`journal` or a file). */
  get on(): boolean {
    return this.sink !== undefined;
  }

  /**
   * Applies the configuration: a new target replaces the old one (a file is opened first: a file that
   * cannot be opened throws CONFIG_INVALID and leaves the running log as it was); the same file is
   * reopened (logrotate).
   */
  configure(target: AccessLogTarget, perSecond: number): void {
    if (target === this.target && this.sink !== undefined) {
      this.sink.reopen();
    } else {
      const next = target === 'off' ? undefined : target === 'journal' ? journalSink(this.log) : new FileSink(target, this.log);
      this.close();
      this.sink = next;
      this.target = target;
    }
    if (perSecond !== this.budget.perSecond) this.budget = new LineBudget(perSecond);
    if (this.sink !== undefined && this.timer === undefined) {
      this.timer = setInterval(() => this.summarise(Date.now()), 1000);
      this.timer.unref();
    }
  }

  write(r: RequestRecord, now = Date.now()): void {
    const sink = this.sink;
    if (sink === undefined) return;
    this.summarise(now);
    if (this.budget.take(now)) sink.write(r);
  }

  /** Records the native loop could not keep for the log (its ring was full): reported as suppressed. */
  lost(n: number): void {
    if (this.sink !== undefined && n > 0) this.budget.lost(n);
  }

  private summarise(now: number, force = false): void {
    const suppressed = this.budget.takeSuppressed(now, force);
    if (suppressed > 0) this.sink?.summary(now, suppressed, this.budget.perSecond);
  }

  /** Writes what is pending (with the summary of what was suppressed) and closes the file. */
  close(): void {
    this.summarise(Date.now(), true);
    this.sink?.close();
    this.sink = undefined;
    this.target = 'off';
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
