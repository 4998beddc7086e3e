// Output files the CLI writes that hold secrets (store backups, exports): mode 0600, written whole
// to a temporary file beside the target, checked, then put in place in one step — linked (refused
// when the target exists) or, with --force, renamed over it. A failure leaves nothing behind.
import { closeSync, fsyncSync, linkSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ImdsError } from '../errors.ts';

export interface OutputOptions {
  /** Replace an existing file. */
  force: boolean;
  /** The flag or argument the path came from (named in errors). */
  field: string;
  /** Checks the written temporary file before it is put in place (throws to refuse it). */
  check?: (tmp: string) => void;
}

function fsyncPath(path: string, flags: string): void {
  const fd = openSync(path, flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Refuses a target that exists (without --force) or is a directory, before anything is fetched. */
export function checkOutput(file: string, options: Pick<OutputOptions, 'force' | 'field'>): void {
  const st = statSync(resolve(file), { throwIfNoEntry: false });
  if (st?.isDirectory() === true)
    throw new ImdsError('VALIDATION_FAILED', `${options.field}: ${file} is a directory`, { field: options.field });
  if (st !== undefined && !options.force)
    throw new ImdsError('FILE_EXISTS', `${file} exists already; use --force to replace it`, { field: options.field });
}

/** Writes `data` (bytes, or a function that fills the temporary file itself) to `file`, mode 0600. */
export async function writeSecretFile(
  file: string,
  data: Buffer | ((tmp: string) => Promise<void>),
  options: OutputOptions,
): Promise<void> {
  checkOutput(file, options);
  const path = resolve(file);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      if (Buffer.isBuffer(data)) writeSync(fd, data);
    } finally {
      closeSync(fd);
    }
    if (!Buffer.isBuffer(data)) await data(tmp);
    fsyncPath(tmp, 'r+');
    options.check?.(tmp);
    if (options.force) renameSync(tmp, path);
    else linkSync(tmp, path);
    fsyncPath(dirname(path), 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new ImdsError('FILE_EXISTS', `${file} exists already; use --force to replace it`, { field: options.field });
    if (err instanceof ImdsError) throw err;
    throw new ImdsError('VALIDATION_FAILED', `${options.field}: cannot write ${file}: ${(err as Error).message}`, {
      field: options.field,
      cause: err,
    });
  } finally {
    rmSync(tmp, { force: true });
  }
}
