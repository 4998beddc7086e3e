// Human tables and --json output for the CLI.

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A plain aligned table; `columns` maps header -> cell text. */
export function printTable<T>(rows: readonly T[], columns: Record<string, (row: T) => string | number | undefined>): void {
  const headers = Object.keys(columns);
  const cells = rows.map((row) => headers.map((h) => String((columns[h] as (r: T) => unknown)(row) ?? '-')));
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
    const text = typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
    out.push(`${`${k}:`.padEnd(width + 2)}${text}`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
}
