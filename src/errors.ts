// One error type for the whole daemon and CLI. `code` is stable (documented in docs/errors.md and
// checked by test/unit/errors.test.ts); callers branch on it, never on the message.
//
// The catalogue keeps each code's meaning, exit status and HTTP status together, as fastify's
// createError(code, message, statusCode) does: exitCodeOf and httpStatusOf only read it.

interface ErrorSpec {
  /** What the code means (docs/errors.md says it at more length, with what to do). */
  readonly meaning: string;
  /** The CLI's exit status (docs/cli.md). */
  readonly exit: number;
  /** The admin API's HTTP status; absent for a code only the CLI raises. */
  readonly http?: number;
}

export const ERROR_CODES = {
  CONFIG_UNREADABLE: { exit: 2, http: 500, meaning: 'the configuration file cannot be read' },
  CONFIG_INVALID: { exit: 2, http: 400, meaning: 'the configuration file is not valid YAML or breaks a rule' },
  VALIDATION_FAILED: { exit: 2, http: 400, meaning: 'an input (CLI flag, admin API body) breaks a rule' },
  COMMAND_NOT_FOUND: { exit: 1, http: 500, meaning: 'a required program (ip, nft, …) is not installed' },
  COMMAND_FAILED: { exit: 1, http: 500, meaning: 'a program run by imds exited with an error' },
  COMMAND_TIMEOUT: { exit: 1, http: 500, meaning: 'a program run by imds did not finish in time' },
  KERNEL_CONFLICT: { exit: 5, http: 409, meaning: 'a kernel object imds needs exists but is not what imds expects' },
  NETNS_LISTEN_FAILED: { exit: 1, http: 500, meaning: 'the listening socket inside a network namespace could not be opened' },
  METRICS_LISTEN_FAILED: { exit: 1, http: 500, meaning: 'the metrics listener (metrics_listen) could not be opened' },
  ADDON_UNAVAILABLE: { exit: 1, http: 500, meaning: 'the native setns addon is not built or cannot be loaded' },
  DAEMON_RUNNING: { exit: 3, http: 409, meaning: 'the command needs the daemon to be stopped' },
  DAEMON_UNREACHABLE: { exit: 3, meaning: 'the CLI cannot reach the daemon on its admin socket' },
  DAEMON_TIMEOUT: { exit: 3, meaning: 'the daemon accepted the connection but did not answer in time' },
  NOT_FOUND: { exit: 4, http: 404, meaning: 'the named network, VM or resource does not exist' },
  AMBIGUOUS: { exit: 2, http: 400, meaning: 'a VM reference (name, address, MAC) matches more than one VM' },
  ALREADY_EXISTS: { exit: 5, http: 409, meaning: "a network or VM with that id, or a VM's password, already exists" },
  NETWORK_NOT_EMPTY: { exit: 5, http: 409, meaning: 'the network still has VMs (use --force to delete them too)' },
  STORE_FAILED: { exit: 1, http: 500, meaning: 'the SQLite store could not be opened, migrated or written' },
  STORE_INVALID: { exit: 2, meaning: 'the file given to `imds store restore` is not an intact imds store this imds can open' },
  REGISTRY_UNAVAILABLE: { exit: 3, http: 503, meaning: 'the etcd registry cannot be reached: writes are refused' },
  REGISTRY_CONFLICT: { exit: 5, http: 409, meaning: 'a registry write lost a compare: someone else changed the record first' },
  FILE_EXISTS: { exit: 5, meaning: 'the output file exists already (use --force to replace it)' },
  INTERNAL: { exit: 1, http: 500, meaning: 'an unexpected internal failure' },
} as const satisfies Record<string, ErrorSpec>;

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

/** Process exit status for an error (docs/cli.md): the catalogue's, 1 for anything else thrown. */
export function exitCodeOf(err: unknown): number {
  return err instanceof ImdsError ? ERROR_CODES[err.code].exit : 1;
}

/** HTTP status of an error on the admin API: the catalogue's; 500 for a CLI-only code (never raised by the daemon). */
export function httpStatusOf(code: ErrorCode): number {
  const spec: ErrorSpec = ERROR_CODES[code];
  return spec.http ?? 500;
}

/** Problems spelled out in one error message; the rest are counted. */
export const MAX_LISTED_PROBLEMS = 20;

/** The first MAX_LISTED_PROBLEMS items as lines, then `… and N more` when there are more. */
export function listProblems<T>(items: readonly T[], format: (item: T) => string): string[] {
  const lines = items.slice(0, MAX_LISTED_PROBLEMS).map((item) => format(item));
  if (items.length > MAX_LISTED_PROBLEMS) lines.push(`… and ${items.length - MAX_LISTED_PROBLEMS} more`);
  return lines;
}
