// Turning CLI flag values into API input: @file and - (stdin) references, k=v pairs, numbers.
import { readFileSync } from 'node:fs';
import { ImdsError } from '../errors.ts';

let stdinUsed = false;

/** `@path` -> the file's bytes, `-` -> stdin's bytes, anything else -> the text itself. */
export function readValue(value: string, flag: string): Buffer {
  if (value === '-') {
    if (stdinUsed) throw new ImdsError('VALIDATION_FAILED', `${flag}: stdin (-) can be used only once`, { field: flag });
    stdinUsed = true;
    return readFileSync(0);
  }
  if (value.startsWith('@')) {
    try {
      return readFileSync(value.slice(1));
    } catch (err) {
      throw new ImdsError('VALIDATION_FAILED', `${flag}: cannot read ${value.slice(1)}: ${(err as Error).message}`, { field: flag });
    }
  }
  return Buffer.from(value, 'utf8');
}

/** Repeated `k=v` flags -> a map; `@file` values are read (for --ssh-key name=@file). */
export function pairs(values: readonly string[] | undefined, flag: string, readFiles = false): Record<string, string> | undefined {
  if (values === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const item of values) {
    const i = item.indexOf('=');
    if (i <= 0) throw new ImdsError('VALIDATION_FAILED', `${flag}: "${item}" is not KEY=VALUE`, { field: flag });
    const key = item.slice(0, i);
    const raw = item.slice(i + 1);
    out[key] = readFiles ? readValue(raw, flag).toString('utf8').trim() : raw;
  }
  return out;
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function integer(flag: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new ImdsError('VALIDATION_FAILED', `${flag}: "${value}" is not a whole number`, { field: flag });
    return Number(value);
  };
}

/** Drops undefined values so JSON bodies carry only the flags given. */
export function defined(obj: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));
}

/** A JSON object from `@file`, `-` or inline JSON text. */
export function jsonObject(value: string | undefined, flag: string): Record<string, unknown> | undefined {
  if (value === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readValue(value, flag).toString('utf8'));
  } catch (err) {
    throw new ImdsError('VALIDATION_FAILED', `${flag}: not valid JSON: ${(err as Error).message}`, { field: flag });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new ImdsError('VALIDATION_FAILED', `${flag}: must be a JSON object`, { field: flag });
  return parsed as Record<string, unknown>;
}
