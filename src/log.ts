import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

// journald reads a leading `<N>` as the syslog priority of the line (SyslogLevelPrefix=yes).
const SYSLOG_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };

/** Fields that may carry secrets; pino replaces them wherever they appear at these paths. */
export const REDACT_PATHS = [
  'user_data',
  '*.user_data',
  'password',
  '*.password',
  'token',
  '*.token',
  'req.headers["x-aws-ec2-metadata-token"]',
];

export interface LogOptions {
  level?: LevelWithSilent;
  /** Prefix each line with `<priority>` for journald; defaults to true when run by systemd. */
  journald?: boolean;
  destination?: NodeJS.WritableStream;
}

/**
 * Sets the level of a logger made by createLogger and of every child made from it since (a child
 * keeps the level it was made with otherwise: a reload's new `log_level` would not reach them).
 */
export function setLogLevel(root: Logger, level: LevelWithSilent): void {
  root.level = level;
  for (const ref of children.get(root) ?? []) {
    const child = ref.deref();
    if (child !== undefined) child.level = level;
  }
}

const children = new WeakMap<Logger, WeakRef<Logger>[]>();

export function createLogger(options: LogOptions = {}): Logger {
  const out = options.destination ?? process.stdout;
  const journald = options.journald ?? process.env['INVOCATION_ID'] !== undefined;
  const family: WeakRef<Logger>[] = [];
  const opts = {
    level: options.level ?? 'info',
    base: { svc: 'imds' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    onChild: (child: Logger) => void family.push(new WeakRef(child)),
  };
  const root = journald ? pino(opts, journaldDestination(out)) : pino(opts, out);
  children.set(root, family);
  return root;
}

function journaldDestination(out: NodeJS.WritableStream): { write(line: string): void } {
  // pino sets `lastLevel` on a destination that carries the metadata symbol, before each write.
  const destination = {
    [Symbol.for('pino.metadata')]: true,
    lastLevel: 30,
    write(line: string): void {
      out.write(`<${SYSLOG_PRIORITY[destination.lastLevel] ?? 6}>${line}`);
    },
  };
  return destination;
}
