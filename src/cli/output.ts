// Human tables and --json output for the CLI.

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A plain aligned table; `columns` maps header -> cell text. */
export function printTable<T>(rows: readonly T[], columns: Record<string, (row: T) => string | number | undefined>): void {
  const headers = Object.keys(columns);
  const cellOf = Object.values(columns);
  const cells = rows.map((row) => cellOf.map((cell) => String(cell(row) ?? '-')));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (values: string[]): string => values.map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i] as number))).join('  ');
  process.stdout.write(`${[line(headers), ...cells.map(line)].join('\n')}\n`);
}

/** `key: value` lines for one object. */
export function printFields(fields: Record<string, unknown>): void {
  const width = Math.max(...Object.keys(fields).map((k) => k.length));
  const out: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    out.push(`${`${k}:`.padEnd(width + 2)}${fieldText(v)}`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

/** A value parsed from the API's JSON: strings as they are, other scalars as written, objects and arrays as JSON. */
function fieldText(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return v.toString();
  return JSON.stringify(v);
}
