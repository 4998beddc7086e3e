// How the CLI prints a result: one place that renders data by format (`-o table|wide|json|yaml`,
// `--json` = `-o json`), and errors (`imds: CODE: message`, or a JSON document under `-o json`).
// Commands hand over their data and, for people, how to show it as text.
import { Option, type Command, type OptionValues } from '@commander-js/extra-typings';
import { stringify } from 'yaml';
import { ERROR_CODES, exitCodeOf, ImdsError, messageOf, type ErrorCode } from '../errors.ts';

export const OUTPUT_FORMATS = ['table', 'wide', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export const JSON_HELP = 'print JSON (same as -o json)';

/** `-o, --output FORMAT`, for a command that prints a result (with `.option('--json', JSON_HELP)`). */
export function outputOption() {
  return new Option('-o, --output <format>', 'output format: table (default), wide (more columns), json or yaml').choices(OUTPUT_FORMATS);
}

/** Adds `-o, --output FORMAT` and `--json` (its alias) to a command that prints a result. */
export function withOutput<Args extends unknown[], Opts extends OptionValues, Globals extends OptionValues>(
  cmd: Command<Args, Opts, Globals>,
) {
  return cmd.addOption(outputOption()).option('--json', JSON_HELP);
}

/** The format a command's options ask for. */
export function formatOf(opts: { output?: string | undefined; json?: boolean | undefined }): OutputFormat {
  if (opts.json === true) return 'json';
  return (OUTPUT_FORMATS as readonly string[]).includes(opts.output ?? '') ? (opts.output as OutputFormat) : 'table';
}

/** Text for people: `wide` is true under `-o wide`. */
export type TextOf<T> = (data: T, wide: boolean) => string;

/** Renders a result in a format (pure). */
export function render<T>(data: T, format: OutputFormat, text: TextOf<T>): string {
  switch (format) {
    case 'json':
      return `${JSON.stringify(data, null, 2)}\n`;
    case 'yaml':
      return stringify(data, { lineWidth: 0 });
    default: {
      const out = text(data, format === 'wide');
      return out.endsWith('\n') ? out : `${out}\n`;
    }
  }
}

/** Prints a result as the command's `-o`/`--json` asks. */
export function emit<T>(opts: { output?: string | undefined; json?: boolean | undefined }, data: T, text: TextOf<T>): void {
  process.stdout.write(render(data, formatOf(opts), text));
}

export type Columns<T> = Record<string, (row: T) => string | number | undefined>;

/** A plain aligned table; `columns` maps header -> cell text; `wideColumns` are added under `-o wide`. */
export function table<T>(rows: readonly T[], columns: Columns<T>, wide = false, wideColumns: Columns<T> = {}): string {
  const all = wide ? { ...columns, ...wideColumns } : columns;
  const headers = Object.keys(all);
  const cellOf = Object.values(all);
  const cells = rows.map((row) => cellOf.map((cell) => String(cell(row) ?? '-')));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (values: string[]): string => values.map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i] as number))).join('  ');
  return `${[line(headers), ...cells.map(line)].join('\n')}\n`;
}

/** `key: value` lines for one object. */
export function fields(values: Record<string, unknown>): string {
  const shown = Object.entries(values).filter(([, v]) => v !== undefined);
  const width = Math.max(0, ...shown.map(([k]) => k.length));
  return `${shown.map(([k, v]) => `${`${k}:`.padEnd(width + 2)}${fieldText(v)}`).join('\n')}\n`;
}

/** A value parsed from the API's JSON: strings as they are, other scalars as written, objects and arrays as JSON. */
function fieldText(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return v.toString();
  return JSON.stringify(v);
}

// ---------------------------------------------------------------------------------------------
// Errors

/** The JSON document of an error under `-o json`: `{"error": {code, message, field?, reason, exit, details?}}`. */
export function errorDocument(err: unknown): { error: Record<string, unknown> } {
  const code: ErrorCode = err instanceof ImdsError ? err.code : 'INTERNAL';
  const message = messageOf(err);
  const field = err instanceof ImdsError ? err.field : undefined;
  const reason = field !== undefined && message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message;
  return {
    error: {
      code,
      message,
      ...(field === undefined ? {} : { field }),
      reason,
      exit: exitCodeOf(err),
      ...(err instanceof ImdsError && err.details !== undefined ? { details: err.details } : {}),
    },
  };
}

/** `imds: CODE: message`, with `(field F)` when the message does not name the field already. */
export function errorLine(err: unknown): string {
  const code: ErrorCode = err instanceof ImdsError && err.code in ERROR_CODES ? err.code : 'INTERNAL';
  const message = messageOf(err);
  const field = err instanceof ImdsError ? err.field : undefined;
  const suffix = field !== undefined && !message.includes(field) ? ` (field ${field})` : '';
  return `imds: ${code}: ${message}${suffix}\n`;
}

/** The global options that take a value (src/cli/program.ts): skipped when looking for the command. */
const GLOBAL_VALUE_OPTIONS = ['--admin-socket', '--timeout'];

/** The first two words of the command an argv names (`vm configdrive`, `export …`), global options skipped. */
function commandWords(argv: readonly string[]): [string | undefined, string | undefined] {
  let i = 0;
  while (i < argv.length && (argv[i] as string).startsWith('-')) i += GLOBAL_VALUE_OPTIONS.includes(argv[i] as string) ? 2 : 1;
  return [argv[i], argv[i + 1]];
}

/** Whether the command's `-o` names a file, not a format: `vm configdrive` and `export` (docs/cli.md). */
function writesFile(argv: readonly string[]): boolean {
  const [first, second] = commandWords(argv);
  return first === 'export' || (first === 'vm' && second === 'configdrive');
}

/**
 * A command whose `-o` names a file refuses a file named like an output format (`imds export -o json`
 * is far more likely a format asked for than a file wanted): VALIDATION_FAILED naming the option.
 */
export function checkOutputFile(file: string, formatHelp: string): void {
  if ((OUTPUT_FORMATS as readonly string[]).includes(file)) {
    throw new ImdsError(
      'VALIDATION_FAILED',
      `--output: "${file}" is an output format's name, but this command's -o names the file to write; ${formatHelp}, ` +
        `or to write a file named ${file}, say so with a path: -o ./${file}`,
      { field: '--output' },
    );
  }
}

/**
 * Whether the command line asks for JSON (`--json`, `-o json`, `-ojson`, `--output json`, `--output=json`),
 * read from argv so that errors raised before or while commander parses are JSON too. The `-o` of
 * `vm configdrive` and `export` is a file, not a format.
 */
export function argvWantsJson(argv: readonly string[]): boolean {
  if (writesFile(argv)) return argv.includes('--json');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    if (a === '--json' || a === '-ojson' || a === '--output=json') return true;
    if ((a === '-o' || a === '--output') && argv[i + 1] === 'json') return true;
  }
  return false;
}
