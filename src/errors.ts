// One error type for the whole daemon and CLI. `code` is stable (documented in docs/errors.md and
// checked by test/unit/errors.test.ts); callers branch on it, never on the message.

export const ERROR_CODES = {
  CONFIG_UNREADABLE: 'the configuration file cannot be read',
  CONFIG_INVALID: 'the configuration file is not valid YAML or breaks a rule',
  VALIDATION_FAILED: 'an input (CLI flag, admin API body) breaks a rule',
  COMMAND_NOT_FOUND: 'a required program (ip, nft, …) is not installed',
  COMMAND_FAILED: 'a program run by imds exited with an error',
  COMMAND_TIMEOUT: 'a program run by imds did not finish in time',
  KERNEL_CONFLICT: 'a kernel object imds needs exists but is not what imds expects',
  NETNS_LISTEN_FAILED: 'the listening socket inside a network namespace could not be opened',
  ADDON_UNAVAILABLE: 'the native setns addon is not built or cannot be loaded',
  DAEMON_RUNNING: 'the command needs the daemon to be stopped',
  DAEMON_UNREACHABLE: 'the CLI cannot reach the daemon on its admin socket',
  NOT_FOUND: 'the named network, VM or resource does not exist',
  ALREADY_EXISTS: 'a network or VM with that id already exists',
  NETWORK_NOT_EMPTY: 'the network still has VMs (use --force to delete them too)',
  STORE_FAILED: 'the SQLite store could not be opened, migrated or written',
  INTERNAL: 'an unexpected internal failure',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorOptions {
  /** The input field the error is about, e.g. `networks[1].cidr`. */
  field?: string;
  /** Structured context for logs and `--json` output. Never secrets. */
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class ImdsError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ImdsError';
    this.code = code;
    this.field = options.field;
    this.details = options.details;
  }

  toJSON(): { code: ErrorCode; message: string; field?: string; details?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      ...(this.field === undefined ? {} : { field: this.field }),
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

export function isImdsError(err: unknown, code?: ErrorCode): err is ImdsError {
  return err instanceof ImdsError && (code === undefined || err.code === code);
}

/** Message of any thrown value, for logs. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Process exit status for an error (docs/cli.md). */
export function exitCodeOf(err: unknown): number {
  if (!(err instanceof ImdsError)) return 1;
  switch (err.code) {
    case 'CONFIG_UNREADABLE':
    case 'CONFIG_INVALID':
    case 'VALIDATION_FAILED':
      return 2;
    case 'DAEMON_RUNNING':
    case 'DAEMON_UNREACHABLE':
      return 3;
    case 'NOT_FOUND':
      return 4;
    case 'ALREADY_EXISTS':
    case 'NETWORK_NOT_EMPTY':
    case 'KERNEL_CONFLICT':
      return 5;
    default:
      return 1;
  }
}

/** HTTP status of an error on the admin API. */
export function httpStatusOf(code: ErrorCode): number {
  switch (code) {
    case 'VALIDATION_FAILED':
    case 'CONFIG_INVALID':
      return 400;
    case 'NOT_FOUND':
      return 404;
    case 'ALREADY_EXISTS':
    case 'NETWORK_NOT_EMPTY':
    case 'KERNEL_CONFLICT':
    case 'DAEMON_RUNNING':
      return 409;
    default:
      return 500;
  }
}
