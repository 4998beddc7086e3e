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

export function createLogger(options: LogOptions = {}): Logger {
  const out = options.destination ?? process.stdout;
  const journald = options.journald ?? process.env['INVOCATION_ID'] !== undefined;
  const opts = {
    level: options.level ?? 'info',
    base: { svc: 'imds' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  if (!journald) return pino(opts, out);
  const destination = {
    [Symbol.for('pino.metadata')]: true,
    lastLevel: 30,
    write(line: string): void {
      out.write(`<${SYSLOG_PRIORITY[this.lastLevel] ?? 6}>${line}`);
    },
  };
  return pino(opts, destination);
}
